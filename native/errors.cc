// TVM errors <-> JS errors. TVM's error kind (ValueError, TypeError, RuntimeError, ...)
// travels both ways, so lib/ can map it to a typed Error subclass and JS functions called
// by TVM can raise a kind TVM understands.
#include "common.h"

namespace tvmnode {

Napi::Value MakeJsError(Napi::Env env, const std::string& kind, const std::string& message,
                        const std::string& backtrace) {
  AddonData* d = Data(env);
  if (d != nullptr && !d->make_error.IsEmpty()) {
    return d->make_error.Call({Napi::String::New(env, kind), Napi::String::New(env, message),
                               Napi::String::New(env, backtrace)});
  }
  Napi::Error e = Napi::Error::New(env, kind + ": " + message);
  e.Value().Set("tvmKind", kind);
  return e.Value();
}

void ThrowTvm(Napi::Env env, const ffi::Error& err) {
  Napi::Value e = MakeJsError(env, err.kind(), err.message(), err.backtrace());
  napi_throw(env, e);
}

ffi::Error JsExceptionToTvm(const Napi::Error& err) {
  // lib/'s TvmError carries TVM's kind as `kind`; anything else is a RuntimeError. Reading
  // the error can itself fail in an environment that is shutting down.
  std::string kind = "RuntimeError", message = "the JavaScript function failed and its error could not be read (is its environment shutting down?)";
  try {
    Napi::Value v = err.Value();
    if (v.IsObject()) {
      Napi::Value k = v.As<Napi::Object>().Get("kind");
      if (k.IsString()) kind = k.As<Napi::String>().Utf8Value();
      Napi::Value m = v.As<Napi::Object>().Get("message");
      message = m.IsString() ? m.As<Napi::String>().Utf8Value() : v.ToString().Utf8Value();
    } else if (!v.IsEmpty()) {
      message = v.ToString().Utf8Value();
    }
  } catch (...) {
  }
  return ffi::Error(kind, message, "<JavaScript>");
}

}  // namespace tvmnode

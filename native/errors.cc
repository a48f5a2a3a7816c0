// TVM errors <-> JS errors. TVM's error kind (ValueError, TypeError, RuntimeError, ...)
// travels both ways, so lib/ can map it to a typed Error subclass and JS functions called
// by TVM can raise a kind TVM understands.
#include "common.h"

namespace tvmnode {

Napi::Value MakeJsError(Napi::Env env, const std::string& kind, const std::string& message,
                        const std::string& backtrace) {
  AddonData* d = Data(env);
  if (d != nullptr && !d->make_error.IsEmpty()) {
    return d->make_error.Call(
        {Napi::String::New(env, kind), Napi::String::New(env, message), Napi::String::New(env, backtrace)});
  }
  Napi::Error e = Napi::Error::New(env, kind + ": " + message);
  e.Value().Set("tvmKind", kind);
  e.Value().Set("kind", kind);
  return e.Value();
}

void ThrowTvm(Napi::Env env, const ffi::Error& err) {
  Napi::Value e = MakeJsError(env, err.kind(), err.message(), err.backtrace());
  napi_throw(env, e);
}

Napi::Error KindError(Napi::Env env, const std::string& kind, const std::string& message) {
  return Napi::Error(env, MakeJsError(env, kind, message, ""));
}

Napi::Error WithKind(Napi::Env env, const Napi::Error& err, const char* kind) {
  Napi::Value original = err.Value();
  std::string message = err.Message();
  try {
    if (original.IsObject() && original.As<Napi::Object>().Get("kind").IsString()) return err;
  } catch (const Napi::Error&) {
    // A getter that throws: not one of lib/'s errors.
  }
  Napi::Error typed = KindError(env, kind, message);
  if (!original.IsEmpty()) {
    // As `new Error(message, { cause })` does: an own, non-enumerable property.
    typed.Value().DefineProperty(Napi::PropertyDescriptor::Value(
        "cause", original, static_cast<napi_property_attributes>(napi_writable | napi_configurable)));
  }
  return typed;
}

ffi::Error JsExceptionToTvm(const Napi::Error& err) {
  // lib/'s TvmError carries TVM's kind as `kind`; anything else is a RuntimeError. Reading
  // the error can itself fail in an environment that is shutting down.
  std::string kind = "RuntimeError",
              message =
                  "the JavaScript function failed and its error could not be read (is its environment shutting down?)";
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

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
  Napi::Object obj = err.Value();
  std::string kind = "RuntimeError";
  Napi::Value k = obj.Get("tvmKind");
  if (k.IsString()) kind = k.As<Napi::String>().Utf8Value();
  std::string message = err.Message();
  return ffi::Error(kind, message, "<JavaScript>");
}

}  // namespace tvmnode

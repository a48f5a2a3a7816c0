// Any other TVM object (VM closures, storage, maps of objects, ...): opaque to JS but
// passable back to TVM, with its type key for inspection.
#include "handle.h"

namespace tvmnode {

namespace {

class ObjectWrap : public Handle<ObjectWrap, ffi::ObjectRef> {
 public:
  static constexpr const char* kWhat = "TVM object";

  explicit ObjectWrap(const Napi::CallbackInfo& info) : Handle(info, &kObjectTag) {}

  static Napi::Function Define(Napi::Env env) {
    auto members = HandleMembers<ObjectWrap>();
    members.push_back(InstanceAccessor("typeKey", &ObjectWrap::TypeKey, nullptr));
    return DefineClass(env, "NativeObject", members);
  }

 private:
  Napi::Value TypeKey(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Get()->GetTypeKey()); }
};

}  // namespace

Napi::Object WrapObject(Napi::Env env, ffi::ObjectRef o) {
  return ObjectWrap::New(env, Data(env)->object_ctor, std::move(o));
}

std::optional<ffi::ObjectRef> UnwrapAny(Napi::Env env, const Napi::Object& obj) {
  if (obj.CheckTypeTag(&kTensorTag)) return UnwrapTaggedTensor(obj);
  if (obj.CheckTypeTag(&kFunctionTag)) return UnwrapFunction(obj);
  if (obj.CheckTypeTag(&kModuleTag)) return UnwrapModule(obj);
  if (obj.CheckTypeTag(&kObjectTag)) return ObjectWrap::Unwrap(obj)->Get();
  return std::nullopt;
}

void InitObject(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ObjectWrap::Define(env);
  Data(env)->object_ctor = Napi::Persistent(ctor);
  exports.Set("NativeObject", ctor);
}

}  // namespace tvmnode

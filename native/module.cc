// Modules: loading `.so` artifacts from export_library and looking up their functions.
#include <tvm/ffi/extra/module.h>

#include "async_work.h"
#include "handle.h"

namespace tvmnode {

namespace {

class ModuleWrap : public Handle<ModuleWrap, ffi::Module> {
 public:
  static constexpr const char* kWhat = "Module";

  explicit ModuleWrap(const Napi::CallbackInfo& info) : Handle(info, &kModuleTag) {}

  static Napi::Function Define(Napi::Env env) {
    auto members = HandleMembers<ModuleWrap>();
    members.push_back(StaticMethod("load", &ModuleWrap::Load));
    members.push_back(StaticMethod("loadAsync", &ModuleWrap::LoadAsync));
    members.push_back(InstanceMethod("getFunction", &ModuleWrap::GetFunction));
    members.push_back(InstanceMethod("getFunctionAsync", &ModuleWrap::GetFunctionAsync));
    members.push_back(InstanceMethod("implementsFunction", &ModuleWrap::ImplementsFunction));
    members.push_back(InstanceAccessor("kind", &ModuleWrap::Kind, nullptr));
    members.push_back(InstanceAccessor("imports", &ModuleWrap::Imports, nullptr));
    return DefineClass(env, "NativeModule", members);
  }

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TVMNODE_TRY(env, return WrapModule(env, ffi::Module::LoadFromFile(info[0].As<Napi::String>().Utf8Value())));
    return env.Undefined();
  }

  // Loading runs static initializers and may read large constant blobs: off the JS thread.
  static Napi::Value LoadAsync(const Napi::CallbackInfo& info) {
    std::string path = info[0].As<Napi::String>().Utf8Value();
    return PromiseWorker::Start(info.Env(), "tvm-node:loadModule",
                                [path]() { return ffi::Any(ffi::Module::LoadFromFile(path)); });
  }

  // getFunction(name, queryImports = true): the function or null.
  Napi::Value GetFunction(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool query_imports = info.Length() < 2 || info[1].ToBoolean().Value();
    TVMNODE_TRY(env, {
      ffi::Optional<ffi::Function> f = Get()->GetFunction(info[0].As<Napi::String>().Utf8Value(), query_imports);
      if (!f.has_value()) return env.Null();
      return WrapFunction(env, *f);
    });
    return env.Undefined();
  }

  // The same on the thread pool: for an RPC session module the lookup is a network round trip.
  Napi::Value GetFunctionAsync(const Napi::CallbackInfo& info) {
    ffi::Module m = Get();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    return PromiseWorker::Start(info.Env(), "tvm-node:getFunction",
                                [m, name]() {
                                  ffi::Optional<ffi::Function> f = m->GetFunction(name, true);
                                  return f.has_value() ? ffi::Any(*f) : ffi::Any(nullptr);
                                },
                                {info.This()});
  }

  Napi::Value ImplementsFunction(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool query_imports = info.Length() < 2 || info[1].ToBoolean().Value();
    TVMNODE_TRY(env, return Napi::Boolean::New(
                         env, Get()->ImplementsFunction(info[0].As<Napi::String>().Utf8Value(), query_imports)));
    return env.Undefined();
  }

  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Get()->kind()); }

  Napi::Value Imports(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const ffi::Array<ffi::Any>& imports = Get()->imports();
    Napi::Array out = Napi::Array::New(env, imports.size());
    for (size_t i = 0; i < imports.size(); ++i) out.Set(static_cast<uint32_t>(i), FromAny(env, imports[i]));
    return out;
  }
};

}  // namespace

Napi::Object WrapModule(Napi::Env env, ffi::Module m) {
  return ModuleWrap::New(env, Data(env)->module_ctor, std::move(m));
}

ffi::ObjectRef UnwrapModule(const Napi::Object& obj) { return ModuleWrap::Unwrap(obj)->Get(); }

void InitModule(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ModuleWrap::Define(env);
  Data(env)->module_ctor = Napi::Persistent(ctor);
  exports.Set("NativeModule", ctor);
}

}  // namespace tvmnode

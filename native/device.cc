// Devices: existence, the attributes TVM's device API reports, and synchronization.
#include <tvm/runtime/device_api.h>

#include "common.h"

namespace tvmnode {

namespace {

using tvm::runtime::DeviceAPI;
using tvm::runtime::DeviceAttrKind;

// The device API of a device type, or null when the linked runtime was built without it.
DeviceAPI* ApiFor(DLDevice dev) { return DeviceAPI::Get(dev, /*allow_missing=*/true); }

// deviceEnabled(type): whether the linked runtime has a device API for this type at all.
Napi::Value DeviceEnabled(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DLDevice dev = ToDevice(info[0], Napi::Number::New(env, 0));
  // TVM throws for a type code it has never heard of, even with allow_missing.
  TVMNODE_TRY(env, return Napi::Boolean::New(env, ApiFor(dev) != nullptr));
  return env.Undefined();
}

// deviceAttr(type, id, kind): the attribute as number/string, or undefined if not reported.
Napi::Value DeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DLDevice dev = ToDevice(info[0], info[1]);
  auto kind = static_cast<DeviceAttrKind>(info[2].As<Napi::Number>().Int32Value());
  TVMNODE_TRY(env, {
    DeviceAPI* api = ApiFor(dev);
    if (api == nullptr)
      return kind == tvm::runtime::kExist ? Napi::Value(Napi::Boolean::New(env, false)) : env.Undefined();
    ffi::Any rv;
    api->GetAttr(dev, kind, &rv);
    if (kind == tvm::runtime::kExist)
      return Napi::Value(Napi::Boolean::New(env, rv != nullptr && rv.cast<int64_t>() != 0));
    if (rv == nullptr) return env.Undefined();
    return FromAny(env, rv);
  });
  return env.Undefined();
}

Napi::Value DeviceSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DLDevice dev = ToDevice(info[0], info[1]);
  TVMNODE_TRY(env, {
    DeviceAPI* api = ApiFor(dev);
    if (api == nullptr)
      throw KindError(env, "DeviceError", "no device API for device type " + std::to_string(dev.device_type));
    api->StreamSync(dev, nullptr);
  });
  return env.Undefined();
}

}  // namespace

void InitDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceEnabled", Napi::Function::New(env, DeviceEnabled, "deviceEnabled"));
  exports.Set("deviceAttr", Napi::Function::New(env, DeviceAttr, "deviceAttr"));
  exports.Set("deviceSync", Napi::Function::New(env, DeviceSync, "deviceSync"));
}

}  // namespace tvmnode

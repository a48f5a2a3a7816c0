// Conversions between JS values and tvm-ffi values.
//
// JS -> TVM: null/undefined -> None; boolean -> bool; number -> int when it is an integer in
// the safe range, else float; bigint -> int64; string -> str; ArrayBufferView -> bytes;
// Array -> ffi.Array; wrapped tensors/functions/modules/objects -> themselves; plain
// objects tagged by lib/ with `_tvmKind` ('device', 'shape', 'dtype', 'float', 'int',
// 'handle') -> the matching TVM value.
// TVM -> JS: the reverse; ints beyond 2^53 become bigint; shapes, devices and errors are
// built by factories lib/ installs, so native code never decides their JS shape.
#include <cmath>

#include "common.h"

namespace tvmnode {

DLDataType ParseDType(const std::string& s) { return ffi::StringToDLDataType(s); }

DLDevice ToDevice(const Napi::Value& type, const Napi::Value& id) {
  return DLDevice{static_cast<DLDeviceType>(type.As<Napi::Number>().Int32Value()), id.As<Napi::Number>().Int32Value()};
}

ffi::Any ToAnyUnchecked(Napi::Env env, const Napi::Value& v);

// What `typeof` says, for messages.
const char* TypeOf(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "value";
}

namespace {

constexpr double kMaxSafeInt = 9007199254740991.0;

ffi::Any NumberToAny(double x) {
  if (std::isfinite(x) && std::trunc(x) == x && std::fabs(x) <= kMaxSafeInt) {
    return ffi::Any(static_cast<int64_t>(x));
  }
  return ffi::Any(x);
}

ffi::Any BigIntToAny(const Napi::BigInt& b) {
  bool lossless = false;
  int64_t v = b.Int64Value(&lossless);
  if (!lossless) throw KindError(b.Env(), "ValueError", "bigint argument does not fit in int64");
  return ffi::Any(v);
}

ffi::Shape ShapeFromJs(Napi::Env env, const Napi::Value& dims) {
  if (!dims.IsArray()) throw KindError(env, "TypeError", "shape must be an array of integers");
  Napi::Array arr = dims.As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value d = arr.Get(i);
    if (!d.IsBigInt() && !d.IsNumber()) {
      throw KindError(env, "TypeError",
                      "shape dimension " + std::to_string(i) + " must be an integer, got " + TypeOf(d));
    }
    out[i] = d.IsBigInt() ? d.As<Napi::BigInt>().Int64Value(nullptr) : d.As<Napi::Number>().Int64Value();
  }
  return ffi::Shape(std::move(out));
}

ffi::Any TaggedToAny(Napi::Env env, const Napi::Object& obj, const std::string& kind) {
  if (kind == "handle") return ToAny(env, obj.Get("handle"));
  if (kind == "device") return ffi::Any(ToDevice(obj.Get("deviceType"), obj.Get("deviceId")));
  if (kind == "shape") return ffi::Any(ShapeFromJs(env, obj.Get("dims")));
  if (kind == "dtype") return ffi::Any(ParseDType(obj.Get("dtype").As<Napi::String>().Utf8Value()));
  if (kind == "float") return ffi::Any(obj.Get("value").As<Napi::Number>().DoubleValue());
  if (kind == "int") {
    Napi::Value v = obj.Get("value");
    return v.IsBigInt() ? BigIntToAny(v.As<Napi::BigInt>()) : ffi::Any(v.As<Napi::Number>().Int64Value());
  }
  throw KindError(env, "TypeError", "unknown _tvmKind '" + kind + "'");
}

ffi::Any ObjectToAny(Napi::Env env, const Napi::Object& obj) {
  if (std::optional<ffi::ObjectRef> ref = UnwrapAny(env, obj)) return ffi::Any(*ref);
  if (obj.IsArray()) {
    Napi::Array arr = obj.As<Napi::Array>();
    ffi::Array<ffi::Any> out;
    out.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) out.push_back(ToAny(env, arr.Get(i)));
    return ffi::Any(out);
  }
  if (obj.IsTypedArray() || obj.IsDataView() || obj.IsBuffer()) {
    Napi::TypedArray view = obj.As<Napi::TypedArray>();
    size_t offset = view.ByteOffset();
    const char* data = static_cast<const char*>(view.ArrayBuffer().Data()) + offset;
    return ffi::Any(ffi::Bytes(data, view.ByteLength()));
  }
  Napi::Value kind = obj.Get("_tvmKind");
  if (kind.IsString()) return TaggedToAny(env, obj, kind.As<Napi::String>().Utf8Value());
  throw KindError(env, "TypeError",
                  "cannot pass this object to TVM (expected a Tensor, PackedFunc, Module, "
                  "Device, Shape, DataType, array, number, bigint, string or bytes)");
}

Napi::Value ArrayToJs(Napi::Env env, const ffi::Array<ffi::Any>& arr) {
  Napi::Array out = Napi::Array::New(env, arr.size());
  for (size_t i = 0; i < arr.size(); ++i) out.Set(static_cast<uint32_t>(i), FromAny(env, arr[i]));
  return out;
}

Napi::Value MapToJs(Napi::Env env, const ffi::Map<ffi::Any, ffi::Any>& map) {
  Napi::Object global = env.Global();
  Napi::Function ctor = global.Get("Map").As<Napi::Function>();
  Napi::Object out = ctor.New({});
  Napi::Function set = out.Get("set").As<Napi::Function>();
  for (const auto& kv : map) set.Call(out, {FromAny(env, kv.first), FromAny(env, kv.second)});
  return out;
}

Napi::Value ShapeToJs(Napi::Env env, const ffi::Shape& shape) {
  Napi::Array dims = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i)
    dims.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  return Data(env)->make_shape.Call({dims});
}

// Hands a native handle to lib/, which wraps it in its public class (Tensor, PackedFunc...).
Napi::Value ToLibClass(Napi::Env env, Napi::Object handle) {
  Napi::FunctionReference& wrap = Data(env)->make_wrapper;
  return wrap.IsEmpty() ? Napi::Value(handle) : wrap.Call({handle});
}

Napi::Value IntToJs(Napi::Env env, int64_t v) {
  if (static_cast<double>(v) <= kMaxSafeInt && static_cast<double>(v) >= -kMaxSafeInt) {
    return Napi::Number::New(env, static_cast<double>(v));
  }
  return Napi::BigInt::New(env, v);
}

}  // namespace

ffi::Any ToAny(Napi::Env env, const Napi::Value& v) {
  try {
    return ToAnyUnchecked(env, v);
  } catch (const ffi::Error& e) {
    // e.g. a malformed dtype string: a typed JS error, never an exception N-API can't carry.
    throw KindError(env, "TypeError", e.message());
  } catch (const Napi::Error& e) {
    // N-API's own ("A number was expected") for a tagged value with a field of the wrong type.
    throw WithKind(env, e, "TypeError");
  }
}

ffi::Any ToAnyUnchecked(Napi::Env env, const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined:
    case napi_null: return ffi::Any(nullptr);
    case napi_boolean: return ffi::Any(v.As<Napi::Boolean>().Value());
    case napi_number: return NumberToAny(v.As<Napi::Number>().DoubleValue());
    case napi_bigint: return BigIntToAny(v.As<Napi::BigInt>());
    case napi_string: return ffi::Any(ffi::String(v.As<Napi::String>().Utf8Value()));
    case napi_object: return ObjectToAny(env, v.As<Napi::Object>());
    default:
      throw KindError(env, "TypeError", "cannot pass a JS function or symbol to TVM directly (use registerFunc)");
  }
}

Napi::Value FromAny(Napi::Env env, const ffi::Any& v) {
  switch (v.type_index()) {
    case ffi::TypeIndex::kTVMFFINone: return env.Null();
    case ffi::TypeIndex::kTVMFFIInt: return IntToJs(env, v.cast<int64_t>());
    case ffi::TypeIndex::kTVMFFIBool: return Napi::Boolean::New(env, v.cast<bool>());
    case ffi::TypeIndex::kTVMFFIFloat: return Napi::Number::New(env, v.cast<double>());
    case ffi::TypeIndex::kTVMFFIOpaquePtr:
      return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(v.cast<void*>())));
    case ffi::TypeIndex::kTVMFFIDataType:
      return Napi::String::New(env, std::string(ffi::DLDataTypeToString(v.cast<DLDataType>())));
    case ffi::TypeIndex::kTVMFFIDevice: {
      DLDevice d = v.cast<DLDevice>();
      return Data(env)->make_device.Call({Napi::Number::New(env, d.device_type), Napi::Number::New(env, d.device_id)});
    }
    case ffi::TypeIndex::kTVMFFISmallStr:
    case ffi::TypeIndex::kTVMFFIStr: return Napi::String::New(env, std::string(v.cast<ffi::String>()));
    case ffi::TypeIndex::kTVMFFISmallBytes:
    case ffi::TypeIndex::kTVMFFIBytes: {
      ffi::Bytes b = v.cast<ffi::Bytes>();
      return Napi::Buffer<char>::Copy(env, b.data(), b.size());
    }
    case ffi::TypeIndex::kTVMFFITensor: return ToLibClass(env, WrapTensor(env, v.cast<ffi::Tensor>()));
    case ffi::TypeIndex::kTVMFFIFunction: return ToLibClass(env, WrapFunction(env, v.cast<ffi::Function>()));
    case ffi::TypeIndex::kTVMFFIModule: return ToLibClass(env, WrapModule(env, v.cast<ffi::Module>()));
    case ffi::TypeIndex::kTVMFFIShape: return ShapeToJs(env, v.cast<ffi::Shape>());
    case ffi::TypeIndex::kTVMFFIArray: return ArrayToJs(env, v.cast<ffi::Array<ffi::Any>>());
    case ffi::TypeIndex::kTVMFFIMap: return MapToJs(env, v.cast<ffi::Map<ffi::Any, ffi::Any>>());
    case ffi::TypeIndex::kTVMFFIError: {
      ffi::Error e = v.cast<ffi::Error>();
      return MakeJsError(env, e.kind(), e.message(), e.backtrace());
    }
    default:
      if (v.type_index() >= ffi::TypeIndex::kTVMFFIStaticObjectBegin) {
        return ToLibClass(env, WrapObject(env, v.cast<ffi::ObjectRef>()));
      }
      throw KindError(env, "TypeError", "TVM returned a value of type " + v.GetTypeKey() + " that has no JS form");
  }
}

std::vector<ffi::Any> ToAnyArgs(Napi::Env env, const Napi::Array& args) {
  std::vector<ffi::Any> out;
  out.reserve(args.Length());
  for (uint32_t i = 0; i < args.Length(); ++i) out.push_back(ToAny(env, args.Get(i)));
  return out;
}

ffi::Any CallPacked(const ffi::Function& f, const std::vector<ffi::Any>& args) {
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  ffi::Any result;
  f.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
  return result;
}

}  // namespace tvmnode

// Shared declarations of the tvm-node addon: per-environment state, type tags and the
// conversions between N-API values and tvm-ffi values. The addon is a thin layer: it
// converts and forwards; all policy (pools, validation, scheduling) lives in lib/.
#pragma once

#include <napi.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tvmnode {

namespace ffi = tvm::ffi;

/*!
 * State shared between one Node environment (main thread or a worker_thread) and native
 * threads that outlive a call into it: TVM may hold a tensor wrapping JS memory, or a JS
 * function registered into TVM's global table, long after the call that created it.
 * Native threads reach the JS thread only through `Post`, which fails once the environment
 * is gone.
 */
struct EnvState {
  std::mutex mu;
  bool alive = true;
  std::thread::id js_thread;
  Napi::ThreadSafeFunction dispatcher;
  // Depth of synchronous TVM calls running on the JS thread: a native thread that needs
  // the JS thread meanwhile would wait forever, so it fails instead.
  std::atomic<int> sync_depth{0};

  bool OnJsThread() const { return std::this_thread::get_id() == js_thread; }
  // Runs `job` on the JS thread. Returns false if the environment has shut down.
  bool Post(std::function<void(Napi::Env)> job);
};

/*! Per-environment instance data (the addon is context-aware; no unguarded statics). */
struct AddonData {
  Napi::FunctionReference tensor_ctor, function_ctor, module_ctor, object_ctor;
  // JS factories installed by lib/binding.ts: typed errors, devices, shapes, and the
  // lib/ classes that wrap native handles returned by TVM.
  Napi::FunctionReference make_error, make_device, make_shape, make_wrapper;
  std::shared_ptr<EnvState> state;
  // JS functions registered into TVM, by id; touched on the JS thread only.
  std::unordered_map<int64_t, Napi::FunctionReference> js_funcs;
  // The TVM functions registered globally for them, to unregister only what is ours.
  std::unordered_map<int64_t, ffi::Function> js_globals;
  int64_t next_js_func = 1;
};

inline AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

/*! Type tags of the wrapped classes: cheap, unforgeable identity checks. */
extern const napi_type_tag kTensorTag, kFunctionTag, kModuleTag, kObjectTag;

// ---- errors (errors.cc) ----
/*! Builds the JS error for a TVM error (a TvmError subclass chosen by its kind). */
Napi::Value MakeJsError(Napi::Env env, const std::string& kind, const std::string& message,
                        const std::string& backtrace);
/*! Throws a TVM error into JS as a pending exception. */
void ThrowTvm(Napi::Env env, const ffi::Error& err);
/*! Turns a pending JS exception into a TVM error (for JS functions called by TVM). */
ffi::Error JsExceptionToTvm(const Napi::Error& err);
/*!
 * The JS error of TVM error `kind` (lib/'s typed class, through its factory) as a C++
 * exception to throw. Argument errors use TVM's kinds: "TypeError" for a value of the wrong
 * type, "ValueError" for a wrong value (size, range).
 */
Napi::Error KindError(Napi::Env env, const std::string& kind, const std::string& message);
/*!
 * `err` when it is already a typed error (it has a string `kind`); otherwise (N-API's own
 * errors, e.g. "A number was expected") a typed error of `kind` with the same message and
 * `err` as its `cause`.
 */
Napi::Error WithKind(Napi::Env env, const Napi::Error& err, const char* kind);
/*! What JS `typeof` says of `v` ("string", "undefined", ...), for messages. */
const char* TypeOf(const Napi::Value& v);

/*! Captured outcome of a native call: what a worker thread hands back to the JS thread. */
struct CallError {
  std::string kind, message, backtrace;
  static CallError From(const ffi::Error& e) { return {e.kind(), e.message(), e.backtrace()}; }
  static CallError From(const std::exception& e) { return {"RuntimeError", e.what(), ""}; }
};

// Runs `body` and turns TVM, N-API and C++ exceptions into pending typed JS exceptions
// (N-API's own errors are argument errors: TypeError; anything else is a RuntimeError).
#define TVMNODE_TRY(env, ...)                                                         \
  try {                                                                               \
    __VA_ARGS__;                                                                      \
  } catch (const ::tvm::ffi::Error& e) {                                              \
    ::tvmnode::ThrowTvm(env, e);                                                      \
  } catch (const Napi::Error& e) {                                                    \
    ::tvmnode::WithKind(env, e, "TypeError").ThrowAsJavaScriptException();            \
  } catch (const std::exception& e) {                                                 \
    ::tvmnode::KindError(env, "RuntimeError", e.what()).ThrowAsJavaScriptException(); \
  }

// ---- threads (addon.cc) ----
/*! Sizes TVM's pool for the calling libuv thread as lib/ chose; called before each job. */
void PreparePoolThread();

// ---- conversions (convert.cc) ----
/*! Converts one JS value into an owned TVM value; throws Napi::Error on what cannot map. */
ffi::Any ToAny(Napi::Env env, const Napi::Value& v);
/*! Converts a TVM value into JS (tensors, functions, modules become wrapped objects). */
Napi::Value FromAny(Napi::Env env, const ffi::Any& v);
/*! Converts a JS array of arguments. */
std::vector<ffi::Any> ToAnyArgs(Napi::Env env, const Napi::Array& args);
/*! Calls a TVM function with owned arguments. */
ffi::Any CallPacked(const ffi::Function& f, const std::vector<ffi::Any>& args);

// ---- wrappers: each returns a new JS object owning a reference to the TVM object ----
Napi::Object WrapTensor(Napi::Env env, ffi::Tensor t);
Napi::Object WrapFunction(Napi::Env env, ffi::Function f);
Napi::Object WrapModule(Napi::Env env, ffi::Module m);
Napi::Object WrapObject(Napi::Env env, ffi::ObjectRef o);
/*! The TVM object held by a wrapped JS object with the given tag, or nullopt. */
std::optional<ffi::ObjectRef> UnwrapAny(Napi::Env env, const Napi::Object& obj);
ffi::Tensor UnwrapTensor(Napi::Env env, const Napi::Value& v);
// Callers have checked the type tag.
ffi::ObjectRef UnwrapTaggedTensor(const Napi::Object& obj);
ffi::ObjectRef UnwrapFunction(const Napi::Object& obj);
ffi::ObjectRef UnwrapModule(const Napi::Object& obj);

// ---- tensor operations of the TVM runtime (tensor.cc) ----
// Reached through the runtime's registered functions: the wheel's C++ tensor header
// depends on headers the wheel does not ship.
ffi::Tensor AllocTensor(ffi::Shape shape, DLDataType dtype, DLDevice dev);
void CopyFromBytes(const ffi::Tensor& t, const void* data, size_t nbytes);
void CopyToBytes(const ffi::Tensor& t, void* data, size_t nbytes);
void CopyTensor(const ffi::Tensor& from, const ffi::Tensor& to);

// ---- loading (library_load.cc) ----
/*!
 * The shared library at `path` loaded as TVM's loader would, reading its embedded Relax VM
 * weights from the file straight into their tensors; nullopt when that reader does not apply
 * (or TVM_NODE_STOCK_LOAD is set): the caller then uses TVM's loader.
 */
std::optional<ffi::Module> LoadLibraryLean(const std::string& path);

// ---- dtype / device helpers ----
DLDataType ParseDType(const std::string& s);
DLDevice ToDevice(const Napi::Value& type, const Napi::Value& id);

// ---- module initializers, one per concept ----
void InitDevice(Napi::Env env, Napi::Object exports);
void InitTensor(Napi::Env env, Napi::Object exports);
void InitFunction(Napi::Env env, Napi::Object exports);
void InitModule(Napi::Env env, Napi::Object exports);
void InitObject(Napi::Env env, Napi::Object exports);
void InitRpc(Napi::Env env, Napi::Object exports);
void InitHostBuffer(Napi::Env env, Napi::Object exports);
void InitVmBuiltins();

}  // namespace tvmnode

// Entry point of the addon: per-environment state, version checks, optional runtime
// libraries, and the JS factories that let native code build typed JS objects.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

#include <tvm/runtime/device_api.h>

#include "common.h"

// TVM's thread-pool sizing, exported by libtvm_runtime (TVM_RUNTIME_DLL in TVM's
// src/runtime/threading_backend.h, a header the wheel does not ship). Both act on the
// calling thread only: TVM keeps one pool per thread that launches parallel kernels.
namespace tvm::runtime::threading {
__attribute__((visibility("default"))) int MaxConcurrency();
__attribute__((visibility("default"))) void SetMaxConcurrency(int value);
}  // namespace tvm::runtime::threading

namespace tvmnode {

namespace {
// TVM workers for each libuv pool thread that runs kernels (0: TVM's own choice, from
// TVM_NUM_THREADS). Process-wide, like the libuv pool; lib/binding.ts sets it.
std::atomic<int> g_pool_thread_concurrency{0};
}  // namespace

void PreparePoolThread() {
  // Applied before the thread's first kernel creates its TVM pool (the pool's size is fixed
  // then); 1 makes TVM run parallel loops inline on this thread, with no pool at all.
  thread_local int applied = 0;
  const int want = g_pool_thread_concurrency.load(std::memory_order_relaxed);
  if (want != applied) {
    tvm::runtime::threading::SetMaxConcurrency(want);
    applied = want;
  }
}

const napi_type_tag kTensorTag = {0x7f3c1a0e5b2d4c11ULL, 0x9a8b7c6d5e4f3a21ULL};
const napi_type_tag kFunctionTag = {0x7f3c1a0e5b2d4c12ULL, 0x9a8b7c6d5e4f3a22ULL};
const napi_type_tag kModuleTag = {0x7f3c1a0e5b2d4c13ULL, 0x9a8b7c6d5e4f3a23ULL};
const napi_type_tag kObjectTag = {0x7f3c1a0e5b2d4c14ULL, 0x9a8b7c6d5e4f3a24ULL};

bool EnvState::Post(std::function<void(Napi::Env)> job) {
  std::lock_guard<std::mutex> lock(mu);
  if (!alive) return false;
  auto* heap_job = new std::function<void(Napi::Env)>(std::move(job));
  napi_status st =
      dispatcher.NonBlockingCall(heap_job, [](Napi::Env env, Napi::Function, std::function<void(Napi::Env)>* j) {
        // env is null when the environment is tearing down: the job is dropped, not run.
        if (env != nullptr) (*j)(env);
        delete j;
      });
  if (st != napi_ok) {
    delete heap_job;
    return false;
  }
  return true;
}

namespace {

// Optional runtime libraries of the TVM build, loaded for their registrations. What failed to
// load (e.g. the CUDA sidecar without libcudart) is reported by `runtimeLibraries()` so a
// missing device can name its cause.
struct SidecarStatus {
  std::string name, path, error;
  bool loaded = false;
};
std::vector<SidecarStatus> g_sidecars;  // written once under g_sidecar_once
std::once_flag g_sidecar_once;

// The file of the loaded library that holds `addr` ("" when the loader cannot tell).
std::string LibraryOf(const void* addr) {
  Dl_info info;
  if (dladdr(addr, &info) != 0 && info.dli_fname != nullptr) return info.dli_fname;
  return "";
}

// Functions the addon links from each library: their addresses name the files loaded.
const void* FfiSymbol() { return reinterpret_cast<const void*>(&TVMFFIGetVersion); }
const void* RuntimeSymbol() { return reinterpret_cast<const void*>(&tvm::runtime::DeviceAPI::Get); }

// Sidecars sit next to libtvm_runtime, wherever the addon's rpath found it (staged folder,
// prebuilt package, TVM_HOME build).
std::string RuntimeDir() {
  std::string p = LibraryOf(RuntimeSymbol());
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

// Compiled artifacts leave some tvm-ffi symbols (e.g. the error-raising entry points) to be
// bound lazily from the global scope, and Node loads an addon's dependencies locally: a
// kernel raising an error would then abort the process on an unresolved symbol. Promote
// the already loaded libtvm_ffi and libtvm_runtime to global scope, as TVM's Python does.
void PromoteToGlobal(const void* symbol) {
  std::string file = LibraryOf(symbol);
  if (!file.empty()) dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

void LoadSidecars() {
  PromoteToGlobal(FfiSymbol());
  PromoteToGlobal(RuntimeSymbol());
  const std::string dir = RuntimeDir();
  for (const char* name : {"libtvm_runtime_extra.so", "libtvm_runtime_cuda.so"}) {
    std::string path = dir + "/" + name;
    SidecarStatus s{name, path, "", false};
    if (access(path.c_str(), R_OK) != 0) {
      s.error = "not present in " + dir;
    } else if (dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) {
      const char* err = dlerror();
      s.error = err ? err : "dlopen failed";
    } else {
      s.loaded = true;
    }
    g_sidecars.push_back(s);
  }
}

Napi::Value RuntimeLibraries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, g_sidecars.size());
  for (size_t i = 0; i < g_sidecars.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", g_sidecars[i].name);
    o.Set("path", g_sidecars[i].path);
    o.Set("loaded", g_sidecars[i].loaded);
    if (!g_sidecars[i].loaded) o.Set("error", g_sidecars[i].error);
    out.Set(i, o);
  }
  return out;
}

// The files of the libraries this process runs: tvm-ffi, the TVM runtime and the addon
// itself, as the dynamic loader resolved them (lib/versions.ts checks that they fit).
Napi::Value LibraryPaths(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("ffi", LibraryOf(FfiSymbol()));
  out.Set("runtime", LibraryOf(RuntimeSymbol()));
  out.Set("addon", LibraryOf(reinterpret_cast<const void*>(&LibraryOf)));
  return out;
}

std::string VersionString(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

// tvm-ffi's C++ ABI is only stable within a version (a silent mismatch between 0.1.13 and
// 0.1.13.post2 corrupted objects), so the addon reports both versions and lib/ refuses to
// run when the major.minor of the headers it was built with and the loaded library differ.
Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TVMFFIVersion v;
  TVMFFIGetVersion(&v);
  Napi::Object out = Napi::Object::New(env);
  out.Set("ffiRuntime", VersionString(v.major, v.minor, v.patch));
  out.Set("ffiHeaders", VersionString(TVM_FFI_VERSION_MAJOR, TVM_FFI_VERSION_MINOR, TVM_FFI_VERSION_PATCH));
  out.Set("tvm", TVMNODE_TVM_VERSION);
  out.Set("tvmSource", TVMNODE_TVM_SOURCE);
  out.Set("napi", Napi::Number::New(env, NAPI_VERSION));
  return out;
}

// threadSettings(poolThreadConcurrency?): sets the TVM workers of libuv pool threads when
// given (a non-negative integer; 0 = TVM's default), and reports them with the TVM workers
// of the calling thread's pool.
Napi::Value ThreadSettings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsNumber())
      throw KindError(env, "TypeError", std::string("threadSettings: expected a number, got ") + TypeOf(info[0]));
    const int32_t n = info[0].As<Napi::Number>().Int32Value();
    if (n < 0) throw KindError(env, "ValueError", "threadSettings: expected a non-negative integer");
    g_pool_thread_concurrency.store(n, std::memory_order_relaxed);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("poolThreadConcurrency", Napi::Number::New(env, g_pool_thread_concurrency.load(std::memory_order_relaxed)));
  out.Set("maxConcurrency", Napi::Number::New(env, tvm::runtime::threading::MaxConcurrency()));
  return out;
}

// processEnv(name, default?): the variable `name` of the process environment (what TVM's
// getenv reads; a worker_thread's process.env is only a copy), set to `default` first when
// it is unset. Returns { value (null when unset), setByTvmNode }. lib/threads.ts sets TVM's
// thread defaults this way, never over a value that is already there.
Napi::Value ProcessEnv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static std::mutex mu;
  static std::set<std::string> ours;  // variables tvm-node set, in any environment of the process
  if (!info[0].IsString())
    throw KindError(env, "TypeError", std::string("processEnv: name must be a string, got ") + TypeOf(info[0]));
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  std::lock_guard<std::mutex> lock(mu);
  const char* value = getenv(name.c_str());
  if (value == nullptr && info.Length() > 1 && info[1].IsString()) {
    if (setenv(name.c_str(), info[1].As<Napi::String>().Utf8Value().c_str(), 0) == 0) ours.insert(name);
    value = getenv(name.c_str());
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("value", value == nullptr ? env.Null() : Napi::String::New(env, value));
  out.Set("setByTvmNode", Napi::Boolean::New(env, ours.count(name) > 0));
  return out;
}

Napi::Value SetFactories(const Napi::CallbackInfo& info) {
  Napi::Object f = info[0].As<Napi::Object>();
  AddonData* d = Data(info.Env());
  d->make_error = Napi::Persistent(f.Get("error").As<Napi::Function>());
  d->make_device = Napi::Persistent(f.Get("device").As<Napi::Function>());
  d->make_shape = Napi::Persistent(f.Get("shape").As<Napi::Function>());
  d->make_wrapper = Napi::Persistent(f.Get("wrap").As<Napi::Function>());
  return info.Env().Undefined();
}

void StartDispatcher(Napi::Env env, AddonData* d) {
  d->state = std::make_shared<EnvState>();
  d->state->js_thread = std::this_thread::get_id();
  d->state->dispatcher = Napi::ThreadSafeFunction::New(env, Napi::Function(), "tvm-node-dispatch", 0, 1);
  // An idle dispatcher must not keep the process alive.
  d->state->dispatcher.Unref(env);
  std::shared_ptr<EnvState> state = d->state;
  env.AddCleanupHook([state]() {
    std::lock_guard<std::mutex> lock(state->mu);
    state->alive = false;
    state->dispatcher.Abort();
  });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  std::call_once(g_sidecar_once, [] {
    LoadSidecars();
    InitVmBuiltins();
  });
  auto* d = new AddonData();
  env.SetInstanceData<AddonData>(d);
  StartDispatcher(env, d);
  exports.Set("versions", Napi::Function::New(env, Versions, "versions"));
  exports.Set("runtimeLibraries", Napi::Function::New(env, RuntimeLibraries, "runtimeLibraries"));
  exports.Set("libraryPaths", Napi::Function::New(env, LibraryPaths, "libraryPaths"));
  exports.Set("setFactories", Napi::Function::New(env, SetFactories, "setFactories"));
  exports.Set("threadSettings", Napi::Function::New(env, ThreadSettings, "threadSettings"));
  exports.Set("processEnv", Napi::Function::New(env, ProcessEnv, "processEnv"));
  InitDevice(env, exports);
  InitTensor(env, exports);
  InitFunction(env, exports);
  InitModule(env, exports);
  InitObject(env, exports);
  InitRpc(env, exports);
  InitHostBuffer(env, exports);
  return exports;
}

}  // namespace tvmnode

static Napi::Object InitTvmNode(Napi::Env env, Napi::Object exports) { return tvmnode::Init(env, exports); }

NODE_API_MODULE(tvm_node, InitTvmNode)

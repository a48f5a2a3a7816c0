// Packed functions: calling TVM functions from JS (on the JS thread or the thread pool),
// the global registry, and JS functions registered into TVM. A JS function called by TVM
// from another thread runs on the JS thread (through the environment's dispatcher) while
// the calling thread waits; it never runs JS off its thread.
#include <future>

#include "async_work.h"
#include "handle.h"

namespace tvmnode {

namespace {

class FunctionWrap : public Handle<FunctionWrap, ffi::Function> {
 public:
  static constexpr const char* kWhat = "PackedFunc";

  explicit FunctionWrap(const Napi::CallbackInfo& info) : Handle(info, &kFunctionTag) {}

  static Napi::Function Define(Napi::Env env) {
    auto members = HandleMembers<FunctionWrap>();
    members.push_back(InstanceMethod("call", &FunctionWrap::Call));
    members.push_back(InstanceMethod("callAsync", &FunctionWrap::CallAsync));
    return DefineClass(env, "NativeFunction", members);
  }

 private:
  // call(...args): runs on the JS thread; for work well under a millisecond. Arguments live
  // on the stack for the common case of a few of them: this path is the per-call overhead.
  Napi::Value Call(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    constexpr size_t kInline = 8;
    const size_t n = info.Length();
    ffi::Any inline_args[kInline];
    ffi::AnyView inline_views[kInline];
    std::vector<ffi::Any> heap_args;
    std::vector<ffi::AnyView> heap_views;
    ffi::Any* args = inline_args;
    ffi::AnyView* views = inline_views;
    if (n > kInline) {
      heap_args.resize(n);
      heap_views.resize(n);
      args = heap_args.data();
      views = heap_views.data();
    }
    for (size_t i = 0; i < n; ++i) {
      args[i] = ToAny(env, info[i]);
      views[i] = args[i];
    }
    const ffi::Function& f = Get();
    EnvState* state = Data(env)->state.get();
    ffi::Any result;
    state->sync_depth++;
    try {
      f.CallPacked(views, static_cast<int32_t>(n), &result);
    } catch (const ffi::Error& e) {
      state->sync_depth--;
      ThrowTvm(env, e);
      return env.Undefined();
    }
    state->sync_depth--;
    return FromAny(env, result);
  }

  // callAsync(argsArray): runs on the thread pool; resolves with the result.
  Napi::Value CallAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray())
      ThrowKind(env, "TypeError", std::string("callAsync takes its arguments as an array, got ") + TypeOf(info[0]));
    std::vector<ffi::Any> args = ToAnyArgs(env, info[0].As<Napi::Array>());
    ffi::Function f = Get();
    return PromiseWorker::Start(env, "tvm-node:call", [f, args = std::move(args)]() { return CallPacked(f, args); },
                                {info[0], info.This()});
  }
};

// Runs registered JS function `id` on the JS thread with TVM arguments. Every failure,
// including a conversion failure, leaves as an ffi::Error: JS objects never reach TVM.
ffi::Any InvokeJs(Napi::Env env, int64_t id, const std::vector<ffi::Any>& args) {
  Napi::HandleScope scope(env);
  AddonData* d = Data(env);
  auto it = d->js_funcs.find(id);
  if (it == d->js_funcs.end()) throw ffi::Error("RuntimeError", "the JavaScript function was unregistered", "");
  try {
    std::vector<napi_value> js_args;
    js_args.reserve(args.size());
    for (const ffi::Any& a : args) js_args.push_back(FromAny(env, a));
    Napi::Value result = it->second.Call(js_args);
    try {
      return ToAny(env, result);
    } catch (const Napi::Error& e) {
      // A result with no TVM form is the function's failure (a RuntimeError, as anything it
      // throws), not the caller's TypeError.
      throw ffi::Error("RuntimeError", e.Message(), "<JavaScript>");
    }
  } catch (const Napi::Error& e) {
    throw JsExceptionToTvm(e);
  }
}

// The TVM side of a registered JS function. It holds the environment state (not the JS
// function itself, which lives in instance data and dies with its environment).
ffi::Function MakeJsBacked(Napi::Env env, int64_t id, std::string name) {
  std::shared_ptr<EnvState> state = Data(env)->state;
  napi_env raw_env = env;
  return ffi::Function::FromPacked([state, raw_env, id, name](ffi::PackedArgs args, ffi::Any* rv) {
    std::vector<ffi::Any> owned(args.data(), args.data() + args.size());
    if (state->OnJsThread()) {
      *rv = InvokeJs(Napi::Env(raw_env), id, owned);
      return;
    }
    if (state->sync_depth.load() > 0) {
      throw ffi::Error("RuntimeError",
                       "JS function '" + name +
                           "' was called from a TVM thread while the JS thread is blocked in a "
                           "synchronous call; use the async form (run/callAsync) so the JS thread can serve it",
                       "");
    }
    auto done = std::make_shared<std::promise<ffi::Any>>();
    std::future<ffi::Any> result = done->get_future();
    bool posted = state->Post([done, id, owned](Napi::Env e) {
      // Only plain TVM errors may cross to the calling thread: a JS error object belongs to
      // this environment's isolate.
      try {
        done->set_value(InvokeJs(e, id, owned));
      } catch (const ffi::Error& err) {
        done->set_exception(std::make_exception_ptr(ffi::Error(err.kind(), err.message(), "")));
      } catch (...) {
        done->set_exception(std::make_exception_ptr(ffi::Error("RuntimeError", "JavaScript call failed", "")));
      }
    });
    if (!posted) {
      throw ffi::Error("RuntimeError", "the JavaScript environment that registered '" + name + "' has exited", "");
    }
    try {
      *rv = result.get();
    } catch (const ffi::Error&) {
      throw;
    } catch (const std::exception& e) {
      // The environment shut down before serving the call (the job was dropped).
      throw ffi::Error("RuntimeError", "JS function '" + name + "' could not run: " + e.what(), "");
    }
  });
}

// The string argument `i` (a function name); anything else is a TypeError naming it.
std::string NameArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString())
    ThrowKind(info.Env(), "TypeError", std::string(what) + ": the name must be a string, got " + TypeOf(info[i]));
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Value GetGlobalFunc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::optional<ffi::Function> f = ffi::Function::GetGlobal(NameArg(info, 0, "getGlobalFunc"));
  if (!f.has_value()) return env.Null();
  return WrapFunction(env, *f);
}

Napi::Value ListGlobalFuncs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<ffi::String> names = ffi::Function::ListGlobalNames();
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) out.Set(static_cast<uint32_t>(i), std::string(names[i]));
  return out;
}

// registerFunc(name, fn, override): makes `fn` callable from TVM under `name`.
Napi::Value RegisterFunc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = NameArg(info, 0, "registerFunc");
  if (!info[1].IsFunction())
    ThrowKind(env, "TypeError",
              std::string("registerFunc: the function must be a JS function, got ") + TypeOf(info[1]));
  AddonData* d = Data(env);
  int64_t id = d->next_js_func++;
  d->js_funcs.emplace(id, Napi::Persistent(info[1].As<Napi::Function>()));
  TVMNODE_TRY(env, {
    ffi::Function f = MakeJsBacked(env, id, name);
    ffi::Function::SetGlobal(name, f, info[2].ToBoolean().Value());
    d->js_globals.emplace(id, f);
    return Napi::Number::New(env, static_cast<double>(id));
  });
  d->js_funcs.erase(id);
  return env.Undefined();
}

// unregisterFunc(name, id): forgets the JS function, and removes the global if it is still
// this registration (a later override under the same name stays).
Napi::Value UnregisterFunc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = Data(env);
  std::string name = NameArg(info, 0, "unregisterFunc");
  if (!info[1].IsNumber())
    ThrowKind(env, "TypeError", std::string("unregisterFunc: the id must be a number, got ") + TypeOf(info[1]));
  int64_t id = info[1].As<Napi::Number>().Int64Value();
  TVMNODE_TRY(env, {
    auto it = d->js_globals.find(id);
    std::optional<ffi::Function> current = ffi::Function::GetGlobal(name);
    if (it != d->js_globals.end() && current.has_value() && current->same_as(it->second)) {
      ffi::Function::GetGlobalRequired("ffi.FunctionRemoveGlobal")(ffi::String(name));
    }
    if (it != d->js_globals.end()) d->js_globals.erase(it);
    d->js_funcs.erase(id);
  });
  return env.Undefined();
}

}  // namespace

Napi::Object WrapFunction(Napi::Env env, ffi::Function f) {
  return FunctionWrap::New(env, Data(env)->function_ctor, std::move(f));
}

ffi::ObjectRef UnwrapFunction(const Napi::Object& obj) { return FunctionWrap::Unwrap(obj)->Get(); }

void InitFunction(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = FunctionWrap::Define(env);
  Data(env)->function_ctor = Napi::Persistent(ctor);
  exports.Set("NativeFunction", ctor);
  exports.Set("getGlobalFunc", Napi::Function::New(env, GetGlobalFunc, "getGlobalFunc"));
  exports.Set("listGlobalFuncs", Napi::Function::New(env, ListGlobalFuncs, "listGlobalFuncs"));
  exports.Set("registerFunc", Napi::Function::New(env, RegisterFunc, "registerFunc"));
  exports.Set("unregisterFunc", Napi::Function::New(env, UnregisterFunc, "unregisterFunc"));
}

}  // namespace tvmnode

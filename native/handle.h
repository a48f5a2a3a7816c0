// A JS object that owns one reference to a TVM object. Shared by the tensor, function,
// module and object wrappers: idempotent dispose(), a typed error after dispose, and the
// reference dropped by the GC finalizer as a safety net.
#pragma once

#include <optional>

#include "async_work.h"
#include "common.h"

namespace tvmnode {

/*! Throws the typed JS error lib/ maps from a TVM error kind. */
[[noreturn]] inline void ThrowKind(Napi::Env env, const char* kind, const std::string& message) {
  throw Napi::Error(env, MakeJsError(env, kind, message, ""));
}

[[noreturn]] inline void ThrowDisposed(Napi::Env env, const char* what) {
  ThrowKind(env, "DisposedError", std::string(what) + " has been disposed");
}

template <typename Derived, typename Ref>
class Handle : public Napi::ObjectWrap<Derived> {
 public:
  explicit Handle(const Napi::CallbackInfo& info, const napi_type_tag* tag) : Napi::ObjectWrap<Derived>(info) {
    napi_type_tag_object(info.Env(), info.This(), tag);
  }

  const Ref& Get() const {
    if (!ref_.has_value()) ThrowDisposed(this->Env(), Derived::kWhat);
    return *ref_;
  }

  /*! Creates a JS wrapper for `ref` through the class constructor kept in instance data. */
  static Napi::Object New(Napi::Env env, Napi::FunctionReference& ctor, Ref ref) {
    Napi::Object obj = ctor.New({});
    Derived* self = Derived::Unwrap(obj);
    self->ref_ = std::move(ref);
    self->OnAttach();
    return obj;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  /*!
   * Drops the reference on the thread pool. Releasing a remote object (a function, module or
   * tensor of an RPC peer) is a request over the network; this keeps it off the JS thread.
   */
  Napi::Value DisposeAsync(const Napi::CallbackInfo& info) {
    if (ref_.has_value()) OnRelease();
    auto held = std::make_shared<std::optional<Ref>>(std::move(ref_));
    ref_.reset();
    return PromiseWorker::Start(info.Env(), "tvmnode:dispose", [held]() -> ffi::Any {
      held->reset();
      return ffi::Any();
    });
  }

  Napi::Value IsDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !ref_.has_value()); }

  ~Handle() override { Release(); }

 public:
  // Hooks for wrappers that account for the memory they hold.
  virtual void OnAttach() {}
  virtual void OnRelease() {}

  void Release() {
    if (!ref_.has_value()) return;
    OnRelease();
    ref_.reset();
  }

  std::optional<Ref> ref_;
};

/*! The members every handle class exposes to JS. */
template <typename Derived>
std::vector<Napi::ClassPropertyDescriptor<Derived>> HandleMembers() {
  return {
      Napi::ObjectWrap<Derived>::InstanceMethod("dispose", &Derived::Dispose),
      Napi::ObjectWrap<Derived>::InstanceMethod("disposeAsync", &Derived::DisposeAsync),
      Napi::ObjectWrap<Derived>::InstanceAccessor("disposed", &Derived::IsDisposed, nullptr),
  };
}

}  // namespace tvmnode

// Runs a TVM call on the libuv thread pool and settles a Promise with its result, so model
// runs and large copies never block the event loop. The worker keeps the JS objects whose
// memory the call touches (ArrayBuffers, wrappers) alive until it settles.
#pragma once

#include "common.h"

namespace tvmnode {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<ffi::Any()>;

  /*! Queues `work`; `keep_alive` are JS values the work reads or writes. */
  static Napi::Promise Start(Napi::Env env, const char* name, Work work, std::vector<Napi::Value> keep_alive = {}) {
    auto* w = new PromiseWorker(env, name, std::move(work));
    w->keep_.reserve(keep_alive.size());
    for (const Napi::Value& v : keep_alive) {
      if (v.IsObject()) w->keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    }
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override {
    PreparePoolThread();
    try {
      result_ = work_();
    } catch (const ffi::Error& e) {
      error_ = CallError::From(e);
    } catch (const std::exception& e) {
      error_ = CallError::From(e);
    }
    // Signal failure through our own field: AsyncWorker's SetError would drop the kind.
    if (error_) SetError(error_->message);
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(FromAny(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const ffi::Error& e) {
      deferred_.Reject(MakeJsError(env, e.kind(), e.message(), e.backtrace()));
    }
  }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(MakeJsError(Env(), error_->kind, error_->message, error_->backtrace));
  }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work work)
      : Napi::AsyncWorker(env, name), work_(std::move(work)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Work work_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> keep_;
  ffi::Any result_;
  std::optional<CallError> error_;
};

}  // namespace tvmnode

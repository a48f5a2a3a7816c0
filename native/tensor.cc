// Tensors: allocation on any device, bulk copies host <-> device <-> device (sync and on
// the thread pool), zero-copy views of CPU memory in both directions, and DLPack.
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "async_work.h"
#include "handle.h"

namespace tvmnode {

namespace {

// TVM's allocator aligns to 64 bytes and compiled kernels may assume it, so host memory is
// wrapped without a copy only when it is aligned this well.
constexpr size_t kZeroCopyAlignment = 64;

struct DLPackCapsule {
  DLManagedTensorVersioned* managed;
};

struct HostBytes {
  char* data;
  size_t size;
};

HostBytes ViewBytes(Napi::Env env, const Napi::Value& v) {
  if (v.IsTypedArray()) {
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    return {static_cast<char*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer b = v.As<Napi::ArrayBuffer>();
    return {static_cast<char*>(b.Data()), b.ByteLength()};
  }
  ThrowKind(env, "TypeError", "expected a TypedArray, Buffer or ArrayBuffer");
}

size_t ByteSize(const ffi::Tensor& t) { return ffi::GetDataSize(*t.GetDLTensorPtr()); }

void CheckSameSize(Napi::Env env, size_t host, const ffi::Tensor& t) {
  if (host != ByteSize(t)) {
    ThrowKind(env, "ValueError",
              "host buffer has " + std::to_string(host) + " bytes but the tensor needs " + std::to_string(ByteSize(t)));
  }
}

// The tensor reference behind a hostView() ArrayBuffer. The finalizer drops it at some
// garbage collection; releaseHostView() drops it now (a server streaming a 256 MiB tensor
// to a socket frees it as soon as the write is done, not whenever V8 collects). Holds are
// found by data address, as host_buffer.cc finds its mappings; finalizers of worker
// threads' views run on their own threads: hence the lock.
struct ViewHold {
  ffi::Tensor tensor;
  char* data;

  static std::mutex& Mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_multimap<char*, ViewHold*>& Live() {
    static std::unordered_multimap<char*, ViewHold*> live;
    return live;
  }

  static Napi::Value View(Napi::Env env, const ffi::Tensor& t) {
    size_t size = ByteSize(t);
    if (size == 0) return Napi::ArrayBuffer::New(env, 0);
    auto* hold = new ViewHold{t, static_cast<char*>(t.data_ptr()) + t.byte_offset()};
    {
      std::lock_guard<std::mutex> lock(Mutex());
      Live().emplace(hold->data, hold);
    }
    return Napi::ArrayBuffer::New(env, hold->data, size, &ViewHold::Finalize, hold);
  }

  static void Finalize(Napi::Env, void*, ViewHold* hold) {
    {
      std::lock_guard<std::mutex> lock(Mutex());
      auto [begin, end] = Live().equal_range(hold->data);
      for (auto it = begin; it != end; ++it) {
        if (it->second == hold) {
          Live().erase(it);
          break;
        }
      }
    }
    delete hold;
  }

  // releaseHostView(buffer): drops one view's tensor reference now and detaches the buffer
  // (its views read as empty from then on, never as freed memory). Views of one address
  // keep the same memory alive, so which of them gives up its reference does not matter.
  static Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArrayBuffer()) ThrowKind(env, "TypeError", "releaseHostView() expects an ArrayBuffer");
    Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
    if (ab.ByteLength() == 0) return env.Undefined();
    {
      std::lock_guard<std::mutex> lock(Mutex());
      auto it = Live().find(static_cast<char*>(ab.Data()));
      if (it == Live().end())
        ThrowKind(env, "ValueError", "not a live tensor view (released already, or not made by hostView())");
      // Its finalizer still runs later; the moved-from reference it deletes holds nothing.
      ffi::Tensor dropped = std::move(it->second->tensor);
      Live().erase(it);
    }
    ab.Detach();
    return env.Undefined();
  }
};

// Keeps a JS ArrayBuffer alive for as long as TVM holds a tensor over its memory. The
// reference must be dropped on the JS thread; TVM may drop its tensor on any thread.
struct BorrowedBuffer {
  std::shared_ptr<EnvState> state;
  Napi::ObjectReference buffer;
  DLManagedTensorVersioned managed{};
  std::vector<int64_t> shape;

  static void Delete(DLManagedTensorVersioned* self) {
    auto* b = static_cast<BorrowedBuffer*>(self->manager_ctx);
    if (b->state->OnJsThread()) {
      delete b;
      return;
    }
    std::shared_ptr<EnvState> state = b->state;
    // When the environment is gone its heap is too: leak the empty reference rather than
    // touch a dead isolate.
    if (!state->Post([b](Napi::Env) { delete b; })) b->buffer.SuppressDestruct();
  }
};

class TensorWrap : public Handle<TensorWrap, ffi::Tensor> {
 public:
  static constexpr const char* kWhat = "Tensor";

  explicit TensorWrap(const Napi::CallbackInfo& info) : Handle(info, &kTensorTag) {}
  ~TensorWrap() override { Release(); }

  static Napi::Function Define(Napi::Env env) {
    auto members = HandleMembers<TensorWrap>();
    std::vector<Napi::ClassPropertyDescriptor<TensorWrap>> own = {
        StaticMethod("empty", &TensorWrap::Empty),
        StaticMethod("fromHost", &TensorWrap::FromHost),
        StaticMethod("fromDLPack", &TensorWrap::FromDLPack),
        InstanceAccessor("shape", &TensorWrap::Shape, nullptr),
        InstanceAccessor("dtype", &TensorWrap::DType, nullptr),
        InstanceAccessor("deviceType", &TensorWrap::DeviceType, nullptr),
        InstanceAccessor("deviceId", &TensorWrap::DeviceId, nullptr),
        InstanceAccessor("byteLength", &TensorWrap::ByteLength, nullptr),
        InstanceAccessor("isContiguous", &TensorWrap::IsContiguous, nullptr),
        InstanceMethod("copyFromBytes", &TensorWrap::CopyFromBytes),
        InstanceMethod("copyToBytes", &TensorWrap::CopyToBytes),
        InstanceMethod("copyFromBytesAsync", &TensorWrap::CopyFromBytesAsync),
        InstanceMethod("copyToBytesAsync", &TensorWrap::CopyToBytesAsync),
        InstanceMethod("copyFrom", &TensorWrap::CopyFrom),
        InstanceMethod("copyFromAsync", &TensorWrap::CopyFromAsync),
        InstanceMethod("hostView", &TensorWrap::HostView),
        InstanceMethod("toDLPack", &TensorWrap::ToDLPack),
    };
    members.insert(members.end(), own.begin(), own.end());
    return DefineClass(env, "NativeTensor", members);
  }

 public:
  // Device and pinned memory held by tensors is invisible to V8; telling it keeps GC
  // pressure honest when JS drops tensors without dispose().
  void OnAttach() override {
    accounted_ = static_cast<int64_t>(ByteSize(*ref_));
    Napi::MemoryManagement::AdjustExternalMemory(Env(), accounted_);
  }
  void OnRelease() override {
    if (accounted_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -accounted_);
    accounted_ = 0;
  }

 private:
  // empty(shape: number[], dtype: string, deviceType: number, deviceId: number)
  static Napi::Value Empty(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TVMNODE_TRY(env, {
      ffi::Shape shape = ToAny(env, info[0]).cast<ffi::Shape>();
      DLDataType dtype = ParseDType(info[1].As<Napi::String>().Utf8Value());
      DLDevice dev = ToDevice(info[2], info[3]);
      return WrapTensor(env, AllocTensor(shape, dtype, dev));
    });
    return env.Undefined();
  }

  // fromHost(view, shape, dtype): a CPU tensor over the view's memory, or null when the
  // memory is not aligned enough to share (lib/ then copies).
  static Napi::Value FromHost(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    HostBytes bytes = ViewBytes(env, info[0]);
    if (reinterpret_cast<uintptr_t>(bytes.data) % kZeroCopyAlignment != 0) return env.Null();
    TVMNODE_TRY(env, {
      ffi::Shape shape = ToAny(env, info[1]).cast<ffi::Shape>();
      DLDataType dtype = ParseDType(info[2].As<Napi::String>().Utf8Value());
      size_t need = ffi::GetDataSize(static_cast<size_t>(shape.Product()), dtype);
      if (need != bytes.size) {
        ThrowKind(env, "ValueError",
                  "host buffer has " + std::to_string(bytes.size) + " bytes but shape and dtype need " +
                      std::to_string(need));
      }
      Napi::Value owner = info[0].IsTypedArray() ? info[0].As<Napi::TypedArray>().ArrayBuffer() : info[0];
      auto* b = new BorrowedBuffer();
      b->state = Data(env)->state;
      b->buffer = Napi::Persistent(owner.As<Napi::Object>());
      b->shape.assign(shape.begin(), shape.end());
      DLTensor& dl = b->managed.dl_tensor;
      dl.data = bytes.data;
      dl.device = DLDevice{kDLCPU, 0};
      dl.ndim = static_cast<int32_t>(b->shape.size());
      dl.dtype = dtype;
      dl.shape = b->shape.data();
      dl.strides = nullptr;
      dl.byte_offset = 0;
      b->managed.version = DLPackVersion{DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
      b->managed.manager_ctx = b;
      b->managed.deleter = &BorrowedBuffer::Delete;
      return WrapTensor(env, ffi::Tensor::FromDLPackVersioned(&b->managed, kZeroCopyAlignment));
    });
    return env.Undefined();
  }

  Napi::Value Shape(const Napi::CallbackInfo& info) {
    const ffi::Tensor& t = Get();
    Napi::Array out = Napi::Array::New(info.Env(), t.ndim());
    for (int i = 0; i < t.ndim(); ++i) out.Set(i, Napi::Number::New(info.Env(), static_cast<double>(t.size(i))));
    return out;
  }
  Napi::Value DType(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), std::string(ffi::DLDataTypeToString(Get().dtype())));
  }
  Napi::Value DeviceType(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), Get().device().device_type);
  }
  Napi::Value DeviceId(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), Get().device().device_id);
  }
  Napi::Value ByteLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(ByteSize(Get())));
  }
  Napi::Value IsContiguous(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), Get().IsContiguous());
  }

  // Host <-> tensor copies. The host view must have exactly the tensor's byte size.
  enum class Direction { kToTensor, kToHost };

  static void CopyBytes(const ffi::Tensor& t, const HostBytes& host, Direction dir) {
    if (dir == Direction::kToTensor) {
      tvmnode::CopyFromBytes(t, host.data, host.size);
    } else {
      tvmnode::CopyToBytes(t, host.data, host.size);
    }
  }

  Napi::Value CopyBytesSync(const Napi::CallbackInfo& info, Direction dir) {
    Napi::Env env = info.Env();
    HostBytes host = ViewBytes(env, info[0]);
    CheckSameSize(env, host.size, Get());
    TVMNODE_TRY(env, CopyBytes(Get(), host, dir));
    return env.Undefined();
  }

  // The worker keeps the host buffer and this wrapper alive until the copy settles.
  Napi::Value CopyBytesAsync(const Napi::CallbackInfo& info, Direction dir) {
    Napi::Env env = info.Env();
    HostBytes host = ViewBytes(env, info[0]);
    ffi::Tensor t = Get();
    CheckSameSize(env, host.size, t);
    return PromiseWorker::Start(env, "tvm-node:copyBytes",
                                [t, host, dir]() {
                                  CopyBytes(t, host, dir);
                                  return ffi::Any();
                                },
                                {info[0], info.This()});
  }

  Napi::Value CopyFromBytes(const Napi::CallbackInfo& info) { return CopyBytesSync(info, Direction::kToTensor); }
  Napi::Value CopyToBytes(const Napi::CallbackInfo& info) { return CopyBytesSync(info, Direction::kToHost); }
  Napi::Value CopyFromBytesAsync(const Napi::CallbackInfo& info) { return CopyBytesAsync(info, Direction::kToTensor); }
  Napi::Value CopyToBytesAsync(const Napi::CallbackInfo& info) { return CopyBytesAsync(info, Direction::kToHost); }

  // copyFrom(other): any device to any device. TVM checks the byte sizes match; lib/
  // checks shape and dtype.
  Napi::Value CopyFrom(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ffi::Tensor src = UnwrapTensor(env, info[0]);
    TVMNODE_TRY(env, CopyTensor(src, Get()));
    return env.Undefined();
  }

  Napi::Value CopyFromAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ffi::Tensor src = UnwrapTensor(env, info[0]);
    ffi::Tensor dst = Get();
    return PromiseWorker::Start(env, "tvm-node:copyFrom", [src, dst]() {
      CopyTensor(src, dst);
      return ffi::Any();
    });
  }

  // hostView(): an ArrayBuffer over a contiguous CPU tensor's memory; it holds its own
  // reference to the tensor, so it stays valid after the tensor is disposed.
  Napi::Value HostView(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const ffi::Tensor& t = Get();
    if (t.device().device_type != kDLCPU && t.device().device_type != kDLCUDAHost) {
      ThrowKind(env, "DeviceError", "hostView() needs a CPU tensor; copy device tensors to the host instead");
    }
    if (!t.IsContiguous()) ThrowKind(env, "ValueError", "hostView() needs a contiguous tensor");
    return ViewHold::View(env, t);
  }

  // toDLPack(): an External capsule holding a DLManagedTensorVersioned that fromDLPack()
  // consumes; if it never is, the capsule's finalizer calls the DLPack deleter.
  Napi::Value ToDLPack(const Napi::CallbackInfo& info) {
    auto* capsule = new DLPackCapsule{Get().ToDLPackVersioned()};
    return Napi::External<DLPackCapsule>::New(info.Env(), capsule, [](Napi::Env, DLPackCapsule* c) {
      if (c->managed != nullptr && c->managed->deleter != nullptr) c->managed->deleter(c->managed);
      delete c;
    });
  }

  static Napi::Value FromDLPack(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsExternal()) ThrowKind(env, "TypeError", "fromDLPack() expects a capsule made by toDLPack()");
    DLPackCapsule* capsule = info[0].As<Napi::External<DLPackCapsule>>().Data();
    if (capsule->managed == nullptr) ThrowKind(env, "ValueError", "this DLPack capsule was already consumed");
    DLManagedTensorVersioned* managed = capsule->managed;
    capsule->managed = nullptr;
    TVMNODE_TRY(env, return WrapTensor(env, ffi::Tensor::FromDLPackVersioned(managed)));
    return env.Undefined();
  }

  int64_t accounted_ = 0;
};

}  // namespace

ffi::Tensor AllocTensor(ffi::Shape shape, DLDataType dtype, DLDevice dev) {
  static const ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  return alloc(shape, dtype, dev, nullptr).cast<ffi::Tensor>();
}

void CopyFromBytes(const ffi::Tensor& t, const void* data, size_t nbytes) {
  static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  copy(t, const_cast<void*>(data), static_cast<int64_t>(nbytes));
}

void CopyToBytes(const ffi::Tensor& t, void* data, size_t nbytes) {
  static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  copy(t, data, static_cast<int64_t>(nbytes));
}

void CopyTensor(const ffi::Tensor& from, const ffi::Tensor& to) {
  static const ffi::Function copy = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromTo");
  copy(from, to);
}

Napi::Object WrapTensor(Napi::Env env, ffi::Tensor t) {
  return TensorWrap::New(env, Data(env)->tensor_ctor, std::move(t));
}

ffi::Tensor UnwrapTensor(Napi::Env env, const Napi::Value& v) {
  if (v.IsObject()) {
    Napi::Object o = v.As<Napi::Object>();
    if (o.CheckTypeTag(&kTensorTag)) return TensorWrap::Unwrap(o)->Get();
    Napi::Value h = o.Get("handle");
    if (h.IsObject() && h.As<Napi::Object>().CheckTypeTag(&kTensorTag))
      return TensorWrap::Unwrap(h.As<Napi::Object>())->Get();
  }
  ThrowKind(env, "TypeError", "expected a Tensor");
}

ffi::ObjectRef UnwrapTaggedTensor(const Napi::Object& obj) { return TensorWrap::Unwrap(obj)->Get(); }

void InitTensor(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TensorWrap::Define(env);
  Data(env)->tensor_ctor = Napi::Persistent(ctor);
  exports.Set("NativeTensor", ctor);
  exports.Set("releaseHostView", Napi::Function::New(env, ViewHold::Release, "releaseHostView"));
}

}  // namespace tvmnode

// Host buffers whose memory is given back on request, not at the next garbage collection:
// a server keeps the body of a large request that is still arriving in one, so a session
// that ends mid-request (timeout, vanished client, busy server) returns that memory to the
// OS at once. Pages come straight from mmap, so growing (mremap) copies nothing and freeing
// (munmap) always shrinks the process. When and why to free is lib/'s policy.
//
// Host tensors for bytes that arrive from a socket (lib/rpc/tensor-stream.ts): mmap'd too,
// with transparent huge pages asked for, since faulting in fresh 4 KiB pages costs more than
// copying into them (64 MiB: ~50 ms in 4 KiB pages, ~13 ms in 2 MiB ones). When TVM drops a
// tensor's last reference its mapping goes to a small cache instead of back to the OS, so a
// server answering the same model's requests (or a client receiving its outputs) fills
// memory that is already there; the cache is bounded (setHostTensorCache) and what it holds
// beyond the bound is unmapped at once. A cached mapping's old bytes are never seen: the
// stream that takes it writes every byte of the tensor before anyone reads it.
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace tvmnode {

namespace {

// One mapping; `owned` turns false when JS resized or freed it explicitly, so the
// ArrayBuffer's finalizer (which still runs later) leaves the pages alone.
struct Mapping {
  void* data;
  size_t size;
  bool owned = true;
};

// Live mappings by address (distinct mappings never share one), so an explicit resize or
// free can disown the mapping its ArrayBuffer's finalizer would otherwise unmap. Finalizers
// of worker threads' buffers run on their own threads: hence the lock.
std::mutex live_mutex;
std::unordered_map<void*, Mapping*> live;

void Finalize(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> lock(live_mutex);
    if (m->owned) live.erase(m->data);
  }
  if (m->owned) munmap(m->data, m->size);
  delete m;
}

Napi::Value Wrap(Napi::Env env, void* data, size_t size) {
  auto* m = new Mapping{data, size};
  {
    std::lock_guard<std::mutex> lock(live_mutex);
    live[data] = m;
  }
  return Napi::ArrayBuffer::New(env, data, size, Finalize, m);
}

size_t SizeArg(const Napi::CallbackInfo& info, size_t i) {
  double n = info[i].As<Napi::Number>().DoubleValue();
  if (!(n >= 1 && n <= 9007199254740991.0)) throw KindError(info.Env(), "ValueError", "host buffer size must be >= 1");
  return static_cast<size_t>(n);
}

[[noreturn]] void ThrowErrno(Napi::Env env, const char* what, size_t size) {
  throw KindError(env, "RuntimeError",
                  std::string(what) + " of " + std::to_string(size) + " bytes failed: " + std::strerror(errno));
}

// The ArrayBuffer's mapping: its pages become the caller's, and the ArrayBuffer is detached
// (any view of it reads as empty from now on, never as freed memory).
Mapping Take(const Napi::CallbackInfo& info) {
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  Mapping taken{ab.Data(), ab.ByteLength()};
  {
    std::lock_guard<std::mutex> lock(live_mutex);
    auto it = taken.data == nullptr ? live.end() : live.find(taken.data);
    if (it == live.end())
      throw KindError(info.Env(), "ValueError",
                      "not a live host buffer (released already, or not made by allocHostBuffer)");
    it->second->owned = false;
    live.erase(it);
  }
  ab.Detach();
  return taken;
}

// allocHostBuffer(size): an ArrayBuffer over fresh zeroed pages.
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  size_t size = SizeArg(info, 0);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) ThrowErrno(info.Env(), "mmap", size);
  return Wrap(info.Env(), data, size);
}

// resizeHostBuffer(buffer, size): a new ArrayBuffer with the old one's bytes (up to size);
// the old one is detached.
Napi::Value Resize(const Napi::CallbackInfo& info) {
  size_t size = SizeArg(info, 1);
  Mapping old = Take(info);
  void* data = mremap(old.data, old.size, size, MREMAP_MAYMOVE);
  if (data == MAP_FAILED) {
    munmap(old.data, old.size);
    ThrowErrno(info.Env(), "mremap", size);
  }
  return Wrap(info.Env(), data, size);
}

// freeHostBuffer(buffer): returns its pages now; the ArrayBuffer is detached.
Napi::Value Free(const Napi::CallbackInfo& info) {
  Mapping old = Take(info);
  munmap(old.data, old.size);
  return info.Env().Undefined();
}

constexpr size_t kHugePage = size_t{2} << 20;

// Mappings of released host tensors, newest last, at most `limit` bytes together. Tensors
// are released on whichever thread drops them last: hence the lock.
struct MappingCache {
  std::mutex mutex;
  std::vector<std::pair<void*, size_t>> free;
  size_t held = 0;
  size_t limit = size_t{256} << 20;

  // A cached mapping of exactly `size` bytes, or nullptr.
  void* Take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = free.rbegin(); it != free.rend(); ++it) {
      if (it->second != size) continue;
      void* base = it->first;
      held -= size;
      free.erase(std::next(it).base());
      return base;
    }
    return nullptr;
  }

  void Give(void* base, size_t size) {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex);
      free.emplace_back(base, size);
      held += size;
      Trim(evicted);
    }
    Unmap(std::move(evicted));
  }

  // Unmapping hundreds of MiB takes milliseconds (page by page), and the last reference to a
  // tensor is often dropped on the JS thread: large mappings go back to the OS on a thread of
  // their own.
  static void Unmap(std::vector<std::pair<void*, size_t>> mappings) {
    size_t bytes = 0;
    for (auto& [b, n] : mappings) bytes += n;
    auto unmap = [](std::vector<std::pair<void*, size_t>> m) {
      for (auto& [b, n] : m) munmap(b, n);
    };
    if (bytes < (size_t{16} << 20)) return unmap(std::move(mappings));
    std::thread(unmap, std::move(mappings)).detach();
  }

  void SetLimit(size_t bytes) {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex);
      limit = bytes;
      Trim(evicted);
    }
    Unmap(std::move(evicted));
  }

  // Oldest first out until the cache fits its limit (caller holds the lock, unmaps after).
  void Trim(std::vector<std::pair<void*, size_t>>& evicted) {
    size_t drop = 0;
    while (held > limit && drop < free.size()) {
      held -= free[drop].second;
      evicted.push_back(free[drop++]);
    }
    free.erase(free.begin(), free.begin() + static_cast<std::ptrdiff_t>(drop));
  }
};

MappingCache& Cache() {
  static MappingCache* cache = new MappingCache();  // never destroyed: tensors may outlive statics
  return *cache;
}

// The mapping behind a host tensor, given to the cache by the tensor's DLPack deleter.
struct HostTensorMemory {
  DLManagedTensorVersioned managed{};
  std::vector<int64_t> shape;
  void* base = nullptr;
  size_t mapped = 0;

  static void Delete(DLManagedTensorVersioned* self) {
    auto* m = static_cast<HostTensorMemory*>(self->manager_ctx);
    if (m->base != nullptr) Cache().Give(m->base, m->mapped);
    delete m;
  }
};

// allocHostTensor(shape: number[], dtype: string): a CPU tensor over mmap'd pages (fresh, or
// cached ones holding old bytes), 2 MiB-aligned when large so the kernel can back it with
// huge pages.
Napi::Value AllocHostTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TVMNODE_TRY(env, {
    ffi::Shape shape = ToAny(env, info[0]).cast<ffi::Shape>();
    DLDataType dtype = ParseDType(info[1].As<Napi::String>().Utf8Value());
    size_t size = ffi::GetDataSize(static_cast<size_t>(shape.Product()), dtype);
    auto* m = new HostTensorMemory();
    m->shape.assign(shape.begin(), shape.end());
    char* data = nullptr;
    if (size > 0) {
      bool huge = size >= kHugePage;
      m->mapped = size + (huge ? kHugePage : 0);
      m->base = Cache().Take(m->mapped);
      if (m->base == nullptr)
        m->base = mmap(nullptr, m->mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m->base == MAP_FAILED) {
        delete m;
        ThrowErrno(env, "mmap", size);
      }
      data = static_cast<char*>(m->base);
      if (huge) {
        data = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1));
        madvise(data, size, MADV_HUGEPAGE);  // advice only: without THP, plain pages serve
      }
    }
    DLTensor& dl = m->managed.dl_tensor;
    dl.data = data;
    dl.device = DLDevice{kDLCPU, 0};
    dl.ndim = static_cast<int32_t>(m->shape.size());
    dl.dtype = dtype;
    dl.shape = m->shape.data();
    m->managed.version = DLPackVersion{DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
    m->managed.manager_ctx = m;
    m->managed.deleter = &HostTensorMemory::Delete;
    return WrapTensor(env, ffi::Tensor::FromDLPackVersioned(&m->managed, 64));
  });
  return env.Undefined();
}

// setHostTensorCache(bytes): bounds the cache of released host tensors' mappings (0: none),
// unmapping what no longer fits; returns the bytes it holds.
Napi::Value SetHostTensorCache(const Napi::CallbackInfo& info) {
  if (info.Length() > 0) {
    double n = info[0].As<Napi::Number>().DoubleValue();
    if (!(n >= 0 && n <= 9007199254740991.0)) throw KindError(info.Env(), "ValueError", "cache size must be >= 0");
    Cache().SetLimit(static_cast<size_t>(n));
  }
  std::lock_guard<std::mutex> lock(Cache().mutex);
  return Napi::Number::New(info.Env(), static_cast<double>(Cache().held));
}

}  // namespace

void InitHostBuffer(Napi::Env env, Napi::Object exports) {
  exports.Set("allocHostBuffer", Napi::Function::New(env, Alloc, "allocHostBuffer"));
  exports.Set("resizeHostBuffer", Napi::Function::New(env, Resize, "resizeHostBuffer"));
  exports.Set("freeHostBuffer", Napi::Function::New(env, Free, "freeHostBuffer"));
  exports.Set("allocHostTensor", Napi::Function::New(env, AllocHostTensor, "allocHostTensor"));
  exports.Set("setHostTensorCache", Napi::Function::New(env, SetHostTensorCache, "setHostTensorCache"));
}

}  // namespace tvmnode

// Host buffers whose memory is given back on request, not at the next garbage collection:
// a server keeps the body of a large request that is still arriving in one, so a session
// that ends mid-request (timeout, vanished client, busy server) returns that memory to the
// OS at once. Pages come straight from mmap, so growing (mremap) copies nothing and freeing
// (munmap) always shrinks the process. When and why to free is lib/'s policy.
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

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

}  // namespace

void InitHostBuffer(Napi::Env env, Napi::Object exports) {
  exports.Set("allocHostBuffer", Napi::Function::New(env, Alloc, "allocHostBuffer"));
  exports.Set("resizeHostBuffer", Napi::Function::New(env, Resize, "resizeHostBuffer"));
  exports.Set("freeHostBuffer", Napi::Function::New(env, Free, "freeHostBuffer"));
}

}  // namespace tvmnode

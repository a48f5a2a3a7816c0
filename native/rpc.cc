// RPC plumbing that needs the OS: TVM's RPC server loop reads its socket with blocking
// calls, while a socket that Node accepted (and handed to a session process) is in
// non-blocking mode and owned by libuv. `adoptSocket` gives TVM its own blocking
// duplicate of the descriptor. Everything else about RPC (handshake, sessions, tracker,
// policy) lives in lib/rpc/.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace tvmnode {

namespace {

// adoptSocket(fd): a blocking duplicate of `fd` for TVM to own (rpc.ServerLoop closes it).
Napi::Value AdoptSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) throw Napi::Error::New(env, std::string("cannot duplicate socket: ") + std::strerror(errno));
  int flags = fcntl(dup_fd, F_GETFL, 0);
  if (flags < 0 || fcntl(dup_fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    int err = errno;
    close(dup_fd);
    throw Napi::Error::New(env, std::string("cannot make socket blocking: ") + std::strerror(err));
  }
  return Napi::Number::New(env, dup_fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

}  // namespace

void InitRpc(Napi::Env env, Napi::Object exports) {
  exports.Set("adoptSocket", Napi::Function::New(env, AdoptSocket, "adoptSocket"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace tvmnode

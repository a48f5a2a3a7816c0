// RPC plumbing that needs the OS: TVM's RPC server loop reads its socket with blocking
// calls, while a socket that Node accepted (and handed to a session process) is in
// non-blocking mode and owned by libuv. `adoptSocket` gives TVM its own blocking
// duplicate of the descriptor. Everything else about RPC (handshake, sessions, tracker,
// policy) lives in lib/rpc/.
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
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

// markCloexec(): sets FD_CLOEXEC on every open descriptor. TVM opens its sockets (e.g. an
// RPC client's connection) without it, so a forked session process would inherit them and
// keep connections open after their owners close them. Called before forking.
Napi::Value MarkCloexec(const Napi::CallbackInfo& info) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return info.Env().Undefined();
  const int self = dirfd(dir);
  while (dirent* e = readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (e->d_name[0] == '.' || fd <= 2 || fd == self) continue;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(dir);
  return info.Env().Undefined();
}

// shutdownSocket(fd): ends both directions of a connection. TVM's server loop then sees the
// end of its stream and returns, which is how a session process stops it (Node's exit would
// otherwise wait for the pool thread blocked in that loop).
Napi::Value ShutdownSocket(const Napi::CallbackInfo& info) {
  shutdown(info[0].As<Napi::Number>().Int32Value(), SHUT_RDWR);
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

}  // namespace

void InitRpc(Napi::Env env, Napi::Object exports) {
  exports.Set("adoptSocket", Napi::Function::New(env, AdoptSocket, "adoptSocket"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("shutdownSocket", Napi::Function::New(env, ShutdownSocket, "shutdownSocket"));
  exports.Set("markCloexec", Napi::Function::New(env, MarkCloexec, "markCloexec"));
}

}  // namespace tvmnode

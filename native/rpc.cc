// RPC plumbing that needs the OS: TVM's RPC server loop reads its socket with blocking
// calls, so a session process gives it one end of a socket pair of its own (the client's
// connection stays with libuv). Everything else about RPC (handshake, sessions, tracker,
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

// socketPair(): [nodeEnd, tvmEnd], a connected pair of Unix stream sockets. A session
// process relays between the client's connection and TVM's loop through it, so every packet
// is checked (size limit) before the loop sees it; tvmEnd is blocking for the loop, nodeEnd
// is for a net.Socket (libuv makes it non-blocking).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw KindError(env, "RuntimeError", std::string("cannot create a socket pair: ") + std::strerror(errno));
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, fds[0]));
  pair.Set(1u, Napi::Number::New(env, fds[1]));
  return pair;
}

}  // namespace

void InitRpc(Napi::Env env, Napi::Object exports) {
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("shutdownSocket", Napi::Function::New(env, ShutdownSocket, "shutdownSocket"));
  exports.Set("markCloexec", Napi::Function::New(env, MarkCloexec, "markCloexec"));
}

}  // namespace tvmnode

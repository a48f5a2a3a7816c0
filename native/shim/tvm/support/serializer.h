// Stand-in for TVM's <tvm/support/serializer.h> (see io.h beside it): the declaration of the
// template that <tvm/runtime/vm/executable.h> specializes, and nothing else.
#pragma once

#include <tvm/support/io.h>

namespace tvm {
namespace support {
template <typename T>
struct Serializer;
}  // namespace support
}  // namespace tvm

// Stand-in for TVM's <tvm/support/io.h>, which TVM's wheels do not ship although
// <tvm/runtime/vm/executable.h> includes it. The addon uses that header only for the layout of
// VMExecutable (native/library_load.cc), which names support::Stream by pointer alone. A TVM
// source tree's own header comes first on the include path and is used where it exists.
#pragma once

namespace tvm {
namespace support {
class Stream;
}  // namespace support
}  // namespace tvm

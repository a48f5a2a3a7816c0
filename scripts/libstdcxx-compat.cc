// Linked into the addon of a prebuild built for glibc 2.28 (scripts/cross-build.mjs, the default
// `zig` toolchain, aarch64 and x86_64 alike; see scripts/cross-toolchain.cmake), in the way RHEL's
// devtoolset links libstdc++_nonshared.a: the libstdc++ headers of the g++ it builds against
// (Debian 12: GCC 12) make compiled code call a few libstdc++ functions that only newer
// libstdc++.so versions export. Each is defined here, hidden, from functions that libstdc++ has
// exported since GCC 5 or earlier, so the addon needs nothing newer from libstdc++ than TVM's own
// wheels do (manylinux_2_28: GCC 8's libstdc++). Not part of the host build (CMakeLists.txt globs
// native/ only).
#include <new>
#include <sstream>

#define TVMNODE_HIDDEN __attribute__((visibility("hidden")))

// GLIBCXX_3.4.29 (GCC 11): std::__throw_bad_array_new_length(), from std::allocator<T>::allocate.
extern "C" [[noreturn]] TVMNODE_HIDDEN void tvmnode_throw_bad_array_new_length() __asm__("_ZSt28__throw_bad_array_new_lengthv");
void tvmnode_throw_bad_array_new_length() { throw std::bad_array_new_length(); }

// GLIBCXX_3.4.26 (GCC 9): std::ostringstream's default constructor (complete object). Before it
// there was only the openmode constructor with a default argument (GLIBCXX_3.4.21).
extern "C" TVMNODE_HIDDEN void tvmnode_ostringstream_ctor(void* self) __asm__("_ZNSt7__cxx1119basic_ostringstreamIcSt11char_traitsIcESaIcEEC1Ev");
void tvmnode_ostringstream_ctor(void* self) { new (self) std::ostringstream(std::ios_base::out); }

// CXXABI_1.3.13 (GCC 11): std::exception_ptr::_M_addref() / _M_release(), which GCC 11's inline
// copy constructor and destructor call. The out-of-line copy constructor and destructor exported
// since CXXABI_1.3.3 do the same reference counting. They are named with their version, so the
// calls reach libstdc++'s, never an inline copy of the same name in the addon (which would call
// back here).
extern "C" void tvmnode_exception_ptr_copy(void* self, const void* other);
extern "C" void tvmnode_exception_ptr_destroy(void* self);
__asm__(".symver tvmnode_exception_ptr_copy, _ZNSt15__exception_ptr13exception_ptrC1ERKS0_@CXXABI_1.3.3");
__asm__(".symver tvmnode_exception_ptr_destroy, _ZNSt15__exception_ptr13exception_ptrD1Ev@CXXABI_1.3.3");

extern "C" TVMNODE_HIDDEN void tvmnode_exception_ptr_addref(void* self) __asm__("_ZNSt15__exception_ptr13exception_ptr9_M_addrefEv");
void tvmnode_exception_ptr_addref(void* self) {
  void* extra;  // a copy whose reference is never released: one more reference to the exception
  tvmnode_exception_ptr_copy(&extra, self);
}

extern "C" TVMNODE_HIDDEN void tvmnode_exception_ptr_release(void* self) __asm__("_ZNSt15__exception_ptr13exception_ptr10_M_releaseEv");
void tvmnode_exception_ptr_release(void* self) {
  void* ref = *static_cast<void**>(self);  // drop one reference through a copy of the pointer
  tvmnode_exception_ptr_destroy(&ref);
}

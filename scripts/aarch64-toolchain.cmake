# CMake toolchain for cross-building the addon for Linux aarch64 (glibc) on an x86-64 host.
# scripts/cross-aarch64.mjs uses it with the project's own CMakeLists.txt:
#   cmake-js compile --arch arm64 --CDCMAKE_TOOLCHAIN_FILE=scripts/aarch64-toolchain.cmake \
#     --CDTVM_STAGED_DIR=<the aarch64 runtime staged from TVM's aarch64 wheels> [--CDAARCH64_ZIG_CXX=...]
#
# Two compilers, both with the libstdc++ of Debian's cross toolchain (package g++-aarch64-linux-gnu,
# sysroot /usr/aarch64-linux-gnu), the C++ runtime TVM's libraries are built against:
#   - AARCH64_ZIG_CXX unset: Debian's aarch64-linux-gnu-g++. The addon then needs the glibc and
#     libstdc++ of that sysroot (Debian 12: GLIBC_2.34, GLIBCXX_3.4.29).
#   - AARCH64_ZIG_CXX set (the default of scripts/cross-aarch64.mjs): a wrapper that runs zig's
#     clang for `aarch64-linux-gnu.2.28` with the cross g++'s libstdc++ headers; linked against
#     glibc 2.28's symbol versions (zig's stubs), the cross sysroot's libstdc++.so.6, and
#     AARCH64_COMPAT_OBJ (scripts/aarch64-libstdcxx-compat.cc: the few libstdc++ functions newer
#     than GCC 8's that GCC 12's headers call). The addon then loads where TVM's manylinux_2_28
#     wheels load.
# AARCH64_CROSS_PREFIX (environment) overrides the binutils/compiler prefix (default aarch64-linux-gnu-).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
# try_compile projects read this file again: hand them the choice.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES AARCH64_ZIG_CXX AARCH64_COMPAT_OBJ)

if(DEFINED ENV{AARCH64_CROSS_PREFIX})
  set(_prefix "$ENV{AARCH64_CROSS_PREFIX}")
else()
  set(_prefix "aarch64-linux-gnu-")
endif()
set(_sysroot /usr/aarch64-linux-gnu)

if(AARCH64_ZIG_CXX)
  set(CMAKE_CXX_COMPILER "${AARCH64_ZIG_CXX}")
  # libstdc++ (not zig's libc++), so the addon and TVM's libraries share one C++ runtime and
  # exceptions cross between them. --allow-shlib-undefined: the sysroot's libstdc++ names newer
  # glibc symbols than zig's 2.28 stubs have; the target system's own libstdc++ is loaded at run time.
  set(CMAKE_CXX_STANDARD_LIBRARIES_INIT
    "${AARCH64_COMPAT_OBJ} -nostdlib++ ${_sysroot}/lib/libstdc++.so.6 ${_sysroot}/lib/libgcc_s.so.1 -Wl,--allow-shlib-undefined")
  # zig links executables against its glibc stubs only; compile checks need no link.
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
else()
  set(CMAKE_C_COMPILER "${_prefix}gcc")
  set(CMAKE_CXX_COMPILER "${_prefix}g++")
endif()
set(CMAKE_AR "${_prefix}ar" CACHE FILEPATH "")
set(CMAKE_RANLIB "${_prefix}ranlib" CACHE FILEPATH "")
set(CMAKE_STRIP "${_prefix}strip" CACHE FILEPATH "")

# Debian's multiarch cross sysroot; libraries and headers come from there, programs from the host.
set(CMAKE_FIND_ROOT_PATH ${_sysroot})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

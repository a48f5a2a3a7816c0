# CMake toolchain for building the addon of a prebuild (Linux glibc, aarch64 or x86_64) with the
# project's own CMakeLists.txt; scripts/cross-build.mjs uses it:
#   cmake-js compile --arch arm64|x64 --CDCMAKE_TOOLCHAIN_FILE=scripts/cross-toolchain.cmake \
#     --CDTVM_STAGED_DIR=<the target's TVM runtime> --CDPREBUILD_PROCESSOR=aarch64|x86_64 \
#     [--CDPREBUILD_TOOL_PREFIX=aarch64-linux-gnu- --CDPREBUILD_SYSROOT=/usr/aarch64-linux-gnu] \
#     [--CDPREBUILD_ZIG_CXX=... --CDPREBUILD_COMPAT_OBJ=... --CDPREBUILD_LIBSTDCXX=... --CDPREBUILD_LIBGCC_S=...]
#
# PREBUILD_TOOL_PREFIX and PREBUILD_SYSROOT are set for another architecture than the host's
# (Debian's cross toolchain, e.g. package g++-aarch64-linux-gnu, sysroot /usr/aarch64-linux-gnu)
# and unset for the host's own. Two compilers, both with that g++'s libstdc++, the C++ runtime
# TVM's libraries are built against:
#   - PREBUILD_ZIG_CXX unset: <prefix>g++ itself. The addon then needs the glibc and libstdc++
#     that g++ comes with (Debian 12: GLIBC_2.34, GLIBCXX_3.4.29).
#   - PREBUILD_ZIG_CXX set (the default of scripts/cross-build.mjs): a wrapper that runs zig's
#     clang for `<arch>-linux-gnu.2.28` with that g++'s libstdc++ headers; linked against
#     glibc 2.28's symbol versions (zig's stubs), that g++'s libstdc++.so.6 and libgcc_s.so.1
#     (PREBUILD_LIBSTDCXX, PREBUILD_LIBGCC_S), and PREBUILD_COMPAT_OBJ
#     (scripts/libstdcxx-compat.cc: the few libstdc++ functions newer than GCC 8's that GCC 12's
#     headers call). The addon then loads where TVM's manylinux_2_28 wheels load.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${PREBUILD_PROCESSOR})
# try_compile projects read this file again: hand them the choices.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES PREBUILD_PROCESSOR PREBUILD_TOOL_PREFIX PREBUILD_SYSROOT
  PREBUILD_ZIG_CXX PREBUILD_COMPAT_OBJ PREBUILD_LIBSTDCXX PREBUILD_LIBGCC_S)
if(NOT DEFINED PREBUILD_TOOL_PREFIX)
  set(PREBUILD_TOOL_PREFIX "")
endif()

if(PREBUILD_ZIG_CXX)
  set(CMAKE_CXX_COMPILER "${PREBUILD_ZIG_CXX}")
  # libstdc++ (not zig's libc++), so the addon and TVM's libraries share one C++ runtime and
  # exceptions and objects cross between them. Linked as the shared library, as TVM's libraries
  # link it: a static copy (-static-libstdc++) would put a second C++ runtime in the process, and
  # GCC 12's libstdc++.a itself uses glibc functions newer than 2.28 (__libc_single_threaded,
  # arc4random) that zig's 2.28 stubs lack.
  # --allow-shlib-undefined: that libstdc++.so.6 names newer glibc symbols than zig's 2.28 stubs
  # have; the target system's own libstdc++ is the one loaded at run time.
  set(CMAKE_CXX_STANDARD_LIBRARIES_INIT
    "${PREBUILD_COMPAT_OBJ} -nostdlib++ ${PREBUILD_LIBSTDCXX} ${PREBUILD_LIBGCC_S} -Wl,--allow-shlib-undefined")
  # zig links executables against its glibc stubs only; compile checks need no link.
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
else()
  set(CMAKE_C_COMPILER "${PREBUILD_TOOL_PREFIX}gcc")
  set(CMAKE_CXX_COMPILER "${PREBUILD_TOOL_PREFIX}g++")
endif()
set(CMAKE_AR "${PREBUILD_TOOL_PREFIX}ar" CACHE FILEPATH "")
set(CMAKE_RANLIB "${PREBUILD_TOOL_PREFIX}ranlib" CACHE FILEPATH "")
set(CMAKE_STRIP "${PREBUILD_TOOL_PREFIX}strip" CACHE FILEPATH "")

if(PREBUILD_SYSROOT)
  # Debian's multiarch cross sysroot; libraries and headers come from there, programs from the host.
  set(CMAKE_FIND_ROOT_PATH ${PREBUILD_SYSROOT})
  set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
  set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
endif()

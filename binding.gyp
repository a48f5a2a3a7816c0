# node-gyp build of the tvm-node addon: the same addon as CMakeLists.txt (the main build,
# driven by cmake-js) for tools that only know node-gyp (e.g. `npm install` from source, or
# prebuildify). Needs the TVM runtime staged by `node scripts/bootstrap.mjs toolchain` into
# tvm/lib, tvm/include and tvm/staged.json beside this file.
#
# Command expansions (<!(...) / <!@(...)) run with this file's folder as working directory.
{
  'targets': [
    {
      'target_name': 'tvm_node',
      # Every native/*.cc, like CMake's file(GLOB ...).
      'sources': [
        '<!@(node -p "require(\'fs\').readdirSync(\'native\').filter((f) => f.endsWith(\'.cc\')).sort().map((f) => \'native/\' + f).join(\' \')")',
      ],
      'include_dirs': [
        '<!(node -p "require(\'node-addon-api\').include_dir")',
        'tvm/include',
        # Stand-ins for TVM headers the wheels lack (after TVM's own: a source tree's are used).
        'native/shim',
      ],
      # JSON.stringify yields a C string literal ("0.27.0.post1"); gyp shell-quotes each define,
      # so the compiler gets -DTVMNODE_TVM_VERSION="0.27.0.post1" with the quotes intact.
      'defines': [
        'TVMNODE_TVM_VERSION=<!(node -p "JSON.stringify(require(\'./tvm/staged.json\').tvmVersion)")',
        'TVMNODE_TVM_SOURCE=<!(node -p "JSON.stringify(require(\'./tvm/staged.json\').source)")',
        'NAPI_VERSION=8',
        'NAPI_CPP_EXCEPTIONS',
        'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
        'NODE_ADDON_API_DISABLE_DEPRECATED',
      ],
      # Node's common.gypi builds without exceptions and RTTI, in gnu++17; TVM needs both.
      'cflags!': ['-fno-exceptions', '-fno-rtti'],
      'cflags_cc!': ['-fno-exceptions', '-fno-rtti', '-std=gnu++17'],
      'cflags_cc': ['-std=c++17', '-fexceptions', '-frtti', '-fvisibility=hidden', '-Wall', '-Wno-unused-parameter'],
      'libraries': [
        '<(module_root_dir)/tvm/lib/libtvm_ffi.so',
        '<(module_root_dir)/tvm/lib/libtvm_runtime.so',
        '-ldl',
      ],
      # The libraries have SONAMEs, so only their names are recorded; they are found through
      # RPATH (not RUNPATH, hence --disable-new-dtags, so it also covers their own deps):
      #   $ORIGIN                 prebuilt packages ship the runtime beside the .node
      #   $ORIGIN/../../tvm/lib   a local build in build/Release
      # \\$$ORIGIN: gyp -> \$$ORIGIN in the Makefile -> \$ORIGIN to the shell -> $ORIGIN.
      'ldflags': [
        '-Wl,-rpath,\\$$ORIGIN',
        '-Wl,-rpath,\\$$ORIGIN/../../tvm/lib',
        '-Wl,--disable-new-dtags',
      ],
    },
  ],
}

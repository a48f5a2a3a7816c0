// Modules: loading `.so` artifacts from export_library and looking up their functions.
#include <elf.h>
#include <tvm/ffi/extra/module.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>

#include "async_work.h"
#include "handle.h"

namespace tvmnode {

namespace {

// The ELF machine and class of this process: what the dynamic loader accepts.
#if defined(__x86_64__)
constexpr uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr uint16_t kHostMachine = EM_AARCH64;
#elif defined(__arm__)
constexpr uint16_t kHostMachine = EM_ARM;
#elif defined(__i386__)
constexpr uint16_t kHostMachine = EM_386;
#elif defined(__riscv)
constexpr uint16_t kHostMachine = 243;  // EM_RISCV
#elif defined(__powerpc64__)
constexpr uint16_t kHostMachine = EM_PPC64;
#elif defined(__s390x__)
constexpr uint16_t kHostMachine = EM_S390;
#elif defined(__loongarch__)
constexpr uint16_t kHostMachine = 258;  // EM_LOONGARCH
#else
constexpr uint16_t kHostMachine = 0;  // unknown: no check
#endif
constexpr unsigned char kHostClass = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;

std::string MachineName(uint16_t machine) {
  switch (machine) {
    case EM_386: return "x86 (32-bit)";
    case EM_ARM: return "ARM (32-bit)";
    case EM_X86_64: return "x86-64";
    case EM_AARCH64: return "aarch64";
    case EM_PPC64: return "PowerPC 64";
    case EM_S390: return "s390";
    case 190: return "CUDA";
    case 224: return "AMD GPU";
    case 243: return "RISC-V";
    case 258: return "LoongArch";
    default: return "an unknown machine";
  }
}

/*!
 * Why the ELF file at `path` cannot be loaded into this process, when the reason is its
 * architecture: "built for aarch64 (ELF machine 183), but this process runs on x86-64 (ELF
 * machine 62)". Empty when it is built for this machine, or is no ELF file. The dynamic loader
 * skips such a file and reports it as "cannot open shared object file: No such file or
 * directory", although the file exists.
 */
std::string ForeignArchitecture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char h[20];
  if (!in.read(reinterpret_cast<char*>(h), sizeof(h)) || std::memcmp(h, ELFMAG, SELFMAG) != 0) return "";
  const uint16_t machine = h[EI_DATA] == ELFDATA2MSB ? (h[18] << 8 | h[19]) : (h[19] << 8 | h[18]);
  const unsigned char elf_class = h[EI_CLASS];
  if (kHostMachine == 0 || (machine == kHostMachine && elf_class == kHostClass)) return "";
  auto describe = [](uint16_t m, unsigned char c) {
    return MachineName(m) + " (ELF machine " + std::to_string(m) + (c == ELFCLASS32 ? ", 32-bit" : "") + ")";
  };
  return "built for " + describe(machine, elf_class) + ", but this process runs on " +
         describe(kHostMachine, kHostClass) + ": compile it for this machine's target";
}

/*!
 * Why the native-class ELF file at `path` is cut short, when it is: its program headers, or a
 * segment the loader maps, end past the end of the file. The dynamic loader maps such a file
 * anyway, and touching the missing pages kills the process with SIGBUS. Empty otherwise
 * (including for files that are not ELF, which the loader refuses by itself).
 */
std::string TruncatedElf(const std::string& path) {
  if (kHostClass != ELFCLASS64) return "";
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  Elf64_Ehdr eh{};
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(&eh), sizeof(eh)) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != kHostMachine) {
    return "";
  }
  auto cut = [&](uint64_t end, const char* what) {
    return "it is truncated or corrupt: " + std::string(what) + " end at byte " + std::to_string(end) + " of a " +
           std::to_string(size) + "-byte file";
  };
  const uint64_t table_end = eh.e_phoff + uint64_t{eh.e_phnum} * eh.e_phentsize;
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || table_end > size) return cut(table_end, "its program headers");
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    in.seekg(static_cast<std::streamoff>(eh.e_phoff + uint64_t{i} * sizeof(ph)));
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof(ph))) return cut(table_end, "its program headers");
    if (ph.p_type == PT_LOAD && ph.p_offset + ph.p_filesz > size) return cut(ph.p_offset + ph.p_filesz, "its segments");
  }
  return "";
}

// What ffi::Module::LoadFromFile loads as a shared library: the extension .so (.dll, .dylib, .dso).
bool IsSharedLibraryName(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos || path.find('/', dot) != std::string::npos) return false;
  const std::string ext = path.substr(dot + 1);
  return ext == "so" || ext == "dll" || ext == "dylib" || ext == "dso";
}

// ffi::Module::LoadFromFile, with a failure caused by the file's architecture said in words,
// and a truncated file refused before the loader maps it.
ffi::Module LoadFromFile(const std::string& path) {
  // lib/module.ts names the file the caller gave (this path may be its private copy).
  if (std::string why = TruncatedElf(path); !why.empty()) throw ffi::Error("ValueError", why, "");
  try {
    // A shared library is loaded without a transient copy of its embedded weights where it
    // can be (native/library_load.cc); TVM's own loader does the rest.
    if (IsSharedLibraryName(path)) {
      if (std::optional<ffi::Module> lean = LoadLibraryLean(path)) return *lean;
    }
    return ffi::Module::LoadFromFile(path);
  } catch (const ffi::Error& e) {
    std::string why = ForeignArchitecture(path);
    if (why.empty()) throw;
    throw ffi::Error("ValueError", why, e.backtrace());
  }
}

class ModuleWrap : public Handle<ModuleWrap, ffi::Module> {
 public:
  static constexpr const char* kWhat = "Module";

  explicit ModuleWrap(const Napi::CallbackInfo& info) : Handle(info, &kModuleTag) {}

  static Napi::Function Define(Napi::Env env) {
    auto members = HandleMembers<ModuleWrap>();
    members.push_back(StaticMethod("load", &ModuleWrap::Load));
    members.push_back(StaticMethod("loadAsync", &ModuleWrap::LoadAsync));
    members.push_back(InstanceMethod("getFunction", &ModuleWrap::GetFunction));
    members.push_back(InstanceMethod("getFunctionAsync", &ModuleWrap::GetFunctionAsync));
    members.push_back(InstanceMethod("implementsFunction", &ModuleWrap::ImplementsFunction));
    members.push_back(InstanceAccessor("kind", &ModuleWrap::Kind, nullptr));
    members.push_back(InstanceAccessor("imports", &ModuleWrap::Imports, nullptr));
    return DefineClass(env, "NativeModule", members);
  }

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TVMNODE_TRY(env, return WrapModule(env, LoadFromFile(info[0].As<Napi::String>().Utf8Value())));
    return env.Undefined();
  }

  // Loading runs static initializers and may read large constant blobs: off the JS thread.
  static Napi::Value LoadAsync(const Napi::CallbackInfo& info) {
    std::string path = info[0].As<Napi::String>().Utf8Value();
    return PromiseWorker::Start(info.Env(), "tvm-node:loadModule", [path]() { return ffi::Any(LoadFromFile(path)); });
  }

  // getFunction(name, queryImports = true): the function or null.
  Napi::Value GetFunction(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool query_imports = info.Length() < 2 || info[1].ToBoolean().Value();
    TVMNODE_TRY(env, {
      ffi::Optional<ffi::Function> f = Get()->GetFunction(info[0].As<Napi::String>().Utf8Value(), query_imports);
      if (!f.has_value()) return env.Null();
      return WrapFunction(env, *f);
    });
    return env.Undefined();
  }

  // The same on the thread pool: for an RPC session module the lookup is a network round trip.
  Napi::Value GetFunctionAsync(const Napi::CallbackInfo& info) {
    ffi::Module m = Get();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    return PromiseWorker::Start(info.Env(), "tvm-node:getFunction",
                                [m, name]() {
                                  ffi::Optional<ffi::Function> f = m->GetFunction(name, true);
                                  return f.has_value() ? ffi::Any(*f) : ffi::Any(nullptr);
                                },
                                {info.This()});
  }

  Napi::Value ImplementsFunction(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool query_imports = info.Length() < 2 || info[1].ToBoolean().Value();
    TVMNODE_TRY(env, return Napi::Boolean::New(
                         env, Get()->ImplementsFunction(info[0].As<Napi::String>().Utf8Value(), query_imports)));
    return env.Undefined();
  }

  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Get()->kind()); }

  Napi::Value Imports(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const ffi::Array<ffi::Any>& imports = Get()->imports();
    Napi::Array out = Napi::Array::New(env, imports.size());
    for (size_t i = 0; i < imports.size(); ++i) out.Set(static_cast<uint32_t>(i), FromAny(env, imports[i]));
    return out;
  }
};

}  // namespace

Napi::Object WrapModule(Napi::Env env, ffi::Module m) {
  return ModuleWrap::New(env, Data(env)->module_ctor, std::move(m));
}

ffi::ObjectRef UnwrapModule(const Napi::Object& obj) { return ModuleWrap::Unwrap(obj)->Get(); }

void InitModule(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ModuleWrap::Define(env);
  Data(env)->module_ctor = Napi::Persistent(ctor);
  exports.Set("NativeModule", ctor);
}

}  // namespace tvmnode

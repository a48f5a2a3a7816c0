// Loading a TVM shared library without holding its weights twice.
//
// TVM's loader (tvm-ffi's ffi.Module.load_from_file.so) dlopens the library and deserializes
// the modules serialized into its `__tvm_ffi__library_bin` blob. For a Relax VM executable
// with embedded weights that costs three times the weights on top of what stays: the blob's
// pages of the mapping are read (and stay resident), the executable's part of it is copied
// into a std::string and again into an ffi::Bytes, and only then are the constants copied
// into tensors. On a 98 MiB ResNet-50 the load peaks ~190 MiB above the RSS it settles at.
//
// LoadLibraryLean does the same work in another order: it dlopens the library (the blob's
// pages are never touched), reads the blob's layout with pread, hands TVM's own
// VMExecutable loader the executable without its tensors (constant `i` is a placeholder
// integer), and then reads each tensor constant from the file straight into a tensor that
// takes the placeholder's place. The peak is the steady state plus the executable's code.
// The artifact is the one TVM writes and reads; anything this reader does not recognise
// (another module layout, a newer executable format, a big-endian host) is left to TVM's
// loader, and so is every failure, so errors read as TVM's own.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <tvm/ffi/cast.h>
#include <tvm/runtime/base.h>
#include <tvm/runtime/vm/executable.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common.h"

namespace tvmnode {

namespace {

namespace vm = tvm::runtime::vm;

// Thrown for anything this reader does not handle: the caller falls back to TVM's loader.
struct Unsupported {
  const char* what;
};

// The relax VM executable's header magic (version 2, with a memory-scope section) and the
// serialized tensor's magic, as TVM 0.2x writes them.
constexpr uint64_t kVMBytecodeMagicV2 = 0xD225DE2F4214151EULL;
constexpr uint64_t kTensorMagic = 0xDD5E40F096B4A13FULL;
constexpr const char* kVMExecutableKind = "relax.VMExecutable";

class File {
 public:
  explicit File(const std::string& path) : fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0 || fstat(fd_, &st_) != 0) throw Unsupported{"open"};
  }
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint64_t size() const { return static_cast<uint64_t>(st_.st_size); }
  const struct stat& st() const { return st_; }

  void ReadAt(uint64_t offset, void* dst, uint64_t n) const {
    if (offset > size() || n > size() - offset) throw Unsupported{"read past the end"};
    char* out = static_cast<char*>(dst);
    while (n > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
      const ssize_t got = pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw Unsupported{"read"};
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  int fd_;
  struct stat st_{};
};

// Sequential little-endian reads of the byte range [pos, end) of a file, buffered.
class Reader {
 public:
  Reader(const File& file, uint64_t begin, uint64_t end) : file_(file), pos_(begin), end_(end) {
    if (end < begin || end > file.size()) throw Unsupported{"range"};
  }

  uint64_t pos() const { return pos_; }

  void Read(void* dst, uint64_t n) {
    if (n > end_ - pos_) throw Unsupported{"truncated"};
    char* out = static_cast<char*>(dst);
    while (n > 0) {
      if (pos_ >= buf_begin_ && pos_ < buf_begin_ + buf_.size()) {
        const uint64_t at = pos_ - buf_begin_;
        const uint64_t take = std::min<uint64_t>(n, buf_.size() - at);
        std::memcpy(out, buf_.data() + at, take);
        out += take;
        pos_ += take;
        n -= take;
      } else if (n >= kBuffer) {
        file_.ReadAt(pos_, out, n);
        pos_ += n;
        return;
      } else {
        buf_.resize(static_cast<size_t>(std::min<uint64_t>(kBuffer, end_ - pos_)));
        buf_begin_ = pos_;
        file_.ReadAt(pos_, buf_.data(), buf_.size());
      }
    }
  }
  template <typename T>
  T Get() {
    T v;
    Read(&v, sizeof(v));
    return v;
  }
  std::string Str(uint64_t limit = 1u << 20) {
    const uint64_t n = Get<uint64_t>();
    if (n > limit) throw Unsupported{"string size"};
    std::string s(static_cast<size_t>(n), '\0');
    Read(s.data(), n);
    return s;
  }
  void Skip(uint64_t n) {
    if (n > end_ - pos_) throw Unsupported{"truncated"};
    pos_ += n;
  }
  // Appends the bytes [from, to) of the file to `out` (a part already walked over).
  void Copy(uint64_t from, uint64_t to, std::string* out) const {
    const size_t at = out->size();
    out->resize(at + static_cast<size_t>(to - from));
    file_.ReadAt(from, out->data() + at, to - from);
  }

 private:
  static constexpr uint64_t kBuffer = 64 * 1024;
  const File& file_;
  uint64_t pos_, end_;
  std::vector<char> buf_;
  uint64_t buf_begin_ = 0;
};

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// The library module of a dlopened TVM library: its functions are its `__tvm_ffi_<name>`
// symbols, as in tvm-ffi's own library module (which takes the blob along with it).
class LibraryObj final : public ffi::ModuleObj {
 public:
  explicit LibraryObj(void* handle) : handle_(handle) {}
  ~LibraryObj() { dlclose(handle_); }

  const char* kind() const final { return "library"; }
  int GetPropertyMask() const final { return ffi::Module::kBinarySerializable | ffi::Module::kRunnable; }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    auto* fn = reinterpret_cast<TVMFFISafeCallType>(Symbol(ffi::symbol::tvm_ffi_symbol_prefix, name));
    if (fn == nullptr) return std::nullopt;
    ffi::Module self = ffi::GetRef<ffi::Module>(this);  // the function keeps the library loaded
    return ffi::Function::FromPacked([fn, self](ffi::PackedArgs args, ffi::Any* rv) {
      TVM_FFI_CHECK_SAFE_CALL(
          fn(nullptr, reinterpret_cast<const TVMFFIAny*>(args.data()), args.size(), reinterpret_cast<TVMFFIAny*>(rv)));
    });
  }
  ffi::Optional<ffi::String> GetFunctionMetadata(const ffi::String& name) final {
    return Describe(ffi::symbol::tvm_ffi_metadata_prefix, name);
  }
  ffi::Optional<ffi::String> GetFunctionDoc(const ffi::String& name) final {
    return Describe(ffi::symbol::tvm_ffi_doc_prefix, name);
  }

  void* handle() const { return handle_; }

 private:
  void* Symbol(const char* prefix, const ffi::String& name) const {
    return dlsym(handle_, (std::string(prefix) + std::string(name)).c_str());
  }
  ffi::Optional<ffi::String> Describe(const char* prefix, const ffi::String& name) const {
    auto* getter = reinterpret_cast<TVMFFISafeCallType>(Symbol(prefix, name));
    if (getter == nullptr) return std::nullopt;
    return ffi::Function::InvokeExternC(nullptr, getter).cast<ffi::String>();
  }

  void* handle_;
};

// The file offset of virtual address `vaddr` of the ELF file: where the loader maps it from.
uint64_t FileOffset(const File& file, uint64_t vaddr) {
  Elf64_Ehdr eh{};
  file.ReadAt(0, &eh, sizeof(eh));
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_phentsize != sizeof(Elf64_Phdr)) {
    throw Unsupported{"not a 64-bit ELF file"};
  }
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    file.ReadAt(eh.e_phoff + uint64_t{i} * sizeof(ph), &ph, sizeof(ph));
    if (ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr - ph.p_vaddr < ph.p_filesz) {
      return ph.p_offset + (vaddr - ph.p_vaddr);
    }
  }
  throw Unsupported{"symbol outside the file's segments"};
}

struct TensorConstant {
  size_t index;
  std::vector<int64_t> shape;
  DLDataType dtype;
  uint64_t offset, nbytes;
};

// A relax.VMExecutable serialized at [begin, end) of the file: loaded by TVM without its
// tensor constants, which are then read from the file into their tensors one by one.
ffi::Module LoadExecutable(const File& file, uint64_t begin, uint64_t end) {
  Reader r(file, begin, end);
  if (r.Get<uint64_t>() != kVMBytecodeMagicV2) throw Unsupported{"executable format"};
  r.Str(256);  // version: TVM's loader checks it
  // Global section: the function table.
  const uint64_t num_funcs = r.Get<uint64_t>();
  if (num_funcs > (1u << 20)) throw Unsupported{"function count"};
  std::vector<std::string> func_names;
  for (uint64_t i = 0; i < num_funcs; ++i) {
    r.Get<int32_t>();  // kind
    func_names.push_back(r.Str());
    r.Skip(4 * sizeof(int64_t));  // start_instr, end_instr, num_args, register_file_size
    const uint64_t num_params = r.Get<uint64_t>();
    if (num_params > (1u << 20)) throw Unsupported{"parameter count"};
    for (uint64_t j = 0; j < num_params; ++j) r.Str();
  }
  // Memory scopes.
  const uint64_t num_scopes = r.Get<uint64_t>();
  if (num_scopes > (1u << 20)) throw Unsupported{"memory scope count"};
  for (uint64_t i = 0; i < num_scopes; ++i) {
    r.Skip(sizeof(int64_t));
    r.Str();
  }
  // Constants: tensors become placeholders, the rest is kept as it is.
  const uint64_t constants_at = r.pos();
  std::string skeleton;
  r.Copy(begin, constants_at, &skeleton);
  const uint64_t num_constants = r.Get<uint64_t>();
  if (num_constants > (1u << 24)) throw Unsupported{"constant count"};
  Put(&skeleton, num_constants);
  std::vector<TensorConstant> tensors;
  for (uint64_t i = 0; i < num_constants; ++i) {
    const uint64_t record = r.pos();
    const int32_t type = r.Get<int32_t>();
    switch (type) {
      case ffi::TypeIndex::kTVMFFITensor: {
        TensorConstant t{static_cast<size_t>(i), {}, {}, 0, 0};
        if (r.Get<uint64_t>() != kTensorMagic) throw Unsupported{"tensor magic"};
        r.Get<uint64_t>();  // reserved
        const DLDevice dev = r.Get<DLDevice>();
        const int32_t ndim = r.Get<int32_t>();
        t.dtype = r.Get<DLDataType>();
        if (dev.device_type != kDLCPU || ndim < 0 || ndim > 64 || t.dtype.lanes != 1) {
          throw Unsupported{"tensor header"};
        }
        t.shape.resize(static_cast<size_t>(ndim));
        r.Read(t.shape.data(), sizeof(int64_t) * t.shape.size());
        uint64_t elems = 1;
        for (int64_t d : t.shape) {
          if (d < 0) throw Unsupported{"tensor shape"};
          elems *= static_cast<uint64_t>(d);
        }
        const int64_t nbytes = r.Get<int64_t>();
        if (nbytes < 0 || static_cast<uint64_t>(nbytes) != elems * ((t.dtype.bits + 7u) / 8u)) {
          throw Unsupported{"tensor size"};
        }
        t.offset = r.pos();
        t.nbytes = static_cast<uint64_t>(nbytes);
        r.Skip(t.nbytes);
        tensors.push_back(std::move(t));
        Put(&skeleton, static_cast<int32_t>(ffi::TypeIndex::kTVMFFIInt));
        Put(&skeleton, int64_t{0});
        continue;
      }
      case ffi::TypeIndex::kTVMFFIShape: r.Skip(sizeof(int64_t) * r.Get<uint64_t>()); break;
      case ffi::TypeIndex::kTVMFFIStr: r.Skip(r.Get<uint64_t>()); break;
      case ffi::TypeIndex::kTVMFFIInt:
      case ffi::TypeIndex::kTVMFFIFloat: r.Skip(8); break;
      case ffi::TypeIndex::kTVMFFIDataType: r.Skip(sizeof(DLDataType)); break;
      default: throw Unsupported{"constant type"};
    }
    r.Copy(record, r.pos(), &skeleton);
  }
  // Code section: the rest.
  r.Copy(r.pos(), end, &skeleton);

  static const auto load = ffi::Function::GetGlobal("ffi.Module.load_from_bytes.relax.VMExecutable");
  if (!load.has_value()) throw Unsupported{"no VMExecutable loader"};
  ffi::Module exec = (*load)(ffi::Bytes(std::move(skeleton))).cast<ffi::Module>();
  if (std::strcmp(exec->kind(), kVMExecutableKind) != 0) throw Unsupported{"loader kind"};
  // The executable's layout is the one these headers describe: its function table and
  // constant pool are what was just read.
  auto* e = static_cast<vm::VMExecutable*>(exec.get());
  if (e->func_table.size() != func_names.size() || e->constants.size() != num_constants) {
    throw Unsupported{"executable layout"};
  }
  for (size_t i = 0; i < func_names.size(); ++i) {
    if (e->func_table[i].name != func_names[i]) throw Unsupported{"executable layout"};
  }
  const DLDevice cpu{kDLCPU, 0};
  for (const TensorConstant& t : tensors) {
    if (e->constants[t.index].type_index() != ffi::TypeIndex::kTVMFFIInt) throw Unsupported{"executable layout"};
    ffi::Tensor tensor = AllocTensor(ffi::Shape(t.shape), t.dtype, cpu);
    if (t.nbytes > 0) file.ReadAt(t.offset, static_cast<char*>(tensor.data_ptr()) + tensor.byte_offset(), t.nbytes);
    e->constants[t.index] = std::move(tensor);
  }
  return exec;
}

ffi::Module Lean(const std::string& path) {
  if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__) throw Unsupported{"big-endian host"};
  File file(path);
  void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (handle == nullptr) throw Unsupported{"dlopen"};
  auto lib_obj = ffi::make_object<LibraryObj>(handle);
  ffi::Module lib(lib_obj);
  // The file read is the file mapped: the same one before and after dlopen.
  struct stat now{};
  if (stat(path.c_str(), &now) != 0 || now.st_dev != file.st().st_dev || now.st_ino != file.st().st_ino ||
      now.st_size != file.st().st_size || now.st_mtim.tv_sec != file.st().st_mtim.tv_sec ||
      now.st_mtim.tv_nsec != file.st().st_mtim.tv_nsec) {
    throw Unsupported{"file changed"};
  }
  // What tvm-ffi's loader sets up in every library: the runtime's context symbols and the
  // library's own module pointer.
  ffi::Module::VisitContextSymbols([handle](ffi::String name, void* symbol) {
    if (void** at = reinterpret_cast<void**>(dlsym(handle, name.c_str()))) *at = symbol;
  });
  if (void** ctx = reinterpret_cast<void**>(dlsym(handle, ffi::symbol::tvm_ffi_library_ctx))) {
    *ctx = lib_obj.get();
  }
  const char* bin = reinterpret_cast<const char*>(dlsym(handle, ffi::symbol::tvm_ffi_library_bin));
  if (bin == nullptr) return lib;
  // The blob's address less the library's load bias is its virtual address in the file.
  struct link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr) throw Unsupported{"dlinfo"};
  const uint64_t at = FileOffset(file, reinterpret_cast<uintptr_t>(bin) - static_cast<uintptr_t>(map->l_addr));
  // What is mapped there is what the file holds there (this reads one page of the blob).
  char mapped[16], read[16];
  std::memcpy(mapped, bin, sizeof(mapped));
  file.ReadAt(at, read, sizeof(read));
  if (std::memcmp(mapped, read, sizeof(mapped)) != 0) throw Unsupported{"blob differs from the file"};

  // <nbytes: u64> <import tree: indptr vec<u64>, child indices vec<u64>> then per module
  // <kind: str> and, unless the kind is "_lib", <bytes: u64 size + data>.
  Reader head(file, at, at + sizeof(uint64_t));
  const uint64_t nbytes = head.Get<uint64_t>();
  if (nbytes > file.size() - at - sizeof(uint64_t)) throw Unsupported{"blob size"};
  Reader r(file, at + sizeof(uint64_t), at + sizeof(uint64_t) + nbytes);
  auto read_vec = [&r]() {
    const uint64_t n = r.Get<uint64_t>();
    if (n > (1u << 16)) throw Unsupported{"import tree"};
    std::vector<uint64_t> v(static_cast<size_t>(n));
    r.Read(v.data(), n * sizeof(uint64_t));
    return v;
  };
  const std::vector<uint64_t> indptr = read_vec();
  const std::vector<uint64_t> children = read_vec();
  if (indptr.size() < 2) throw Unsupported{"import tree"};
  std::vector<ffi::Module> modules;
  for (size_t i = 0; i + 1 < indptr.size(); ++i) {
    const std::string kind = r.Str(4096);
    if (kind == "_lib") {
      modules.push_back(lib);
      continue;
    }
    const uint64_t size = r.Get<uint64_t>();
    const uint64_t begin = r.pos();
    r.Skip(size);
    if (kind == kVMExecutableKind) {
      modules.push_back(LoadExecutable(file, begin, begin + size));
      continue;
    }
    // Other modules (device code) are small: loaded from their bytes, as TVM does.
    const auto load = ffi::Function::GetGlobal("ffi.Module.load_from_bytes." + kind);
    if (!load.has_value()) throw Unsupported{"module kind"};
    std::string bytes;
    r.Copy(begin, begin + size, &bytes);
    modules.push_back((*load)(ffi::Bytes(std::move(bytes))).cast<ffi::Module>());
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    if (indptr[i] > indptr[i + 1] || indptr[i + 1] > children.size()) throw Unsupported{"import tree"};
    for (uint64_t j = indptr[i]; j < indptr[i + 1]; ++j) {
      if (children[j] >= modules.size()) throw Unsupported{"import tree"};
      modules[i]->ImportModule(modules[children[j]]);
    }
  }
  return modules[0];
}

}  // namespace

std::optional<ffi::Module> LoadLibraryLean(const std::string& path) {
  static const bool stock = [] {
    const char* v = std::getenv("TVM_NODE_STOCK_LOAD");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  if (stock) return std::nullopt;
  try {
    return Lean(path);
  } catch (const Unsupported&) {
    return std::nullopt;
  } catch (const ffi::Error&) {
    return std::nullopt;  // TVM's loader says it in its words
  }
}

}  // namespace tvmnode

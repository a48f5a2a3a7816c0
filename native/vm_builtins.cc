// Packed functions that compiled Relax code calls but TVM registers only from Python
// (python/tvm/relax/op/base.py, set.py, runtime/vm.py). Without them an artifact that
// uses R.shape_to_tensor, R.print, R.assert_op, R.unique or R.nonzero (dynamic-shape ONNX
// imports do) fails in any runtime without Python. Registered once per process, and
// never over an existing registration (a host that has Python keeps its own).
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "common.h"

namespace tvmnode {

namespace {

using Tensor = ffi::Tensor;

constexpr DLDevice kCPU{kDLCPU, 0};
const DLDataType kInt64{kDLInt, 64, 1};

Tensor ToHost(const ffi::Tensor& t) {
  if (t.device().device_type == kDLCPU) return t;
  Tensor host = AllocTensor(t.shape(), t.dtype(), kCPU);
  CopyTensor(t, host);
  return host;
}

Tensor Int64Tensor(const std::vector<int64_t>& values, std::vector<int64_t> shape) {
  Tensor out = AllocTensor(ffi::Shape(std::move(shape)), kInt64, kCPU);
  std::copy(values.begin(), values.end(), static_cast<int64_t*>(out.data_ptr()));
  return out;
}

// Reads element i of a host tensor of any numeric dtype as double (for printing, truth
// tests and comparisons: exact for every integer type used as a mask or index).
double ElementAsDouble(const DLTensor& t, int64_t i) {
  const char* p = static_cast<const char*>(t.data) + t.byte_offset + i * (t.dtype.bits / 8);
  switch (t.dtype.code) {
    case kDLBool: return *reinterpret_cast<const bool*>(p);
    case kDLInt:
      switch (t.dtype.bits) {
        case 8: return *reinterpret_cast<const int8_t*>(p);
        case 16: return *reinterpret_cast<const int16_t*>(p);
        case 32: return *reinterpret_cast<const int32_t*>(p);
        case 64: return static_cast<double>(*reinterpret_cast<const int64_t*>(p));
      }
      break;
    case kDLUInt:
      switch (t.dtype.bits) {
        case 1:
        case 8: return *reinterpret_cast<const uint8_t*>(p);
        case 16: return *reinterpret_cast<const uint16_t*>(p);
        case 32: return *reinterpret_cast<const uint32_t*>(p);
        case 64: return static_cast<double>(*reinterpret_cast<const uint64_t*>(p));
      }
      break;
    case kDLFloat:
      if (t.dtype.bits == 32) return *reinterpret_cast<const float*>(p);
      if (t.dtype.bits == 64) return *reinterpret_cast<const double*>(p);
      break;
  }
  throw ffi::Error("TypeError", "unsupported dtype " + std::string(ffi::DLDataTypeToString(t.dtype)), "");
}

std::string RenderTensor(const ffi::Tensor& t) {
  Tensor host = ToHost(t);
  std::ostringstream os;
  os << "Tensor(shape=" << ffi::Shape(t.shape()) << ", dtype=" << ffi::DLDataTypeToString(t.dtype()) << ")[";
  int64_t n = host.numel();
  for (int64_t i = 0; i < n && i < 64; ++i) os << (i ? ", " : "") << ElementAsDouble(*host.GetDLTensorPtr(), i);
  os << (n > 64 ? ", ...]" : "]");
  return os.str();
}

std::string Render(const ffi::AnyView& v) {
  if (auto t = v.try_cast<ffi::Tensor>()) return RenderTensor(*t);
  if (auto s = v.try_cast<ffi::String>()) return std::string(*s);
  if (auto a = v.try_cast<ffi::Array<ffi::Any>>()) {
    std::string out = "(";
    for (size_t i = 0; i < a->size(); ++i) out += (i ? ", " : "") + Render((*a)[i]);
    return out + ")";
  }
  if (auto i = v.try_cast<int64_t>()) return std::to_string(*i);
  if (auto f = v.try_cast<double>()) {
    std::ostringstream os;
    os << *f;
    return os.str();
  }
  if (auto s = v.try_cast<ffi::Shape>()) {
    std::string out = "(";
    for (size_t i = 0; i < s->size(); ++i) out += (i ? ", " : "") + std::to_string((*s)[i]);
    return out + ")";
  }
  return "<" + v.GetTypeKey() + ">";
}

// Python's str.format for the positional `{}` fields Relax emits; an empty format joins
// the values with spaces (like print(*values)).
std::string Format(const std::string& fmt, ffi::PackedArgs args, int first) {
  std::vector<std::string> values;
  for (int i = first; i < args.size(); ++i) values.push_back(Render(args[i]));
  if (fmt.empty()) {
    std::string out;
    for (size_t i = 0; i < values.size(); ++i) out += (i ? " " : "") + values[i];
    return out;
  }
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt.compare(i, 2, "{}") == 0 && next < values.size()) {
      out += values[next++];
      ++i;
    } else {
      out += fmt[i];
    }
  }
  return out;
}

void RelaxPrint(ffi::PackedArgs args, ffi::Any*) {
  std::string line = Format(args[0].cast<ffi::String>(), args, 1) + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

bool Truth(const ffi::AnyView& cond) {
  if (auto t = cond.try_cast<ffi::Tensor>()) {
    if (t->dtype().code != kDLBool || t->ndim() != 0) {
      throw ffi::Error("ValueError", "the assert condition must be a bool scalar", "");
    }
    return ElementAsDouble(*ToHost(*t).GetDLTensorPtr(), 0) != 0;
  }
  return cond.cast<bool>();
}

void RelaxAssert(ffi::PackedArgs args, ffi::Any*) {
  if (Truth(args[0])) return;
  std::string msg = Format(args[1].cast<ffi::String>(), args, 2);
  throw ffi::Error("AssertionError", msg.empty() ? "Assertion Failed" : msg, "");
}

Tensor ShapeToTensor(ffi::Shape shape) {
  return Int64Tensor(std::vector<int64_t>(shape.begin(), shape.end()), {static_cast<int64_t>(shape.size())});
}

// numpy.nonzero(np.atleast_1d(x)) stacked: an int64 [ndim, count] tensor of coordinates.
Tensor NonZero(ffi::Tensor x) {
  Tensor host = ToHost(x);
  std::vector<int64_t> dims(x.shape().begin(), x.shape().end());
  if (dims.empty()) dims.push_back(1);
  int64_t n = host.numel();
  std::vector<int64_t> hits;
  for (int64_t i = 0; i < n; ++i) {
    if (ElementAsDouble(*host.GetDLTensorPtr(), i) != 0) hits.push_back(i);
  }
  const int64_t ndim = static_cast<int64_t>(dims.size()), count = static_cast<int64_t>(hits.size());
  std::vector<int64_t> coords(ndim * count);
  for (int64_t k = 0; k < count; ++k) {
    int64_t flat = hits[k];
    for (int64_t d = ndim - 1; d >= 0; --d) {
      coords[d * count + k] = flat % dims[d];
      flat /= dims[d];
    }
  }
  return Int64Tensor(coords, {ndim, count});
}

// numpy.unique over the flattened input (axis=None), with the optional outputs in numpy's
// order: values, first-occurrence index, inverse, counts. `sorted == 0` keeps values in
// order of first occurrence, as the Python implementation does.
ffi::Any Unique(ffi::PackedArgs args) {
  Tensor host = ToHost(args[0].cast<ffi::Tensor>());
  bool sorted = args[1].cast<int64_t>() != 0, want_index = args[2].cast<int64_t>() != 0;
  bool want_inverse = args[3].cast<int64_t>() != 0, want_counts = args[4].cast<int64_t>() != 0;
  if (args.size() > 5 && args[5] != nullptr) {
    throw ffi::Error("NotImplementedError", "relax.run.unique with an axis is not supported outside Python", "");
  }
  const DLTensor& t = *host.GetDLTensorPtr();
  const int64_t n = host.numel();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Stable sort by value: the first element of each run is the first occurrence.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return ElementAsDouble(t, a) < ElementAsDouble(t, b); });
  std::vector<int64_t> first, counts, inverse(n);
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || ElementAsDouble(t, order[k]) != ElementAsDouble(t, order[k - 1])) {
      first.push_back(order[k]);
      counts.push_back(0);
    }
    counts.back()++;
    inverse[order[k]] = static_cast<int64_t>(first.size()) - 1;
  }
  std::vector<int64_t> rank(first.size());  // output position of each sorted unique value
  std::iota(rank.begin(), rank.end(), 0);
  if (!sorted) {
    std::vector<int64_t> by_first(first.size());
    std::iota(by_first.begin(), by_first.end(), 0);
    std::sort(by_first.begin(), by_first.end(), [&](int64_t a, int64_t b) { return first[a] < first[b]; });
    for (size_t pos = 0; pos < by_first.size(); ++pos) rank[by_first[pos]] = static_cast<int64_t>(pos);
  }
  const int64_t u = static_cast<int64_t>(first.size());
  std::vector<int64_t> out_first(u), out_counts(u);
  Tensor values = AllocTensor(ffi::Shape({u}), t.dtype, kCPU);
  const size_t elem = t.dtype.bits / 8;
  for (int64_t j = 0; j < u; ++j) {
    out_first[rank[j]] = first[j];
    out_counts[rank[j]] = counts[j];
    std::memcpy(static_cast<char*>(values.data_ptr()) + rank[j] * elem,
                static_cast<const char*>(t.data) + first[j] * elem, elem);
  }
  for (int64_t& v : inverse) v = rank[v];
  if (!want_index && !want_inverse && !want_counts) return ffi::Any(values);
  ffi::Array<ffi::Any> out{ffi::Any(values)};
  if (want_index) out.push_back(Int64Tensor(out_first, {u}));
  if (want_inverse) out.push_back(Int64Tensor(inverse, {n}));
  if (want_counts) out.push_back(Int64Tensor(out_counts, {u}));
  return ffi::Any(out);
}

void DebugPrint(ffi::String line, ffi::Tensor t) {
  std::string s = std::string(line) + ": " + RenderTensor(t) + "\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void RegisterIfAbsent(const char* name, ffi::Function f) {
  if (!ffi::Function::GetGlobal(name).has_value()) ffi::Function::SetGlobal(name, f, /*override=*/false);
}

}  // namespace

void InitVmBuiltins() {
  RegisterIfAbsent("relax.run.shape_to_tensor", ffi::Function::FromTyped(ShapeToTensor));
  RegisterIfAbsent("relax.run.print", ffi::Function::FromPacked(RelaxPrint));
  RegisterIfAbsent("relax.run.assert_op", ffi::Function::FromPacked(RelaxAssert));
  RegisterIfAbsent("relax.run.nonzero", ffi::Function::FromTyped(NonZero));
  RegisterIfAbsent("relax.run.unique",
                   ffi::Function::FromPacked([](ffi::PackedArgs args, ffi::Any* rv) { *rv = Unique(args); }));
  RegisterIfAbsent("vm.builtin.debug_print", ffi::Function::FromTyped(DebugPrint));
}

}  // namespace tvmnode

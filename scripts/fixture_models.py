"""Model definitions for the tvm-node test fixtures.

Each ``build_<name>()`` function returns a fixture description: the TVM IR to
compile plus concrete test cases whose expected outputs are computed with
plain numpy from the very same weights.  The reference never runs TVM, so a
fixture test checks the whole chain (compiler, exported artifact, runtime,
Node bindings) against an independent implementation.

This module imports TVM at load time; ``compile_fixtures.py`` imports it only
when it actually has to compile (the cache-hit path must stay fast).

Conventions:

* Every fixture draws its random numbers from its own generator, seeded from
  the fixture name, so a ``--only`` subset produces byte-identical data to a
  full run.
* Weights are baked into the modules as constants, so ``main`` takes data
  inputs only.
* References are computed in float64 and cast to the output dtype; this is
  the "true" result that TVM's float32/float16 arithmetic must approximate.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op
from tvm.script import ir as I
from tvm.script import tirx as T

F32 = np.float32
F16 = np.float16

# Tolerances, keyed by how much rounding error the computation accumulates.
TIGHT_F32 = {"rtol": 1e-5, "atol": 1e-5}
LOOSE_F32 = {"rtol": 1e-4, "atol": 1e-4}
LONG_CHAIN_F32 = {"rtol": 1e-3, "atol": 1e-4}
F16_TOL = {"rtol": 1e-2, "atol": 1e-2}

# --------------------------------------------------------------------------
# Fixture descriptions
# --------------------------------------------------------------------------


@dataclass
class Case:
    """One concrete run: input arrays and the expected (numpy) outputs."""

    name: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    # Exact text the model writes through ``relax.run.print`` (Python's
    # formatting: ``str.format`` with tensors rendered like numpy arrays and
    # shapes like Python tuples), or None if it prints nothing.
    stdout: str | None = None


@dataclass
class VMFixture:
    """A Relax module compiled for the Relax virtual machine."""

    name: str
    module: tvm.IRModule
    cases: list[Case]
    tolerance: dict
    notes: str
    # relax.run.* names the artifact is expected to reference; the compile
    # script fails if any of them is missing from the exported library.
    # TVM registers these packed functions from Python (tvm/relax/op/base.py,
    # tvm/relax/op/set.py), not in libtvm_runtime, so a non-Python host such
    # as the Node addon has to provide them itself.
    host_functions: tuple[str, ...] = ()
    function: str = "main"
    # Names of the (flattened) outputs, for the manifest written beside the
    # artifact; TVM keeps no output names.  Empty: ``output0``, ``output1``...
    output_names: tuple[str, ...] = ()


@dataclass
class KernelCase:
    """Arguments for one call of a TIR kernel, in parameter order.

    Input arguments hold the values to pass in; output arguments hold the
    values expected in the output buffer after the call.
    """

    name: str
    args: list[np.ndarray]


@dataclass
class KernelFunction:
    """One PrimFunc of a kernel library, with the role of each parameter."""

    name: str
    roles: list[str]  # "input" or "output", one per parameter
    cases: list[KernelCase] = field(default_factory=list)


@dataclass
class KernelLibrary:
    """A module of plain TIR PrimFuncs, called directly (no VM)."""

    name: str
    module: tvm.IRModule
    functions: list[KernelFunction]
    tolerance: dict
    notes: str


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _rng(name: str) -> np.random.Generator:
    """A generator seeded from the fixture name (stable across runs/subsets)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def _dense_params(rng: np.random.Generator, n_in: int, n_out: int, dtype=F32):
    """Weight [n_in, n_out] and bias [n_out], scaled to keep activations O(1)."""
    weight = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
    bias = 0.1 * rng.standard_normal(n_out)
    return weight.astype(dtype), bias.astype(dtype)


def _dense(x: relax.Expr, weight: np.ndarray, bias: np.ndarray) -> relax.Expr:
    """``x @ weight + bias`` with the parameters baked in as constants."""
    return op.add(op.matmul(x, relax.const(weight)), relax.const(bias))


def _np_dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Float64 numpy counterpart of :func:`_dense`."""
    return x.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64)


def _tensor_param(name: str, shape, dtype: str) -> relax.Var:
    return relax.Var(name, relax.TensorType(shape, dtype))


def _dataflow_main(params: list[relax.Var], body) -> tvm.IRModule:
    """Build ``main(*params)`` whose whole body is one pure dataflow block.

    ``body(bb, *params)`` emits the computation and returns the value to
    return (a tensor or a ``relax.Tuple``).
    """
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            result = bb.emit_output(body(bb, *params))
        bb.emit_func_output(result)
    return bb.get()


# --------------------------------------------------------------------------
# VM fixtures
# --------------------------------------------------------------------------


def build_mlp() -> VMFixture:
    """Two dense layers with a ReLU: the smallest realistic model (demo model)."""
    rng = _rng("mlp")
    w1, b1 = _dense_params(rng, 16, 32)
    w2, b2 = _dense_params(rng, 32, 8)
    x = rng.standard_normal((4, 16)).astype(F32)

    def body(bb, x):
        hidden = bb.emit(op.nn.relu(_dense(x, w1, b1)))
        return _dense(hidden, w2, b2)

    module = _dataflow_main([_tensor_param("x", (4, 16), "float32")], body)
    expected = _np_dense(np.maximum(_np_dense(x, w1, b1), 0.0), w2, b2)
    return VMFixture(
        name="mlp",
        module=module,
        cases=[Case("default", [x], [expected.astype(F32)])],
        tolerance=TIGHT_F32,
        notes="x[4,16] -> dense(16->32) -> relu -> dense(32->8).",
    )


def _np_conv2d_nchw(x: np.ndarray, weight: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 NCHW/OIHW convolution: one einsum per kernel tap."""
    n, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h, out_w = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
    out = np.zeros((n, out_c, out_h, out_w))
    for dy in range(kh):
        for dx in range(kw):
            window = padded[:, :, dy : dy + out_h, dx : dx + out_w]
            out += np.einsum("oc,nchw->nohw", weight[:, :, dy, dx], window)
    return out


def _np_max_pool_2x2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def build_conv() -> VMFixture:
    """A tiny CNN: conv2d + relu + max-pool + flatten + dense."""
    rng = _rng("conv")
    conv_w = (rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27)).astype(F32)
    conv_b = (0.1 * rng.standard_normal(8)).astype(F32)
    fc_w, fc_b = _dense_params(rng, 8 * 16 * 16, 10)
    x = rng.standard_normal((1, 3, 32, 32)).astype(F32)

    def body(bb, x):
        conv = op.nn.conv2d(x, relax.const(conv_w), strides=1, padding=1)
        act = bb.emit(op.nn.relu(op.add(conv, relax.const(conv_b.reshape(1, 8, 1, 1)))))
        pooled = bb.emit(op.nn.max_pool2d(act, pool_size=2, strides=2))
        flat = bb.emit(op.reshape(pooled, (1, 8 * 16 * 16)))
        return _dense(flat, fc_w, fc_b)

    module = _dataflow_main([_tensor_param("x", (1, 3, 32, 32), "float32")], body)
    conv_ref = _np_conv2d_nchw(x.astype(np.float64), conv_w.astype(np.float64), pad=1)
    act_ref = np.maximum(conv_ref + conv_b.reshape(1, 8, 1, 1), 0.0)
    expected = _np_dense(_np_max_pool_2x2(act_ref).reshape(1, -1), fc_w, fc_b)
    return VMFixture(
        name="conv",
        module=module,
        cases=[Case("default", [x], [expected.astype(F32)])],
        tolerance=LOOSE_F32,
        notes=(
            "x[1,3,32,32] NCHW -> conv2d(3->8, 3x3, pad 1) + bias -> relu -> "
            "max_pool 2x2/2 -> flatten -> dense(2048->10)."
        ),
    )


def build_multi_out() -> VMFixture:
    """A model returning a Relax tuple of tensors with different dtypes."""
    rng = _rng("multi_out")
    x = rng.standard_normal((2, 5)).astype(F32)

    def body(bb, x):
        doubled = bb.emit(op.multiply(x, relax.const(2.0, "float32")))
        row_sum = bb.emit(op.sum(x, axis=1))
        row_argmax = bb.emit(op.argmax(x, axis=1))  # int64
        return relax.Tuple([doubled, row_sum, row_argmax])

    module = _dataflow_main([_tensor_param("x", (2, 5), "float32")], body)
    x64 = x.astype(np.float64)
    expected = [
        (x64 * 2).astype(F32),
        x64.sum(axis=1).astype(F32),
        x.argmax(axis=1).astype(np.int64),
    ]
    return VMFixture(
        name="multi_out",
        module=module,
        cases=[Case("default", [x], expected)],
        tolerance=TIGHT_F32,
        notes="Returns a tuple (x*2 float32[2,5], sum(x,1) float32[2], argmax(x,1) int64[2]).",
        output_names=("doubled", "row_sum", "row_argmax"),
    )


def build_fp16() -> VMFixture:
    """float16 in, float16 out, with float16 constants."""
    rng = _rng("fp16")
    weight, bias = _dense_params(rng, 8, 8, dtype=F16)
    x = rng.standard_normal((8, 8)).astype(F16)

    def body(bb, x):
        # Accumulate in float32 (as fp16 inference usually does), then round
        # the result back to float16.
        prod = op.matmul(x, relax.const(weight), out_dtype="float32")
        summed = bb.emit(op.add(prod, op.astype(relax.const(bias), "float32")))
        return op.astype(summed, "float16")

    module = _dataflow_main([_tensor_param("x", (8, 8), "float16")], body)
    expected = _np_dense(x, weight, bias).astype(F16)
    return VMFixture(
        name="fp16",
        module=module,
        cases=[Case("default", [x], [expected])],
        tolerance=F16_TOL,
        notes=(
            "x float16[8,8] @ float16 weight (float32 accumulation) + float16 bias -> "
            "float16[8,8]; reference computed in float64 and rounded to float16."
        ),
    )


def build_dynamic() -> VMFixture:
    """A dynamic-batch model that calls the Python-only ``relax.run.*`` functions.

    ``R.shape_to_tensor`` is legalized into a generated TIR kernel whenever the
    shape's rank and values are known symbolically (as for ``x`` here), and is
    only lowered to ``relax.run.shape_to_tensor`` when they are not, e.g. for
    the data-dependent shape of ``nonzero``'s result.  Both paths are used.
    """
    rng = _rng("dynamic")
    weight, bias = _dense_params(rng, 4, 3)
    n = tvm.tirx.Var("n", "int64")
    x = _tensor_param("x", [n, 4], "float32")

    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            dense = bb.emit(_dense(x, weight, bias))  # [n, 3]
            x_shape = bb.emit(op.shape_to_tensor(op.shape_of(x)))  # TIR kernel
            uniques = bb.emit(op.unique(x))  # relax.run.unique
            positive = bb.emit(op.greater(x, relax.const(0.0, "float32")))
            nonzero = bb.emit(op.nonzero(positive))  # relax.run.nonzero
            # relax.run.shape_to_tensor: nonzero's shape is data-dependent.
            nonzero_shape = bb.emit(op.shape_to_tensor(op.shape_of(nonzero)))
            in_range = bb.emit(op.less(op.max(op.abs(x)), relax.const(1000.0, "float32")))
            result = bb.emit_output(relax.Tuple([dense, x_shape, uniques, nonzero, nonzero_shape]))
            in_range = bb.emit_output(in_range)
        # assert/print have side effects, so they live outside the dataflow block.
        bb.emit(op.assert_op(in_range, [], format="dynamic: input out of range"))
        bb.emit(
            op.print(
                relax.prim_value(n),
                op.shape_of(nonzero),
                format="dynamic: n={} nonzero.shape={}",
            )
        )
        bb.emit_func_output(result)
    module = bb.get()

    cases = []
    for rows in (3, 5):
        # Half-integers in [-1, 1]: repeated values for unique(), zeros and
        # negatives for nonzero().
        x_val = (0.5 * rng.integers(-2, 3, size=(rows, 4))).astype(F32)
        nz = np.stack(np.nonzero(x_val > 0)).astype(np.int64)
        expected = [
            _np_dense(x_val, weight, bias).astype(F32),
            np.array(x_val.shape, dtype=np.int64),
            np.unique(x_val),
            nz,
            np.array(nz.shape, dtype=np.int64),
        ]
        stdout = f"dynamic: n={rows} nonzero.shape=({nz.shape[0]}, {nz.shape[1]})\n"
        cases.append(Case(f"n{rows}", [x_val], expected, stdout=stdout))

    return VMFixture(
        name="dynamic",
        module=module,
        cases=cases,
        tolerance=TIGHT_F32,
        host_functions=(
            "relax.run.assert_op",
            "relax.run.nonzero",
            "relax.run.print",
            "relax.run.shape_to_tensor",
            "relax.run.unique",
        ),
        output_names=("dense", "x_shape", "uniques", "nonzero", "nonzero_shape"),
        notes=(
            'x float32["n",4] -> tuple(x@W+b float32[n,3], shape(x) int64[2], '
            "unique(x) float32[k], nonzero(x>0) int64[2,m], shape(nonzero) int64[2]); "
            "also asserts max|x| < 1000 (relax.run.assert_op) and prints one line "
            "(relax.run.print, see cases[].stdout). shape_to_tensor(shape_of(x)) is "
            "compiled to a TIR kernel; only shape_to_tensor of the data-dependent "
            "nonzero shape calls relax.run.shape_to_tensor. relax.run.unique is called "
            "as (x, sorted=1, return_index=0, return_inverse=0, return_counts=0) with "
            "no axis argument; relax.run.print as (format, *values); "
            "relax.run.assert_op as (condition: bool[] tensor, format, *values)."
        ),
    )


def build_pair() -> VMFixture:
    """Two inputs that share a symbolic dimension ``n`` (the model API binds it once)."""
    rng = _rng("pair")
    n = tvm.tirx.Var("n", "int64")
    x = _tensor_param("x", [n, 4], "float32")
    y = _tensor_param("y", [n, 4], "float32")

    bb = relax.BlockBuilder()
    with bb.function("main", [x, y]):
        with bb.dataflow():
            result = bb.emit_output(op.add(op.multiply(x, y), x))
        bb.emit_func_output(result)
    module = bb.get()

    cases = []
    for rows in (2, 5):
        x_val = rng.standard_normal((rows, 4)).astype(F32)
        y_val = rng.standard_normal((rows, 4)).astype(F32)
        x64 = x_val.astype(np.float64)
        expected = (x64 * y_val.astype(np.float64) + x64).astype(F32)
        cases.append(Case(f"n{rows}", [x_val, y_val], [expected]))
    return VMFixture(
        name="pair",
        module=module,
        cases=cases,
        tolerance=TIGHT_F32,
        output_names=("z",),
        notes='x float32["n",4], y float32["n",4] -> x*y + x float32[n,4]: two inputs sharing n.',
    )


def build_slow() -> VMFixture:
    """Deliberately slow (~0.5 s): a chain of matmuls with a 1024x1024 weight.

    Nothing is scheduled, so the TIR loops run naively and single-threaded;
    that keeps the run time proportional to the FLOP count and roughly
    machine-independent in order of magnitude.  One weight matrix is reused
    by every layer to keep the artifact at ~4 MB.
    """
    rows, width, layers = 32, 1024, 4
    rng = _rng("slow")
    weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(F32)
    head_w, head_b = _dense_params(rng, width, 8)
    x = rng.standard_normal((rows, width)).astype(F32)

    def body(bb, x):
        hidden, shared = x, relax.const(weight)
        for _ in range(layers):
            # tanh keeps the activations bounded however long the chain is.
            hidden = bb.emit(op.tanh(op.matmul(hidden, shared)))
        return _dense(hidden, head_w, head_b)

    module = _dataflow_main([_tensor_param("x", (rows, width), "float32")], body)
    hidden_ref = x.astype(np.float64)
    for _ in range(layers):
        hidden_ref = np.tanh(hidden_ref @ weight.astype(np.float64))
    expected = _np_dense(hidden_ref, head_w, head_b).astype(F32)
    macs = rows * width * (width * layers + 8)
    return VMFixture(
        name="slow",
        module=module,
        cases=[Case("default", [x], [expected])],
        tolerance=LONG_CHAIN_F32,
        notes=(
            f"x[{rows},{width}] -> {layers} x (matmul with a shared {width}x{width} "
            f"weight, tanh) -> dense({width}->8). About {macs // 10**6}M multiply-adds "
            "of unscheduled, single-threaded TIR: roughly 0.5 s per run; used to check "
            "that the event loop keeps running during an async call."
        ),
    )


# --------------------------------------------------------------------------
# TIR kernel library
# --------------------------------------------------------------------------


@I.ir_module
class _Kernels:
    """Destination-passing-style kernels: inputs first, then outputs."""

    @T.prim_func
    def add_one(a: T.handle, b: T.handle):
        T.func_attr({"tirx.noalias": True})
        n = T.int64()
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        for i in range(n):
            B[i] = A[i] + T.float32(1)

    @T.prim_func
    def scale_int32(a: T.handle, b: T.handle):
        T.func_attr({"tirx.noalias": True})
        n = T.int64()
        A = T.match_buffer(a, (n,), "int32")
        B = T.match_buffer(b, (n,), "int32")
        for i in range(n):
            B[i] = A[i] * 3

    @T.prim_func
    def nop(A: T.Buffer((1,), "float32")):
        # Only the generated argument checks run: measures call overhead.
        T.evaluate(0)


def build_kernels() -> KernelLibrary:
    """Plain TIR functions with dynamic and static shapes (no Relax VM)."""
    rng = _rng("kernels")
    add_one = KernelFunction("add_one", ["input", "output"])
    for size in (1, 1000):
        a = rng.standard_normal(size).astype(F32)
        add_one.cases.append(KernelCase(f"n{size}", [a, (a.astype(np.float64) + 1).astype(F32)]))

    scale = KernelFunction("scale_int32", ["input", "output"])
    a = rng.integers(-1000, 1000, size=16, dtype=np.int32)
    scale.cases.append(KernelCase("n16", [a, a * np.int32(3)]))

    nop = KernelFunction("nop", ["input"])
    nop.cases.append(KernelCase("default", [np.array([0.5], dtype=F32)]))

    return KernelLibrary(
        name="kernels",
        module=_Kernels,
        functions=[add_one, scale, nop],
        tolerance=TIGHT_F32,
        notes=(
            "add_one(A: float32[n], B: float32[n]) B = A + 1 with dynamic n; "
            "scale_int32(A: int32[n], B: int32[n]) B = A * 3; nop(A: float32[1]) does "
            "nothing beyond its argument checks (call-overhead benchmark)."
        ),
    )


def build_addone() -> VMFixture:
    """x float32["n"] -> x + 1: the identity-like model of the transfer benchmarks."""
    rng = _rng("addone")
    n = tvm.tirx.Var("n", "int64")
    x = _tensor_param("x", [n], "float32")
    module = _dataflow_main([x], lambda bb, x: op.add(x, relax.const(1.0, "float32")))
    cases = []
    for size in (1, 1000):
        x_val = rng.standard_normal(size).astype(F32)
        # float32 + float32 rounds once, as TVM's kernel does: the reference is exact.
        cases.append(Case(f"n{size}", [x_val], [x_val + F32(1)]))
    return VMFixture(
        name="addone",
        module=module,
        cases=cases,
        tolerance={"rtol": 0.0, "atol": 0.0},
        output_names=("y",),
        notes='x float32["n"] -> x + 1 float32[n] (dynamic n; exact in float32).',
    )


# The dtypes the echo fixture carries, one input each (bit-exact round trips).
ECHO_DTYPES = ("float32", "float16", "int8", "uint8", "int64")


def build_echo() -> VMFixture:
    """One input per dtype of ECHO_DTYPES, each of its own dynamic length, returned as they came."""
    rng = _rng("echo")
    params = [_tensor_param(f"x_{dtype}", [tvm.tirx.Var(f"n_{dtype}", "int64")], dtype) for dtype in ECHO_DTYPES]
    module = _dataflow_main(params, lambda bb, *xs: relax.Tuple(list(xs)))
    cases = []
    for size in (1, 7):
        # Random bytes viewed as each dtype: NaN payloads, -0 and extremes included.
        xs = [rng.integers(0, 256, size=size * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype) for dtype in ECHO_DTYPES]
        cases.append(Case(f"n{size}", xs, [x.copy() for x in xs]))
    return VMFixture(
        name="echo",
        module=module,
        cases=cases,
        tolerance={"rtol": 0.0, "atol": 0.0},
        output_names=tuple(f"y_{dtype}" for dtype in ECHO_DTYPES),
        notes=(
            "x_float32[n0], x_float16[n1], x_int8[n2], x_uint8[n3], x_int64[n4] (each length dynamic) -> "
            "the same five tensors, unchanged: bit-exact transfer tests of every dtype and size."
        ),
    )


# Fixture name -> builder, in the order they are compiled and listed.
BUILDERS = {
    "mlp": build_mlp,
    "conv": build_conv,
    "multi_out": build_multi_out,
    "fp16": build_fp16,
    "kernels": build_kernels,
    "dynamic": build_dynamic,
    "pair": build_pair,
    "slow": build_slow,
    "addone": build_addone,
    "echo": build_echo,
}

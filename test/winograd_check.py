"""The check behind test/winograd.test.ts: a ResNet basic block's second half
(relu(conv3x3(x) + bias + x), 64 -> 64 channels) through scripts/winograd.py for AVX2
(x86-64-v3) and AVX-512 (x86-64-v4) targets, in the cases of CASES. Prints, as one JSON line:
the F(4x4, 3x3) and F(2x2, 3x3) matrices' max error on a random tile against the direct
correlation, and per target the output tile of each Winograd kernel in each case, the
elementwise ops fused into the kernel, the template's reg_n and output-block choices and,
where this CPU runs the target's code, the artifacts' max |difference| from numpy."""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import compile_bench_models as cb  # noqa: E402
import compile_model as cm  # noqa: E402
import nchwc  # noqa: E402
import numpy as np  # noqa: E402
import tvm  # noqa: E402
import winograd  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax, s_tir, tirx  # noqa: E402

rng = np.random.default_rng(0)
weight = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype("float32")
bias = rng.standard_normal(64).astype("float32")


# (name, batch, map size). 28x28: F(4x4) (49 tiles); 14x14: F(2x2) (F(4x4) would have 16: too
# few), the last tiles partly outside the map, also for a batch of 2; 6x6: direct (9 tiles of
# 2x2).
CASES = (("28", 1, 28), ("14", 1, 14), ("6", 1, 6), ("14 batch 2", 2, 14))


def matrices_error(m: int) -> float:
    a, b, g = winograd.winograd_matrices(m)
    tile, kernel = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
    got = a.T @ ((g @ kernel @ g.T) * (b.T @ tile @ b)) @ a
    direct = np.array([[np.sum(tile[i : i + 3, j : j + 3] * kernel) for j in range(m)] for i in range(m)])
    return float(np.abs(got - direct).max())


def model(batch: int, size: int):
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c", "input"], ["s"]),
            helper.make_node("Relu", ["s"], ["out"]),
        ],
        "block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 64, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 64, size, size])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def expected(x):
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,kcij->nkhw", windows, weight.astype(np.float64))
    return np.maximum(conv + bias[None, :, None, None] + x, 0)


def winograd_kernels(fused) -> list:
    funcs = [f for f in fused.functions.values() if isinstance(f, tirx.PrimFunc)]
    return [f for f in funcs if winograd.is_winograd_kernel(tvm.IRModule({"main": f}))]


def tile_of(kernel) -> int:
    """The output tile edge of a Winograd kernel: its inverse transform's rows."""
    sch = s_tir.Schedule(kernel)
    return int(sch.get(winograd._parts(sch)[0][4]).writes[0].source.shape[3])


flags = cb.cpu_flags() or set()
report = {"matrices_error": {str(t): matrices_error(t) for t, _ in winograd.TILES}}
with tempfile.TemporaryDirectory() as tmp:
    for mcpu, needs in (("x86-64-v3", "avx2"), ("x86-64-v4", "avx512f")):
        spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": 2}
        target = tvm.target.Target(spec)
        unit = nchwc.VectorUnit.of(target)
        entry = {"tiles": {}, "maxAbsDiff": {}}
        for name, batch, size in CASES:
            onnx_path = Path(tmp) / f"block{batch}x{size}.onnx"
            onnx_path.write_bytes(model(batch, size).SerializeToString())
            kernels = winograd_kernels(cm.fused_for_tuning(cm.import_onnx(model(batch, size), onnx_path, {}), target, "NCHWc"))
            entry["tiles"][name] = [tile_of(k) for k in kernels]
            if not kernels:
                continue
            if name == "14":  # 49 tiles
                sch = s_tir.Schedule(kernels[0])
                entry["fused"] = [sch.get(b).name_hint for b in winograd._parts(sch)[1]]
                entry["reg_n"] = winograd.reg_n_choices(sch, unit)
                entry["oc_groups"] = winograd.oc_group_choices(sch, unit)
            if needs in flags:
                library = Path(tmp) / f"{mcpu}-{batch}x{size}.so"
                cm.compile_onnx(onnx_path, library, target=spec, conv_layout="NCHWc")
                vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
                x = rng.standard_normal((batch, 64, size, size)).astype("float32")
                got = vm["main"](tvm.runtime.tensor(x))
                entry["maxAbsDiff"][name] = float(np.abs(got.numpy() - expected(x)).max())
        report[mcpu] = entry
print(json.dumps(report))

"""The check behind test/nchwc.test.ts: a 1x1 convolution to 1000 channels (SqueezeNet's
classifier, at 64 -> 1000 over 5x5) with bias and ReLU, through scripts/nchwc.py for AVX2
(x86-64-v3) and AVX-512 (x86-64-v4) targets. Per target it prints the channel count the
convolution kernel computes, how many design spaces the template gives it, and, where this
CPU runs the target's code, the compiled artifact's max |difference| from numpy."""

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
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax, s_tir, tirx  # noqa: E402

rng = np.random.default_rng(0)
weight = (rng.standard_normal((1000, 64, 1, 1)) * 0.1).astype("float32")
bias = rng.standard_normal(1000).astype("float32")
x = rng.standard_normal((1, 64, 5, 5)).astype("float32")
expected = np.maximum(np.einsum("oi,nihw->nohw", weight[:, :, 0, 0], x) + bias[None, :, None, None], 0)

graph = helper.make_graph(
    [helper.make_node("Conv", ["input", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["logits"])],
    "classifier",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64, 5, 5])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000, 5, 5])],
    [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
flags = cb.cpu_flags() or set()
report = {}
with tempfile.TemporaryDirectory() as tmp:
    onnx_path = Path(tmp) / "classifier.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    for mcpu, needs in (("x86-64-v3", "avx2"), ("x86-64-v4", "avx512f")):
        spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": 2}
        target = tvm.target.Target(spec)
        fused = cm.fused_for_tuning(cm.import_onnx(model, onnx_path, {}), target, "NCHWc")
        convs = [f for f in fused.functions.values() if isinstance(f, tirx.PrimFunc) and nchwc.is_conv_kernel(tvm.IRModule({"main": f}))]
        sch = s_tir.Schedule(convs[0])
        out = sch.get(nchwc._blocks(sch)[1]).writes[0].source.shape
        entry = {"kernels": len(convs), "channels": int(out[1]) * int(out[4]), "spaces": len(nchwc.conv_space(sch, nchwc.VectorUnit.of(target)))}
        if needs in flags:
            library = Path(tmp) / f"{mcpu}.so"
            cm.compile_onnx(onnx_path, library, target=spec, conv_layout="NCHWc")
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
            got = vm["main"](tvm.runtime.tensor(x))
            entry["maxAbsDiff"] = float(np.abs(got.numpy() - expected).max())
        report[mcpu] = entry
print(json.dumps(report))

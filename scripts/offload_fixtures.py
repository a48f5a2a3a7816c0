#!/usr/bin/env python3
"""The ONNX models tvm-node's offloading tests split (test/split-fixtures.ts), and their cuts.

Usage (the TVM toolchain's Python; only onnx and numpy are needed)::

    tvm/.venv/bin/python scripts/offload_fixtures.py NAME --out DIR

writes ``DIR/NAME.onnx`` and prints ``{"onnx": "<path>", "cuts": ["t", "a,b", ...]}``: the
default cuts, one ``--cut`` value of scripts/split_model.py each.  The models are seeded,
so the same sources give the same bytes; test/split-fixtures.ts keys its cache on them.

Models
------
``mobilenet_v2_tiny``
    the benchmark's small MobileNetV2 (scripts/compile_bench_models.py builds it), cut
    after the second inverted-residual stage (``add_36``, 1x8x16x16): a mid-network cut
    with a residual Add on both sides of it.
``mobilenet_v2``
    the benchmark's full MobileNetV2 (1x3x224x224), cut inside its fifth stage (``conv_129``,
    1x96x14x14, 74 KiB), where the device's and the server's halves take about as long
    (~75 and ~100 ms on one core here): a pipelined split then gains most.
``branchy``
    input[1,3,32,32] -> stem Conv -> two parallel branches (Conv + Relu, different
    weights) -> Add -> GlobalAveragePool -> Flatten -> Gemm -> logits[1,10].  Cut 0 is the
    stem's output, cut 1 the two branch outputs together, so segment 1 holds two parallel
    stages (a DAG, not a chain).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

OPSET = 17
DEFAULT_CUTS = {
    "mobilenet_v2_tiny": ["add_36"],
    "mobilenet_v2": ["conv_129"],
    "branchy": ["stem", "a_out,b_out"],
}


def bench_model(name: str):
    """A benchmark model, from the benchmark's own builder (one definition of it)."""
    from compile_bench_models import MODELS, build_onnx

    model, _macs, _params = build_onnx(MODELS[name])
    return model


def branchy():
    """A stem, two parallel Conv+Relu branches joined by Add, and a classifier head."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    weights = []

    def weight(name: str, shape: tuple, fan_in: int) -> str:
        # He initialization: activations stay O(1), so encoding errors are comparable.
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) if fan_in else 0.01 * rng.standard_normal(shape)
        weights.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def conv(x: str, name: str, cin: int, cout: int) -> onnx.NodeProto:
        w = weight(f"{name}_w", (cout, cin, 3, 3), cin * 9)
        b = weight(f"{name}_b", (cout,), 0)
        return helper.make_node("Conv", [x, w, b], [name], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    nodes = [
        conv("input", "stem", 3, 8),
        conv("stem", "a_conv", 8, 8),
        helper.make_node("Relu", ["a_conv"], ["a_out"]),
        conv("stem", "b_conv", 8, 8),
        helper.make_node("Relu", ["b_conv"], ["b_out"]),
        helper.make_node("Add", ["a_out", "b_out"], ["sum"]),
        helper.make_node("GlobalAveragePool", ["sum"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", weight("fc_w", (10, 8), 8), weight("fc_b", (10,), 0)], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "branchy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tvm-node offload_fixtures.py")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model


BUILDERS = {
    "mobilenet_v2_tiny": lambda: bench_model("mobilenet_v2_tiny"),
    "mobilenet_v2": lambda: bench_model("mobilenet_v2"),
    "branchy": branchy,
}


def main(argv: list[str] | None = None) -> int:
    import onnx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--out", type=Path, required=True, help="the folder to write NAME.onnx into")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = (args.out / f"{args.name}.onnx").resolve()
    onnx.save(BUILDERS[args.name](), str(path))
    print(json.dumps({"onnx": str(path), "cuts": DEFAULT_CUTS[args.name]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A ResNet-50-shaped ONNX model with seeded random weights (~25.6 M parameters, ~102 MB).

Used by the bench's `memory` group (bench/groups/memory.ts) to measure the memory a load
takes on a model whose weights dominate the artifact. Batch norms are folded into conv
biases, as exported ResNets usually are.

    tvm/.venv/bin/python scripts/resnet_onnx.py OUT.onnx [--depth 50|18] [--classes N]
"""

from __future__ import annotations

import argparse
import sys

# (blocks per stage) for the bottleneck (50) and basic (18) variants
DEPTHS = {50: (3, 4, 6, 3), 18: (2, 2, 2, 2)}


def build(depth: int = 50, classes: int = 1000, resolution: int = 224, seed: int = 50):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    n = [0]

    def fresh(prefix: str) -> str:
        n[0] += 1
        return f"{prefix}_{n[0]}"

    def const(array, prefix: str) -> str:
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = 0.01 * rng.standard_normal(cout)
        y = fresh("conv")
        nodes.append(
            helper.make_node(
                "Conv", [x, const(w, "w"), const(b, "b")], [y],
                kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
            )
        )
        if not relu:
            return y
        z = fresh("relu")
        nodes.append(helper.make_node("Relu", [y], [z]))
        return z

    bottleneck = depth >= 50
    x = conv("input", 3, 64, 7, 2)
    pooled = fresh("maxpool")
    nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = pooled, 64
    for stage, blocks in enumerate(DEPTHS[depth]):
        width = 64 * 2**stage
        cout = width * 4 if bottleneck else width
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            if bottleneck:
                y = conv(x, cin, width, 1)
                y = conv(y, width, width, 3, stride)
                y = conv(y, width, cout, 1, relu=False)
            else:
                y = conv(x, cin, width, 3, stride)
                y = conv(y, width, cout, 3, relu=False)
            shortcut = x if (stride == 1 and cin == cout) else conv(x, cin, cout, 1, stride, relu=False)
            s, r = fresh("add"), fresh("relu")
            nodes += [helper.make_node("Add", [shortcut, y], [s]), helper.make_node("Relu", [s], [r])]
            x, cin = r, cout
    gap, flat = fresh("gap"), fresh("flatten")
    nodes += [helper.make_node("GlobalAveragePool", [x], [gap]), helper.make_node("Flatten", [gap], [flat], axis=1)]
    fc_w = rng.standard_normal((classes, cin)) / np.sqrt(cin)
    nodes.append(helper.make_node("Gemm", [flat, const(fc_w, "fc_w"), const(np.zeros(classes), "fc_b")], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, f"resnet{depth}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tvm-node resnet_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--depth", type=int, choices=sorted(DEPTHS), default=50)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--resolution", type=int, default=224)
    a = p.parse_args(argv)
    import onnx

    onnx.save(build(a.depth, a.classes, a.resolution), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

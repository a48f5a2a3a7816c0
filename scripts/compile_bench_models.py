#!/usr/bin/env python3
"""Build and compile the models of tvm-node's benchmarks (bench/run.ts, group ``cnn``).

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/compile_bench_models.py [--out DIR] [--only NAME[,NAME...]]

``DIR`` defaults to ``<repo>/.cache/bench-models``.  The absolute path of the
model folder is printed as the last line on stdout; progress goes to stderr.

What is built
-------------
Each model is a MobileNetV2-style CNN with random (seeded) weights, written
once as an ONNX graph with ``onnx.helper`` (opset 17; Conv with the batch norm
already folded in, as exporters emit it, Clip(0, 6), Add, GlobalAveragePool,
Flatten, Gemm).  Then, per model:

* ``<name>.onnx``           the graph (what onnxruntime-node runs),
* ``<name>.json``           the model's manifest (scripts/compile_model.py,
                            "Outputs"): the ONNX graph's input and output
                            names, shapes and dtypes, so tvm-node's
                            ``Model.load`` runs the ``.so`` by the ONNX names,
                            plus target, TVM version and content hash,
* ``<name>.so``             that same ``.onnx`` compiled for target ``llvm``
                            by scripts/compile_model.py's ``compile_onnx``,
                            the compile path ``tvm-node compile`` runs (what
                            tvm-node and Python's ``relax.VirtualMachine`` run),
* ``<name>.input.npy``      a seeded standard-normal input,
* ``<name>.reference.npy``  the output of onnxruntime (Python, CPU, 1 thread).

The exported library is loaded back and run through TVM's Python runtime; its
output must match the onnxruntime reference within ``tolerance``, or the build
fails.

Compilation
-----------
Target ``llvm`` without ``-mcpu``: portable code for the host architecture's
baseline ISA (SSE2 on x86-64), like the test fixtures.  onnxruntime, by
contrast, picks AVX2/AVX-512 kernels at run time, so the TVM-vs-onnxruntime
figures compare an untuned, portable TVM build against a hand-tuned library.

TVM 0.27's default CPU pipeline leaves every kernel unscheduled: plain
single-threaded loop nests, on which ``TVM_NUM_THREADS`` has no effect.  To make
the thread count matter (and the comparison with onnxruntime's intra-op
threads meaningful), the CPU pipeline of scripts/compile_model.py runs one
extra, generic and deterministic scheduling pass after legalization
(``ParallelVectorize``):
in every kernel, each block's leading spatial loops are fused and run on TVM's
thread pool, and the innermost spatial loop is split by 8 (or 4) and
vectorized where it divides.  No tuning (MetaSchedule) is done.

Caching
-------
As for the test fixtures (scripts/compile_fixtures.py, whose helpers are used
here): the folder is ``DIR/<key>``, ``<key>`` being 16 hex digits of a sha256
over this script, compile_model.py, compile_fixtures.py and
tvm/requirements.txt; ``--only``
builds into ``DIR/<key>-<names>``.  A folder is complete once its
``index.json`` exists.

index.json (schema version 1)::

    {
      "schema_version": 1, "content_hash": "...", "subset": null | [...],
      "tvm_version": "0.27.0.post1", "onnx_version": "...",
      "onnxruntime_version": "...", "target": "llvm", "schedule": "...",
      "models": {
        "<name>": {
          "onnx": "<name>.onnx", "library": "<name>.so", "manifest": "<name>.json",
          "function": "main",
          "opset": 17,
          "input":  {"name": "input",  "shape": [1, 3, 224, 224], "dtype": "float32", "file": ...},
          "output": {"name": "logits", "shape": [1, 1000], "dtype": "float32", "file": ...},
          "reference": "onnxruntime 1.30.0 (Python, CPU execution provider, 1 thread)",
          "tolerance": {"rtol": ..., "atol": ...}, "max_abs_diff": <TVM vs reference>,
          "macs": <multiply-accumulates per run>, "params": <weights>,
          "compile_s": <from_onnx + tvm.compile + export, seconds>,
          "spec": {...}, "notes": "..."
        }
      }
    }
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

# The fixture script's cache helpers (no TVM import at module level there).
from compile_fixtures import (  # noqa: E402
    INDEX_NAME,
    REPO_ROOT,
    TARGET,
    build_cached,
    content_hash,
    log,
    save_array,
    write_json_atomic,
)

# The one compile path (tvm-node compile runs the same module).
from compile_model import CPU_SCHEDULE as SCHEDULE  # noqa: E402
from compile_model import compile_onnx  # noqa: E402

DEFAULT_OUT = REPO_ROOT / ".cache" / "bench-models"
HASHED_FILES = (
    SCRIPTS_DIR / "compile_bench_models.py",
    SCRIPTS_DIR / "compile_model.py",
    SCRIPTS_DIR / "compile_fixtures.py",
    REPO_ROOT / "tvm" / "requirements.txt",
)
SCHEMA_VERSION = 1
ENTRIES = "models"
OPSET = 17
# TVM and onnxruntime sum in different orders (and onnxruntime may fuse
# differently); over ~50 layers of float32 that stays well inside this.
TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}


class BenchModelError(RuntimeError):
    """A model failed to build or did not match its onnxruntime reference."""


# --------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNSpec:
    """A MobileNetV2-style network (Sandler et al. 2018, torchvision layout)."""

    name: str
    width: float  # width multiplier
    resolution: int  # input is [1, 3, resolution, resolution]
    stages: int  # how many of MobileNetV2's 7 inverted-residual stages
    last_channels: int  # channels of the final 1x1 conv before pooling
    classes: int
    notes: str


# (expansion t, output channels c, repeats n, first stride s) per stage.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

MODELS = {
    "mobilenet_v2": CNNSpec(
        name="mobilenet_v2",
        width=1.0,
        resolution=224,
        stages=7,
        last_channels=1280,
        classes=1000,
        notes=(
            "MobileNetV2 1.0 at 1x3x224x224 -> logits[1,1000], random weights: the "
            "full torchvision layout (52 convs incl. 17 depthwise, 10 residual adds, "
            "batch norm folded into the convs)."
        ),
    ),
    "mobilenet_v2_tiny": CNNSpec(
        name="mobilenet_v2_tiny",
        width=0.35,
        resolution=64,
        stages=3,
        last_channels=128,
        classes=10,
        notes=(
            "The first 3 stages of MobileNetV2 at width 0.35, 1x3x64x64 -> logits[1,10]: "
            "the same ops as mobilenet_v2 at a fraction of the cost (quick benchmark mode)."
        ),
    ),
}


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Channel rounding of the reference MobileNetV2 implementation."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def build_onnx(spec: CNNSpec):
    """The model as an onnx.ModelProto; returns (model, macs, params)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_seed(spec.name))
    nodes, initializers = [], []
    counter = {"n": 0, "macs": 0, "params": 0}

    def fresh(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}_{counter['n']}"

    def const(array, prefix: str) -> str:
        name = fresh(prefix)
        initializers.append(numpy_helper.from_array(array, name))
        return name

    zero = const(np.array(0.0, np.float32), "zero")
    six = const(np.array(6.0, np.float32), "six")
    size = [spec.resolution]  # current spatial size (square)

    def conv(x: str, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu6=True) -> str:
        fan_in = cin // groups * kernel * kernel
        # He initialization keeps activations O(1) through the whole depth.
        weight = rng.standard_normal((cout, cin // groups, kernel, kernel)) * np.sqrt(2.0 / fan_in)
        bias = 0.01 * rng.standard_normal(cout)
        y = fresh("conv")
        nodes.append(
            helper.make_node(
                "Conv",
                [x, const(weight.astype(np.float32), "w"), const(bias.astype(np.float32), "b")],
                [y],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[kernel // 2] * 4,
                group=groups,
            )
        )
        size[0] = (size[0] + 2 * (kernel // 2) - kernel) // stride + 1
        counter["macs"] += size[0] * size[0] * cout * fan_in
        counter["params"] += weight.size + bias.size
        if not relu6:
            return y
        z = fresh("relu6")
        nodes.append(helper.make_node("Clip", [y, zero, six], [z]))
        return z

    channels = _make_divisible(32 * spec.width)
    x = conv("input", 3, channels, 3, 2)
    for expand, out, repeats, stride in MOBILENET_V2_STAGES[: spec.stages]:
        out = _make_divisible(out * spec.width)
        for i in range(repeats):
            s = stride if i == 0 else 1
            hidden = channels * expand
            y = x if expand == 1 else conv(x, channels, hidden, 1, 1)
            y = conv(y, hidden, hidden, 3, s, groups=hidden)
            y = conv(y, hidden, out, 1, 1, relu6=False)  # linear bottleneck
            if s == 1 and channels == out:
                summed = fresh("add")
                nodes.append(helper.make_node("Add", [x, y], [summed]))
                y = summed
            x, channels = y, out
    x = conv(x, channels, spec.last_channels, 1, 1)
    pooled = fresh("pool")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
    flat = fresh("flatten")
    nodes.append(helper.make_node("Flatten", [pooled], [flat], axis=1))
    fc_w = (rng.standard_normal((spec.classes, spec.last_channels)) / np.sqrt(spec.last_channels)).astype(np.float32)
    fc_b = np.zeros(spec.classes, np.float32)
    nodes.append(helper.make_node("Gemm", [flat, const(fc_w, "fc_w"), const(fc_b, "fc_b")], ["logits"], transB=1))
    counter["macs"] += spec.last_channels * spec.classes
    counter["params"] += fc_w.size + fc_b.size

    graph = helper.make_graph(
        nodes,
        spec.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, spec.resolution, spec.resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, spec.classes])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tvm-node compile_bench_models.py"
    )
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model, counter["macs"], counter["params"]


def onnxruntime_reference(onnx_path: Path, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def check_against_reference(what: str, actual, expected) -> float:
    """Max |actual - expected|; raises if outside TOLERANCE."""
    import numpy as np

    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise BenchModelError(f"{what}: got {actual.dtype}{list(actual.shape)}, expected {expected.dtype}{list(expected.shape)}")
    try:
        np.testing.assert_allclose(actual, expected, **TOLERANCE)
    except AssertionError as err:
        raise BenchModelError(f"{what}: TVM does not match the onnxruntime reference\n{err}") from None
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))


def build_model(spec: CNNSpec, folder: Path) -> dict:
    """Write, compile and verify one model; returns its index entry."""
    import numpy as np
    import onnx
    import onnxruntime
    import tvm
    from tvm import relax

    model, macs, params = build_onnx(spec)
    onnx_file = folder / f"{spec.name}.onnx"
    onnx.save(model, str(onnx_file))
    shape = [1, 3, spec.resolution, spec.resolution]
    x = np.random.default_rng(_seed(spec.name) + 1).standard_normal(shape).astype(np.float32)
    expected = onnxruntime_reference(onnx_file, x)

    library = folder / f"{spec.name}.so"
    started = time.monotonic()
    compiled = compile_onnx(onnx_file, library, target=TARGET, input_shapes={"input": shape})
    compile_s = time.monotonic() - started
    manifest_file = Path(compiled["manifest"])

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    actual = vm["main"](tvm.runtime.tensor(x)).numpy()
    max_abs_diff = check_against_reference(spec.name, actual, expected)

    return {
        "onnx": onnx_file.name,
        "library": library.name,
        "manifest": manifest_file.name,
        "function": "main",
        "opset": OPSET,
        "input": {"name": "input", **save_array(folder, f"{spec.name}.input.npy", x)},
        "output": {"name": "logits", **save_array(folder, f"{spec.name}.reference.npy", expected)},
        "reference": f"onnxruntime {onnxruntime.__version__} (Python, CPU execution provider, 1 thread)",
        "tolerance": TOLERANCE,
        "max_abs_diff": max_abs_diff,
        "macs": int(macs),
        "params": int(params),
        "compile_s": round(compile_s, 2),
        "spec": {k: v for k, v in asdict(spec).items() if k != "notes"},
        "notes": spec.notes,
    }


def build_all(folder: Path, key: str, only: list[str] | None) -> None:
    import onnx
    import onnxruntime
    import tvm

    names = [name for name in MODELS if not only or name in only]
    models = {}
    for name in names:
        started = time.monotonic()
        models[name] = build_model(MODELS[name], folder)
        log(
            f"  {name}: ok ({time.monotonic() - started:.1f} s, of which TVM compile "
            f"{models[name]['compile_s']:.1f} s; max |TVM - onnxruntime| = {models[name]['max_abs_diff']:.2e})"
        )
    index = {
        "schema_version": SCHEMA_VERSION,
        "content_hash": key,
        "subset": only or None,
        "tvm_version": tvm.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "target": TARGET,
        "schedule": SCHEDULE,
        "models": models,
    }
    write_json_atomic(folder / INDEX_NAME, index)  # last: marks the folder complete


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"cache directory (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--only",
        type=lambda text: sorted({name.strip() for name in text.split(",") if name.strip()}),
        help=f"comma-separated model names to build (into their own folder); known: {', '.join(MODELS)}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        unknown = sorted(set(args.only) - set(MODELS))
        if unknown:
            raise BenchModelError(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    final = build_cached(args.out.resolve(), content_hash(HASHED_FILES), args.only, build_all, "building benchmark models", ENTRIES)
    print(final)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchModelError as err:
        log(f"error: {err}")
        sys.exit(1)

#!/usr/bin/env python3
"""Build and compile the models of tvm-node's benchmarks (bench/run.ts, group ``cnn``).

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/compile_bench_models.py [--out DIR] [--only NAME[,NAME...]]
        [--tune-missing]

``DIR`` defaults to ``<repo>/.cache/bench-models``.  The absolute path of the
model folder is printed as the last line on stdout; progress goes to stderr.

What is built
-------------
Each model is a CNN in torchvision's layout with random (seeded, He-initialized)
weights, written once as an ONNX graph with ``onnx.helper`` (opset 17; Conv with
the batch norm already folded in, as exporters emit it): MobileNetV2 1.0 (Clip(0, 6),
depthwise convs, residual Add), its small 3-stage variant for quick runs,
ResNet-18 (Relu, MaxPool, residual Add with projection shortcuts) and SqueezeNet
1.1 (Fire modules: Concat of 1x1 and 3x3 expands, MaxPool in ceil mode); all end
in GlobalAveragePool (+ Flatten, Gemm).  Then, per model:

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
* ``<name>.native.so``      (models with ``tuned``) the same, untuned, for
                            preset ``host`` (this machine's CPU by LLVM's name),
* ``<name>.tuned.so``       (models with ``tuned``) the same for one of
                            TUNE_TARGETS (x86-64-v4 or x86-64-v3, 2 cores) with
                            MetaSchedule's schedules from its committed tuning
                            database (below),
* ``<name>.input.npy``      a seeded standard-normal input,
* ``<name>.reference.npy``  the output of onnxruntime (Python, CPU, 1 thread).

Each exported library is loaded back and run through TVM's Python runtime; its
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
vectorized where it divides.  No tuning (MetaSchedule) is done for ``<name>.so``
and ``<name>.native.so``.

The tuned variant
-----------------
``<name>.tuned.so`` is compiled with ``--tune`` semantics (compile_model.py,
``TuneOptions``) against a copy of a tuning database committed in
``bench/tuning/<target>/`` (MetaSchedule's two JSON files, xz-compressed, pruned
to the best record per kernel by scripts/export_tuning_db.py; ``tuning.json`` says
how they were made).  Every kernel found there takes its tuned schedule and nothing
is measured (0 trials).  Kernels the database lacks (another TVM version) get the
untuned schedule, or with ``--tune-missing`` (what ``npm run bench`` passes, not the
quick mode) are tuned here with the model's ``TUNE_BUDGET``.  The target is fixed
(not this machine's CPU) so that the records match wherever the benchmark runs: the
first of TUNE_TARGETS, widest first, whose CPU features this machine has and whose
database is committed (x86-64-v4 on an AVX-512 CPU, x86-64-v3 on an AVX2 one); on
other CPUs the tuned variant is skipped with the reason in the index.  Each database
was tuned with one ``--conv-layout`` (TuneTarget.conv_layout), which the tuned compile
uses too: x86-64-v3's with NCHWc (blocked convolutions over scripts/nchwc.py's
template), x86-64-v4's with the models' NCHW.

Caching
-------
As for the test fixtures (scripts/compile_fixtures.py, whose helpers are used
here): the folder is ``DIR/<key>``, ``<key>`` being 16 hex digits of a sha256
over this script, compile_model.py, compile_fixtures.py,
tvm/requirements.txt and the committed tuning database this CPU uses, and this CPU's
architecture and feature flags; ``--only``
builds into ``DIR/<key>-<names>``.  A folder is complete once its
``index.json`` exists.

index.json (schema version 1)::

    {
      "schema_version": 1, "content_hash": "...", "subset": null | [...],
      "tvm_version": "0.27.0.post1", "onnx_version": "...",
      "onnxruntime_version": "...", "target": "llvm", "schedule": "...",
      "tune_target": {"name": "x86-64-v4", "target": {...}, "database": "bench/tuning/x86-64-v4"}
                     | {"skipped": "<why this CPU gets no tuned variant>"},
      "tune_missing": false,
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
          "spec": {...}, "notes": "...",
          "variants": {            (models with tuned; else {})
            "native": {"library", "manifest", "target", "target_summary", "schedule",
                       "compile_s", "max_abs_diff"},
            "tuned":  {... the same, "tuning": <the manifest's tuning>,
                       "tuning_provenance": <tuning.json's entry for the model>}
                      | {"skipped": "<why>"}
          }
        }
      }
    }
"""

from __future__ import annotations

import argparse
import lzma
import platform
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
    SCRIPTS_DIR / "nchwc.py",
    SCRIPTS_DIR / "winograd.py",
    SCRIPTS_DIR / "compile_fixtures.py",
    REPO_ROOT / "tvm" / "requirements.txt",
)

# The tuned variant: an explicit x86-64 target per committed tuning database
# (bench/tuning/<name>/, each made on one machine), so that its records match on any CPU
# with that target's features (a MetaSchedule record is keyed by the kernel and the
# target). LLVM's microarchitecture levels: x86-64-v3 is AVX2, FMA, BMI2, F16C, MOVBE
# (Haswell, Zen 1 and later), x86-64-v4 adds AVX-512 F, BW, CD, DQ, VL (Skylake-SP, Zen 4
# and later); onnxruntime's kernels use the widest the CPU has, and so does the bench: the
# first of TUNE_TARGETS whose features this CPU has and whose database is committed. All
# with 2 cores (the machines the databases were tuned on; parallel loops are sized by it).
X86_64_V3_FLAGS = ("avx2", "fma", "f16c", "bmi2", "movbe")


@dataclass(frozen=True)
class TuneTarget:
    """One committed tuning database and the target its records are for."""

    name: str  # LLVM's -mcpu, and the folder's name under bench/tuning/
    flags: tuple[str, ...]  # the CPU features (/proc/cpuinfo) its code needs
    # compile_model.py's --conv-layout its records were tuned with (the layout changes the
    # kernels, so a database holds records for one)
    conv_layout: str = "NCHW"

    @property
    def target(self) -> dict:
        return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": self.name, "num-cores": 2}

    @property
    def folder(self) -> Path:
        return REPO_ROOT / "bench" / "tuning" / self.name

    @property
    def database(self) -> str:
        return f"bench/tuning/{self.name}"


TUNE_TARGETS = (
    TuneTarget("x86-64-v4", (*X86_64_V3_FLAGS, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"), conv_layout="NCHWc"),
    TuneTarget("x86-64-v3", X86_64_V3_FLAGS, conv_layout="NCHWc"),
)
# MetaSchedule's two JSON files, committed xz-compressed (scripts/export_tuning_db.py).
TUNING_FILES = ("database_workload.json", "database_tuning_record.json")
# (trials, seconds) for kernels the committed database lacks (--tune-missing only): what
# bench/tuning/<target>/ was made with (see its tuning.json and the README).
TUNE_BUDGET = {"mobilenet_v2": (6000, 2100), "resnet18": (6000, 1500), "squeezenet1_1": (4000, 840), "mobilenet_v2_tiny": (40, 120)}


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (/proc/cpuinfo), None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return None


def choose_tune_target() -> tuple[TuneTarget | None, str | None]:
    """(the tuned variant's target, None), or (None, why there is none on this machine)."""
    from compile_model import machine_arch

    names = " or ".join(t.name for t in TUNE_TARGETS)
    if machine_arch() != "x86_64":
        return None, f"the tuned variant is built for {names} (x86-64); this machine is {machine_arch()}"
    flags = cpu_flags()
    if flags is None:
        return None, f"cannot read /proc/cpuinfo to check for the features of {names}"
    committed = [t for t in TUNE_TARGETS if all((t.folder / f"{name}.xz").is_file() for name in TUNING_FILES)]
    for candidate in committed:
        if set(candidate.flags) <= flags:
            return candidate, None
    why = "; ".join(f"{t.name} needs {', '.join(sorted(set(t.flags) - flags))}" for t in committed)
    return None, f"this CPU lacks the features of every committed tuning database ({why or 'none committed'})"


def cache_key(tune_target: TuneTarget | None) -> str:
    """The models folder's key: :func:`hashed_files` and this CPU (its architecture and
    feature flags: ``<name>.native.so`` is built for it, and a VM's model name, "AMD EPYC"
    for Zen 3 and Zen 4 alike, does not tell AVX-512 from AVX2)."""
    import hashlib

    cpu = f"{platform.machine()} {' '.join(sorted(cpu_flags() or ()))}"
    return hashlib.sha256(f"{content_hash(hashed_files(tune_target))}\ncpu:{cpu}".encode()).hexdigest()[:16]


def hashed_files(tune_target: TuneTarget | None) -> tuple[Path, ...]:
    """What the cache key covers: the scripts, the requirements and the tuning database this
    CPU uses (a cache built on a CPU with another database is not reused: its tuned
    libraries may hold instructions this one lacks)."""
    if tune_target is None:
        return HASHED_FILES
    names = (*(f"{name}.xz" for name in TUNING_FILES), "tuning.json")
    return (*HASHED_FILES, *(tune_target.folder / name for name in names if (tune_target.folder / name).is_file()))


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
    """One benchmark CNN: an architecture (``arch``) at a width, resolution and depth."""

    name: str
    width: float  # width multiplier (MobileNetV2)
    resolution: int  # input is [1, 3, resolution, resolution]
    stages: int  # how many of the architecture's stages
    last_channels: int  # channels of the final 1x1 conv before pooling (MobileNetV2)
    classes: int
    notes: str
    arch: str = "mobilenet_v2"  # mobilenet_v2 | resnet | squeezenet
    tuned: bool = False  # also compiled untuned for the host CPU and tuned (bench/tuning)


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

# ResNet-18 (He et al. 2016, torchvision layout): (output channels, basic blocks) per stage.
RESNET18_STAGES = ((64, 2), (128, 2), (256, 2), (512, 2))

# SqueezeNet 1.1 (Iandola et al. 2016, torchvision layout): Fire modules as
# (squeeze, expand 1x1, expand 3x3), with a 3x3/2 max pool (ceil mode) before the
# modules at these positions.
SQUEEZENET_FIRES = ((16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))
SQUEEZENET_POOL_BEFORE = (0, 2, 4)

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
        tuned=True,
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
        tuned=True,
    ),
    "resnet18": CNNSpec(
        name="resnet18",
        width=1.0,
        resolution=224,
        stages=4,
        last_channels=512,
        classes=1000,
        notes=(
            "ResNet-18 at 1x3x224x224 -> logits[1,1000], random weights: the torchvision "
            "layout (7x7/2 stem conv, 3x3/2 max pool, 8 basic blocks with 1x1/2 projection "
            "shortcuts, 20 convs, batch norm folded into the convs, ReLU)."
        ),
        arch="resnet",
        tuned=True,
    ),
    "squeezenet1_1": CNNSpec(
        name="squeezenet1_1",
        width=1.0,
        resolution=224,
        stages=8,
        last_channels=512,
        classes=1000,
        notes=(
            "SqueezeNet 1.1 at 1x3x224x224 -> logits[1,1000], random weights: the torchvision "
            "layout (3x3/2 stem conv, 8 Fire modules: 1x1 squeeze, 1x1 and 3x3 expands "
            "concatenated, 3 max pools in ceil mode, a 1x1 conv classifier, global average pool)."
        ),
        arch="squeezenet",
        tuned=True,
    ),
}


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Channel rounding of the reference MobileNetV2 implementation."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


class GraphBuilder:
    """An ONNX graph under construction: seeded random weights, He-initialized convs with
    the batch norm folded in (a bias), counted multiply-accumulates and parameters."""

    def __init__(self, spec: CNNSpec):
        import numpy as np

        self.np = np
        self.spec = spec
        self.rng = np.random.default_rng(_seed(spec.name))
        self.nodes: list = []
        self.initializers: list = []
        self.n = 0
        self.macs = 0
        self.params = 0
        self.size = spec.resolution  # current spatial size (square)
        self.clip_bounds: tuple[str, str] | None = None  # Clip(0, 6)'s, made when first used

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, array, prefix: str) -> str:
        from onnx import numpy_helper

        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        from onnx import helper

        y = self.fresh(prefix)
        self.nodes.append(helper.make_node(op, inputs, [y], **attrs))
        return y

    def conv(self, x: str, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: str | None = "relu6", pad: int | None = None) -> str:
        np = self.np
        pad = kernel // 2 if pad is None else pad
        fan_in = cin // groups * kernel * kernel
        # He initialization keeps activations O(1) through the whole depth.
        weight = self.rng.standard_normal((cout, cin // groups, kernel, kernel)) * np.sqrt(2.0 / fan_in)
        bias = 0.01 * self.rng.standard_normal(cout)
        y = self.node(
            "Conv",
            [x, self.const(weight.astype(np.float32), "w"), self.const(bias.astype(np.float32), "b")],
            "conv",
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )
        self.size = (self.size + 2 * pad - kernel) // stride + 1
        self.macs += self.size * self.size * cout * fan_in
        self.params += weight.size + bias.size
        if act == "relu6":
            if self.clip_bounds is None:
                self.clip_bounds = (self.const(np.array(0.0, np.float32), "zero"), self.const(np.array(6.0, np.float32), "six"))
            return self.node("Clip", [y, *self.clip_bounds], "relu6")
        if act == "relu":
            return self.relu(y)
        return y

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], "relu")

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], "add")

    def max_pool(self, x: str, kernel: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        y = self.node("MaxPool", [x], "maxpool", kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, ceil_mode=int(ceil))
        span = self.size + 2 * pad - kernel
        self.size = (-(-span // stride) if ceil else span // stride) + 1
        return y

    def classifier(self, x: str, channels: int) -> None:
        """GlobalAveragePool, Flatten, Gemm -> ``logits``."""
        np = self.np
        from onnx import helper

        flat = self.node("Flatten", [self.node("GlobalAveragePool", [x], "pool")], "flatten", axis=1)
        classes = self.spec.classes
        fc_w = (self.rng.standard_normal((classes, channels)) / np.sqrt(channels)).astype(np.float32)
        fc_b = np.zeros(classes, np.float32)
        self.nodes.append(helper.make_node("Gemm", [flat, self.const(fc_w, "fc_w"), self.const(fc_b, "fc_b")], ["logits"], transB=1))
        self.macs += channels * classes
        self.params += fc_w.size + fc_b.size

    def model(self):
        import onnx
        from onnx import TensorProto, helper

        spec = self.spec
        graph = helper.make_graph(
            self.nodes,
            spec.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, spec.resolution, spec.resolution])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, spec.classes])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tvm-node compile_bench_models.py")
        model.ir_version = 8  # readable by every onnxruntime since 1.10
        onnx.checker.check_model(model)
        return model, self.macs, self.params


def mobilenet_v2(g: GraphBuilder) -> None:
    spec = g.spec
    channels = _make_divisible(32 * spec.width)
    x = g.conv("input", 3, channels, 3, 2)
    for expand, out, repeats, stride in MOBILENET_V2_STAGES[: spec.stages]:
        out = _make_divisible(out * spec.width)
        for i in range(repeats):
            s = stride if i == 0 else 1
            hidden = channels * expand
            y = x if expand == 1 else g.conv(x, channels, hidden, 1, 1)
            y = g.conv(y, hidden, hidden, 3, s, groups=hidden)
            y = g.conv(y, hidden, out, 1, 1, act=None)  # linear bottleneck
            if s == 1 and channels == out:
                y = g.add(x, y)
            x, channels = y, out
    x = g.conv(x, channels, spec.last_channels, 1, 1)
    g.classifier(x, spec.last_channels)


def resnet(g: GraphBuilder) -> None:
    x = g.conv("input", 3, 64, 7, 2, act="relu")
    x = g.max_pool(x, 3, 2, pad=1)
    channels = 64
    for stage, (out, blocks) in enumerate(RESNET18_STAGES[: g.spec.stages]):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            size = g.size
            y = g.conv(x, channels, out, 3, stride, act="relu")
            y = g.conv(y, out, out, 3, 1, act=None)
            if stride != 1 or channels != out:
                after = g.size
                g.size = size
                x = g.conv(x, channels, out, 1, stride, act=None, pad=0)  # projection shortcut
                g.size = after
            x, channels = g.relu(g.add(y, x)), out
    g.classifier(x, channels)


def squeezenet(g: GraphBuilder) -> None:
    x = g.conv("input", 3, 64, 3, 2, act="relu", pad=0)
    channels = 64
    for i, (squeeze, e1, e3) in enumerate(SQUEEZENET_FIRES[: g.spec.stages]):
        if i in SQUEEZENET_POOL_BEFORE:
            x = g.max_pool(x, 3, 2, ceil=True)
        s = g.conv(x, channels, squeeze, 1, 1, act="relu", pad=0)
        a = g.conv(s, squeeze, e1, 1, 1, act="relu", pad=0)
        b = g.conv(s, squeeze, e3, 3, 1, act="relu", pad=1)
        x = g.node("Concat", [a, b], "fire", axis=1)
        channels = e1 + e3
    # torchvision's classifier: (dropout,) 1x1 conv to the classes, ReLU, global average pool.
    x = g.conv(x, channels, g.spec.classes, 1, 1, act="relu", pad=0)
    g.nodes.append(__import__("onnx").helper.make_node("Flatten", [g.node("GlobalAveragePool", [x], "pool")], ["logits"], axis=1))


ARCHITECTURES = {"mobilenet_v2": mobilenet_v2, "resnet": resnet, "squeezenet": squeezenet}


def build_onnx(spec: CNNSpec):
    """The model as an onnx.ModelProto; returns (model, macs, params)."""
    g = GraphBuilder(spec)
    ARCHITECTURES[spec.arch](g)
    return g.model()


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


def tuning_provenance(tune_target: TuneTarget) -> dict:
    """bench/tuning/<target>/tuning.json: how the committed database was made ({} if absent)."""
    import json

    try:
        return json.loads((tune_target.folder / "tuning.json").read_text())
    except (OSError, ValueError):
        return {}


def compile_variant(spec: CNNSpec, folder: Path, onnx_file: Path, x, expected, variant: str, tune_missing: bool, tune_target: TuneTarget | None = None) -> dict:
    """One more compile of the model (``native``: preset host, untuned; ``tuned``: ``tune_target``
    with its committed tuning database), checked against the reference like the portable one."""
    import tvm
    from compile_model import TuneOptions
    from tvm import relax

    shape = [1, 3, spec.resolution, spec.resolution]
    library = folder / f"{spec.name}.{variant}.so"
    tune = None
    if variant == "tuned":
        database = folder / "tuning"
        database.mkdir(exist_ok=True)
        for name in TUNING_FILES:  # a copy: tuning missing kernels must not write into bench/
            packed = tune_target.folder / f"{name}.xz"
            if packed.is_file():
                (database / name).write_bytes(lzma.decompress(packed.read_bytes()))
        trials, seconds = TUNE_BUDGET.get(spec.name, (0, None)) if tune_missing else (0, None)
        tune = TuneOptions(trials=trials, database=database, seconds=seconds)
    started = time.monotonic()
    target, conv_layout = ("host", "NCHW") if variant == "native" else (tune_target.target, tune_target.conv_layout)
    compiled = compile_onnx(onnx_file, library, target=target, input_shapes={"input": shape}, tune=tune, conv_layout=conv_layout)
    compile_s = time.monotonic() - started
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    actual = vm["main"](tvm.runtime.tensor(x)).numpy()
    entry = {
        "library": library.name,
        "manifest": Path(compiled["manifest"]).name,
        "target": compiled["target"],
        "target_summary": compiled["target_summary"],
        "schedule": compiled["schedule"],
        "compile_s": round(compile_s, 2),
        "max_abs_diff": check_against_reference(f"{spec.name} ({variant})", actual, expected),
    }
    if variant == "tuned":
        tuning = dict(compiled["tuning"])
        tuning["database"] = f"{tune_target.database} (copied to {database.name}/)"
        entry["tuning"] = tuning
        entry["tuning_provenance"] = tuning_provenance(tune_target).get("models", {}).get(spec.name)
    return entry


def build_model(spec: CNNSpec, folder: Path, tune_target: tuple, variants: bool = True, tune_missing: bool = False) -> dict:
    """Write, compile and verify one model; returns its index entry. ``tune_target``:
    :func:`choose_tune_target`'s answer."""
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

    entry = {
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
        "variants": {},
    }
    if variants and spec.tuned:
        entry["variants"]["native"] = compile_variant(spec, folder, onnx_file, x, expected, "native", tune_missing)
        chosen, why_not = tune_target
        if chosen is None:
            entry["variants"]["tuned"] = {"skipped": why_not}
        else:
            entry["variants"]["tuned"] = compile_variant(spec, folder, onnx_file, x, expected, "tuned", tune_missing, chosen)
    return entry


def build_all(folder: Path, key: str, only: list[str] | None, tune_target: tuple, variants: bool = True, tune_missing: bool = False) -> None:
    import onnx
    import onnxruntime
    import tvm

    chosen, why_not = tune_target
    names = [name for name in MODELS if not only or name in only]
    models = {}
    for name in names:
        started = time.monotonic()
        models[name] = build_model(MODELS[name], folder, tune_target, variants, tune_missing)
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
        "tune_target": (
            {"name": chosen.name, "target": chosen.target, "database": chosen.database, "conv_layout": chosen.conv_layout} if chosen else {"skipped": why_not}
        ),
        "tune_missing": tune_missing,
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
    parser.add_argument(
        "--tune-missing",
        action="store_true",
        help="tune the kernels the committed tuning database lacks (TUNE_BUDGET per model); default: use the database only",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        unknown = sorted(set(args.only) - set(MODELS))
        if unknown:
            raise BenchModelError(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    tune_target = choose_tune_target()

    def build(folder: Path, key: str, only: list[str] | None) -> None:
        build_all(folder, key, only, tune_target, variants=True, tune_missing=args.tune_missing)

    key = cache_key(tune_target[0])
    final = build_cached(args.out.resolve(), key, args.only, build, "building benchmark models", ENTRIES)
    print(final)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchModelError as err:
        log(f"error: {err}")
        sys.exit(1)

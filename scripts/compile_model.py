#!/usr/bin/env python3
"""Compile an ONNX model into a TVM Relax VM artifact (``.so``) with a manifest beside it.

The one compile path of tvm-node: ``tvm-node compile`` (lib/cli/compile.ts) runs this
script, scripts/compile_bench_models.py imports :func:`compile_onnx`, and anything else
that compiles models (e.g. the stages of a split model) should import :func:`compile_onnx`
or, for a Relax module it built itself, :func:`compile_relax`.

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/compile_model.py MODEL.onnx -o OUT.so
        [--target PRESET|TARGET] [--input-shape NAME=1,3,224,224 ...] [--cc CROSS_GXX]
        [--tune [--trials N] [--tuning-db DIR] [--tune-time SECONDS]
                [--rpc-tracker HOST:PORT --rpc-key KEY]]
        [--events] [--list-presets]

Targets
-------
``--target`` takes a preset name (see ``PRESETS``, or ``--list-presets``), a TVM target
kind (``llvm``: portable code for this machine's architecture; ``cuda``...) or a TVM
target as a JSON object (TVM 0.27 refuses the old ``"llvm -mcpu=..."`` strings), e.g.
``'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"}'``.

A target whose (host) triple names another architecture than this machine's is linked
with the cross g++ ``<arch>-linux-gnu-g++`` (``--cc`` to choose another).

CPU code is compiled by TVM's generic CPU pipeline plus one deterministic scheduling pass
(:class:`ParallelVectorize`, see :func:`schedule_rules`); GPU targets get TVM's default
GPU pipeline (DLight schedules).  ``--tune`` (CPU targets) replaces the scheduling pass by
MetaSchedule tuning with a tuning database kept in a folder (see "Tuning (MetaSchedule)"
below and the README, "Tuning").

Outputs
-------
``OUT.so`` and its manifest ``OUT.json`` (the format lib/manifest.ts reads; see
scripts/compile_fixtures.py, "Manifests") with these fields added, which readers ignore::

    "target": {...}           the TVM target, as TVM canonicalizes it
    "preset": "host" | null   the preset it came from
    "tvm_version": "0.27.0.post1"
    "source": {"file": "model.onnx", "sha256": "<of the .onnx file>"}
    "options": {"input_shapes": {...}}
    "content_hash": "<sha256 of the source's sha256, the target, the options,
                     the TVM version and this script (tuned: and the database's hash)>"
    "tuning": {...}           (--tune) trials, seconds, database path and hash, ...

Inputs are named as the ONNX graph names them, in the graph's order (its parameters);
their shapes are the compiled function's (``--input-shape`` applied; symbolic sizes by
name).  Outputs are named as the graph names them.

Both files are written beside the output under temporary names and renamed into place, so
a reader (a model repository serving the folder) never sees half a file.

Progress and errors
-------------------
With ``--events`` the script writes JSON lines on stdout and nothing else there (TVM's
and LLVM's own output goes to stderr)::

    {"event": "start", "stages": [{"name": "read", "title": "..."}, ...]}
    {"event": "stage", "index": 0, "total": 6, "name": "read", "title": "..."}
    {"event": "tune", "tasks": 18, "tasks_done": 5, "trials": 40, "trials_budget": 64,
     "failed": 0, "best_us": 520.0, "seconds": 31.2, "seconds_left": 88.8}   (--tune)
    {"event": "done", "result": {...}}
    {"event": "error", "kind": "usage" | "FileNotFoundError" | ..., "message": "one line",
     "hint": "..." | null}

Exit status 0 ok, 1 the compile failed, 2 the command line is wrong.  Without
``--events``, progress goes to stderr as plain lines and the result to stdout.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

# The manifest writer shared with the fixtures (no TVM import at module level there).
from compile_fixtures import manifest as manifest_fields  # noqa: E402
from compile_fixtures import vm_signature, write_json_atomic  # noqa: E402

CPU_SCHEDULE = (
    "ParallelVectorize: per kernel, leading spatial loops fused and parallel "
    "(TVM thread pool), innermost spatial loop split by 8 or 4 and vectorized "
    "where it divides; no tuning"
)
NCHWC_SCHEDULE = (
    "convolutions in blocked NCHW[x]c layout with the x86 register-blocked template "
    "(scripts/nchwc.py; fixed choices), 3x3 stride-1 ones on maps of 7x7 and up as Winograd "
    "F(4x4, 3x3) or F(2x2, 3x3) kernels (scripts/winograd.py; fixed choices); other kernels: ParallelVectorize; no tuning"
)
CONV_LAYOUTS = ("NCHW", "NCHWc")
GPU_SCHEDULE = "TVM's default GPU pipeline (DLight: Matmul, GEMV, Reduction, GeneralReduction, Fallback); no tuning"

APT_CROSS_GXX = {"aarch64": "g++-aarch64-linux-gnu", "riscv64": "g++-riscv64-linux-gnu"}


class CompileError(Exception):
    """A compile that cannot go on; ``str()`` is one readable line.

    ``kind`` is ``usage`` for a wrong request (exit status 2), else what failed
    (``FileNotFoundError``, ``ONNXError``, ``UnsupportedOperator``, ``FrontendError``,
    ``ToolchainError``, ``CompileError``, ``LinkError``).
    """

    def __init__(self, message: str, kind: str = "CompileError", hint: str | None = None):
        super().__init__(one_line(message))
        self.kind = kind
        self.hint = hint


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "unknown error")


# --------------------------------------------------------------------------
# Presets and targets (no TVM import unless a target is built)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    # A TVM target as a JSON object, or a function making one (needs TVM).
    target: dict | Callable[[], dict]
    device: str
    notes: str = ""


# Linux /proc/cpuinfo flag -> LLVM feature, for the x86 extensions a CPU model name
# implies but a hypervisor may hide.
X86_FEATURES = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512cd": "avx512cd",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi",
    "avx512_vbmi2": "avx512vbmi2",
    "avx512_vnni": "avx512vnni",
    "avx512_bf16": "avx512bf16",
    "avx512_bitalg": "avx512bitalg",
    "avx512_vpopcntdq": "avx512vpopcntdq",
    "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni",
    "amx_tile": "amx-tile",
    "amx_bf16": "amx-bf16",
    "amx_int8": "amx-int8",
}


def machine_arch() -> str:
    """This machine's architecture as triples name it (x86_64, aarch64, ...)."""
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def host_target() -> dict:
    """This machine's CPU: LLVM's name for it, less the extensions the kernel does not report.

    (LLVM's ``-mcpu=native`` is not honoured by TVM 0.27: it silently builds generic code.)
    """
    from tvm.target import codegen

    cpu = codegen.llvm_get_system_cpu()
    target = {"kind": "llvm", "mtriple": f"{machine_arch()}-linux-gnu"}
    if cpu and cpu != "generic":
        target["mcpu"] = cpu
        if machine_arch() == "x86_64":
            try:
                flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
            except (OSError, AttributeError):
                flags = None
            if flags:
                import tvm

                implied = set(codegen.llvm_get_cpu_features(tvm.target.Target(target)))
                hidden = sorted(f for flag, f in X86_FEATURES.items() if f in implied and flag not in flags)
                if hidden:
                    target["mattr"] = [f"-{f}" for f in hidden]
    return target


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "host",
            "this machine's CPU with all its features (x86-64: e.g. AVX2/AVX-512)",
            host_target,
            "cpu",
            "fastest here; it may not run on a CPU that lacks those features "
            "(use --target llvm for portable code)",
        ),
        Preset(
            "aarch64",
            "generic aarch64 (ARMv8-A with NEON): any 64-bit Arm Linux board",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "generic"},
            "cpu",
        ),
        Preset(
            "jetson-orin",
            "NVIDIA Jetson Orin: CUDA sm_87 kernels, Cortex-A78AE host code",
            {
                "kind": "cuda",
                "arch": "sm_87",
                "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"},
            },
            "cuda",
            "TVM 0.27 embeds the kernels as CUDA C, compiled "
            "when the artifact is loaded by TVM's tvm_callback_cuda_compile (NVRTC or nvcc of "
            "the CUDA toolkit), which TVM registers only from Python",
        ),
        Preset(
            "rk3588",
            "Rockchip RK3588: Cortex-A76 code (runs on its Cortex-A55 cores too), CPU only",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"},
            "cpu",
            "its Mali-G610 GPU needs OpenCL, which the PyPI "
            "TVM lacks: use a TVM built with USE_OPENCL=ON and an opencl target",
        ),
    )
}


@dataclass
class TargetSpec:
    """What --target asked for, before TVM is imported."""

    text: str
    preset: str | None
    target: dict | str | Callable[[], dict]
    device: str | None

    def host_triple(self) -> str | None:
        """The triple host code is generated for, when the spec says (else this machine's)."""
        target = self.target
        if not isinstance(target, dict):
            return None
        host = target if target.get("kind") in ("llvm", "c") else target.get("host")
        return host.get("mtriple") if isinstance(host, dict) else None


def parse_target(text: str) -> TargetSpec:
    """A preset name, a TVM target kind or a JSON target; raises CompileError (usage)."""
    text = text.strip()
    if text in PRESETS:
        preset = PRESETS[text]
        return TargetSpec(text, text, preset.target, preset.device)
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as err:
            raise CompileError(f"--target is not valid JSON: {err}", "usage") from None
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise CompileError('--target: a JSON target is an object with a "kind", e.g. {"kind": "llvm"}', "usage")
        return TargetSpec(text, None, value, None)
    if re.fullmatch(r"[a-z][a-z0-9_]*", text):
        return TargetSpec(text, None, text, None)  # a target kind, checked against TVM's list later
    if re.match(r"[a-z]+ +-", text):
        raise CompileError(
            f"--target '{text}': TVM 0.27 takes targets as JSON, e.g. "
            '\'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}\'',
            "usage",
        )
    raise CompileError(f"unknown target '{text}': {presets_line()}", "usage")


def presets_line() -> str:
    return f"presets are {', '.join(PRESETS)}; or a TVM target kind (llvm, cuda, ...) or a JSON target"


def cross_compiler_for(spec: TargetSpec, cc: str | None) -> str | None:
    """The cross g++ to link with (checked to exist), or None for a native build."""
    triple = spec.host_triple()
    arch = triple.split("-")[0] if triple else None
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    if cc is None and (arch is None or arch == machine_arch()):
        return None
    compiler = cc or f"{arch}-linux-gnu-g++"
    if shutil.which(compiler) is None:
        what = f"target '{spec.text}'" if spec.preset is None else f"preset '{spec.preset}'"
        if cc is not None:
            raise CompileError(f"--cc {cc}: not found", "ToolchainError", "give --cc a compiler on PATH or its path")
        package = APT_CROSS_GXX.get(arch)
        install = f"apt-get install -y {package}" if package else f"install a g++ for {triple} and pass it with --cc"
        raise CompileError(
            f"{compiler} not found: the {what} links with the cross g++; install it with `{install}`",
            "ToolchainError",
            f"{install} (Debian/Ubuntu), or pass another cross compiler with --cc",
        )
    return compiler


def parse_input_shape(text: str) -> tuple[str, list[int | str]]:
    """``NAME=1,3,224,224`` or ``NAME=1x3x224x224``; a size may be a name (symbolic, e.g. ``N``)."""
    name, eq, dims = text.rpartition("=")
    name = name.strip()
    if not eq or not name:
        raise CompileError(f"--input-shape '{text}': expected NAME=D1,D2,... such as input=1,3,224,224", "usage")
    # Commas separate sizes; without a comma, x does (1x3x224x224).
    parts = [p.strip() for p in re.split("," if "," in dims else r"[x×]", dims)] if dims.strip() else []
    shape: list[int | str] = []
    for part in parts:
        if re.fullmatch(r"\d+", part):
            shape.append(int(part))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            shape.append(part)
        else:
            raise CompileError(
                f"--input-shape '{text}': size '{part}' is neither a non-negative integer nor a name",
                "usage",
            )
    if not dims.strip():
        raise CompileError(f"--input-shape '{text}': no sizes after '=' (a scalar input has no --input-shape)", "usage")
    return name, shape


# --------------------------------------------------------------------------
# The CPU schedule (shared with the benchmark models)
# --------------------------------------------------------------------------


def schedule_rules():
    """The dlight rules applied to every CPU kernel (first that applies wins)."""
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    def extent(sch, loop) -> int | None:
        value = sch.get(loop).extent
        return int(value.value) if isinstance(value, tirx.IntImm) else None

    class ParallelVectorize(CPUScheduleRule):
        """Parallel outer spatial loops, vectorized inner spatial loop.

        Blocks whose iterators are all spatial (elementwise, padding) get all
        loops fused, split by the vector width and the outer part parallel.
        Reduction blocks (convolutions, pooling, matmul) of the form
        ``S...S R...R`` get the last spatial loop split by the vector width and
        moved inside the reduction loops, the remaining spatial loops fused and
        parallel, and the reduction's init separated from its update.
        """

        lanes = (8, 4)

        def apply(self, func, target, _tunable):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            changed = False
            for info in infos:
                kinds = info.dom_kind()
                n_spatial = len(kinds) - len(kinds.lstrip("S"))
                if n_spatial == 0 or set(kinds[n_spatial:]) - {"R"}:
                    continue
                loops = sch.get_loops(info.block_rv)
                if len(loops) != len(kinds):
                    continue
                spatial, reduce = loops[:n_spatial], loops[n_spatial:]
                if not reduce:
                    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
                    size = extent(sch, fused)
                    lanes = next((v for v in self.lanes if size and size % v == 0 and size > v), None)
                    if lanes:
                        outer, inner = sch.split(fused, [None, lanes])
                        sch.parallel(outer)
                        sch.vectorize(inner)
                    else:
                        sch.parallel(fused)
                    changed = True
                    continue
                size = extent(sch, spatial[-1])
                lanes = next((v for v in self.lanes if size and size % v == 0), None)
                if lanes:
                    outer_last, inner = sch.split(spatial[-1], [None, lanes])
                    sch.reorder(*spatial[:-1], outer_last, *reduce, inner)
                    outer = sch.fuse(*spatial[:-1], outer_last) if len(spatial) > 1 else outer_last
                    sch.parallel(outer)
                    sch.vectorize(inner)
                    init = sch.decompose_reduction(info.block_rv, reduce[0])
                    sch.vectorize(sch.get_loops(init)[-1])
                else:
                    sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
                changed = True
            return sch if changed else None

    class BlockedConv(CPUScheduleRule):
        """Blocked-layout convolutions (``--conv-layout NCHWc``), direct or Winograd: nchwc.schedule_kernel."""

        def apply(self, func, target, _tunable):
            import nchwc

            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            return sch if nchwc.schedule_kernel(sch, nchwc.VectorUnit.of(target)) else None

    return [BlockedConv(), dl.cpu.GEMV(), ParallelVectorize()]


def legalize_passes(target, conv_layout: str) -> list:
    """TVM 0.27's CPU legalization and fusion; with ``conv_layout`` NCHWc the convolutions
    are first converted to blocked layouts and lowered by TOPI's NCHWc computes
    (scripts/nchwc.py)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    passes = cpu.legalize_passes(target)
    if conv_layout != "NCHWc":
        return passes
    import nchwc

    return [nchwc.convert_layout(nchwc.VectorUnit.of(target)), nchwc.legalize(), *passes[1:]]


def cpu_pipeline(target, conv_layout: str = "NCHW"):
    """TVM 0.27's CPU pipeline with the scheduling pass after legalization."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight as dl

    @tvm.transform.module_pass(opt_level=0, name="TvmNodeCPUPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (
                cpu.library_dispatch_passes(target)
                + legalize_passes(target, conv_layout)
                + [dl.ApplyDefaultSchedule(*schedule_rules())]
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


TUNED_SCHEDULE = (
    "MetaSchedule-tuned kernels (the best record of the tuning database per kernel); "
    "kernels without a record: ParallelVectorize"
)
TUNED_NCHWC_SCHEDULE = (
    "convolutions in blocked NCHW[x]c layout, MetaSchedule-tuned over the x86 register-blocked "
    "template (scripts/nchwc.py) or, 3x3 stride-1 ones on maps of 7x7 and up, the Winograd "
    "one (scripts/winograd.py), other kernels over MetaSchedule's generic space (the best record "
    "of the tuning database per kernel); kernels without a record: the template's fixed choices, "
    "ParallelVectorize"
)


def fused_for_tuning(mod, target, conv_layout: str = "NCHW"):
    """The CPU pipeline up to the kernels MetaSchedule tunes: library dispatch, legalization
    and fusion (each fused kernel is one tuning task)."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    try:
        with target:
            return tvm.transform.Sequential(cpu.library_dispatch_passes(target) + legalize_passes(target, conv_layout))(mod)
    except Exception as err:
        raise CompileError(f"optimizing failed: {one_line(str(err))}") from None


def tuned_cpu_pipeline(mod, target, tune: TuneOptions, progress: Progress, compiler: str | None = None, conv_layout: str = "NCHW"):
    """:func:`cpu_pipeline` with MetaSchedule tuning in place of the scheduling pass:
    library dispatch, legalization and fusion, then :func:`tune_module` (tune, apply the
    database), then ParallelVectorize for kernels without a record, then lowering.
    Returns (module, the manifest's ``tuning``).
    """
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight as dl

    progress.stage("optimize", f"optimizing for {target.kind.name}")
    mod = fused_for_tuning(mod, target, conv_layout)
    progress.stage("tune", "tuning: loading MetaSchedule")
    mod, tuning = tune_module(mod, target, tune, progress, compiler)
    progress.stage("tune", "applying the tuned schedules")
    try:
        with target:
            passes = [dl.ApplyDefaultSchedule(*schedule_rules())] + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            mod = tvm.transform.Sequential(passes)(mod)
    except Exception as err:
        raise CompileError(f"optimizing failed: {one_line(str(err))}") from None
    return mod, tuning


def pipeline_for(target, conv_layout: str = "NCHW"):
    """(pipeline, description) for a built tvm.target.Target."""
    from tvm import relax

    if target.kind.name == "llvm":
        return cpu_pipeline(target, conv_layout), NCHWC_SCHEDULE if conv_layout == "NCHWc" else CPU_SCHEDULE
    if "gpu" in target.keys:
        return relax.get_default_pipeline(target), GPU_SCHEDULE
    return relax.get_pipeline("default"), "TVM's default pipeline; no tuning"


# --------------------------------------------------------------------------
# Tuning (MetaSchedule): --tune
# --------------------------------------------------------------------------


@dataclass
class TuneOptions:
    """What ``--tune`` asks for.

    ``trials``: the most candidate schedules measured in this compile, over all kernels
    (tasks); ``database``: the folder of the tuning database (MetaSchedule's JSON database:
    ``database_workload.json`` and ``database_tuning_record.json``), kept and reused: a task
    (a kernel's TIR for this target) that already has a measured record there is taken from
    it and not tuned again; ``seconds``: a time budget for the measuring (tasks stop when it
    is spent; what was measured by then is used); ``tracker`` (``host:port``) and ``key``:
    measure on a device registered with a TVM RPC tracker under that key.
    """

    trials: int = 64
    database: str | Path | None = None
    seconds: float | None = None
    # Measure on a device registered with a TVM RPC tracker ("host:port") under ``key``
    # instead of on this machine.
    tracker: str | None = None
    key: str | None = None

    def tracker_address(self) -> tuple[str, int]:
        host, _, port = (self.tracker or "").rpartition(":")
        if not host or not port.isdigit():
            raise CompileError(f"--rpc-tracker '{self.tracker}': expected HOST:PORT, e.g. 127.0.0.1:9190", "usage")
        return host, int(port)

    def folder(self) -> Path:
        if self.database is not None:
            return Path(self.database).expanduser().resolve()
        return default_tuning_database()


def default_tuning_database() -> Path:
    """``$TVM_NODE_TUNING_DB``, else ``$XDG_CACHE_HOME/tvm-node/tuning`` (``~/.cache/...``)."""
    if os.environ.get("TVM_NODE_TUNING_DB"):
        return Path(os.environ["TVM_NODE_TUNING_DB"]).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache, "tvm-node", "tuning").resolve()


def check_tunable(target, tune: TuneOptions) -> None:
    """Tuning measures candidates here (or on a tracker's device), so the target's code must
    run on this machine (or be a CPU target for that device)."""
    if (tune.tracker is None) != (tune.key is None):
        raise CompileError("--rpc-tracker and --rpc-key go together", "usage", "e.g. --rpc-tracker 127.0.0.1:9190 --rpc-key rk3588")
    if tune.tracker is not None:
        tune.tracker_address()
    if target.kind.name != "llvm":
        raise CompileError(
            f"--tune: tuning is implemented for CPU (llvm) targets; '{target.kind.name}' gets its default schedules",
            "usage",
            "compile without --tune for this target",
        )
    triple = str(target.attrs.get("mtriple", "")) or f"{machine_arch()}-linux-gnu"
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(triple.split("-")[0], triple.split("-")[0])
    if arch != machine_arch() and tune.tracker is None:
        raise CompileError(
            f"--tune: candidates for {triple} must be measured on such a device; "
            "tvm-node measures on this machine only (see the README, 'Tuning for a board')",
            "usage",
            "measure on the board through a TVM RPC tracker (--rpc-tracker HOST:PORT --rpc-key KEY), or compile without --tune",
        )


def with_num_cores(target, tune: TuneOptions):
    """MetaSchedule needs the target's ``num-cores`` (its parallel loops are sized by it):
    a target without one gets the cores of where it is measured: this machine's physical
    cores, or the size of the tracker device's TVM thread pool."""
    import tvm

    if "num-cores" in target.attrs:
        return target
    if tune.tracker is not None:
        cores = tracker_device_threads(tune)
    else:
        try:
            import psutil

            cores = psutil.cpu_count(logical=False)
        except ImportError:
            cores = None
    value = json.loads(str(target))
    value["num-cores"] = int(cores or os.cpu_count() or 1)
    return tvm.target.Target(value)


def tracker_session(tune: TuneOptions, timeout: float = 60):
    """A session with a device registered with the tracker under ``tune.key``."""
    from tvm import rpc

    host, port = tune.tracker_address()
    try:
        tracker = rpc.connect_tracker(host, port)
        return tracker.request(tune.key, priority=1, session_timeout=timeout)
    except Exception as err:
        raise CompileError(
            f"--rpc-tracker {tune.tracker} --rpc-key {tune.key}: no session: {one_line(str(err))}",
            "RPCError",
            "start the tracker (python -m tvm.exec.rpc_tracker) and a server registered under that key "
            "(tvm-node rpc-server --tracker HOST:PORT --key KEY); python -m tvm.exec.query_rpc_tracker lists them",
        ) from None


def tracker_device_threads(tune: TuneOptions) -> int:
    """The size of TVM's thread pool on the tracker's device (runtime.NumThreads)."""
    session = tracker_session(tune)
    try:
        return int(session.get_function("runtime.NumThreads")())
    except Exception as err:
        raise CompileError(
            f"--rpc-key {tune.key}: cannot ask the device for its cores ({one_line(str(err))})",
            "RPCError",
            'name them in a JSON target: --target \'{"kind": "llvm", ..., "num-cores": 8}\'',
        ) from None


def fast_tensor_intrin_import() -> None:
    """Imports tvm.s_tir.tensor_intrin (MetaSchedule's TuneContext and builder need it) in
    about 5 s instead of about 20 s.

    Its ~500 TVMScript functions each call ``inspect.stack()``, whose source lookup scans
    all of ``sys.modules`` (``inspect.getmodule``) for every frame of a file that is not on
    disk, i.e. the ``<frozen importlib...>`` frames of the import itself. Naming those
    files' modules in inspect's cache ends the scans; the answer is the same (no source).
    """
    import importlib._bootstrap  # noqa: F401
    import importlib._bootstrap_external  # noqa: F401
    import inspect

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    for name in ("importlib._bootstrap", "importlib._bootstrap_external"):
        inspect.modulesbyfile.setdefault(f"<frozen {name}>", name)
    import tvm.s_tir.tensor_intrin  # noqa: F401


def tuning_database_hash(folder: Path) -> str | None:
    """sha256 over the database's two files (None when there is none yet)."""
    files = [folder / "database_workload.json", folder / "database_tuning_record.json"]
    if not all(f.is_file() for f in files):
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


# A candidate whose LLVM code generation takes longer than this is a failed trial: some
# unroll/vectorize combinations make LLVM run for tens of minutes (one ResNet-18 candidate
# here was still compiling after 11 minutes); a normal build takes 0.05-0.3 s. At 60 s, whole
# batches of such candidates (ResNet-18's 7x7/2 stem for x86-64-v3: 8 of 16 in a row) cost a
# minute each, so the limit is 30x a normal build.
BUILD_TIMEOUT_S = 10


def build_candidate(mod, target, path: str, shared_library: bool, compiler: str | None) -> str:
    """Builds one candidate and exports it to ``path`` (run in the builder's worker process)."""
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.support import cc as tvm_cc
    from tvm.support.tar import tar

    fcompile = (tvm_cc.cross_compiler(compiler) if compiler else None) if shared_library else tar
    default_build(mod, target, None).export_library(path, fcompile=fcompile)
    return path


def build_workers() -> int:
    """How many candidates to build at once: the cores this process may use (LLVM builds one
    candidate on one core; MetaSchedule measures a batch only after building all of it), at
    most 8 (each worker holds ~400 MB)."""
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


def worker_builder(scratch: Path, shared_library: bool = False, compiler: str | None = None):
    """A MetaSchedule builder that builds a batch's candidates in long-lived worker processes,
    one per core (:func:`build_workers`), each build within BUILD_TIMEOUT_S.

    MetaSchedule's LocalBuilder starts a fresh pool of worker processes for every batch of
    candidates, and each worker imports tvm.s_tir.tensor_intrin (about 20 s of Python on
    this 2-core machine, 40+ s when two workers import at once) before a build that takes
    0.05-2 s (see the README, "Tuning"). Here each worker imports it once, the fast way
    (:func:`fast_tensor_intrin_import`), and builds until a build times out (then it is
    killed and its next build starts a fresh one) or it has built 256 (TVM's workers leak
    memory over many uses). Each candidate is exported as a tar (for MetaSchedule's
    LocalRunner, which links it) or, with ``shared_library``, as a shared library linked by
    ``compiler`` (a cross g++, default this machine's) for a remote device without a
    compiler, in a folder of its own under ``scratch``; one that fails or times out is a
    failed trial.
    """
    import itertools

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.support.popen_pool import PopenPoolExecutor
    from tvm.support.tar import tar

    if __name__ != "__main__":  # imported: the worker could not import this module by name
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    suffix = "so" if shared_library else tar.output_format
    numbers = itertools.count(1)
    pool = PopenPoolExecutor(max_workers=build_workers(), timeout=BUILD_TIMEOUT_S, initializer=fast_tensor_intrin_import, maximum_process_uses=256)

    @derived_object
    class WorkerBuilder(PyBuilder):
        def build(self, build_inputs):
            futures = []
            for build_input in build_inputs:
                # A folder each: MetaSchedule's RemoveBuildArtifact deletes the artifact's folder.
                folder = scratch / f"candidate-{next(numbers)}"
                folder.mkdir()
                path = str(folder / f"candidate.{suffix}")
                futures.append(pool.submit(build_candidate, build_input.mod, build_input.target, path, shared_library, compiler))
            results = []
            for future in futures:  # the pool times each build from its start in a worker
                try:
                    results.append(BuilderResult(future.result(), None))
                except TimeoutError:
                    results.append(BuilderResult(None, f"WorkerBuilder: LLVM took over {BUILD_TIMEOUT_S} s; killed"))
                except Exception as err:  # a candidate that does not build is a failed trial
                    results.append(BuilderResult(None, f"WorkerBuilder: {err}"))
            return results

        def shutdown(self) -> None:
            pool.shutdown(wait=True)

    return WorkerBuilder()


@dataclass
class TuneState:
    """Progress of one tuning run, reported after each measured batch."""

    tasks: list
    weights: list
    budget: int
    per_task: int
    seconds: float | None
    report: Callable[[dict], None]
    started: float = field(default_factory=time.monotonic)
    trials: list = field(default_factory=list)
    best: list = field(default_factory=list)
    failed: int = 0
    stopped_by_time: bool = False

    def __post_init__(self):
        self.trials = [0] * len(self.tasks)
        self.best = [None] * len(self.tasks)

    def event(self) -> dict:
        elapsed = time.monotonic() - self.started
        done = sum(1 for n in self.trials if n >= self.per_task)
        known = [b * w for b, w in zip(self.best, self.weights, strict=True) if b is not None]
        return {
            "tasks": len(self.tasks),
            "tasks_done": len(self.tasks) if self.stopped_by_time else done,
            "trials": sum(self.trials),
            "trials_budget": self.budget,
            "failed": self.failed,
            "best_us": round(sum(known) * 1e6, 2) if known else None,
            "seconds": round(elapsed, 1),
            "seconds_left": None if self.seconds is None else round(max(0.0, self.seconds - elapsed), 1),
        }


def progress_callback(state: TuneState):
    """A measure callback: counts trials and best latencies, stops the tuning when time is up."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class TuneProgress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            state.trials[task_id] += len(measure_candidates)
            for built, ran in zip(builder_results, runner_results, strict=True):
                secs = [float(s) for s in ran.run_secs] if ran.run_secs else None
                if built.error_msg or ran.error_msg or not secs:
                    state.failed += 1
                    continue
                mean = sum(secs) / len(secs)
                if state.best[task_id] is None or mean < state.best[task_id]:
                    state.best[task_id] = mean
            if state.seconds is not None and time.monotonic() - state.started >= state.seconds and not state.stopped_by_time:
                # Ends tune_tasks (measure_tasks expects it). Terminating the tasks here instead
                # trips TVM's schedulers, which may hand out the task whose results this
                # callback is given ("Check failed: (!task->is_terminated)"). This batch's
                # records are in the database already (AddToDatabase runs before this).
                state.stopped_by_time = True
                state.report(state.event())
                raise TimeoutError("the tuning's time budget is spent")
            state.report(state.event())

    return TuneProgress()


def rpc_cleanup(session, remote_path) -> None:
    """After a candidate ran on the device: remove its uploaded library.

    MetaSchedule's default cleanup also removes ``remote_path + ".so"`` (the library a
    device links from an uploaded tar; tvm-node uploads a library, so that file does not
    exist) and ``""`` (the server's whole work folder; tvm-node's server refuses an empty
    name): either fails the trial. Runs in the runner's worker process (pickled by value).
    """
    if session is not None and remote_path is not None:
        try:
            session.remove(remote_path)
        except Exception:  # a file left in the server's work folder fails nothing
            pass


def set_tvm_threads(count: int) -> None:
    """In the runner's worker process, before its first kernel starts TVM's thread pool."""
    os.environ["TVM_NUM_THREADS"] = str(count)


def tuning_runner(tune: TuneOptions, threads: int):
    """MetaSchedule's LocalRunner (one worker process, measuring on ``threads`` threads), or
    its RPCRunner through the tracker (the board's server sizes its own thread pool).

    TVM sizes its thread pool by TVM_NUM_THREADS, else by what it counts as cores: 1 on this
    project's 2-vCPU VMs, so without this every candidate was measured single-threaded while
    the code it was tuned for runs on the target's ``num-cores`` (the benchmark sets
    TVM_NUM_THREADS = 2): the search ranked schedules by the wrong clock.

    Each candidate runs 10 times, once per timing, with the CPU caches flushed of its
    arguments but the first (the weights and the output; the input is what the kernel
    before it just wrote) before each: in the model a kernel's weights come from memory.
    Timed in a hot loop (3 runs per timing, at least 20 ms), the records of ResNet-18's
    convolutions on AVX-512 made the whole model 5% slower than those timed this way."""

    from tvm.s_tir import meta_schedule as ms

    if __name__ != "__main__":  # imported: the worker could not import this module by name
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
    if tune.tracker is None:
        return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator, initializer=functools.partial(set_tvm_threads, threads))
    host, port = tune.tracker_address()
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=tune.key, session_priority=1, session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1, f_cleanup=rpc_cleanup)


def measure_tasks(tasks, folder: Path, database, tune: TuneOptions, per_task: int, report, compiler=None, scheduler="round-robin"):
    """Tunes MetaSchedule's extracted ``tasks`` into ``database``: at most ``tune.trials``
    candidates in all and ``per_task`` per task, in batches of up to 16, until
    ``tune.seconds`` is spent; ``report`` gets :class:`TuneState` events. ``scheduler``:
    ``round-robin`` (every task in turn) or ``gradient`` (MetaSchedule's: the next batch
    goes to the task whose improvement would save the most weighted time).
    Returns (the TuneState, the cost model's name).
    """
    import importlib.util

    import nchwc
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    per_iter = min(16, per_task)
    cost_model = "xgb" if importlib.util.find_spec("xgboost") else "random"
    # The evolutionary search's population (512 by default) costs seconds per batch to
    # sample and evolve; for small budgets it is scaled to the batch. With XGBoost every
    # member of every generation is lowered and featurized for the model: 512 cost 26-106 s
    # per batch of 16 here (MobileNetV2, 2 busy cores), far more than building and
    # measuring the batch, so that search gets 8 per candidate of a batch.
    population = min(512, max(32, (8 if cost_model == "xgb" else 32) * per_iter))
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=min(50, population))
    contexts, weights = [], []
    for task in tasks:  # blocked convolutions get their template's space (scripts/nchwc.py)
        space = nchwc.template_space(task.dispatched[0], nchwc.VectorUnit.of(task.target)) or "post-order-apply"
        context, weight = extracted_tasks_to_tune_contexts([task], work_dir=str(folder), space=space, strategy=strategy, seed=0)
        contexts += context
        weights += weight
    state = TuneState(contexts, [float(w) for w in weights], tune.trials, per_task, tune.seconds, report)
    report(state.event())
    with tempfile.TemporaryDirectory(prefix="tvm-node-tune-") as scratch:
        runner = builder = None
        try:
            runner = tuning_runner(tune, int(contexts[0].target.attrs["num-cores"]))
            builder = worker_builder(Path(scratch), shared_library=tune.tracker is not None, compiler=compiler)
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(folder),
                max_trials_global=tune.trials,
                max_trials_per_task=per_task,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=database,
                cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress_callback(state)],
                task_scheduler=scheduler,
            )
        except CompileError:
            raise
        except Exception as err:
            if not state.stopped_by_time:  # else: the progress callback's stop, as planned
                raise CompileError(f"tuning failed: {one_line(str(err))}") from None
        finally:
            # The runner's worker processes outlive this one unless shut down (TVM's
            # PopenPoolExecutor says to call shutdown() explicitly).
            pool = getattr(runner, "pool", None)
            if pool is not None:
                pool.shutdown(wait=True)
            if builder is not None:
                builder.shutdown()
    return state, cost_model


def tune_module(mod, target, tune: TuneOptions, progress: Progress, compiler: str | None = None) -> tuple:
    """MetaSchedule-tunes the kernels of a legalized, fused Relax module for ``target``
    (measured on this machine), keeps the records in the tuning database, and applies the
    best of them. Returns (module with tuned kernels scheduled, the manifest's "tuning").
    """
    import math

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    folder = tune.folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CompileError(f"--tuning-db {folder}: {err.strerror}", "usage") from None
    started = time.monotonic()
    fast_tensor_intrin_import()
    database = ms.database.JSONDatabase(work_dir=str(folder))
    records_before = len(database)
    extracted = list(extract_tasks(mod, target))
    known = [t for t in extracted if database.query_tuning_record(t.dispatched[0], target, t.task_name) is not None]
    todo = [t for t in extracted if all(t is not k for k in known)]
    state = None
    if todo and tune.trials > 0:
        per_task = max(1, math.ceil(tune.trials / len(todo)))

        def report(event: dict) -> None:
            left = f", {event['seconds_left']:.0f} s left" if event["seconds_left"] is not None else ""
            best = f", best {event['best_us'] / 1000:.3g} ms" if event["best_us"] is not None else ""
            progress.stage(
                "tune",
                f"tuning: {event['tasks_done']}/{event['tasks']} kernels, {event['trials']}/{event['trials_budget']} trials{best}{left}",
                tune=event,
            )

        state, cost_model = measure_tasks(todo, folder, database, tune, per_task, report, compiler)
    else:
        cost_model = None
    from tvm import relax

    with target, database:
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    applied = sum(1 for t in extracted if database.query_tuning_record(t.dispatched[0], target, t.task_name) is not None)
    import nchwc

    info = {
        "tasks": len(extracted),
        "tasks_conv_template": sum(1 for t in extracted if nchwc.template_space(t.dispatched[0], nchwc.VectorUnit.of(target))),
        "tasks_tuned": len(todo) if state else 0,
        "tasks_from_database": len(known),
        "tasks_scheduled_from_database": applied,
        "trials": sum(state.trials) if state else 0,
        "trials_budget": tune.trials,
        "failed_trials": state.failed if state else 0,
        "records_added": len(database) - records_before,
        "time_budget": tune.seconds,
        "stopped_by_time": bool(state and state.stopped_by_time),
        "seconds": round(time.monotonic() - started, 3),
        "cost_model": cost_model,
        "runner": "local" if tune.tracker is None else f"rpc {tune.tracker} key {tune.key}",
        "database": str(folder),
        "database_sha256": tuning_database_hash(folder),
    }
    return mod, info


# --------------------------------------------------------------------------
# Compiling
# --------------------------------------------------------------------------

STAGES = (
    ("read", "reading the ONNX model"),
    ("import", "importing it (TVM's Relax ONNX frontend)"),
    ("optimize", "optimizing and scheduling"),
    ("codegen", "generating code"),
    ("link", "linking"),
    ("manifest", "writing the manifest"),
)
RELAX_STAGES = STAGES[2:]
TUNE_STAGE = ("tune", "tuning the kernels (MetaSchedule)")
TUNE_STAGES = (*STAGES[:3], TUNE_STAGE, *STAGES[3:])
TUNE_RELAX_STAGES = TUNE_STAGES[2:]


@dataclass
class Progress:
    """Stage reporting: ``report(index, total, name, title)`` per stage started."""

    report: Callable[[int, int, str, str], None] | None = None
    stages: tuple = STAGES
    # Details of a stage (the tuning's counts), as dicts: see "Progress and errors".
    detail: Callable[[dict], None] | None = None
    timings: dict = field(default_factory=dict)
    _current: tuple | None = None
    _index: int = 0

    def stage(self, name: str, title: str | None = None, **detail) -> None:
        """Stage ``name`` starts; the stage running now again only changes the title shown.

        A stage not in ``stages`` (``tune`` for a caller that lists only the untuned
        stages) is shown at the index of the stage before it. ``detail`` (keyword
        arguments) goes to ``self.detail`` with the stage's name.
        """
        now = time.monotonic()
        if self._current and self._current[0] != name:
            self.timings[self._current[0]] = round(now - self._current[1], 3)
        names = [n for n, _ in self.stages]
        index = names.index(name) if name in names else max(0, self._index)
        self._index = index
        if not self._current or self._current[0] != name:
            self._current = (name, now)
        if self.report:
            self.report(index, len(self.stages), name, title or (self.stages[index][1] if name in names else name))
        if detail and self.detail:
            self.detail({"stage": name, **detail})

    def finish(self) -> dict:
        if self._current:
            self.timings[self._current[0]] = round(time.monotonic() - self._current[1], 3)
            self._current = None
        return self.timings


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_path(output: Path) -> Path:
    output = Path(output)
    if output.suffix != ".so":
        raise CompileError(f"-o {output}: the artifact must be a .so file (its manifest goes beside it as .json)", "usage")
    if not output.parent.is_dir():
        raise CompileError(f"-o {output}: folder {output.parent} does not exist", "FileNotFoundError", "create the folder first")
    return output


def resolve_target(spec: TargetSpec):
    """The tvm.target.Target of a spec; a bad one is a usage error."""
    import tvm

    value = spec.target() if callable(spec.target) else spec.target
    if isinstance(value, str) and value not in tvm.target.Target.list_kinds():
        raise CompileError(f"unknown target '{spec.text}': {presets_line()}", "usage")
    try:
        target = tvm.target.Target(value)
    except Exception as err:  # TVM's own message says what is wrong with it
        raise CompileError(f"--target '{spec.text}': {one_line(str(err))}", "usage") from None
    # LLVM only warns (on stderr) about a CPU it does not know, then builds generic code.
    from tvm.target import codegen

    for part in (target, target.host):
        if part is None or part.kind.name != "llvm" or not str(part.attrs.get("mcpu", "")):
            continue
        cpu = str(part.attrs["mcpu"])
        triple = str(part.attrs.get("mtriple", "")) or f"{machine_arch()}-linux-gnu"
        if not codegen.llvm_is_valid_cpu(cpu, triple):
            raise CompileError(f"--target '{spec.text}': LLVM knows no CPU '{cpu}' for {triple}", "usage")
    return target


def device_of(target) -> str:
    kind = target.kind.name
    return {"llvm": "cpu", "c": "cpu", "cuda": "cuda", "nvptx": "cuda", "rocm": "rocm"}.get(kind, kind)


def compile_relax(
    mod,
    output: str | Path,
    *,
    target: str | dict = "host",
    cc: str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    function: str | None = "main",
    source: dict | None = None,
    options: dict | None = None,
    transform_module: Callable | None = None,
    progress: Progress | None = None,
    tune: TuneOptions | None = None,
    conv_layout: str = "NCHW",
) -> dict:
    """Compile a Relax IRModule for ``target`` (a preset, kind or JSON target), export it
    as ``output`` (``.so``) and write its manifest beside it; returns the result (see main).

    ``input_names`` / ``output_names`` name the function's parameters and outputs in the
    manifest (default: the parameters' names, ``output0``, ...). ``source`` and ``options``
    go into the manifest and the content hash. ``transform_module(mod) -> mod`` runs on
    the module before TVM's pipeline, so callers add functions (the encoded entry points
    of scripts/split_model.py) without a compile path of their own; what it does belongs
    in ``options`` (the content hash). ``function=None`` compiles a library of functions
    with no single entry point (a codec): no manifest is written. ``tune``
    (:class:`TuneOptions`): MetaSchedule-tune the kernels (CPU targets of this machine's
    architecture) with the tuning database, recorded in the manifest's ``tuning``.
    ``conv_layout``: ``NCHW`` (the model's own) or ``NCHWc`` (CPU targets: convolutions in
    blocked-channel layouts with the register-blocked template of scripts/nchwc.py, 3x3
    stride-1 ones as Winograd kernels, scripts/winograd.py); recorded in ``options``.
    """
    import tvm
    from tvm import relax
    from tvm.support import cc as tvm_cc

    output = check_output_path(Path(output))
    progress = progress or Progress(stages=TUNE_RELAX_STAGES if tune else RELAX_STAGES)
    spec = parse_target(target) if isinstance(target, str) else TargetSpec(json.dumps(target), None, target, None)
    compiler = cross_compiler_for(spec, cc)
    tvm_target = resolve_target(spec)
    if tune is not None:
        check_tunable(tvm_target, tune)
        tvm_target = with_num_cores(tvm_target, tune)
    check_conv_layout(tvm_target, conv_layout)
    options = {**(options or {}), "conv_layout": conv_layout}
    if conv_layout == "NCHWc":  # the channel blocks follow the target's vector registers
        import nchwc

        options["conv_blocks"] = list(nchwc.VectorUnit.of(tvm_target).blocks)

    if transform_module is not None:
        mod = transform_module(mod)
    kind, inputs, outputs = (None, [], []) if function is None else named_signature(mod, function, input_names, output_names)

    pipeline, schedule = pipeline_for(tvm_target, conv_layout)
    tuning = None
    if tune is None:
        progress.stage("optimize", f"optimizing and scheduling for {tvm_target.kind.name}")
        try:
            with tvm_target:
                mod = pipeline(mod)
        except Exception as err:
            raise CompileError(f"optimizing failed: {one_line(str(err))}") from None
    else:
        mod, tuning = tuned_cpu_pipeline(mod, tvm_target, tune, progress, compiler, conv_layout)
        schedule = TUNED_NCHWC_SCHEDULE if conv_layout == "NCHWc" else TUNED_SCHEDULE

    host = tvm_target.host or tvm_target
    progress.stage("codegen", f"generating code ({describe_target(tvm_target)})")
    try:
        executable = relax.build(mod, tvm_target, relax_pipeline=None)
    except Exception as err:
        raise CompileError(f"code generation failed: {one_line(str(err))}") from None

    progress.stage("link", f"linking with {compiler or tvm_cc.get_cc() or 'g++'}")
    folder = output.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".so", dir=folder)
    os.close(fd)
    tmp_so = Path(tmp_name)
    tmp_json = tmp_so.with_suffix(".json.tmp")
    manifest_path = None
    try:
        try:
            fcompile = tvm_cc.cross_compiler(compiler) if compiler else None
            executable.export_library(str(tmp_so), fcompile=fcompile)
        except Exception as err:
            message = str(err)
            errors = [line.strip() for line in message.splitlines() if re.search(r"\berror\b", line, re.I)]
            raise CompileError(f"linking failed: {errors[0] if errors else one_line(message)}", "LinkError") from None
        os.chmod(tmp_so, 0o644)

        progress.stage("manifest")
        target_json = json.loads(str(tvm_target))
        recipe = {
            "source_sha256": (source or {}).get("sha256"),
            "target": target_json,
            "function": function,
            "options": options or {},
            "tvm_version": tvm.__version__,
            "compiler": sha256_file(Path(__file__)),
            "nchwc": sha256_file(SCRIPTS_DIR / "nchwc.py"),
            "winograd": sha256_file(SCRIPTS_DIR / "winograd.py"),
        }
        if tuning is not None:  # the records applied make the code: the database's state
            recipe["tuning"] = {k: tuning[k] for k in ("trials_budget", "time_budget", "database_sha256")}
        content_hash = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
        if function is None:
            data = {"device": device_of(tvm_target)}
        else:
            data = manifest_fields(inputs, outputs, function=function, device=device_of(tvm_target))
            data.update(
                {
                    "target": target_json,
                    "preset": spec.preset,
                    "tvm_version": tvm.__version__,
                    "source": source,
                    "options": options or {},
                    "content_hash": content_hash,
                }
            )
            if tuning is not None:
                data["tuning"] = tuning
            write_json_atomic(tmp_json, data)
        os.replace(tmp_so, output)
        if function is not None:
            manifest_path = output.with_suffix(".json")
            os.replace(tmp_json, manifest_path)
    finally:
        for path in (tmp_so, tmp_json):
            path.unlink(missing_ok=True)

    return {
        "library": str(output.resolve()),
        "manifest": str(manifest_path.resolve()) if manifest_path else None,
        "target": target_json,
        "target_summary": describe_target(tvm_target),
        "preset": spec.preset,
        "notes": PRESETS[spec.preset].notes if spec.preset else "",
        "device": data["device"],
        "cross_compiler": compiler,
        "host_triple": str(host.attrs.get("mtriple", "")) or f"{machine_arch()}-linux-gnu",
        "schedule": schedule,
        "tvm_version": tvm.__version__,
        "function": function,
        "returns": kind,
        "inputs": data.get("inputs", []),
        "outputs": data.get("outputs", []),
        "content_hash": content_hash,
        "bytes": output.stat().st_size,
        **({"tuning": tuning} if tuning is not None else {}),
    }


def check_conv_layout(target, conv_layout: str) -> None:
    if conv_layout not in CONV_LAYOUTS:
        raise CompileError(f"--conv-layout {conv_layout}: expected one of {', '.join(CONV_LAYOUTS)}", "usage")
    if conv_layout == "NCHWc" and target.kind.name != "llvm":
        raise CompileError(
            f"--conv-layout NCHWc: blocked convolutions are for CPU (llvm) targets, not '{target.kind.name}'",
            "usage",
            "leave --conv-layout out for this target",
        )


def named_signature(mod, function: str, input_names: list[str] | None, output_names: list[str] | None):
    """(returns, inputs, outputs) of ``function``, named (default: parameter names, output0, ...)."""
    if function not in mod:
        raise CompileError(f"the module has no function '{function}'")
    kind, signature = vm_signature(mod[function])
    params = signature["inputs"]
    names_in = list(input_names) if input_names else [p["name"] for p in params]
    outputs = signature["outputs"]
    names_out = list(output_names) if output_names else [f"output{k}" for k in range(len(outputs))]
    if len(names_in) != len(params) or len(names_out) != len(outputs):
        raise CompileError(
            f"{function}: {len(names_in)} input / {len(names_out)} output names for "
            f"{len(params)} parameters / {len(outputs)} outputs"
        )
    inputs = [{**p, "name": n} for p, n in zip(params, names_in, strict=True)]
    outputs = [{**o, "name": n} for o, n in zip(outputs, names_out, strict=True)]
    return kind, inputs, outputs


def describe_target(target) -> str:
    """``llvm aarch64-linux-gnu cortex-a76``, ``cuda sm_87 + llvm aarch64-linux-gnu ...``."""

    def one(t) -> str:
        attrs = t.attrs
        parts = [t.kind.name]
        for key in ("arch", "mtriple", "mcpu"):
            if key in attrs and str(attrs[key]):
                parts.append(str(attrs[key]))
        return " ".join(parts)

    return one(target) + (f" + {one(target.host)}" if target.host is not None and target.kind.name != "llvm" else "")


NOT_ONNX = "give an .onnx file (a model exported to ONNX, e.g. by torch.onnx.export)"


def read_onnx(onnx_path: Path):
    """The ONNX ModelProto; a file that is not one is a CompileError naming it."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(onnx_path))
    except DecodeError as err:
        raise CompileError(f"{onnx_path} is not an ONNX model (protobuf: {one_line(str(err))})", "ONNXError", NOT_ONNX) from None
    except Exception as err:
        raise CompileError(f"{onnx_path} cannot be read as ONNX: {one_line(str(err))}", "ONNXError", NOT_ONNX) from None
    if not model.graph.node or not model.opset_import:
        raise CompileError(f"{onnx_path} is not an ONNX model (no graph nodes or opset)", "ONNXError", NOT_ONNX)
    return model


def onnx_signature(model) -> tuple[list[dict], list[dict]]:
    """The graph's inputs and outputs as manifest entries: ONNX names, shapes, dtypes.

    Initializers listed among the inputs (older exporters do that) are weights,
    not inputs.  A ``dim_param`` becomes its name, an unknown dimension null.
    """
    weights = {init.name for init in model.graph.initializer}

    def describe(info) -> dict:
        value = describe_value(info)
        return {"name": info.name, "shape": value["shape"] or [], "dtype": str(value["dtype"])}

    inputs = [describe(i) for i in model.graph.input if i.name not in weights]
    outputs = [describe(o) for o in model.graph.output]
    return inputs, outputs


def describe_value(info) -> dict:
    """Shape and numpy dtype name of an ONNX ValueInfo: sizes are ints, names (``dim_param``)
    or None (unknown); the shape is None when even the rank is unknown, the dtype when no
    element type is given.
    """
    from onnx import helper

    tensor = info.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                shape.append(dim.dim_param)
            else:
                shape.append(None)
    dtype = str(helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else None
    return {"shape": shape, "dtype": dtype}


def import_onnx(model, onnx_path: Path, shape_dict: dict):
    """tvm.relax.frontend.onnx.from_onnx with readable errors."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model, shape_dict=shape_dict or None)
    except tvm.error.OpNotImplemented as err:
        ops = re.search(r"not supported for frontend ONNX:\s*(.*)", str(err))
        listed = ops.group(1).strip() if ops else one_line(str(err))
        raise CompileError(
            f"{onnx_path.name}: operator(s) not supported by TVM {tvm.__version__}'s ONNX frontend: {listed}",
            "UnsupportedOperator",
            "replace those operators (re-export the model, or rewrite it with onnx tools), or implement them in the frontend",
        ) from None
    except Exception as err:
        raise CompileError(
            f"{onnx_path.name}: the ONNX frontend failed: {one_line(str(err))}",
            "FrontendError",
            "run again with --verbose for TVM's trace; --input-shape can make dynamic sizes static",
        ) from None


def compile_onnx(
    onnx_path: str | Path,
    output: str | Path,
    *,
    target: str | dict = "host",
    input_shapes: dict[str, list[int | str]] | None = None,
    cc: str | None = None,
    transform_module: Callable | None = None,
    options: dict | None = None,
    progress: Progress | Callable[[int, int, str, str], None] | None = None,
    tune: TuneOptions | None = None,
    conv_layout: str = "NCHW",
) -> dict:
    """Import ``onnx_path`` with TVM's Relax frontend and compile it (:func:`compile_relax`).

    ``target``: a preset name (``PRESETS``), a TVM target kind or a JSON-object target.
    ``input_shapes``: ``{name: [sizes]}`` for some of the graph's inputs (sizes may be
    names: symbolic). ``cc``: the cross g++ (default: ``<arch>-linux-gnu-g++`` when the
    target's triple names another architecture). ``transform_module`` and ``options``
    (added to the manifest's) go to :func:`compile_relax`. ``progress``: a
    :class:`Progress` or a ``report(index, total, name, title)`` function. ``tune``
    (:class:`TuneOptions`): MetaSchedule tuning and ``conv_layout`` (see :func:`compile_relax`). Raises
    :class:`CompileError`. Returns the result: library, manifest, target, inputs, outputs,
    content_hash, ...
    """
    onnx_path = Path(onnx_path)
    if not isinstance(progress, Progress):
        progress = Progress(report=progress, stages=TUNE_STAGES if tune else STAGES)
    if not onnx_path.is_file():
        raise CompileError(
            f"{onnx_path}: {'is a folder, not a file' if onnx_path.is_dir() else 'no such file'}",
            "FileNotFoundError",
            "check the path of the .onnx model",
        )
    output = check_output_path(Path(output))
    spec = parse_target(target) if isinstance(target, str) else TargetSpec(json.dumps(target), None, target, None)
    cross_compiler_for(spec, cc)  # before the slow part: a missing cross g++ is said at once
    resolved = resolve_target(spec)  # and so is a bad target
    if tune is not None:
        check_tunable(resolved, tune)  # and a target that cannot be tuned here
    check_conv_layout(resolved, conv_layout)

    progress.stage("read")
    model = read_onnx(onnx_path)
    graph_inputs, graph_outputs = onnx_signature(model)
    known = {i["name"]: i for i in graph_inputs}
    input_shapes = dict(input_shapes or {})
    for name, shape in input_shapes.items():
        if name not in known:
            raise CompileError(
                f"--input-shape {name}: the model has no input '{name}'; its inputs: "
                + ", ".join(f"{i['name']}{i['shape']}" for i in graph_inputs),
                "usage",
            )
        declared = known[name]["shape"]
        if declared and len(declared) != len(shape):
            raise CompileError(
                f"--input-shape {name}={','.join(map(str, shape))}: {len(shape)} sizes for input '{name}' "
                f"of rank {len(declared)} (declared {declared})",
                "usage",
            )
    shape_dict = {}
    for spec_in in graph_inputs:
        name = spec_in["name"]
        if name in input_shapes:
            shape_dict[name] = input_shapes[name]
    source = {"file": onnx_path.name, "sha256": sha256_file(onnx_path)}

    progress.stage("import")
    import tvm

    mod = import_onnx(model, onnx_path, shape_dict_for_tvm(shape_dict))

    return compile_relax(
        mod,
        output,
        target=target,
        cc=cc,
        input_names=[i["name"] for i in graph_inputs],
        output_names=[o["name"] for o in graph_outputs] if len(graph_outputs) else None,
        source=source,
        options={"input_shapes": input_shapes, "frontend": f"tvm.relax.frontend.onnx (TVM {tvm.__version__})", **(options or {})},
        transform_module=transform_module,
        progress=progress,
        tune=tune,
        conv_layout=conv_layout,
    )


def shape_dict_for_tvm(shape_dict: dict) -> dict:
    """Named sizes become tirx.Var (shared by name across inputs), integers stay."""
    if not any(isinstance(d, str) for shape in shape_dict.values() for d in shape):
        return shape_dict
    from tvm import tirx

    variables: dict[str, object] = {}
    return {
        name: [variables.setdefault(d, tirx.Var(d, "int64")) if isinstance(d, str) else d for d in shape]
        for name, shape in shape_dict.items()
    }


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage error, reported like the others
        raise CompileError(message, "usage")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="the .onnx model")
    parser.add_argument("-o", "--out", type=Path, help="the artifact to write (.so; its manifest goes beside it)")
    parser.add_argument("--target", default="host", help=f"preset ({', '.join(PRESETS)}), TVM target kind or JSON target")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=D1,D2,... (repeat per input)")
    parser.add_argument("--cc", help="the g++ to link a cross target with (default: <arch>-linux-gnu-g++)")
    parser.add_argument(
        "--conv-layout",
        default="NCHW",
        help="NCHW (the model's) or NCHWc: CPU convolutions in blocked-channel layouts with a register-blocked schedule, "
        "3x3 stride-1 ones as Winograd kernels",
    )
    parser.add_argument("--tune", action="store_true", help="MetaSchedule-tune the kernels (CPU targets of this machine)")
    parser.add_argument("--trials", type=int, help="--tune: the most candidates measured in all (default 64)")
    parser.add_argument("--tuning-db", type=Path, help="--tune: the tuning database's folder (default ~/.cache/tvm-node/tuning)")
    parser.add_argument("--tune-time", type=float, help="--tune: a time budget in seconds for the measuring")
    parser.add_argument("--rpc-tracker", help="--tune: measure on a device of this TVM RPC tracker (HOST:PORT)")
    parser.add_argument("--rpc-key", help="--tune: the device's key at the tracker")
    parser.add_argument("--events", action="store_true", help="JSON lines on stdout (progress, result, error)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets as JSON and exit")
    return parser.parse_args(argv)


def presets_json() -> list[dict]:
    return [
        {
            "name": p.name,
            "summary": p.summary,
            "target": p.target if isinstance(p.target, dict) else "(this machine's CPU, found by LLVM)",
            "device": p.device,
            "notes": p.notes,
        }
        for p in PRESETS.values()
    ]


class Channel:
    """Where a tool of the compile path reports (see "Progress and errors").

    With ``events``, JSON lines on stdout and nothing else there: whatever TVM, LLVM or
    g++ print goes to stderr. Without, progress lines on stderr and the result on stdout.
    scripts/split_model.py reports through the same channel, so lib/cli reads both alike.
    """

    def __init__(self, events: bool, prog: str):
        self.events = events
        self.prog = prog
        self.out = sys.stdout
        if events:
            sys.stdout.flush()
            self.out = os.fdopen(os.dup(1), "w", buffering=1)
            os.dup2(2, 1)
            sys.stdout = sys.stderr

    def emit(self, event: dict) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def start(self, stages) -> None:
        """The stages about to run, as ``(name, title)`` pairs."""
        if self.events:
            self.emit({"event": "start", "stages": [{"name": n, "title": t} for n, t in stages]})

    def report(self, index: int, total: int, name: str, title: str) -> None:
        if self.events:
            self.emit({"event": "stage", "index": index, "total": total, "name": name, "title": title})
        else:
            print(f"[{index + 1}/{total}] {title}", file=sys.stderr, flush=True)

    def detail(self, detail: dict) -> None:
        """A stage's details (the tuning's counts) as a ``tune`` event."""
        if self.events and detail.get("stage") == "tune" and "tune" in detail:
            self.emit({"event": "tune", **detail["tune"]})

    def done(self, result) -> None:
        if self.events:
            self.emit({"event": "done", "result": result})
        else:
            print(json.dumps(result, indent=2), file=self.out)

    def error(self, kind: str, message: str, hint: str | None) -> None:
        if self.events:
            self.emit({"event": "error", "kind": kind, "message": message, "hint": hint})
        else:
            print(f"{self.prog}: error: {message}", file=sys.stderr)


def run_tool(argv: list[str] | None, prog: str, body: Callable[[list[str], Channel], None]) -> int:
    """Runs ``body(argv, channel)`` with the protocol's exit statuses and one-line errors:
    0 ok, 1 failed (:class:`CompileError` or a bug), 2 usage, 130 interrupted.
    """
    argv = sys.argv[1:] if argv is None else argv
    channel = Channel("--events" in argv, prog)
    try:
        body(argv, channel)
        return 0
    except CompileError as err:
        channel.error(err.kind, str(err), err.hint)
        return 2 if err.kind == "usage" else 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug here or in TVM: still one line, kind named
        if not channel.events:
            raise
        channel.error(type(err).__name__, one_line(str(err)), None)
        import traceback

        traceback.print_exc()
        return 1


def compile_main(argv: list[str], channel: Channel) -> None:
    """The command line of this script (see the module's documentation)."""
    args = parse_args(argv)
    if args.list_presets:
        print(json.dumps(presets_json(), indent=2), file=channel.out)
        return
    if args.model is None or args.out is None:
        raise CompileError("give the model and -o OUT.so", "usage")
    shapes = parse_input_shapes(args.input_shape)
    tune = tune_options(args)
    stages = TUNE_STAGES if tune else STAGES
    channel.start(stages)
    started = time.monotonic()
    progress = Progress(report=channel.report, stages=stages, detail=channel.detail)
    result = compile_onnx(
        args.model, args.out, target=args.target, input_shapes=shapes, cc=args.cc, progress=progress, tune=tune, conv_layout=args.conv_layout
    )
    result["seconds"] = round(time.monotonic() - started, 3)
    result["stages"] = progress.finish()
    channel.done(result)


def tune_options(args: argparse.Namespace) -> TuneOptions | None:
    """``--tune [--trials N] [--tuning-db DIR] [--tune-time S]``; the others need --tune."""
    options = (
        ("--trials", args.trials),
        ("--tuning-db", args.tuning_db),
        ("--tune-time", args.tune_time),
        ("--rpc-tracker", args.rpc_tracker),
        ("--rpc-key", args.rpc_key),
    )
    given = [name for name, value in options if value is not None]
    if not args.tune:
        if given:
            raise CompileError(f"{given[0]} needs --tune", "usage")
        return None
    if args.trials is not None and args.trials < 0:
        raise CompileError(f"--trials {args.trials}: give a number of trials >= 0", "usage")
    if args.tune_time is not None and not args.tune_time > 0:
        raise CompileError(f"--tune-time {args.tune_time}: give a number of seconds > 0", "usage")
    return TuneOptions(
        trials=64 if args.trials is None else args.trials,
        database=args.tuning_db,
        seconds=args.tune_time,
        tracker=args.rpc_tracker,
        key=args.rpc_key,
    )


def parse_input_shapes(texts: list[str]) -> dict[str, list]:
    """``--input-shape`` values as ``{name: sizes}``; a name given twice is a usage error."""
    shapes: dict[str, list] = {}
    for text in texts:
        name, shape = parse_input_shape(text)
        if name in shapes:
            raise CompileError(f"--input-shape {name}: given twice", "usage")
        shapes[name] = shape
    return shapes


def main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "compile_model.py", compile_main)


if __name__ == "__main__":
    sys.exit(main())

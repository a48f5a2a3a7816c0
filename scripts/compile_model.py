#!/usr/bin/env python3
"""Compile an ONNX model into a TVM Relax VM artifact (``.so``) with a manifest beside it.

The one compile path of tvm-node: ``tvm-node compile`` (lib/cli/compile.ts) runs this
script, scripts/compile_bench_models.py imports :func:`compile_onnx`, and anything else
that compiles models (e.g. the stages of a split model) should import :func:`compile_onnx`
or, for a Relax module it built itself, :func:`compile_relax`.

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/compile_model.py MODEL.onnx -o OUT.so
        [--target PRESET|TARGET] [--input-shape NAME=1,3,224,224 ...] [--cc CROSS_GXX]
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
GPU pipeline (DLight schedules).  No tuning.

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
                     the TVM version and this script>"

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
    {"event": "done", "result": {...}}
    {"event": "error", "kind": "usage" | "FileNotFoundError" | ..., "message": "one line",
     "hint": "..." | null}

Exit status 0 ok, 1 the compile failed, 2 the command line is wrong.  Without
``--events``, progress goes to stderr as plain lines and the result to stdout.
"""

from __future__ import annotations

import argparse
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

    return [dl.cpu.GEMV(), ParallelVectorize()]


def cpu_pipeline(target):
    """TVM 0.27's CPU pipeline with the scheduling pass after legalization."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight as dl

    @tvm.transform.module_pass(opt_level=0, name="TvmNodeCPUPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (
                cpu.library_dispatch_passes(target)
                + cpu.legalize_passes(target)
                + [dl.ApplyDefaultSchedule(*schedule_rules())]
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def pipeline_for(target):
    """(pipeline, description) for a built tvm.target.Target."""
    from tvm import relax

    if target.kind.name == "llvm":
        return cpu_pipeline(target), CPU_SCHEDULE
    if "gpu" in target.keys:
        return relax.get_default_pipeline(target), GPU_SCHEDULE
    return relax.get_pipeline("default"), "TVM's default pipeline; no tuning"


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


@dataclass
class Progress:
    """Stage reporting: ``report(index, total, name, title)`` per stage started."""

    report: Callable[[int, int, str, str], None] | None = None
    stages: tuple = STAGES
    timings: dict = field(default_factory=dict)
    _current: tuple | None = None

    def stage(self, name: str, title: str | None = None) -> None:
        """Stage ``name`` starts; the stage running now again only changes the title shown."""
        now = time.monotonic()
        if self._current and self._current[0] != name:
            self.timings[self._current[0]] = round(now - self._current[1], 3)
        index = next(i for i, (n, _) in enumerate(self.stages) if n == name)
        if not self._current or self._current[0] != name:
            self._current = (name, now)
        if self.report:
            self.report(index, len(self.stages), name, title or self.stages[index][1])

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
) -> dict:
    """Compile a Relax IRModule for ``target`` (a preset, kind or JSON target), export it
    as ``output`` (``.so``) and write its manifest beside it; returns the result (see main).

    ``input_names`` / ``output_names`` name the function's parameters and outputs in the
    manifest (default: the parameters' names, ``output0``, ...). ``source`` and ``options``
    go into the manifest and the content hash. ``transform_module(mod) -> mod`` runs on
    the module before TVM's pipeline, so callers add functions (the encoded entry points
    of scripts/split_model.py) without a compile path of their own; what it does belongs
    in ``options`` (the content hash). ``function=None`` compiles a library of functions
    with no single entry point (a codec): no manifest is written.
    """
    import tvm
    from tvm import relax
    from tvm.support import cc as tvm_cc

    output = check_output_path(Path(output))
    progress = progress or Progress(stages=RELAX_STAGES)
    spec = parse_target(target) if isinstance(target, str) else TargetSpec(json.dumps(target), None, target, None)
    compiler = cross_compiler_for(spec, cc)
    tvm_target = resolve_target(spec)

    if transform_module is not None:
        mod = transform_module(mod)
    kind, inputs, outputs = (None, [], []) if function is None else named_signature(mod, function, input_names, output_names)

    pipeline, schedule = pipeline_for(tvm_target)
    progress.stage("optimize", f"optimizing and scheduling for {tvm_target.kind.name}")
    try:
        with tvm_target:
            mod = pipeline(mod)
    except Exception as err:
        raise CompileError(f"optimizing failed: {one_line(str(err))}") from None

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
        }
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
    }


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
) -> dict:
    """Import ``onnx_path`` with TVM's Relax frontend and compile it (:func:`compile_relax`).

    ``target``: a preset name (``PRESETS``), a TVM target kind or a JSON-object target.
    ``input_shapes``: ``{name: [sizes]}`` for some of the graph's inputs (sizes may be
    names: symbolic). ``cc``: the cross g++ (default: ``<arch>-linux-gnu-g++`` when the
    target's triple names another architecture). ``transform_module`` and ``options``
    (added to the manifest's) go to :func:`compile_relax`. ``progress``: a
    :class:`Progress` or a ``report(index, total, name, title)`` function. Raises
    :class:`CompileError`. Returns the result: library, manifest, target, inputs, outputs,
    content_hash, ...
    """
    onnx_path = Path(onnx_path)
    if not isinstance(progress, Progress):
        progress = Progress(report=progress)
    if not onnx_path.is_file():
        raise CompileError(
            f"{onnx_path}: {'is a folder, not a file' if onnx_path.is_dir() else 'no such file'}",
            "FileNotFoundError",
            "check the path of the .onnx model",
        )
    output = check_output_path(Path(output))
    spec = parse_target(target) if isinstance(target, str) else TargetSpec(json.dumps(target), None, target, None)
    cross_compiler_for(spec, cc)  # before the slow part: a missing cross g++ is said at once
    resolve_target(spec)  # and so is a bad target

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
    channel.start(STAGES)
    started = time.monotonic()
    progress = Progress(report=channel.report)
    result = compile_onnx(args.model, args.out, target=args.target, input_shapes=shapes, cc=args.cc, progress=progress)
    result["seconds"] = round(time.monotonic() - started, 3)
    result["stages"] = progress.finish()
    channel.done(result)


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

#!/usr/bin/env python3
"""Compile the TVM test fixtures used by tvm-node's tests, benchmarks and demo.

Usage (from anywhere; the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/compile_fixtures.py [--out DIR] [--only NAME[,NAME...]]

``DIR`` defaults to ``<repo>/.cache/fixtures``; a relative ``--out`` is taken
relative to the current directory.  The absolute path of the fixture folder is
printed as the last line on stdout; progress goes to stderr.

Caching
-------
The output folder is ``DIR/<key>`` where ``<key>`` is the first 16 hex digits
of a sha256 over this script, ``fixture_models.py`` and ``tvm/requirements.txt``
(which pins the TVM version).  TVM is not imported to compute it, so a cache
hit costs only a few milliseconds.  A folder counts as complete once its
``index.json`` exists: everything is built in a temporary sibling folder,
``index.json`` is written last (temp file + rename) and the folder is then
renamed into place, so readers never see a half-built folder.  ``--only``
builds the named fixtures into ``DIR/<key>-<name>[-<name>...]`` (names sorted)
so subsets never shadow the full set.

Every fixture is checked before it is published: the exported library is
loaded back and run through TVM's Python runtime, and each output is compared
with the numpy reference.  Any mismatch aborts the build.

index.json schema (version 1)
-----------------------------
Top level::

    {
      "schema_version": 1,
      "tvm_version": "0.27.0.post1",
      "content_hash": "<16 hex digits, the folder key>",
      "target": "llvm",
      "subset": null | ["mlp", ...],        # the --only names, if any
      "fixtures": {"<name>": <vm fixture> | <kernel library>, ...}
    }

Arrays are stored as ``.npy`` files next to ``index.json``; an array
description is ``{"shape": [int, ...], "dtype": "float32", "file": "x.npy"}``
(dtype names are shared by numpy and TVM: float32, float16, int32, int64, ...).
Shapes in a *signature* may also contain a string (a symbolic dimension, e.g.
``"n"``) or null (data-dependent); shapes in cases are always concrete.

VM fixture (a Relax module; load the library, create a Relax VM on the CPU,
call ``function``)::

    {
      "kind": "vm",
      "file": "<name>.so",
      "manifest": "<name>.json",            # see "Manifests" below
      "function": "main",
      "returns": "tensor" | "tuple",        # tuple: the VM returns an Array
      "signature": {
        "inputs":  [{"name": "x", "shape": ["n", 4], "dtype": "float32"}],
        "outputs": [{"name": "dense", "shape": ["n", 3], "dtype": "float32"}, ...]
      },
      "inputs":  [{"name": "x", "shape": [4, 16], "dtype": "float32", "file": ...}],
      "outputs": [{"shape": [4, 8], "dtype": "float32", "file": ...}],
      "cases": [
        {"name": "default", "inputs": [...], "outputs": [...],
         "stdout": "..."}                   # only if the model prints
      ],
      "tolerance": {"rtol": 1e-05, "atol": 1e-05},
      "needs_host_functions": ["relax.run.print", ...],
      "notes": "..."
    }

``inputs``/``outputs`` repeat ``cases[0]`` for convenience.  ``outputs`` are
the flattened return values (one entry per tuple field).  Floating-point
outputs must satisfy ``|actual - expected| <= atol + rtol * |expected|``;
integer outputs must match exactly.  ``needs_host_functions`` lists the
``relax.run.*`` packed functions the library references (found by scanning
the file): TVM registers them only from Python, so a non-Python host has to
provide them before running the model.  ``stdout`` is the exact text those
Python implementations print through ``relax.run.print`` for that case.

Kernel library (plain TIR functions; load the library and call the functions
directly, destination-passing style)::

    {
      "kind": "kernels",
      "file": "kernels.so",
      "functions": {
        "add_one": {
          "args": [{"name": "A", "shape": ["n"], "dtype": "float32", "role": "input"},
                   {"name": "B", "shape": ["n"], "dtype": "float32", "role": "output"}],
          "cases": [
            {"name": "n1000",
             "args": [{"role": "input",  "shape": [1000], "dtype": "float32", "file": ...},
                      {"role": "output", "shape": [1000], "dtype": "float32", "file": ...}]}
          ]
        }, ...
      },
      "tolerance": {"rtol": ..., "atol": ...},
      "notes": "..."
    }

Case arguments are positional.  For an ``input`` the file holds the value to
pass; for an ``output`` the caller allocates a tensor of the given shape and
dtype, and the file holds the value expected in it after the call.

Manifests
---------
Every VM fixture's library has a manifest beside it, ``<name>.json``, in the
format tvm-node's model API (lib/model.ts) and model repository read
(lib/manifest.ts)::

    {
      "inputs":  [{"name": "x", "shape": ["n", 4], "dtype": "float32"}],
      "outputs": [{"name": "dense", "shape": ["n", 3], "dtype": "float32"}, ...],
      "device": "cpu",
      "function": "main"
    }

Input names are the Relax parameter names; output names come from the
fixture (``output_names``), else ``output0``, ``output1``, ...  (TVM keeps no
output names).  Shapes are the signature's: symbolic dimensions are strings,
data-dependent ones null.  scripts/compile_bench_models.py writes the same
format with the ONNX graph's names.

File names follow ``<fixture>[.<case>].in<k>.npy`` / ``.out<k>.npy`` (the case
part only when a fixture has several cases) and
``kernels.<function>.<case>.in<k>.npy`` / ``.out<k>.npy``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
DEFAULT_OUT = REPO_ROOT / ".cache" / "fixtures"
# Everything that determines the fixtures' content.  Keep in sync with the
# modules this script imports from scripts/.
HASHED_FILES = (
    SCRIPTS_DIR / "compile_fixtures.py",
    SCRIPTS_DIR / "fixture_models.py",
    REPO_ROOT / "tvm" / "requirements.txt",
)
SCHEMA_VERSION = 1
TARGET = "llvm"
INDEX_NAME = "index.json"


class FixtureError(RuntimeError):
    """A fixture failed to build or did not match its numpy reference."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Cache bookkeeping (no TVM, no numpy: this path must stay fast)
# --------------------------------------------------------------------------


def content_hash(files: tuple[Path, ...] = HASHED_FILES) -> str:
    """sha256 over the generator sources and the pinned TVM requirements.

    ``files`` lets other generators (scripts/compile_bench_models.py) key their
    own caches the same way.
    """
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        # Length-prefix each part so that moving bytes between files changes
        # the hash.
        digest.update(f"{path.name}:{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def fixture_folder(out_dir: Path, key: str, only: list[str] | None) -> Path:
    """``DIR/<key>`` for the full set, ``DIR/<key>-<names>`` for a subset."""
    name = key if not only else "-".join([key, *only])
    return out_dir / name


def read_index(folder: Path, entries: str = "fixtures") -> dict | None:
    """The folder's index if it is complete (has an ``entries`` map), else None."""
    try:
        index = json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and entries in index else None


# A list json.dumps(indent=...) spread over several lines, holding no nested
# list/object.  (Strings never contain raw newlines, so this cannot match
# inside a string value.)
_MULTILINE_SCALAR_LIST = re.compile(r"\[\n([^\[\]{}]*?)\n\s*\]")


def to_json(data: dict) -> str:
    """Indented JSON with lists of scalars (shapes, names) kept on one line."""

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(item.strip() for item in match.group(1).split(",\n")) + "]"

    return _MULTILINE_SCALAR_LIST.sub(one_line, json.dumps(data, indent=2))


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that readers see either nothing or the whole file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as stream:
        stream.write(to_json(data) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def publish(tmp: Path, final: Path, entries: str = "fixtures") -> None:
    """Move a finished temp folder into place, tolerating a concurrent build."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        pass
    if read_index(final, entries) is not None:
        # Another run finished the same content first; keep its folder.
        shutil.rmtree(tmp)
        return
    # A stale, incomplete folder (not something this script leaves behind,
    # but e.g. a manual copy): replace it.
    shutil.rmtree(final)
    os.rename(tmp, final)


@contextlib.contextmanager
def stdout_to_stderr():
    """Route everything written to stdout, by Python or native code, to stderr.

    Keeps the result path the only thing this script prints on stdout.
    """
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


# --------------------------------------------------------------------------
# Building.  The functions below import tvm/numpy locally rather than at the
# top of the file: those imports take seconds, and a cache hit must not pay.
# --------------------------------------------------------------------------


def build_all(folder: Path, key: str, only: list[str] | None) -> None:
    """Compile, write and verify the fixtures into the temp folder ``folder``."""
    import tvm

    if str(SCRIPTS_DIR) not in sys.path:  # when imported rather than run
        sys.path.insert(0, str(SCRIPTS_DIR))
    import fixture_models

    names = list(fixture_models.BUILDERS)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise FixtureError(f"unknown fixture(s) {unknown}; known: {names}")
        names = [name for name in names if name in only]

    fixtures = {}
    for name in names:
        started = time.monotonic()
        fixture = fixture_models.BUILDERS[name]()
        if isinstance(fixture, fixture_models.KernelLibrary):
            fixtures[name] = build_kernel_library(fixture, folder)
        else:
            fixtures[name] = build_vm_fixture(fixture, folder)
        log(f"  {name}: ok ({time.monotonic() - started:.1f} s)")

    index = {
        "schema_version": SCHEMA_VERSION,
        "tvm_version": tvm.__version__,
        "content_hash": key,
        "target": TARGET,
        "subset": only or None,
        "fixtures": fixtures,
    }
    # Written last: its presence marks the folder as complete.
    write_json_atomic(folder / INDEX_NAME, index)


def compile_to(module, path: Path) -> None:
    """Compile an IRModule (Relax or pure TIR) for the CPU and export it."""
    import tvm

    tvm.compile(module, target=TARGET).export_library(str(path))


def save_array(folder: Path, file_name: str, array) -> dict:
    """Write one ``.npy`` file and return its index description."""
    import numpy as np

    array = np.ascontiguousarray(array)
    np.save(folder / file_name, array, allow_pickle=False)
    return {"shape": list(array.shape), "dtype": str(array.dtype), "file": file_name}


def host_functions_in(path: Path) -> list[str]:
    """The ``relax.run.*`` function names referenced by a compiled library.

    The VM bytecode names the packed functions it calls as plain strings
    embedded in the library, so a byte scan finds them (like ``strings``).
    """
    found = re.findall(rb"relax\.run\.[A-Za-z0-9_]+", path.read_bytes())
    return sorted({name.decode() for name in found})


def describe_dim(dim):
    """A signature dimension: int if static, the variable name if symbolic."""
    import tvm

    if isinstance(dim, tvm.tirx.IntImm):
        return int(dim.value)
    if isinstance(dim, tvm.tirx.Var):
        return dim.name
    return str(dim)


def describe_tensor_type(ty) -> dict:
    """Shape/dtype of a Relax TensorType; unknown dims become null."""
    from tvm import relax

    if isinstance(ty.shape, relax.ShapeExpr):
        shape = [describe_dim(dim) for dim in ty.shape.values]
    else:
        shape = [None] * ty.ndim if ty.ndim >= 0 else None
    return {"shape": shape, "dtype": str(ty.dtype)}


def vm_signature(func) -> tuple[str, dict]:
    """(``"tensor"`` | ``"tuple"``, signature) of a Relax function."""
    import tvm

    inputs = [{"name": param.name, **describe_tensor_type(param.ty)} for param in func.params]
    ret = func.ret_ty
    if isinstance(ret, tvm.ir.TupleType):
        return "tuple", {"inputs": inputs, "outputs": [describe_tensor_type(f) for f in ret.fields]}
    return "tensor", {"inputs": inputs, "outputs": [describe_tensor_type(ret)]}


def manifest(inputs: list[dict], outputs: list[dict], function: str = "main", device: str = "cpu") -> dict:
    """A model manifest (see "Manifests" above) from named tensor descriptions.

    Each description needs ``name``, ``shape`` and ``dtype``; other keys are dropped.
    """

    def spec(desc: dict, what: str) -> dict:
        if not isinstance(desc.get("name"), str) or not desc["name"]:
            raise FixtureError(f"manifest: {what} has no name")
        if desc.get("shape") is None:
            raise FixtureError(f"manifest: {what} ({desc['name']}) has no known rank")
        return {"name": desc["name"], "shape": list(desc["shape"]), "dtype": str(desc["dtype"])}

    for what, descs in (("inputs", inputs), ("outputs", outputs)):
        names = [d.get("name") for d in descs]
        duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
        if duplicates:
            raise FixtureError(f"manifest: {what} named alike: {duplicates}")
    return {
        "inputs": [spec(d, f"inputs[{i}]") for i, d in enumerate(inputs)],
        "outputs": [spec(d, f"outputs[{i}]") for i, d in enumerate(outputs)],
        "device": device,
        "function": function,
    }


def write_manifest(library: Path, data: dict) -> Path:
    """Write ``data`` as the manifest beside ``library`` (``x.so`` -> ``x.json``)."""
    path = library.with_suffix(".json")
    write_json_atomic(path, data)
    return path


def check_close(what: str, actual, expected, tolerance: dict) -> None:
    """Compare one output with its reference; raise FixtureError if it differs."""
    import numpy as np

    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise FixtureError(
            f"{what}: got {actual.dtype}{list(actual.shape)}, "
            f"expected {expected.dtype}{list(expected.shape)}"
        )
    if np.issubdtype(expected.dtype, np.inexact):
        try:
            np.testing.assert_allclose(
                actual.astype(np.float64), expected.astype(np.float64), **tolerance
            )
        except AssertionError as err:
            raise FixtureError(f"{what}: does not match the numpy reference\n{err}") from None
    elif not np.array_equal(actual, expected):
        raise FixtureError(f"{what}: got {actual}, expected {expected}")


def flatten_result(value) -> list:
    """VM return value (tensor or nested tuple) -> flat list of numpy arrays."""
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value.numpy()]
    return [array for item in value for array in flatten_result(item)]


def build_vm_fixture(fixture, folder: Path) -> dict:
    """Compile a Relax fixture, write its files, verify it, describe it."""
    import tvm
    from tvm import relax

    library = folder / f"{fixture.name}.so"
    compile_to(fixture.module, library)
    returns, signature = vm_signature(fixture.module[fixture.function])
    input_names = [spec["name"] for spec in signature["inputs"]]
    outputs = signature["outputs"]
    output_names = list(fixture.output_names) or [f"output{k}" for k in range(len(outputs))]
    if len(output_names) != len(outputs):
        raise FixtureError(f"{fixture.name}: {len(output_names)} output names for {len(outputs)} outputs")
    signature["outputs"] = [{"name": name, **spec} for name, spec in zip(output_names, outputs, strict=True)]
    manifest_file = write_manifest(
        library, manifest(signature["inputs"], signature["outputs"], function=fixture.function)
    )

    # Write every case, then run the exported library exactly as a consumer
    # would: load it from disk and call it through a fresh VM.
    cases = []
    for case in fixture.cases:
        stem = fixture.name if len(fixture.cases) == 1 else f"{fixture.name}.{case.name}"
        entry = {
            "name": case.name,
            "inputs": [
                {"name": input_names[k], **save_array(folder, f"{stem}.in{k}.npy", array)}
                for k, array in enumerate(case.inputs)
            ],
            "outputs": [
                save_array(folder, f"{stem}.out{k}.npy", array)
                for k, array in enumerate(case.outputs)
            ],
        }
        if case.stdout is not None:
            entry["stdout"] = case.stdout
        cases.append(entry)

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    for case in fixture.cases:
        what = f"{fixture.name}[{case.name}]"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # relax.run.print writes here
            result = vm[fixture.function](*[tvm.runtime.tensor(a) for a in case.inputs])
        actual = flatten_result(result)
        if len(actual) != len(case.outputs):
            raise FixtureError(f"{what}: {len(actual)} outputs, expected {len(case.outputs)}")
        for k, (got, want) in enumerate(zip(actual, case.outputs, strict=True)):
            check_close(f"{what} output {k}", got, want, fixture.tolerance)
        if printed.getvalue() != (case.stdout or ""):
            raise FixtureError(f"{what}: printed {printed.getvalue()!r}, expected {case.stdout!r}")

    host_functions = host_functions_in(library)
    missing = sorted(set(fixture.host_functions) - set(host_functions))
    if missing:
        raise FixtureError(f"{fixture.name}: library does not reference {missing}")

    return {
        "kind": "vm",
        "file": library.name,
        "manifest": manifest_file.name,
        "function": fixture.function,
        "returns": returns,
        "signature": signature,
        "inputs": cases[0]["inputs"],
        "outputs": cases[0]["outputs"],
        "cases": cases,
        "tolerance": fixture.tolerance,
        "needs_host_functions": host_functions,
        "notes": fixture.notes,
    }


def kernel_args(prim_func, roles: list[str]) -> list[dict]:
    """Name/shape/dtype/role of each parameter of a PrimFunc.

    (In TVM 0.27 a PrimFunc's buffer parameters are Vars that carry the
    buffer's shape and dtype themselves; there is no separate buffer_map.)
    """
    return [
        {
            "name": param.name,
            "shape": [describe_dim(dim) for dim in param.shape],
            "dtype": str(param.dtype),
            "role": role,
        }
        for param, role in zip(prim_func.params, roles, strict=True)
    ]


def build_kernel_library(library, folder: Path) -> dict:
    """Compile a TIR kernel library, write its cases, verify them, describe it."""
    import tvm

    path = folder / f"{library.name}.so"
    compile_to(library.module, path)
    loaded = tvm.runtime.load_module(str(path))

    functions = {}
    for function in library.functions:
        described_cases = []
        for case in function.cases:
            stem = f"{library.name}.{function.name}.{case.name}"
            counters = {"input": 0, "output": 0}
            described_args = []
            for role, array in zip(function.roles, case.args, strict=True):
                kind = "in" if role == "input" else "out"
                file_name = f"{stem}.{kind}{counters[role]}.npy"
                counters[role] += 1
                described_args.append({"role": role, **save_array(folder, file_name, array)})
            described_cases.append({"name": case.name, "args": described_args})
            verify_kernel_case(loaded, function, case, library.tolerance)
        functions[function.name] = {
            "args": kernel_args(library.module[function.name], function.roles),
            "cases": described_cases,
        }

    return {
        "kind": "kernels",
        "file": path.name,
        "functions": functions,
        "tolerance": library.tolerance,
        "notes": library.notes,
    }


def verify_kernel_case(loaded, function, case, tolerance: dict) -> None:
    """Call one kernel from the exported library and check its outputs."""
    import tvm

    args = []
    for role, array in zip(function.roles, case.args, strict=True):
        if role == "input":
            args.append(tvm.runtime.tensor(array))
        else:
            args.append(tvm.runtime.empty(array.shape, str(array.dtype)))
    loaded[function.name](*args)
    for k, (role, arg, expected) in enumerate(zip(function.roles, args, case.args, strict=True)):
        if role == "output":
            what = f"kernels.{function.name}[{case.name}] arg {k}"
            check_close(what, arg.numpy(), expected, tolerance)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"cache directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--only",
        type=lambda text: sorted({name.strip() for name in text.split(",") if name.strip()}),
        help="comma-separated fixture names to build (into their own folder)",
    )
    return parser.parse_args(argv)


def build_cached(
    out_dir: Path,
    key: str,
    only: list[str] | None,
    build: Callable[[Path, str, list[str] | None], None],
    what: str,
    entries: str = "fixtures",
) -> Path:
    """The content-hashed folder for ``key``, built by ``build`` unless already complete.

    Builds into a temp folder beside it and renames it into place, so a reader never sees
    a half-built folder and concurrent builders keep whichever finished first.
    """
    final = fixture_folder(out_dir, key, only)
    if read_index(final, entries) is not None:
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=out_dir))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would survive the rename
    started = time.monotonic()
    log(f"{what} into {final} ...")
    try:
        with stdout_to_stderr():
            build(tmp, key, only)
        publish(tmp, final, entries)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"done in {time.monotonic() - started:.1f} s")
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(build_cached(args.out.resolve(), content_hash(), args.only, build_all, "compiling fixtures"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FixtureError as err:
        log(f"error: {err}")
        sys.exit(1)

#!/usr/bin/env python3
"""Split an ONNX model at cut tensors into stages compiled for an edge device and a server.

The build side of edge offloading: ``tvm-node split`` (lib/cli/split.ts) runs this script;
the stages are compiled by scripts/compile_model.py's one compile path
(:func:`compile_model.compile_onnx`, :func:`compile_model.compile_relax`).

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/split_model.py MODEL.onnx --cut T[,T...] [--cut ...] -o DIR
        [--device-target T] [--server-target T] [--input-shape NAME=1,3,224,224 ...]
        [--name BASE] [--events]
    tvm/.venv/bin/python scripts/split_model.py MODEL.onnx --list-cuts [--events]

Cuts
----
Each ``--cut`` is one cut set: tensor names (comma-separated) that together separate the
graph.  Cut sets are ordered by graph position (the last of their producing nodes in the
graph's topological order).  Segment 0 runs from the graph inputs to cut 0, segment i
from cut i-1 to cut i, the last from the last cut to the graph outputs.  A cut set is
valid when walking back from the next boundary (the next cut set, or the graph outputs),
stopping at its tensors and at constants, never reaches a graph input or a tensor of an
earlier segment; every segment must hold a node, and every cut tensor must be read after
its cut.  Within a segment, nodes joined through tensors produced inside it form one
*stage* (sharing only a cut tensor does not join them), so parallel branches become
parallel stages: a DAG.  Stage inputs are the boundary tensors it reads, its outputs the
next boundary's tensors it produces.

``--list-cuts`` lists the tensors that alone separate the inputs from the outputs.

Outputs (DIR)
-------------
::

    graph.json                 the split manifest (see SPLIT_FORMAT and the README)
    device/<stage>.so + .json  every stage for --device-target (manifest as compile_model.py)
    device/codec.so            encode/decode functions for the device (no manifest)
    server/                    a model repository (`tvm-node rpc-server --models DIR/server`):
      BASE.<stage>.so + .json        function main
      BASE.<stage>.f16.so + .json    same library, function main_f16 (float32 inputs as float16)
      BASE.<stage>.i8.so + .json     same library, function main_i8 (X int8 + X.scale float32[1])
    reference/input.<k>.npy    a seeded standard-normal input
    reference/output.<k>.npy   onnxruntime's output of the unsplit model on it

When device and server targets are the same, each stage is compiled once and the one
library is hard-linked (else copied) into both folders.  The whole chain is run on the
reference input with TVM's Python runtime (device libraries where this machine runs them,
else the server's) and must match onnxruntime; each cut's encodings are measured the same
way (``max_abs_error``).  ``graph.json`` is written last (temp file + rename): a folder
with it is complete.

Progress and errors: as scripts/compile_model.py (``--events``: JSON lines on stdout; exit
status 0 ok, 1 failed, 2 usage).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
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

from compile_fixtures import write_json_atomic  # noqa: E402
from compile_model import (  # noqa: E402
    Channel,
    CompileError,
    RELAX_STAGES,
    Progress,
    compile_onnx,
    compile_relax,
    cross_compiler_for,
    describe_value,
    machine_arch,
    one_line,
    parse_input_shapes,
    parse_target,
    read_onnx,
    resolve_target,
    run_tool,
    sha256_file,
)

SPLIT_FORMAT = "tvm-node-split/1"
# The chain of compiled stages sums in another order than onnxruntime; over a few dozen
# float32 layers that stays well inside this (scripts/compile_bench_models.py uses it too).
TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}
CODEC_RANKS = range(1, 7)
REFERENCE_SEED = 20260
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
LIST_CUTS_HINT = (
    "cut with --cut NAME; a cut of several tensors that separate the graph together is "
    "--cut A,B; repeat --cut for more cut points (each is one segment boundary)"
)


def usage(message: str, hint: str | None = None) -> CompileError:
    return CompileError(message, "usage", hint)


# --------------------------------------------------------------------------
# The graph (onnx protos only: no TVM)
# --------------------------------------------------------------------------


@dataclass
class Graph:
    """An ONNX graph, shape-inferred, with the maps the cut analysis walks."""

    model: object  # onnx.ModelProto, shapes inferred
    nodes: list
    producer: dict[str, int]  # tensor -> index of the node that produces it
    inputs: list[str]  # graph inputs, initializers excluded
    outputs: list[str]
    consts: set[str]  # initializers and what is computed from them alone
    info: dict[str, dict]  # tensor -> {"shape": [...], "dtype": "float32"}


def node_inputs(node) -> list[str]:
    """The tensors a node reads: its inputs and what its subgraphs (If, Loop) read from outside."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            inner = {out for n in sub.node for out in n.output} | {i.name for i in sub.input}
            inner |= {init.name for init in sub.initializer}
            names += [name for n in sub.node for name in node_inputs(n) if name not in inner]
    return names


def apply_input_shapes(model, shapes: dict[str, list]) -> None:
    """Writes ``--input-shape`` sizes into the graph's inputs (before shape inference)."""
    weights = {init.name for init in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in weights}
    for name, shape in shapes.items():
        if name not in inputs:
            raise usage(
                f"--input-shape {name}: the model has no input '{name}'; its inputs: "
                + ", ".join(f"{n}{describe_value(i)['shape']}" for n, i in inputs.items())
            )
        if any(isinstance(d, str) for d in shape):
            raise usage(f"--input-shape {name}: split needs every size as a number (the reference input is made from them)")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) and len(dims) != len(shape):
            raise usage(f"--input-shape {name}: {len(shape)} sizes for input '{name}' of rank {len(dims)}")
        del dims[:]
        for size in shape:
            dims.add().dim_value = size


def load_graph(onnx_path: Path, input_shapes: dict[str, list]) -> Graph:
    """Reads the model, applies ``--input-shape`` and runs ONNX shape inference."""
    import onnx

    model = read_onnx(onnx_path)
    apply_input_shapes(model, input_shapes)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:
        raise CompileError(f"{onnx_path.name}: ONNX shape inference failed: {one_line(str(err))}", "ONNXError") from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    info = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        info[value.name] = describe_value(value)
    producer, consts = {}, set(weights)
    for index, node in enumerate(graph.node):
        reads = node_inputs(node)
        constant = all(name in consts for name in reads) and node.op_type not in ("RandomNormal", "RandomUniform")
        for out in node.output:
            if out:
                producer[out] = index
                if constant:
                    consts.add(out)
    return Graph(
        model=model,
        nodes=list(graph.node),
        producer=producer,
        inputs=[i.name for i in graph.input if i.name not in weights],
        outputs=[o.name for o in graph.output],
        consts=consts,
        info=info,
    )


def tensor_bytes(info: dict) -> int | None:
    """Bytes of a tensor of static shape, else None."""
    import numpy as np

    shape = info.get("shape")
    if shape is None or info.get("dtype") is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(info["dtype"]).itemsize


@dataclass
class Walk:
    """What walking back from some tensors reached."""

    nodes: set[int] = field(default_factory=set)
    stops: set[str] = field(default_factory=set)  # stop tensors reached (read by the nodes)
    leaks: list[tuple[str, list[str]]] = field(default_factory=list)  # (tensor, path to it)


def walk_back(g: Graph, starts: list[str], stops: set[str], forbidden: set[str] = frozenset()) -> Walk:
    """Nodes that compute ``starts`` from ``stops`` and constants.

    Reaching a graph input that is not a stop, or a ``forbidden`` tensor, is a leak,
    recorded with the path from where the walk started (for messages).
    """
    walk = Walk()
    came_from: dict[str, str | None] = {name: None for name in starts}
    queue = list(starts)
    while queue:
        tensor = queue.pop()
        if tensor in stops:
            walk.stops.add(tensor)
            continue
        if tensor in g.consts:
            continue
        if tensor in forbidden or tensor not in g.producer:
            path, at = [], tensor
            while at is not None:
                path.append(at)
                at = came_from[at]
            walk.leaks.append((tensor, path))
            continue
        index = g.producer[tensor]
        if index in walk.nodes:
            continue
        walk.nodes.add(index)
        for name in node_inputs(g.nodes[index]):
            if name not in came_from:
                came_from[name] = tensor
                queue.append(name)
    return walk


def single_cuts(g: Graph) -> list[dict]:
    """Tensors that alone separate the graph inputs from the outputs, in graph order."""
    found = []
    output_set = set(g.outputs)
    for index, node in enumerate(g.nodes):
        for tensor in node.output:
            if not tensor or tensor in g.consts or tensor in output_set:
                continue
            walk = walk_back(g, g.outputs, {tensor})
            if walk.leaks or tensor not in walk.stops:
                continue
            info = g.info.get(tensor, {"shape": None, "dtype": None})
            found.append(
                {
                    "name": tensor,
                    "shape": info["shape"],
                    "dtype": info["dtype"],
                    "bytes": tensor_bytes(info),
                    "op": node.op_type,
                    "node": node.name or None,
                    "index": index,
                }
            )
    return found


# --------------------------------------------------------------------------
# Planning the split: segments and stages
# --------------------------------------------------------------------------


@dataclass
class Stage:
    """Nodes of one segment joined by tensors made inside it; reads and makes boundary tensors."""

    name: str
    segment: int
    nodes: list[int]
    inputs: list[str]
    outputs: list[str]


@dataclass
class Plan:
    """The checked cut sets, in graph order, and the stages in topological order."""

    cuts: list[list[str]]  # cut sets in graph order
    stages: list[Stage]


def check_names(g: Graph, cuts: list[list[str]]) -> None:
    """Every cut tensor exists, is computed (not an input or a constant) and is named once."""
    known = sorted(set(g.producer) | set(g.inputs))
    seen: dict[str, int] = {}
    for k, cut in enumerate(cuts):
        if not cut:
            raise usage("--cut: an empty cut (give tensor names, comma-separated)")
        for name in cut:
            if name not in g.producer and name not in g.inputs:
                close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
                near = f"; close names: {', '.join(close)}" if close else ""
                raise usage(
                    f"--cut {name}: the model has no tensor '{name}'{near}",
                    "`tvm-node split MODEL --list-cuts` lists the tensors that cut the graph",
                )
            if name in g.inputs:
                raise usage(f"--cut {name}: '{name}' is a graph input, not a computed tensor")
            if name in g.consts:
                raise usage(f"--cut {name}: '{name}' is computed from weights alone (a constant), not from the inputs")
            if name in g.outputs:
                raise usage(f"--cut {name}: '{name}' is a graph output: nothing would run after the cut")
            if name in seen:
                where = f"in --cut {','.join(cut)}" if seen[name] == k else f"in two cuts ({','.join(cuts[seen[name]])} and {','.join(cut)})"
                raise usage(f"--cut: '{name}' is named twice, {where}")
            seen[name] = k


def order_cuts(g: Graph, cuts: list[list[str]]) -> list[list[str]]:
    """Cut sets by graph position: the last producing node of each."""
    return sorted(cuts, key=lambda cut: max(g.producer[name] for name in cut))


def leak_message(g: Graph, cut_k: int, cut: list[str], leak: tuple[str, list[str]], cuts: list[list[str]]) -> str:
    tensor, path = leak
    where = next((f"cut {k} ({', '.join(c)})" for k, c in enumerate(cuts) if tensor in c), None)
    origin = f"graph input '{tensor}'" if tensor in g.inputs else f"'{tensor}' of {where}" if where else f"'{tensor}'"
    # path runs from the leaking tensor forward to where the walk started.
    shown = path if len(path) <= 6 else [*path[:4], "...", path[-1]]
    route = " -> ".join(name if name == "..." else f"'{name}'" for name in shown)
    return (
        f"--cut {','.join(cut)} does not separate the graph: {origin} reaches past it "
        f"(cut {cut_k}), through {route}"
    )


def plan_split(g: Graph, cuts: list[list[str]]) -> Plan:
    """Segments between the cut sets, checked, and the stages (connected parts) of each."""
    check_names(g, cuts)
    cuts = order_cuts(g, cuts)
    boundaries = [list(g.inputs), *cuts, list(g.outputs)]
    segments = segment_walks(g, boundaries, cuts)
    for k, cut in enumerate(cuts):
        unread = [name for name in cut if name not in segments[k + 1].stops]
        if unread:
            raise usage(f"--cut {','.join(cut)}: '{unread[0]}' is not read after the cut; leave it out of the cut")
    stages = []
    for seg, walk in enumerate(segments):
        for nodes in components(g, walk.nodes):
            reads = {name for i in nodes for name in node_inputs(g.nodes[i])}
            made = {name for i in nodes for name in g.nodes[i].output}
            inputs = [name for name in boundaries[seg] if name in reads]
            outputs = [name for name in boundaries[seg + 1] if name in made]
            stages.append(Stage(f"s{len(stages)}", seg, nodes, inputs, outputs))
    for stage in stages:
        check_static(g, stage.inputs + stage.outputs)
    return Plan(cuts=cuts, stages=stages)


def segment_walks(g: Graph, boundaries: list[list[str]], cuts: list[list[str]]) -> list[Walk]:
    """Each segment's nodes: a walk back from the next boundary to its own.

    Reaching a tensor of an earlier boundary (a graph input included) means a path goes
    around the cut: the cut does not separate the graph.
    """
    segments = []
    for seg in range(len(boundaries) - 1):
        earlier = {name for b in boundaries[:seg] for name in b}
        walk = walk_back(g, boundaries[seg + 1], set(boundaries[seg]), forbidden=earlier)
        if walk.leaks and seg == 0:
            raise CompileError(f"cut 0 is computed from '{walk.leaks[0][0]}', which no graph input gives", "ONNXError")
        if walk.leaks:
            raise usage(
                leak_message(g, seg - 1, boundaries[seg], walk.leaks[0], cuts),
                "every path from the inputs to the outputs must cross each cut: add the "
                "tensors that go around it to the same --cut (A,B), or see --list-cuts",
            )
        if not walk.nodes:
            before = f"cut {seg}" if seg < len(cuts) else "the graph outputs"
            raise usage(f"segment {seg} (before {before}) computes nothing")
        segments.append(walk)
    return segments


def check_static(g: Graph, names: list[str]) -> None:
    """Tensors that cross a cut need static shapes (bytes, reference runs, manifests)."""
    for name in names:
        if tensor_bytes(g.info.get(name, {})) is None:
            raise usage(
                f"tensor '{name}' has no static shape after ONNX shape inference ({g.info.get(name, {}).get('shape')})",
                "give the inputs' sizes with --input-shape NAME=1,3,224,224",
            )


def components(g: Graph, nodes: set[int]) -> list[list[int]]:
    """Nodes joined by tensors one of them produces and another reads, each sorted; in graph order."""
    parent = {i: i for i in nodes}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in nodes:
        for name in node_inputs(g.nodes[i]):
            j = g.producer.get(name)
            if j in parent and name not in g.consts:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in sorted(nodes):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda group: group[0])


def check_frontend(g: Graph, onnx_path: Path, plan: Plan) -> None:
    """Operators TVM's ONNX frontend lacks, named with their stages, before anything compiles."""
    import tvm

    try:
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

        known = set(_get_convert_map()) | {"If", "Constant"}
    except ImportError:  # another TVM: each stage's import says it instead
        return
    missing: dict[str, list[str]] = {}
    for stage in plan.stages:
        for i in stage.nodes:
            op = g.nodes[i].op_type
            if op not in known:
                missing.setdefault(op, []).append(stage.name)
    if missing:
        listed = ", ".join(f"{op} (stage {', '.join(sorted(set(names)))})" for op, names in sorted(missing.items()))
        raise CompileError(
            f"{onnx_path.name}: operator(s) not supported by TVM {tvm.__version__}'s ONNX frontend: {listed}",
            "UnsupportedOperator",
            "replace those operators (re-export the model, or rewrite it with onnx tools), or implement them in the frontend",
        )


# --------------------------------------------------------------------------
# Encoded entry points (server stages) and the codec (device)
# --------------------------------------------------------------------------


def fresh_shape(shape, variables: dict):
    """A parameter's sizes for a new function: symbolic sizes may not be shared across functions."""
    from tvm import tirx

    dims = []
    for dim in shape.values:
        if isinstance(dim, tirx.Var):
            dim = variables.setdefault(dim.name, tirx.Var(dim.name, "int64"))
        dims.append(dim)
    return dims


def encoded_params(main, encoding: str) -> tuple[list, list[tuple[str, list]]]:
    """New parameters for ``main``'s in ``encoding`` and, per original parameter, what to decode.

    float32 parameters become float16 (``float16``), or int8 plus a float32[1] scale
    (``int8``, the scale named ``X.scale``); other dtypes pass unchanged.
    """
    from tvm import relax

    params, decode, variables = [], [], {}
    for p in main.params:
        shape = fresh_shape(p.ty.shape, variables)
        if p.ty.dtype != "float32":
            q = relax.Var(p.name, relax.TensorType(shape, p.ty.dtype))
            params.append(q)
            decode.append(("plain", [q]))
        elif encoding == "float16":
            q = relax.Var(p.name, relax.TensorType(shape, "float16"))
            params.append(q)
            decode.append(("float16", [q]))
        else:
            q = relax.Var(p.name, relax.TensorType(shape, "int8"))
            scale = relax.Var(f"{p.name}.scale", relax.TensorType([1], "float32"))
            params += [q, scale]
            decode.append(("int8", [q, scale]))
    return params, decode


def add_encoded_entries(mod):
    """``main_f16`` and ``main_i8`` beside ``main``: decode the encoded inputs, call main."""
    from tvm import relax

    main = mod["main"]
    gv = mod.get_global_var("main")
    bb = relax.BlockBuilder(mod)
    for function, encoding in (("main_f16", "float16"), ("main_i8", "int8")):
        params, decode = encoded_params(main, encoding)
        with bb.function(function, params):
            args = []
            for how, values in decode:
                if how == "plain":
                    args.append(values[0])
                elif how == "float16":
                    args.append(bb.emit(relax.op.astype(values[0], "float32")))
                else:
                    args.append(bb.emit(relax.op.multiply(relax.op.astype(values[0], "float32"), values[1])))
            bb.emit_func_output(bb.emit(relax.Call(gv, args)))
    return bb.get()


def codec_module():
    """``encode_f16_r{R}``, ``decode_f16_r{R}``, ``encode_i8_r{R}``, ``decode_i8_r{R}`` for R in 1..6.

    Symbolic sizes, so one library serves every cut. int8: per-tensor symmetric,
    scale = max(max|x| / 127, 1e-30), q = int8(clip(round(x / scale), -127, 127))
    (round half to even, as numpy), decoded as float32(q) * scale.
    """
    from tvm import relax, tirx

    bb = relax.BlockBuilder()
    f32 = "float32"
    for rank in CODEC_RANKS:

        def tensor(dtype: str, name: str = "x", rank=rank):
            dims = [tirx.Var(f"d{k}", "int64") for k in range(rank)]
            return relax.Var(name, relax.TensorType(dims, dtype))

        x = tensor(f32)
        with bb.function(f"encode_f16_r{rank}", [x]):
            bb.emit_func_output(bb.emit(relax.op.astype(x, "float16")))
        x = tensor("float16")
        with bb.function(f"decode_f16_r{rank}", [x]):
            bb.emit_func_output(bb.emit(relax.op.astype(x, f32)))
        x = tensor(f32)
        with bb.function(f"encode_i8_r{rank}", [x]):
            peak = bb.emit(relax.op.max(relax.op.abs(x)))
            scale = bb.emit(relax.op.maximum(relax.op.divide(peak, relax.const(127.0, f32)), relax.const(1e-30, f32)))
            q = relax.op.clip(relax.op.round(relax.op.divide(x, scale)), -127, 127)
            out = relax.Tuple([bb.emit(relax.op.astype(q, "int8")), bb.emit(relax.op.reshape(scale, [1]))])
            bb.emit_func_output(bb.emit(out))
        q = tensor("int8", "q")
        scale = relax.Var("scale", relax.TensorType([1], f32))
        with bb.function(f"decode_i8_r{rank}", [q, scale]):
            bb.emit_func_output(bb.emit(relax.op.multiply(relax.op.astype(q, f32), scale)))
    return bb.get()


def quantize(x):
    """(int8 values, float32[1] scale) of a float32 array: the codec's encode_i8, in numpy."""
    import numpy as np

    peak = np.abs(x).max() if x.size else np.float32(0)
    scale = np.maximum(np.float32(peak) / np.float32(127), np.float32(1e-30)).astype(np.float32)
    return np.clip(np.round(x / scale), -127, 127).astype(np.int8), np.array([scale], np.float32)


def encode_decode(x, encoding: str):
    """A float32 array as the server sees it after ``encoding`` (numpy: the codec's math)."""
    import numpy as np

    if x.dtype != np.float32 or encoding == "float32":
        return x
    if encoding == "float16":
        return x.astype(np.float16).astype(np.float32)
    q, scale = quantize(x)
    return q.astype(np.float32) * scale


def encoded_bytes(infos: list[dict], encoding: str) -> int:
    """Bytes on the wire of some tensors in ``encoding`` (only float32 tensors are encoded)."""
    total = 0
    for info in infos:
        size = tensor_bytes(info)
        if info["dtype"] != "float32" or encoding == "float32":
            total += size
        else:
            count = size // 4
            total += count * 2 if encoding == "float16" else count + 4
    return total


# --------------------------------------------------------------------------
# Compiling the stages
# --------------------------------------------------------------------------


@dataclass
class Targets:
    """--device-target and --server-target as given and as TVM canonicalizes them."""

    device: str
    server: str
    device_json: dict
    server_json: dict

    @property
    def same(self) -> bool:
        return self.device_json == self.server_json


def resolve_targets(device: str, server: str) -> Targets:
    """Both targets checked (and their cross g++) before anything slow runs."""
    jsons = []
    for flag, text in (("--device-target", device), ("--server-target", server)):
        try:
            spec = parse_target(text)
            cross_compiler_for(spec, None)
            jsons.append(json.loads(str(resolve_target(spec))))
        except CompileError as err:
            if err.kind == "usage" and not str(err).startswith(flag):
                raise usage(f"{flag}: {err}", err.hint) from None
            raise
    return Targets(device, server, jsons[0], jsons[1])


def link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``source`` (one copy on disk), else a copy."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def float32_inputs(stage: Stage, g: Graph) -> bool:
    return any(g.info[name]["dtype"] == "float32" for name in stage.inputs)


def encoded_manifest(manifest: dict, encoding: str) -> dict:
    """The server manifest of an encoded entry point: function and inputs as it takes them."""
    inputs = []
    for spec in manifest["inputs"]:
        if spec["dtype"] != "float32":
            inputs.append(spec)
        elif encoding == "float16":
            inputs.append({**spec, "dtype": "float16"})
        else:
            inputs += [{**spec, "dtype": "int8"}, {"name": f"{spec['name']}.scale", "shape": [1], "dtype": "float32"}]
    function = {"float16": "main_f16", "int8": "main_i8"}[encoding]
    return {**manifest, "inputs": inputs, "function": function, "encoding": encoding}


ENCODED_SUFFIX = {"float16": "f16", "int8": "i8"}


def write_server_models(base: str, stage: Stage, library: Path, manifest_file: Path, server: Path, encoded: bool) -> dict:
    """``BASE.<stage>`` (+ ``.f16``, ``.i8``) in the server repository, one library for all."""
    name = f"{base}.{stage.name}"
    if library != server / f"{name}.so":
        link_or_copy(library, server / f"{name}.so")
        shutil.copy2(manifest_file, server / f"{name}.json")
    manifest = json.loads(manifest_file.read_text())
    models = {}
    if encoded:
        for encoding, suffix in ENCODED_SUFFIX.items():
            link_or_copy(library, server / f"{name}.{suffix}.so")
            write_json_atomic(server / f"{name}.{suffix}.json", encoded_manifest(manifest, encoding))
            models[encoding] = f"{name}.{suffix}"
    return {"model": name, "encoded": models, "content_hash": manifest["content_hash"]}


def extract_stage(g: Graph, stage: Stage, folder: Path, base: str) -> Path:
    """The stage as its own ONNX model (its nodes, the constants and weights they use)."""
    import onnx

    model = onnx.utils.Extractor(g.model).extract_model(stage.inputs, stage.outputs)
    model.ir_version = g.model.ir_version
    path = folder / f"{base}.{stage.name}.onnx"
    onnx.save(model, str(path))
    return path


def stage_progress(progress: Progress, name: str, what: str) -> Callable[[int, int, str, str], None]:
    """A compile's own stages shown as one step of the split (``what: title``)."""
    return lambda _i, _n, _name, title: progress.stage(name, f"{what}: {title}")


def compile_stages(g: Graph, plan: Plan, targets: Targets, work: Path, base: str, progress: Progress) -> dict:
    """Every stage for the device and the server; returns graph.json's stage entries by name."""
    device, server, stages_dir = work / "device", work / "server", work / "stages"
    for folder in (device, server, stages_dir):
        folder.mkdir()
    entries = {}
    for stage in plan.stages:
        onnx_file = extract_stage(g, stage, stages_dir, base)
        encoded = float32_inputs(stage, g)
        step = f"compile:{stage.name}"
        # Same targets: one library, with the encoded entry points, serves both sides.
        if targets.same:
            dev = srv = compile_stage(onnx_file, device / f"{stage.name}.so", targets.device, encoded, stage_progress(progress, step, f"{stage.name} for device and server"))
        else:
            dev = compile_stage(onnx_file, device / f"{stage.name}.so", targets.device, False, stage_progress(progress, step, f"{stage.name} for the device"))
            srv = compile_stage(onnx_file, server / f"{base}.{stage.name}.so", targets.server, encoded, stage_progress(progress, step, f"{stage.name} for the server"))
        entries[stage.name] = {
            "device": {
                "library": f"device/{stage.name}.so",
                "manifest": f"device/{stage.name}.json",
                "content_hash": dev["content_hash"],
            },
            "server": write_server_models(base, stage, Path(srv["library"]), Path(srv["manifest"]), server, encoded),
        }
    shutil.rmtree(stages_dir)
    return entries


def compile_stage(onnx_file: Path, out: Path, target: str, encoded: bool, report) -> dict:
    """One stage through compile_onnx; ``encoded`` adds main_f16 and main_i8 (server stages with float32 inputs)."""
    if not encoded:
        return compile_onnx(onnx_file, out, target=target, progress=report)
    options = {"encoded_entry_points": ["main_f16", "main_i8"]}
    return compile_onnx(onnx_file, out, target=target, transform_module=add_encoded_entries, options=options, progress=report)


def compile_codec(targets: Targets, work: Path, progress: Progress) -> dict:
    """device/codec.so: :func:`codec_module` for the device (a library of functions: no manifest)."""
    progress.stage("codec", "compiling the codec (encode/decode, float16 and int8) for the device")
    compile_relax(
        codec_module(),
        work / "device" / "codec.so",
        target=targets.device,
        function=None,
        options={"codec": "float16, int8 per-tensor symmetric", "ranks": list(CODEC_RANKS)},
        progress=Progress(report=stage_progress(progress, "codec", "the codec"), stages=RELAX_STAGES),
    )
    return {"library": "device/codec.so"}


# --------------------------------------------------------------------------
# Reference and checks
# --------------------------------------------------------------------------


def make_reference(g: Graph, onnx_path: Path, work: Path) -> tuple[dict, list, list]:
    """Seeded inputs and onnxruntime's outputs of the unsplit model, saved as .npy."""
    import numpy as np
    import onnxruntime as ort

    folder = work / "reference"
    folder.mkdir()
    rng = np.random.default_rng(REFERENCE_SEED)
    feeds = {}
    for name in g.inputs:
        info = g.info[name]
        dtype = np.dtype(info["dtype"])
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(info["shape"]).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, info["shape"]).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 8, info["shape"]).astype(dtype)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        outputs = session.run(g.outputs, {name: feeds[name] for name in g.inputs})
    except Exception as err:
        raise CompileError(f"onnxruntime cannot run {onnx_path.name}: {one_line(str(err))}", "ReferenceError") from None
    files = {"inputs": [], "outputs": []}
    for k, name in enumerate(g.inputs):
        np.save(folder / f"input.{k}.npy", feeds[name], allow_pickle=False)
        files["inputs"].append(f"reference/input.{k}.npy")
    for k, out in enumerate(outputs):
        np.save(folder / f"output.{k}.npy", np.ascontiguousarray(out), allow_pickle=False)
        files["outputs"].append(f"reference/output.{k}.npy")
    files["by"] = f"onnxruntime {ort.__version__}"
    return files, feeds, list(outputs)


def runs_here(target_json: dict) -> bool:
    """Whether this process can run code for the target (a CPU target of this architecture)."""
    if target_json.get("kind") != "llvm":
        return False
    triple = str(target_json.get("mtriple", "")) or f"{machine_arch()}-linux-gnu"
    return triple.split("-")[0] == machine_arch()


class Chain:
    """The stages loaded in TVM's Python runtime, run in order by tensor names."""

    def __init__(self, plan: Plan, libraries: list[Path]):
        import tvm
        from tvm import relax

        self.plan = plan
        self.vms = [relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu()) for lib in libraries]

    def run(self, env: dict, after_segment: int = -1) -> dict:
        """``env`` (tensor -> array) completed by the stages of segments after ``after_segment``."""
        import tvm

        env = dict(env)
        for stage, vm in zip(self.plan.stages, self.vms, strict=True):
            if stage.segment <= after_segment:
                continue
            result = vm["main"](*[tvm.runtime.tensor(env[name]) for name in stage.inputs])
            values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
            for name, value in zip(stage.outputs, values, strict=True):
                env[name] = value.numpy()
        return env


def max_abs_error(env: dict, outputs: list[str], expected: list) -> float:
    import numpy as np

    return float(max(np.max(np.abs(env[n].astype(np.float64) - e.astype(np.float64)), initial=0.0) for n, e in zip(outputs, expected, strict=True)))


def chain_libraries(plan: Plan, targets: Targets, work: Path, base: str) -> tuple[str | None, list[Path]]:
    """Which side's libraries this machine runs (the device's first), and their paths in stage order."""
    if runs_here(targets.device_json):
        return "device", [work / "device" / f"{s.name}.so" for s in plan.stages]
    if runs_here(targets.server_json):
        return "server", [work / "server" / f"{base}.{s.name}.so" for s in plan.stages]
    return None, []


def check_chain(g: Graph, plan: Plan, side: str, libraries: list[Path], feeds: dict, expected: list) -> tuple[dict, dict, dict]:
    """The whole chain against onnxruntime (a failure if off), and each cut's encoding error.

    Returns (graph.json's "check", {cut index: {encoding: max_abs_error}}, every tensor of the run).
    """
    import numpy as np

    chain = Chain(plan, libraries)
    env = chain.run(feeds)
    error = max_abs_error(env, g.outputs, expected)
    for name, want in zip(g.outputs, expected, strict=True):
        if not np.allclose(env[name], want, **TOLERANCE):
            raise CompileError(
                f"the split model does not match onnxruntime on the unsplit model: output '{name}' is off by "
                f"up to {error:.3g} (tolerance rtol {TOLERANCE['rtol']}, atol {TOLERANCE['atol']})",
                "SplitCheckError",
                "run again with --verbose; `tvm-node compile` of the whole model shows whether TVM itself differs",
            )
    errors = {}
    for k, cut in enumerate(plan.cuts):
        errors[k] = {"float32": error}
        if not any(g.info[name]["dtype"] == "float32" for name in cut):
            continue
        for encoding in ("float16", "int8"):
            # Cut k ends segment k: the segments after it see the decoded tensors.
            start = {name: env[name] for name in [*g.inputs, *all_cut_tensors(plan)]}
            start.update({name: encode_decode(env[name], encoding) for name in cut})
            errors[k][encoding] = max_abs_error(chain.run(start, after_segment=k), g.outputs, expected)
    check = {"by": f"{side} libraries (TVM {tvm_version()}, relax.VirtualMachine, cpu)", "tolerance": TOLERANCE, "max_abs_error": error}
    return check, errors, env


def all_cut_tensors(plan: Plan) -> list[str]:
    return [name for cut in plan.cuts for name in cut]


def check_encoded_entries(g: Graph, plan: Plan, server_libraries: list[Path], env: dict) -> None:
    """Each server stage's main_f16 / main_i8 equals its main on the decoded inputs (a wiring check).

    ``env`` holds every stage input (a run of the chain).
    """
    import numpy as np
    import tvm
    from tvm import relax

    for stage, library in zip(plan.stages, server_libraries, strict=True):
        if not float32_inputs(stage, g):
            continue
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        values = [env[name] for name in stage.inputs]
        for encoding, function in (("float16", "main_f16"), ("int8", "main_i8")):
            args = []
            for x in values:
                if x.dtype != np.float32:
                    args.append(x)
                elif encoding == "float16":
                    args.append(x.astype(np.float16))
                else:
                    args += quantize(x)
            got = as_arrays(vm[function](*[tvm.runtime.tensor(a) for a in args]))
            want = as_arrays(vm["main"](*[tvm.runtime.tensor(encode_decode(x, encoding)) for x in values]))
            for a, b in zip(got, want, strict=True):
                if not np.allclose(a, b, rtol=1e-5, atol=1e-5):
                    raise CompileError(f"{library.name}: {function} differs from main on the decoded inputs", "SplitCheckError")


def as_arrays(result) -> list:
    import tvm

    return [result.numpy()] if isinstance(result, tvm.runtime.Tensor) else [r.numpy() for r in result]


def tvm_version() -> str:
    import tvm

    return tvm.__version__


# --------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------


def tensor_entry(g: Graph, name: str) -> dict:
    info = g.info[name]
    return {"name": name, "shape": info["shape"], "dtype": info["dtype"]}


def cut_entry(g: Graph, cut: list[str], errors: dict | None) -> dict:
    """A cut's tensors, and its bytes and measured error per encoding (float16/int8 when it has float32 tensors)."""
    infos = [g.info[name] for name in cut]
    encodings = ["float32"] + (["float16", "int8"] if any(i["dtype"] == "float32" for i in infos) else [])
    return {
        "tensors": [{**tensor_entry(g, name), "bytes": tensor_bytes(g.info[name])} for name in cut],
        "bytes": encoded_bytes(infos, "float32"),
        "encodings": {
            e: {"bytes": encoded_bytes(infos, e), "max_abs_error": (errors or {}).get(e)} for e in encodings
        },
    }


def split_hash(g: Graph, plan: Plan, source: dict, targets: Targets, base: str) -> str:
    """What makes a split: the model, the cuts, the targets, the shapes, TVM and the scripts."""
    recipe = {
        "source_sha256": source["sha256"],
        "name": base,
        "cuts": plan.cuts,
        "device_target": targets.device_json,
        "server_target": targets.server_json,
        "inputs": [tensor_entry(g, name) for name in g.inputs],
        "tvm_version": tvm_version(),
        "split_model": sha256_file(Path(__file__)),
        "compile_model": sha256_file(SCRIPTS_DIR / "compile_model.py"),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def graph_manifest(g: Graph, plan: Plan, parts: dict, targets: Targets, base: str, source: dict) -> dict:
    """graph.json (see the README, "tvm-node split")."""
    errors = parts["errors"]
    return {
        "format": SPLIT_FORMAT,
        "name": base,
        "source": source,
        "tvm_version": tvm_version(),
        "device_target": targets.device_json,
        "server_target": targets.server_json,
        "inputs": [tensor_entry(g, name) for name in g.inputs],
        "outputs": [tensor_entry(g, name) for name in g.outputs],
        "cuts": [cut_entry(g, cut, errors.get(k)) for k, cut in enumerate(plan.cuts)],
        "stages": [
            {
                "name": stage.name,
                "segment": stage.segment,
                "inputs": [tensor_entry(g, name) for name in stage.inputs],
                "outputs": [tensor_entry(g, name) for name in stage.outputs],
                "remote": True,
                **parts["stages"][stage.name],
            }
            for stage in plan.stages
        ],
        "codec": parts["codec"],
        "repository": "server",
        "reference": parts["reference"],
        "check": parts["check"],
        "content_hash": split_hash(g, plan, source, targets, base),
    }


def check_model_file(onnx_path: Path) -> None:
    if not onnx_path.is_file():
        raise CompileError(
            f"{onnx_path}: {'is a folder, not a file' if onnx_path.is_dir() else 'no such file'}",
            "FileNotFoundError",
            "check the path of the .onnx model",
        )


def prepare_out(out_dir: Path) -> Path:
    """DIR made if missing; a previous split's graph.json is removed first (the folder is incomplete until the new one is written)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise usage(f"-o {out_dir}: not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "graph.json").unlink(missing_ok=True)
    return Path(tempfile.mkdtemp(prefix=".split-", dir=out_dir)).resolve()


def publish(work: Path, out_dir: Path) -> None:
    """device/, server/ and reference/ of ``work`` in place of the old ones (moved into ``work``, removed with it)."""
    for sub in ("device", "server", "reference"):
        if (out_dir / sub).exists():
            os.rename(out_dir / sub, work / f"old-{sub}")
        os.rename(work / sub, out_dir / sub)


def split_steps(plan: Plan, targets: Targets) -> list[tuple[str, str]]:
    where = "device and server" if targets.same else "device, then server"
    return [
        *[(f"compile:{s.name}", f"compiling {s.name} ({where})") for s in plan.stages],
        ("codec", "compiling the codec"),
        ("reference", "running onnxruntime on the unsplit model"),
        ("check", "running the chain of stages against it"),
        ("write", "writing graph.json"),
    ]


def split_onnx(
    onnx_path: str | Path,
    out_dir: str | Path,
    cuts: list[list[str]],
    *,
    device_target: str = "llvm",
    server_target: str = "llvm",
    input_shapes: dict[str, list] | None = None,
    name: str | None = None,
    start: Callable[[list[tuple[str, str]]], None] | None = None,
    report: Callable[[int, int, str, str], None] | None = None,
) -> dict:
    """Split ``onnx_path`` at ``cuts`` (cut sets of tensor names) into ``out_dir`` (see the module).

    ``start(steps)`` is told the steps once they are known, ``report`` each as it starts
    (as :class:`compile_model.Progress`). Raises :class:`CompileError`. Returns
    ``{"dir", "graph", "stages"}``: the folder, graph.json's content and step timings.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    check_model_file(onnx_path)
    base = name or onnx_path.stem
    if not re.fullmatch(MODEL_NAME, base):
        raise usage(f"--name {base}: model names are letters, digits, '.', '_' and '-', starting with a letter or digit")
    if not cuts:
        raise usage("give at least one --cut", "`tvm-node split MODEL --list-cuts` lists the tensors that cut the graph")
    targets = resolve_targets(device_target, server_target)
    g = load_graph(onnx_path, input_shapes or {})
    check_static(g, g.inputs)  # the reference input is made from their sizes
    plan = plan_split(g, cuts)
    check_frontend(g, onnx_path, plan)
    steps = split_steps(plan, targets)
    if start:
        start(steps)
    progress = Progress(report=report, stages=tuple(steps))
    source = {"file": onnx_path.name, "sha256": sha256_file(onnx_path)}
    work = prepare_out(out_dir)
    try:
        parts = {"stages": compile_stages(g, plan, targets, work, base, progress)}
        parts["codec"] = compile_codec(targets, work, progress)
        progress.stage("reference")
        parts["reference"], feeds, expected = make_reference(g, onnx_path, work)
        progress.stage("check")
        side, libraries = chain_libraries(plan, targets, work, base)
        parts["check"], parts["errors"] = {"by": None, "note": "neither target runs on this machine: not checked"}, {}
        if side:
            parts["check"], parts["errors"], env = check_chain(g, plan, side, libraries, feeds, expected)
            if runs_here(targets.server_json):
                check_encoded_entries(g, plan, [work / "server" / f"{base}.{s.name}.so" for s in plan.stages], env)
        progress.stage("write")
        graph = graph_manifest(g, plan, parts, targets, base, source)
        publish(work, out_dir)
        write_json_atomic(out_dir / "graph.json", graph)  # last: the folder is complete
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"dir": str(out_dir.resolve()), "graph": graph, "stages": progress.finish()}


def list_cuts(onnx_path: str | Path, input_shapes: dict[str, list] | None = None) -> dict:
    """The single-tensor cut points of the model, in graph order, with shapes and producing ops."""
    onnx_path = Path(onnx_path)
    check_model_file(onnx_path)
    g = load_graph(onnx_path, input_shapes or {})
    return {
        "model": onnx_path.name,
        "inputs": [tensor_entry(g, name) for name in g.inputs],
        "outputs": [tensor_entry(g, name) for name in g.outputs],
        "cuts": single_cuts(g),
        "hint": LIST_CUTS_HINT,
    }


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage error, reported like the others
        raise CompileError(message, "usage")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="the .onnx model")
    parser.add_argument("--cut", action="append", default=[], help="a cut set: tensor names, comma-separated (repeat per cut)")
    parser.add_argument("-o", "--out", type=Path, help="the folder to write (graph.json, device/, server/, reference/)")
    parser.add_argument("--device-target", default="llvm", help="preset, TVM target kind or JSON target of the device")
    parser.add_argument("--server-target", default="llvm", help="preset, TVM target kind or JSON target of the server")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=D1,D2,... (repeat per input)")
    parser.add_argument("--name", help="the server models' base name (default: the model file's stem)")
    parser.add_argument("--list-cuts", action="store_true", help="list the single-tensor cut points and exit")
    parser.add_argument("--events", action="store_true", help="JSON lines on stdout (progress, result, error)")
    return parser.parse_args(argv)


def parse_cuts(texts: list[str]) -> list[list[str]]:
    cuts = []
    for text in texts:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise usage(f"--cut '{text}': no tensor names (give NAME or NAME,NAME,...)")
        cuts.append(names)
    return cuts


def split_main(argv: list[str], channel: Channel) -> None:
    """The command line of this script (see the module's documentation)."""
    args = parse_args(argv)
    if args.model is None:
        raise usage("give the .onnx model")
    shapes = parse_input_shapes(args.input_shape)
    started = time.monotonic()
    if args.list_cuts:
        channel.done(list_cuts(args.model, shapes))
        return
    if args.out is None:
        raise usage("give -o DIR, the folder to write the split into (or --list-cuts)")
    result = split_onnx(
        args.model,
        args.out,
        parse_cuts(args.cut),
        device_target=args.device_target,
        server_target=args.server_target,
        input_shapes=shapes,
        name=args.name,
        start=channel.start,
        report=channel.report,
    )
    result["seconds"] = round(time.monotonic() - started, 3)
    channel.done(result)


def main(argv: list[str] | None = None) -> int:
    return run_tool(argv, "split_model.py", split_main)


if __name__ == "__main__":
    sys.exit(main())

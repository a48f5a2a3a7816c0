#!/usr/bin/env python3
"""Tune further the kernels that take the most of a model's time.

Usage (the TVM toolchain lives in the project venv)::

    tvm/.venv/bin/python scripts/tune_slowest.py MODEL.onnx --target TARGET --tuning-db DB --out DB2
        [--top K] [--trials N] [--tune-time SECONDS] [--input-shape NAME=D1,D2,...] [--conv-layout NCHWc]

``tvm-node compile --tune`` gives every kernel the same share of its budget and never tunes
again a kernel that has a record in its database. Where one kernel dominates (MobileNetV2's
3x3/2 stem convolution over 3 input channels took 1.9 ms of ~11 after ~65 trials), this
script ranks the model's kernels by calls x best latency in ``DB`` (kernels without a record
first), and tunes the ``K`` costliest from scratch into ``DB2`` with MetaSchedule's
``gradient`` task scheduler (each next batch of candidates goes to the kernel whose
improvement saves the most time) and the same builder, runner and search as ``--tune``.
Merge the two with ``scripts/export_tuning_db.py DB DB2 OUT`` (fastest record per kernel).
Prints the ranking before and each tuned kernel's best latency in both databases after, and
as the last line on stdout a JSON summary (``trials``, ``seconds``, ``stopped_by_time``, ``kernels``;
``scripts/export_tuning_db.py --result`` takes it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compile_model as cm  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the .onnx model")
    parser.add_argument("--target", required=True, help="what compile --target takes (the tuning's target)")
    parser.add_argument("--tuning-db", type=Path, required=True, help="the database the ranking comes from")
    parser.add_argument("--out", type=Path, required=True, help="the database to tune into (a fresh folder)")
    parser.add_argument("--top", type=int, default=6, help="how many kernels to tune (default 6)")
    parser.add_argument("--trials", type=int, default=400, help="candidates measured in all (default 400)")
    parser.add_argument("--tune-time", type=float, default=None, help="time budget in seconds")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=D1,D2,... (repeat per input)")
    parser.add_argument("--conv-layout", default="NCHW", help="what compile --conv-layout takes: the layout DB was tuned with")
    return parser.parse_args(argv)


def best_seconds(database, task, target) -> float | None:
    """The mean run time of the task's best record in ``database`` (None without one)."""
    record = database.query_tuning_record(task.dispatched[0], target, task.task_name)
    if record is None or not record.run_secs:
        return None
    secs = [float(s) for s in record.run_secs]
    return sum(secs) / len(secs)


def ms_of(seconds: float | None) -> float | None:
    return None if seconds is None else round(1e3 * seconds, 4)


def describe(task) -> str:
    """The kernel's name and its buffers' shapes."""
    signature = str(task.dispatched[0]["main"]).split("):", 1)[0]
    buffers = re.findall(r"T\.Buffer\(\(((?:T\.int64\(\d+\),? ?)*)\)", signature)
    shapes = ["x".join(re.findall(r"\((\d+)\)", dims)) or "()" for dims in buffers]
    return f"{task.task_name} ({', '.join(shapes)})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    if not all((args.tuning_db / name).is_file() for name in ("database_workload.json", "database_tuning_record.json")):
        raise cm.CompileError(f"--tuning-db {args.tuning_db}: no MetaSchedule database there", "usage")
    tune = cm.TuneOptions(trials=args.trials, database=args.out, seconds=args.tune_time)
    target = cm.resolve_target(cm.parse_target(args.target))
    cm.check_tunable(target, tune)
    target = cm.with_num_cores(target, tune)  # as compile --tune names it: records match by target
    model = cm.read_onnx(args.model)
    shapes = cm.parse_input_shapes(args.input_shape)
    cm.check_conv_layout(target, args.conv_layout)
    mod = cm.fused_for_tuning(cm.import_onnx(model, args.model, cm.shape_dict_for_tvm(shapes)), target, args.conv_layout)
    cm.fast_tensor_intrin_import()
    tasks = list(extract_tasks(mod, target))
    source = ms.database.JSONDatabase(work_dir=str(args.tuning_db), allow_missing=False)
    before = {t.task_name: best_seconds(source, t, target) for t in tasks}

    def cost(task) -> float:
        secs = before[task.task_name]
        return float("inf") if secs is None else secs * int(task.weight)

    ranked = sorted(tasks, key=cost, reverse=True)
    total = sum(c for c in map(cost, tasks) if c != float("inf"))
    for task in ranked[: args.top]:
        share = f"{cost(task) / total:6.1%}" if total else "  -"
        print(f"{share}  {int(task.weight)} x {1e3 * (before[task.task_name] or 0):.3f} ms  {describe(task)}", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(args.out))
    started = time.monotonic()

    def report(event: dict) -> None:
        print(f"tuning: {event['trials']}/{event['trials_budget']} trials, {event['seconds']:.0f} s", file=sys.stderr, flush=True)

    picked = ranked[: args.top]
    state, cost_model = cm.measure_tasks(picked, args.out, database, tune, args.trials, report, scheduler="gradient")
    kernels = []
    for task in picked:
        after = best_seconds(database, task, target)
        kernels.append({"kernel": describe(task), "calls": int(task.weight), "before_ms": ms_of(before[task.task_name]), "after_ms": ms_of(after)})
        print(f"{describe(task)}: {kernels[-1]['before_ms']} -> {kernels[-1]['after_ms']} ms", file=sys.stderr)
    summary = {
        "trials": sum(state.trials),
        "seconds": round(time.monotonic() - started, 1),
        "stopped_by_time": state.stopped_by_time,
        "cost_model": cost_model,
        "kernels": kernels,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except cm.CompileError as err:
        print(f"tune_slowest.py: error: {err}", file=sys.stderr)
        sys.exit(1)

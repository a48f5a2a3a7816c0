#!/usr/bin/env python3
"""Prune a MetaSchedule JSON tuning database to the best record per kernel and write it,
xz-compressed, where it can be committed (bench/tuning/<target>/), with a ``tuning.json``
saying how it was made.

Usage::

    python3 scripts/export_tuning_db.py SRC_DB_DIR [SRC_DB_DIR ...] DEST_DIR
        [--override DB_DIR ...] [--result NAME=RESULT.json ...] [--note TEXT] [--extend]

Each ``SRC_DB_DIR`` holds ``database_workload.json`` and ``database_tuning_record.json`` (what
``tvm-node compile --tune --tuning-db DIR`` writes); several are merged (a workload is the
same in each by its structural hash, the first field of its line). ``DEST_DIR`` gets
``database_workload.json.xz`` and ``database_tuning_record.json.xz``: the same two files
with, per workload (a kernel's TIR), only its fastest measured record (failed trials and
workloads without a record dropped, workloads renumbered), so MetaSchedule picks the same
schedules as from the full database. ``--override DIR`` (repeatable): for the workloads it
has, the fastest record over these databases replaces the sources' (a re-tune whose
timings are not comparable, e.g. with caches flushed). ``--result NAME=FILE`` adds a tuning run of the model
``NAME`` to ``tuning.json``: a compile result (``compile_model.py --tune`` prints it as JSON;
its ``tuning`` field) or the summary ``scripts/tune_slowest.py`` prints; repeat it per run
(a model's trials and seconds are summed over its runs, each run listed). ``--extend``: a
later pass over a committed database: its records are a source too, and its ``tuning.json``'s
runs and note are kept, the new ones added.

Needs only the standard library (no TVM): the files are read as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import lzma
import platform
import sys
import time
from pathlib import Path

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
FAILED = 1e9  # MetaSchedule records a failed run as 1e10 s


def read_lines(path: Path) -> list:
    """JSON lines of a file, or of its exported ``.xz`` where only that exists."""
    compressed = path.with_name(path.name + ".xz")
    text = lzma.decompress(compressed.read_bytes()).decode() if not path.exists() and compressed.exists() else path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("inf")


def prune(sources: list[Path], overrides: list[Path] = ()) -> tuple[list, list, dict]:
    """(workload lines, record lines, counts): the fastest valid record of each workload,
    over all the sources; for a workload the ``overrides`` have, their fastest instead."""
    workload_of, best, n_workloads, n_records = fastest(sources)
    over_workloads, over_best, n_over_workloads, n_over_records = fastest(overrides)
    workload_of.update(over_workloads)
    best.update(over_best)
    kept = [key for key in workload_of if key in best]
    out_workloads = [workload_of[key] for key in kept]
    out_records = [[i, best[key]] for i, key in enumerate(kept)]
    counts = {
        "sources": len(sources) + len(overrides),
        "workloads": n_workloads + n_over_workloads,
        "records": n_records + n_over_records,
        "kept": len(kept),
        "overridden": len(over_best),
    }
    return out_workloads, out_records, counts


def fastest(sources: list[Path]) -> tuple[dict, dict, int, int]:
    """Per workload's structural hash: its line and its fastest valid record over the
    sources; and the numbers of workloads and records read."""
    workload_of: dict[str, list] = {}  # structural hash -> workload line
    best: dict[str, list] = {}  # structural hash -> record
    n_workloads = n_records = 0
    for src in sources:
        workloads = read_lines(src / WORKLOADS)
        records = read_lines(src / RECORDS)
        n_workloads += len(workloads)
        n_records += len(records)
        for line in workloads:
            workload_of.setdefault(line[0], line)
        for index, record in records:
            secs = record[1] or []
            if not secs or max(secs) >= FAILED:
                continue
            key = workloads[index][0]
            if key not in best or mean(secs) < mean(best[key][1]):
                best[key] = record
    return workload_of, best, n_workloads, n_records


def write_xz(path: Path, lines: list) -> int:
    data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(lzma.compress(data, preset=9))
    tmp.replace(path)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, nargs="+", help="tuning database folder(s)")
    parser.add_argument("dest", type=Path)
    parser.add_argument(
        "--override",
        type=Path,
        action="append",
        default=[],
        help="a database whose records replace the sources' for its kernels (repeatable): a re-tune timed another way, "
        "e.g. with caches flushed, whose figures are not comparable with theirs",
    )
    parser.add_argument("--result", action="append", default=[], help="NAME=a compile result or tune_slowest.py summary (JSON; repeat per run)")
    parser.add_argument("--note", default="", help="how the database was made (kept in tuning.json)")
    parser.add_argument("--extend", action="store_true", help="add to DEST's database and tuning.json instead of replacing them")
    args = parser.parse_args(argv)

    previous = json.loads((args.dest / "tuning.json").read_text()) if args.extend else {}
    sources = [args.dest, *args.src] if args.extend else args.src
    workloads, records, counts = prune(sources, args.override)
    args.dest.mkdir(parents=True, exist_ok=True)
    sizes = {
        f"{WORKLOADS}.xz": write_xz(args.dest / f"{WORKLOADS}.xz", workloads),
        f"{RECORDS}.xz": write_xz(args.dest / f"{RECORDS}.xz", records),
    }
    models: dict[str, dict] = previous.get("models", {})
    for item in args.result:
        name, _, file = item.partition("=")
        add_run(models, name, json.loads(Path(file).read_text()))
    info = {
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu_model(), "cores": _cores(), "python": platform.python_version()},
        "note": " ".join(n for n in (previous.get("note"), args.note) if n),
        "pruned": counts,
        "files": sizes,
        "models": models,
    }
    (args.dest / "tuning.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"pruned": counts, "files": sizes}), file=sys.stderr)
    return 0


def add_run(models: dict, name: str, result: dict) -> None:
    """Adds one tuning run of model ``name`` to ``models`` (tuning.json's): a compile result
    (``compile_model.py --tune``'s JSON, its ``tuning``) or ``tune_slowest.py``'s summary.
    A model's trials and seconds are the sums over its runs; the first compile result gives
    its kernels, cost model and target."""
    model = models.setdefault(name, {"trials": 0, "seconds": 0.0, "runs": []})
    if "tuning" in result:
        tuning = result["tuning"]
        run = {key: tuning[key] for key in ("trials", "seconds", "trials_budget", "time_budget", "stopped_by_time", "failed_trials")}
        run["by"] = "compile_model.py --tune (every kernel, round-robin)"
        for key in ("tasks", "tasks_tuned", "tasks_from_database", "cost_model"):
            model.setdefault(key, tuning[key])
        model.setdefault("target", result["target"])
    elif "kernels" in result:
        run = {key: result[key] for key in ("trials", "seconds") if key in result}
        run["by"] = f"tune_slowest.py ({len(result['kernels'])} costliest kernels, gradient scheduler)"
        run["stopped_by_time"] = result.get("stopped_by_time")
        run["kernels"] = result["kernels"]
        model.setdefault("cost_model", result.get("cost_model"))
    else:
        raise SystemExit(f"--result {name}: neither a compile result (no 'tuning') nor a tune_slowest.py summary (no 'kernels')")
    model["trials"] += run["trials"]
    model["seconds"] = round(model["seconds"] + run["seconds"], 1)
    model["runs"].append(run)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())

"""The Python peer of the tvm-node benchmarks (bench/run.ts), run under the pinned TVM
(tvm/.venv/bin/python).

It answers one JSON request per line on stdin with one JSON line on stdout, so that the
Node side can interleave its own rounds with this peer's rounds in the same run:

  {"op": "info"}                                             -> versions, TVM's thread count
  {"op": "kernel", "id": ..., "path": ".so", "func": "nop"}  -> f(tensor(zeros(1, float32)))
  {"op": "global", "id": ..., "name": ..., "args": [...]}    -> tvm.get_global_func(name)(*args)
  {"op": "vm", "id": ..., "path": ".so", "inputs": [npy]}    -> VirtualMachine(...)["main"](*x)
      optional "expect": npy, "tolerance": {"rtol", "atol"}: the first output is checked
      against it (an error if it differs); the reply then carries "maxAbsDiff"
  {"op": "time", "id": ..., "n": N}                          -> {"ns": total ns of N calls}
  {"op": "profile", "path": ".so", "inputs": [npy], "runs": N, "top": K}
      -> {"kernels": [{"name", "calls", "ms", "pct", "args"}], "totalMs", "runs"}: the time
      of each function the VM calls (kernels and builtins), summed over N runs after one
      warm-up, the top K by time; "ms" per run, "pct" of the sum over all functions,
      "args" the shapes of the first call's tensor arguments

Every case is set up once (module loaded, function looked up, inputs converted), so a
timed call is the call alone, as on the Node side. TVM's thread pool is sized by
TVM_NUM_THREADS, which bench/run.ts sets in this process's environment.
"""

import json
import os
import platform
import sys
import time


def main() -> None:
    # Replies go to the original stdout; anything native code prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import numpy as np
    import tvm
    import tvm_ffi
    from tvm import relax

    cases: dict = {}

    def kernel(req):
        f = tvm.runtime.load_module(req["path"])[req["func"]]
        arg = tvm.runtime.tensor(np.zeros(1, "float32"))
        return f, (arg,)

    def global_func(req):
        return tvm.get_global_func(req["name"]), tuple(req.get("args", []))

    def vm(req):
        machine = relax.VirtualMachine(tvm.runtime.load_module(req["path"]), tvm.cpu())
        args = tuple(tvm.runtime.tensor(np.load(p)) for p in req["inputs"])
        return machine[req.get("func", "main")], args

    def check(req, result) -> dict:
        """Compare the first output with req["expect"] (npy), if given."""
        if "expect" not in req:
            return {}
        first = result if isinstance(result, tvm.runtime.Tensor) else result[0]
        actual, expected = first.numpy(), np.load(req["expect"])
        np.testing.assert_allclose(actual, expected, **req.get("tolerance", {}))
        return {"maxAbsDiff": float(np.max(np.abs(actual.astype(np.float64) - expected)))}

    def run_case(f, args, n):
        # One loop per arity keeps the loop itself as cheap as Python allows.
        if len(args) == 1:
            (a,) = args
            t0 = time.perf_counter_ns()
            for _ in range(n):
                f(a)
            return time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        for _ in range(n):
            f(*args)
        return time.perf_counter_ns() - t0

    def profile(req) -> dict:
        """Per-function times of a VM run, through the VM's instrument hook (TVM 0.27's
        relax.VirtualMachine has no profile=True): the hook is called before and after each
        call the VM makes, so each kernel's wall time is measured around its call."""
        machine = relax.VirtualMachine(tvm.runtime.load_module(req["path"]), tvm.cpu())
        args = tuple(tvm.runtime.tensor(np.load(p)) for p in req["inputs"])
        f = machine[req.get("func", "main")]
        f(*args)  # warm-up, not counted
        times: dict = {}
        started: list = []

        def shapes(values) -> list:
            return [list(map(int, v.shape)) for v in values if isinstance(v, tvm.runtime.Tensor) and len(v.shape)]

        def instrument(func, symbol, before_run, ret_value, *call_args):
            if before_run:
                started.append(time.perf_counter_ns())
            else:
                entry = times.setdefault(symbol, {"ns": 0, "calls": 0, "args": shapes(call_args)})
                entry["ns"] += time.perf_counter_ns() - started.pop()
                entry["calls"] += 1
            return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

        runs = int(req.get("runs", 10))
        machine.set_instrument(instrument)
        t0 = time.perf_counter_ns()
        for _ in range(runs):
            f(*args)
        wall = time.perf_counter_ns() - t0
        total = sum(e["ns"] for e in times.values()) or 1
        ranked = sorted(times.items(), key=lambda kv: -kv[1]["ns"])[: int(req.get("top", 10))]
        kernels = [
            {"name": name, "calls": e["calls"] // runs, "ms": e["ns"] / runs / 1e6, "pct": 100 * e["ns"] / total, "args": e["args"]}
            for name, e in ranked
        ]
        return {"kernels": kernels, "totalMs": total / runs / 1e6, "wallMs": wall / runs / 1e6, "functions": len(times), "runs": runs}

    setups = {"kernel": kernel, "global": global_func, "vm": vm}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            op = req["op"]
            if op == "info":
                reply = {
                    "python": platform.python_version(),
                    "tvm": tvm.__version__,
                    "tvmFfi": tvm_ffi.__version__,
                    "numpy": np.__version__,
                    "numThreads": int(tvm.get_global_func("runtime.NumThreads")()),
                }
            elif op in setups:
                f, args = setups[op](req)
                # warm: first-call costs (lazy init, allocator) stay out of the rounds
                extra = check(req, f(*args))
                cases[req["id"]] = (f, args)
                reply = {"ok": True, **extra}
            elif op == "profile":
                reply = profile(req)
            elif op == "time":
                f, args = cases[req["id"]]
                reply = {"ns": run_case(f, args, int(req["n"]))}
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as err:  # reported to the Node side, which fails the run
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()

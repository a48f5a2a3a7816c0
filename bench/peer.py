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

"""The Python side of the `rpc` benchmarks (bench/run.ts), run under the pinned TVM
(tvm/.venv/bin/python): the stock client (`from tvm import rpc, relax`) against TVM's own
RPC server (`python -m tvm.exec.rpc_server`) and, as a diagnostic, against tvm-node's.

It answers one JSON request per line on stdin with one JSON line on stdout, like
bench/peer.py, so that the Node side can interleave its rounds with this peer's:

  {"op": "info"}                                    -> versions
  {"op": "connect", "sess": S, "port": P}           -> opens session S (kept open)
  {"op": "close", "sess": S}                        -> drops session S (the server sees it end)
  {"op": "upload", "id": ..., "sess": S, "bytes": N}
      case: r.upload(bytearray(N), "blob.bin")
  {"op": "remote_vm", "id": ..., "sess": S, "lib": ".so", "input": npy, "expect": npy, "tolerance": {...}}
      uploads and loads the .so once; case: vm["main"](tvm.runtime.tensor(x, r.cpu())).numpy()
      (what the stock client must do: several round trips per inference)
  {"op": "infer", "id": ..., "sess": S, "model": NAME, "input": npy, "expect": npy, "tolerance": {...}}
      case: tvm_node.infer(NAME, pack([x])) on a tvm-node server (one round trip), unpacked
  {"op": "addone", "id": ..., "sess": S, "n": N, "check": C}
      case: unpack(tvm_node.infer("addone", pack([x])))[0] for x float32[N] (the transfer
      group); every call checks C elements of the output against x + 1
  {"op": "connect_timer", "id": ..., "port": P, "settle_ms": MS, "first": null | {...}}
      case: connect (and with "first": everything up to the first inference's result, the
      fields of the client op below); only that is timed: the session is then closed and the
      peer sleeps settle_ms, untimed, so the server's teardown is not charged to the next one
  {"op": "time", "id": ..., "n": N}                 -> {"ns": total ns of N timed operations}
  {"op": "client", "port": P, "mode": "vm" | "infer", "k": K, "lib": ".so", "model": NAME,
   "input": npy, "expect": npy, "tolerance": {...}}
      one whole client of the concurrency benchmark: connect, (vm: upload + load the .so),
      K inferences, close; replies with ns offsets from the start:
      {"connectNs", "readyNs", "firstNs", "doneNs", "retries"}. A connect that fails (TVM's
      server, with its listen backlog of 1, resets some of many simultaneous connects) is
      retried after RETRY_S, up to CONNECT_ATTEMPTS times in all, as a user would.

Sessions are closed by dropping every reference to them (the stock client has no close()):
the runtime's client session then shuts the connection down, which is what lets TVM's
server, one client at a time, accept the next one.
"""

import gc
import json
import os
import platform
import sys
import time


CONNECT_ATTEMPTS = 10
RETRY_S = 0.05


def main() -> None:
    # Replies go to the original stdout; anything native code prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import numpy as np
    import tvm
    import tvm_ffi
    from tvm import relax, rpc

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from tni1 import pack, unpack

    host = "127.0.0.1"
    sessions: dict = {}
    cases: dict = {}

    def check(req, actual) -> dict:
        if "expect" not in req:
            return {}
        expected = np.load(req["expect"])
        np.testing.assert_allclose(actual, expected, **req.get("tolerance", {}))
        return {"maxAbsDiff": float(np.max(np.abs(actual.astype(np.float64) - expected)))}

    def remote_vm(r, lib):
        """Uploads and loads `lib` in session r; returns x -> output (host numpy)."""
        r.upload(lib)
        dev = r.cpu()
        f = relax.VirtualMachine(r.load_module(os.path.basename(lib)), dev)["main"]
        return lambda x: f(tvm.runtime.tensor(x, dev)).numpy()

    def remote_infer(r, model):
        infer = r.get_function("tvm_node.infer")
        return lambda x: unpack(infer(model, pack([x])))[0]

    def remote_addone(r, n, check):
        """x -> x + 1 through tvm_node.infer on float32[n]; each call checks `check` elements."""
        infer = r.get_function("tvm_node.infer")
        x = (np.arange(n, dtype=np.int64) % 4093).astype(np.float32) * np.float32(0.5)
        at = np.unique(np.linspace(0, n - 1, check).astype(np.int64))
        want = x[at] + np.float32(1)

        def run():
            y = unpack(infer("addone", pack([x])))[0]
            if y.shape != x.shape or not np.array_equal(y[at], want):
                raise ValueError(f"addone float32[{n}]: output differs from x + 1")

        return run

    def timer_of(f, args=()):
        def timer(n):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                f(*args)
            return time.perf_counter_ns() - t0

        return timer

    def client(req) -> dict:
        """One client of the concurrency benchmark, start to finish."""
        x = np.load(req["input"])
        t0 = time.perf_counter_ns()
        for retries in range(CONNECT_ATTEMPTS):
            try:
                r = rpc.connect(host, int(req["port"]))
                break
            except Exception:  # pylint: disable=broad-except
                if retries == CONNECT_ATTEMPTS - 1:
                    raise
                time.sleep(RETRY_S)
        t_conn = time.perf_counter_ns() - t0
        run = remote_vm(r, req["lib"]) if req["mode"] == "vm" else remote_infer(r, req["model"])
        t_ready = time.perf_counter_ns() - t0
        first = run(x)
        t_first = time.perf_counter_ns() - t0
        check(req, first)
        for _ in range(int(req["k"]) - 1):
            run(x)
        del run, r
        gc.collect()  # the session must be gone before the next client of this process
        return {"connectNs": t_conn, "readyNs": t_ready, "firstNs": t_first, "doneNs": time.perf_counter_ns() - t0, "retries": retries}

    def connect_timer(req):
        port, settle = int(req["port"]), float(req.get("settle_ms", 0)) / 1e3
        first = req.get("first")

        def timer(n):
            total = 0
            for _ in range(n):
                if first:
                    total += client({**first, "port": port, "k": 1})["firstNs"]
                else:
                    t0 = time.perf_counter_ns()
                    r = rpc.connect(host, port)
                    total += time.perf_counter_ns() - t0
                    del r
                    gc.collect()
                time.sleep(settle)
            return total

        return timer

    def handle(req) -> dict:
        # A function of its own, so that no local (a session, a remote function) outlives the
        # request: a reference left behind would keep a closed session open on the server.
        op = req["op"]
        if op == "info":
            return {"python": platform.python_version(), "tvm": tvm.__version__, "tvmFfi": tvm_ffi.__version__, "numpy": np.__version__}
        if op == "connect":
            t0 = time.perf_counter_ns()
            sessions[req["sess"]] = rpc.connect(host, int(req["port"]))
            return {"ns": time.perf_counter_ns() - t0}
        if op == "close":
            # the cases hold the session's functions: drop them first
            for k in [k for k, v in cases.items() if v[0] == req["sess"]]:
                del cases[k]
            sessions.pop(req["sess"], None)
            gc.collect()
            return {"ok": True}
        if op == "upload":
            r = sessions[req["sess"]]
            blob = bytearray(int(req["bytes"]))
            r.upload(blob, "blob.bin")  # warm
            cases[req["id"]] = (req["sess"], timer_of(r.upload, (blob, "blob.bin")))
            return {"ok": True}
        if op in ("remote_vm", "infer"):
            r = sessions[req["sess"]]
            run = remote_vm(r, req["lib"]) if op == "remote_vm" else remote_infer(r, req["model"])
            x = np.load(req["input"])
            extra = check(req, run(x))
            cases[req["id"]] = (req["sess"], timer_of(run, (x,)))
            return {"ok": True, **extra}
        if op == "addone":
            run = remote_addone(sessions[req["sess"]], int(req["n"]), int(req["check"]))
            run()  # checked, and warm
            cases[req["id"]] = (req["sess"], timer_of(run))
            return {"ok": True}
        if op == "connect_timer":
            cases[req["id"]] = (None, connect_timer(req))
            return {"ok": True}
        if op == "time":
            return {"ns": cases[req["id"]][1](int(req["n"]))}
        if op == "client":
            return client(req)
        raise ValueError(f"unknown op {op!r}")

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as err:  # reported to the Node side, which fails the run
            reply = {"error": f"{type(err).__name__}: {err}"}
        gc.collect()  # a traceback (or a cycle) may hold a session: let it go now
        out.write(json.dumps(reply) + "\n")

if __name__ == "__main__":
    main()

"""tvm-node's TNI1 tensor blob (lib/rpc/infer.ts) for Python clients of ``tvm_node.infer``:

    r.get_function("tvm_node.infer")("mlp", pack([x]))  ->  unpack(reply)

"TNI1" | uint32 LE header length | JSON header {"tensors": [{shape, dtype, offset, nbytes}]}
| data, each tensor 64-byte aligned relative to the start of the data area. Used by the RPC
tests and the rpc benchmark peer (bench/rpc_peer.py); the README shows the same code.
"""

import json
import struct

import numpy as np

MAGIC = b"TNI1"


def pack(arrays) -> bytearray:
    """Arrays -> one blob (a bytearray, which TVM's RPC passes as bytes)."""
    entries, chunks, off = [], [], 0
    for a in map(np.ascontiguousarray, arrays):
        pad = -a.nbytes % 64
        entries.append({"shape": list(a.shape), "dtype": str(a.dtype), "offset": off, "nbytes": a.nbytes})
        chunks.append(a.tobytes() + b"\0" * pad)
        off += a.nbytes + pad
    h = json.dumps({"tensors": entries}).encode()
    return bytearray(MAGIC + struct.pack("<I", len(h)) + h + b"".join(chunks))


def unpack(blob):
    """A blob -> arrays (views into it)."""
    blob = bytes(blob)
    if blob[:4] != MAGIC:
        raise ValueError("not a TNI1 tensor blob")
    n = struct.unpack_from("<I", blob, 4)[0]
    hdr, data = json.loads(blob[8 : 8 + n]), blob[8 + n :]
    return [np.frombuffer(data, e["dtype"], int(np.prod(e["shape"])), e["offset"]).reshape(e["shape"]) for e in hdr["tensors"]]

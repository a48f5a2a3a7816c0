// `npm run test:unit`: the tests that need no Python peer, i.e. every test file but those that
// start Python processes to talk to or compare against (test fixtures and the benchmark
// models are still compiled by the pinned TVM, cached by content hash: scripts/compile_*.py).
// Same settings as .mocharc.json (`npm test`), leak check included.
const base = require('./.mocharc.json');

module.exports = {
  ...base,
  ignore: [
    'test/bench.test.ts', // bench/peer.py (TVM's Python runtime) and TVM's Python RPC server
    'test/nchwc.test.ts', // compiles and runs its convolution in TVM's Python, against numpy
    'test/winograd.test.ts', // the same, for a Winograd convolution
    'test/npy.test.ts', // numpy writes and reads the files it checks
    'test/toolchain.test.ts', // probes the TVM wheels and round-trips through TVM's Python
    'test/rpc/client.test.ts', // TVM's Python RPC server and tracker (startPythonServer)
    'test/rpc/hardening.test.ts', // stock Python RPC clients (spawnPython, runPython)
    'test/rpc/inference.test.ts', // stock Python RPC clients
    'test/rpc/server.test.ts', // stock Python RPC clients
    'test/rpc/transfer.test.ts', // stock Python RPC clients (echo through TVM's client)
  ],
};

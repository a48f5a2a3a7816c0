/**
 * tvm-node serve against real clients: Triton's Python client (tritonclient.http and
 * tritonclient.grpc from PyPI) on compiled fixtures, curl, raw HTTP bytes for what no
 * client library sends, a Prometheus scrape, and the CLI stopped with SIGTERM mid-request.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { connect } from '../../lib';
import type { InferenceServer, ServePorts } from '../../lib/serve/server';
import { fixture, repoRoot } from '../fixtures';
import { runPython } from '../rpc/peers';
import {
  arrayFile,
  binaryBody,
  clientsPython,
  inferJson,
  jsonInputs,
  makeRepository,
  parseProm,
  referenceOutput,
  request,
  SERVED,
  startServer,
} from './clients';

/** Max |a - b| over two equally long lists. */
function maxDiff(a: readonly number[], b: readonly number[]): number {
  assert.equal(a.length, b.length, 'element count');
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

/** What the tritonclient script checks: every case of these fixtures, JSON and binary. */
function clientCases() {
  return ['mlp', 'multi_out', 'pair', 'echo', 'fp16'].flatMap((name) => {
    const f = fixture(name);
    const outputNames = (f as unknown as { signature: { outputs: { name: string }[] } }).signature.outputs.map((o) => o.name);
    return f.cases.map((c) => ({
      model: name,
      inputs: c.inputs.map((s) => ({ name: s.name, file: arrayFile(s) })),
      outputs: c.outputs.map((s, k) => ({ name: outputNames[k], file: arrayFile(s) })),
      atol: f.tolerance.atol,
      rtol: f.tolerance.rtol,
    }));
  });
}

/** tritonclient (HTTP or gRPC) through the whole protocol; prints what it saw. */
const TRITON_SCRIPT = `
from tritonclient.utils import InferenceServerException, np_to_triton_dtype
if A["protocol"] == "http":
    import tritonclient.http as mod
    kw = {}
else:
    import tritonclient.grpc as mod
    kw = {"as_json": True}
c = mod.InferenceServerClient(A["url"])

def status(fn):
    try:
        fn()
        return None
    except InferenceServerException as e:
        return [str(e.status()), e.message()]

def infer(case, binary):
    ins = []
    for i in case["inputs"]:
        x = np.load(i["file"])
        t = mod.InferInput(i["name"], list(x.shape), np_to_triton_dtype(x.dtype))
        if A["protocol"] == "http":
            t.set_data_from_numpy(x, binary_data=binary)
        else:
            t.set_data_from_numpy(x)
        ins.append(t)
    if A["protocol"] == "http":
        outs = [mod.InferRequestedOutput(o["name"], binary_data=binary) for o in case["outputs"]]
    else:
        outs = [mod.InferRequestedOutput(o["name"]) for o in case["outputs"]]
    r = c.infer(case["model"], ins, outputs=outs)
    worst = 0.0
    for o in case["outputs"]:
        want = np.load(o["file"])
        got = r.as_numpy(o["name"])
        assert got.shape == want.shape and got.dtype == want.dtype, (case["model"], o["name"], got.shape, got.dtype, want.shape, want.dtype)
        ok = np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=case["rtol"], atol=case["atol"])
        assert ok, (case["model"], o["name"], got, want)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0)
    return worst

res = {"live": c.is_server_live(), "ready": c.is_server_ready()}
res["server"] = c.get_server_metadata(**kw)
res["meta"] = {n: c.get_model_metadata(n, **kw) for n in ["mlp", "multi_out", "pair", "echo"]}
res["cases"] = []
for case in A["cases"]:
    for binary in ([True, False] if A["protocol"] == "http" else [True]):
        res["cases"].append([case["model"], binary, infer(case, binary)])
res["ready_models"] = {n: c.is_model_ready(n) for n in ["mlp", "broken"]}
idx = c.get_model_repository_index(**kw)
res["index"] = idx if A["protocol"] == "http" else idx.get("models", [])

mlp_x = np.load(A["cases"][0]["inputs"][0]["file"])
def one(model, name, arr, datatype):
    t = mod.InferInput(name, list(arr.shape), datatype)
    t.set_data_from_numpy(arr)
    c.infer(model, [t])
res["errors"] = {
    "unknown_model": status(lambda: one("nope", "x", mlp_x, "FP32")),
    "wrong_shape": status(lambda: one("mlp", "x", mlp_x[:2], "FP32")),
    "wrong_dtype": status(lambda: one("mlp", "x", mlp_x.astype(np.float64), "FP64")),
    "wrong_name": status(lambda: one("mlp", "y", mlp_x, "FP32")),
    "broken_model": status(lambda: one("broken", "x", mlp_x, "FP32")),
    "wrong_version": status(lambda: c.get_model_metadata("mlp", "7")),
}
res["after_errors"] = infer(A["cases"][0], True)
c.unload_model("mlp")
res["unloaded_ready"] = c.is_model_ready("mlp")
res["unloaded_infer"] = status(lambda: infer(A["cases"][0], True))
c.load_model("mlp")
res["reloaded_ready"] = c.is_model_ready("mlp")
res["reloaded"] = infer(A["cases"][0], True)
res["load_broken"] = status(lambda: c.load_model("broken"))
out(**res)
`;

describe('tvm-node serve: KServe v2 over HTTP and gRPC', function () {
  this.timeout(180_000);
  let dir: string;
  let server: InferenceServer;
  let ports: Required<ServePorts>;

  before(async () => {
    dir = makeRepository();
    ({ server, ports } = await startServer(dir, { maxBodyBytes: 4 * 2 ** 20, maxJsonBytes: 2 ** 20 }));
  });
  after(async () => {
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const protocol of ['http', 'grpc'] as const) {
    it(`tritonclient.${protocol}: health, metadata, JSON${protocol === 'http' ? ' and binary' : ' (raw)'} inference on ${SERVED.length - 1} models, repository, errors`, async () => {
      const url = `127.0.0.1:${protocol === 'http' ? ports.http : ports.grpc}`;
      const r = await runPython(TRITON_SCRIPT, { protocol, url, cases: clientCases() }, 120_000, { python: clientsPython });
      assert.equal(r.live, true);
      assert.equal(r.ready, true);
      assert.equal(r.server.name, 'tvm-node');
      assert.deepEqual([...r.server.extensions].sort(), ['binary_tensor_data', 'model_repository']);
      const meta = (n: string) => r.meta[n];
      assert.deepEqual(
        meta('multi_out').outputs.map((o: { name: string; datatype: string; shape: (number | string)[] }) => [o.name, o.datatype, o.shape.map(Number)]),
        [
          ['doubled', 'FP32', [2, 5]],
          ['row_sum', 'FP32', [2]],
          ['row_argmax', 'INT64', [2]],
        ],
      );
      assert.deepEqual(
        meta('pair').inputs.map((i: { name: string; shape: (number | string)[] }) => [i.name, i.shape.map(Number)]),
        [
          ['x', [-1, 4]],
          ['y', [-1, 4]],
        ],
      );
      assert.equal(meta('echo').inputs.length, 5);
      assert.deepEqual(
        meta('echo').inputs.map((i: { datatype: string }) => i.datatype),
        ['FP32', 'FP16', 'INT8', 'UINT8', 'INT64'],
      );
      // Every case of every model, each output compared with numpy's in Python (np.allclose there).
      assert.equal(r.cases.length, clientCases().length * (protocol === 'http' ? 2 : 1));
      for (const [model, , worst] of r.cases) assert.ok(worst <= 1e-4, `${model}: max |diff| ${worst}`);
      assert.deepEqual(r.ready_models, { mlp: true, broken: false });
      const states = Object.fromEntries(r.index.map((m: { name: string; state: string }) => [m.name, m.state]));
      assert.equal(states.mlp, 'READY');
      assert.equal(states.broken, 'UNAVAILABLE');
      const code = (k: string) => r.errors[k]?.[0];
      const statusOf =
        protocol === 'http'
          ? { bad: '400', missing: '404', unready: '503' }
          : { bad: 'StatusCode.INVALID_ARGUMENT', missing: 'StatusCode.NOT_FOUND', unready: 'StatusCode.UNAVAILABLE' };
      assert.equal(code('unknown_model'), statusOf.missing);
      assert.equal(code('wrong_version'), statusOf.missing);
      for (const k of ['wrong_shape', 'wrong_dtype', 'wrong_name']) assert.equal(code(k), statusOf.bad, `${k}: ${r.errors[k]}`);
      assert.match(r.errors.wrong_shape[1], /input 'x'.*shape/);
      assert.match(r.errors.wrong_dtype[1], /float32|dtype/);
      assert.match(r.errors.wrong_name[1], /'y'/);
      assert.equal(code('broken_model'), statusOf.unready);
      assert.match(r.errors.broken_model[1], /broken.*not ready/);
      assert.doesNotMatch(r.errors.broken_model[1], new RegExp(dir), 'no server paths in answers');
      assert.ok(r.after_errors <= 1e-4, 'the server still answers after the errors');
      assert.equal(r.unloaded_ready, false);
      assert.equal(r.unloaded_infer?.[0], statusOf.unready);
      assert.equal(r.reloaded_ready, true);
      assert.ok(r.reloaded <= 1e-4);
      assert.equal(r.load_broken?.[0], statusOf.unready);
    });
  }

  it('curl: health, server and model metadata, JSON inference, repository index', async () => {
    // curl runs beside this process (the server is in it): never a synchronous exec here.
    const curl = async (...args: string[]) => (await promisify(execFile)('curl', ['-s', '-w', '\n%{http_code}', ...args], { encoding: 'utf8' })).stdout;
    const split = (out: string) => {
      const lines = out.trimEnd().split('\n');
      return { code: Number(lines.pop()), body: lines.join('\n') };
    };
    const base = `http://127.0.0.1:${ports.http}`;
    assert.equal(split(await curl(`${base}/v2/health/live`)).code, 200);
    assert.equal(split(await curl(`${base}/v2/health/ready`)).code, 200);
    assert.equal(JSON.parse(split(await curl(`${base}/v2`)).body).name, 'tvm-node');
    const meta = JSON.parse(split(await curl(`${base}/v2/models/mlp`)).body);
    assert.deepEqual(meta.inputs, [{ name: 'x', datatype: 'FP32', shape: [4, 16] }]);
    assert.equal(split(await curl(`${base}/v2/models/mlp/versions/1/ready`)).code, 200);
    assert.equal(split(await curl(`${base}/v2/models/broken/ready`)).code, 503);
    const body = JSON.stringify({ inputs: jsonInputs('mlp') });
    const r = split(await curl('-X', 'POST', '-H', 'Content-Type: application/json', '-d', body, `${base}/v2/models/mlp/infer`));
    assert.equal(r.code, 200, r.body);
    const answer = JSON.parse(r.body);
    assert.deepEqual(answer.outputs[0].shape, [4, 8]);
    assert.ok(maxDiff(answer.outputs[0].data, referenceOutput('mlp')) < 1e-4);
    const index = JSON.parse(split(await curl('-X', 'POST', `${base}/v2/repository/index`)).body);
    assert.deepEqual(index.map((m: { name: string }) => m.name).sort(), [...SERVED, 'broken'].sort());
    const bad = split(await curl('-X', 'POST', '-d', '{"inputs": [', `${base}/v2/models/mlp/infer`));
    assert.equal(bad.code, 400);
    assert.match(JSON.parse(bad.body).error, /not valid JSON/);
  });

  it('binary extension by hand: raw inputs and outputs match the JSON answer; truncated, extra and mislabelled bytes are 400s', async () => {
    const [x] = jsonInputs('mlp');
    const raw = Buffer.from(new Float32Array(x.data).buffer);
    const header = {
      inputs: [{ name: 'x', datatype: 'FP32', shape: x.shape, parameters: { binary_data_size: raw.length } }],
      outputs: [{ name: 'output0', parameters: { binary_data: true } }],
    };
    const send = (body: Buffer, headerLength: number | string) =>
      request(ports.http, 'POST', '/v2/models/mlp/infer', body, {
        'inference-header-content-length': String(headerLength),
        'content-type': 'application/octet-stream',
      });
    const good = binaryBody(header, raw);
    const r = await send(good.body, good.headerLength);
    assert.equal(r.status, 200, r.body.toString());
    const n = Number(r.headers['inference-header-content-length']);
    const head = JSON.parse(r.body.subarray(0, n).toString());
    assert.equal(head.outputs[0].parameters.binary_data_size, 4 * 8 * 4);
    const bytes = r.body.subarray(n);
    const y = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    assert.ok(maxDiff(Array.from(y), referenceOutput('mlp')) < 1e-4);

    const cases: Array<[string, Buffer, number | string, RegExp]> = [
      ['truncated', good.body.subarray(0, good.body.length - 3), good.headerLength, /truncated/],
      ['extra bytes', Buffer.concat([good.body, Buffer.alloc(8)]), good.headerLength, /after the last binary input/],
      ['header length past the body', good.body, good.body.length + 10, /inference-header-content-length/],
      ['header length not a number', good.body, '12abc', /inference-header-content-length/],
      ['header length cuts the JSON', good.body, 10, /not valid JSON/],
    ];
    for (const [what, body, len, message] of cases) {
      const bad = await send(body, len);
      assert.equal(bad.status, 400, `${what}: ${bad.body}`);
      assert.match(bad.json().error, message, what);
    }
    const again = await send(good.body, good.headerLength);
    assert.equal(again.status, 200, 'still serving');
  });

  it('bad JSON requests get 400/404 with a message; oversized bodies and JSON 413; huge headers 431; the server keeps serving', async () => {
    const [x] = jsonInputs('mlp');
    const cases: Array<[string, string, unknown, number, RegExp]> = [
      ['unknown model', 'nope', { inputs: [x] }, 404, /unknown model 'nope'/],
      ['chain name', 'mlp|mlp', { inputs: [x] }, 404, /unknown model/],
      ['no inputs', 'mlp', {}, 400, /inputs/],
      ['data too short', 'mlp', { inputs: [{ ...x, data: x.data.slice(1) }] }, 400, /63 elements of data for a shape of 64/],
      ['data not numbers', 'mlp', { inputs: [{ ...x, data: x.data.map(() => 'a') }] }, 400, /"a" is not a FP32 value/],
      ['negative size', 'mlp', { inputs: [{ ...x, shape: [-4, 16] }] }, 400, /non-negative/],
      ['BYTES', 'mlp', { inputs: [{ ...x, datatype: 'BYTES' }] }, 400, /unsupported datatype "BYTES"/],
      ['twice', 'mlp', { inputs: [x, x] }, 400, /given twice/],
      ['unknown output', 'mlp', { inputs: [x], outputs: [{ name: 'nope' }] }, 400, /no output 'nope'/],
      [
        'int data for INT64 with fractions',
        'echo',
        { inputs: jsonInputs('echo').map((i) => (i.datatype === 'INT64' ? { ...i, data: [0.5] } : i)) },
        400,
        /0.5 is not a INT64/,
      ],
    ];
    for (const [what, model, body, status, message] of cases) {
      const r = await inferJson(ports.http, model, body);
      assert.equal(r.status, status, `${what}: ${r.body}`);
      assert.match(r.json().error, message, what);
    }
    const big = await request(ports.http, 'POST', '/v2/models/mlp/infer', Buffer.alloc(5 * 2 ** 20, 32), { 'content-type': 'application/json' });
    assert.equal(big.status, 413);
    assert.match(big.json().error, /limit/);
    // 2 MiB of JSON: within the body limit, over the JSON one (JSON is parsed on the event loop; binary is not).
    const bigJson = await inferJson(ports.http, 'mlp', { inputs: [x], pad: 'x'.repeat(2 * 2 ** 20) });
    assert.equal(bigJson.status, 413);
    assert.match(bigJson.json().error, /JSON is \d+ bytes, over the server's limit of 1048576 for JSON: send large tensors as binary/);
    const huge = await request(ports.http, 'GET', '/v2/health/live', undefined, { 'x-junk': 'a'.repeat(64 * 1024) });
    assert.equal(huge.status, 431);
    const ok = await inferJson(ports.http, 'mlp', { inputs: [x] });
    assert.equal(ok.status, 200);
    assert.ok(maxDiff(ok.json().outputs[0].data, referenceOutput('mlp')) < 1e-4);
  });

  it('a model file replaced under the server: the new model is served; garbage is 503 without server paths, others serve on; restored, it serves again', async () => {
    const own = makeRepository();
    const { server: s, ports: p } = await startServer(own, { grpc: false, rpc: false });
    try {
      assert.equal((await inferJson(p.http, 'mlp', { inputs: jsonInputs('mlp') })).status, 200);
      fs.copyFileSync(fixture('conv').path, path.join(own, 'next.partial'));
      fs.renameSync(path.join(own, 'next.partial'), path.join(own, 'mlp.so'));
      fs.rmSync(path.join(own, 'mlp.json'));
      const meta = (await request(p.http, 'GET', '/v2/models/mlp')).json();
      assert.deepEqual(meta.inputs[0].shape, [1, 3, 32, 32], "conv's input now");
      const conv = await inferJson(p.http, 'mlp', { inputs: jsonInputs('conv') });
      assert.equal(conv.status, 200);
      assert.ok(maxDiff(conv.json().outputs[0].data, referenceOutput('conv')) < 1e-3);
      fs.writeFileSync(path.join(own, 'mlp.so'), 'garbage');
      const bad = await inferJson(p.http, 'mlp', { inputs: jsonInputs('conv') });
      assert.equal(bad.status, 503);
      assert.match(bad.json().error, /model 'mlp' failed to load: cannot load mlp\.so: not a shared library/);
      assert.doesNotMatch(bad.json().error, new RegExp(own));
      assert.equal((await request(p.http, 'GET', '/v2/models/mlp/ready')).status, 503);
      assert.equal((await inferJson(p.http, 'pair', { inputs: jsonInputs('pair') })).status, 200);
      fs.copyFileSync(fixture('mlp').path, path.join(own, 'mlp.so'));
      const back = await inferJson(p.http, 'mlp', { inputs: jsonInputs('mlp') });
      assert.equal(back.status, 200);
      assert.ok(maxDiff(back.json().outputs[0].data, referenceOutput('mlp')) < 1e-4);
    } finally {
      await s.close();
      fs.rmSync(own, { recursive: true, force: true });
    }
  });

  it('health answers while a model runs (runs are off the event loop)', async () => {
    const [x] = jsonInputs('slow');
    const order: string[] = [];
    const slow = inferJson(ports.http, 'slow', { inputs: [x] }).then((r) => {
      order.push('slow');
      return r;
    });
    await new Promise((r) => setTimeout(r, 30));
    for (let i = 0; i < 5; i++) {
      const live = await request(ports.http, 'GET', '/v2/health/live');
      assert.equal(live.status, 200);
      order.push('live');
    }
    const r = await slow;
    assert.equal(r.status, 200);
    assert.ok(maxDiff(r.json().outputs[0].data, referenceOutput('slow')) < 1e-2);
    assert.deepEqual(order, ['live', 'live', 'live', 'live', 'live', 'slow'], 'five health answers came while the slow run was in flight');
  });

  it('/metrics: Prometheus counters per model and protocol after a known number of requests (HTTP, gRPC via tritonclient, TVM RPC)', async () => {
    const fresh = makeRepository();
    const { server: s, ports: p } = await startServer(fresh, { preload: false });
    try {
      const [x] = jsonInputs('mlp');
      for (let i = 0; i < 5; i++) assert.equal((await inferJson(p.http, 'mlp', { inputs: [x] })).status, 200);
      assert.equal((await inferJson(p.http, 'mlp', { inputs: [{ ...x, shape: [2, 16] }] })).status, 400);
      assert.equal((await inferJson(p.http, 'no_such_model', { inputs: [x] })).status, 404);
      await runPython(
        `import tritonclient.grpc as g
c = g.InferenceServerClient(A["url"])
x = np.load(A["x"])
for _ in range(3):
    t = g.InferInput("x", list(x.shape), "FP32"); t.set_data_from_numpy(x)
    c.infer("mlp", [t])
out(done=True)`,
        { url: `127.0.0.1:${p.grpc}`, x: arrayFile(fixture('mlp').cases[0].inputs[0]) },
        60_000,
        { python: clientsPython },
      );
      const session = await connect('127.0.0.1', p.rpc);
      try {
        for (let i = 0; i < 2; i++) {
          const [y] = await session.infer('mlp', [{ data: new Float32Array(x.data), shape: x.shape }]);
          assert.ok(maxDiff(Array.from(y.toArraySync() as Float32Array), referenceOutput('mlp')) < 1e-4);
          y.disposeSync();
        }
      } finally {
        await session.dispose();
      }
      const res = await request(p.http, 'GET', '/metrics');
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /text\/plain/);
      const m = parseProm(res.body.toString());
      const get = (k: string) => m.get(k) ?? 0;
      assert.equal(get('tvm_node_inference_requests_total{model="mlp",protocol="http"}'), 6);
      assert.equal(get('tvm_node_inference_failures_total{model="mlp",protocol="http",reason="BadRequest"}'), 1);
      assert.equal(get('tvm_node_inference_requests_total{model="",protocol="http"}'), 1, 'an unknown model is counted without its name');
      assert.equal(get('tvm_node_inference_requests_total{model="mlp",protocol="grpc"}'), 3);
      assert.equal(get('tvm_node_inference_requests_total{model="mlp",protocol="rpc"}'), 2);
      assert.equal(get('tvm_node_inference_duration_seconds_count{model="mlp",protocol="grpc"}'), 3);
      assert.equal(get('tvm_node_inference_compute_seconds_count{model="mlp",protocol="http"}'), 5);
      assert.ok(get('tvm_node_inference_compute_seconds_sum{model="mlp",protocol="http"}') > 0);
      // One cache shared by the three protocols: mlp loaded once, every later request a hit.
      assert.equal(get('tvm_node_model_loads_total{model="mlp"}'), 1);
      assert.equal(get('tvm_node_model_cache_misses_total{model="mlp"}'), 1);
      // 10 runs (the bad request is refused before the model is looked up): the first loads, 9 hit.
      assert.equal(get('tvm_node_model_cache_hits_total{model="mlp"}'), 5 + 3 + 2 - 1);
      assert.equal(get('tvm_node_model_load_seconds_count{model="mlp"}'), 1);
      assert.equal(get('tvm_node_models_loaded'), 1);
      assert.equal(get('tvm_node_inference_in_flight'), 0);
      assert.ok(get('tvm_node_bytes_total{protocol="http",direction="in"}') > 5 * 64 * 2);
      assert.ok(get('tvm_node_bytes_total{protocol="grpc",direction="out"}') >= 3 * 32 * 4);
      assert.ok(m.has('tvm_node_nodejs_eventloop_lag_p99_seconds'), 'Node process metrics are there too');
    } finally {
      await s.close();
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('limits: requests over maxInFlight get 503 busy, a request over the time limit 504; both servers keep serving', async () => {
    const [x] = jsonInputs('slow');
    const { server: s, ports: p } = await startServer(dir, { maxInFlight: 1, grpc: false, rpc: false });
    try {
      const first = inferJson(p.http, 'slow', { inputs: [x] });
      await new Promise((r) => setTimeout(r, 30));
      const second = await inferJson(p.http, 'mlp', { inputs: jsonInputs('mlp') });
      assert.equal(second.status, 503);
      assert.match(second.json().error, /busy.*at most 1/);
      assert.equal((await first).status, 200);
      assert.equal((await inferJson(p.http, 'mlp', { inputs: jsonInputs('mlp') })).status, 200);
    } finally {
      await s.close();
    }
    const { server: t, ports: q } = await startServer(dir, { requestTimeoutMs: 50, grpc: false, rpc: false });
    try {
      const late = await inferJson(q.http, 'slow', { inputs: [x] });
      assert.equal(late.status, 504);
      assert.match(late.json().error, /did not answer within 50 ms/);
      assert.equal((await inferJson(q.http, 'mlp', { inputs: jsonInputs('mlp') })).status, 200);
    } finally {
      await t.close();
    }
  });
});

describe('tvm-node serve: hostile HTTP clients', function () {
  this.timeout(60_000);
  let dir: string;
  let server: InferenceServer;
  let port: number;
  before(async () => {
    dir = makeRepository();
    const started = await startServer(dir, { readTimeoutMs: 1000, grpc: false, rpc: false, preload: false });
    server = started.server;
    port = started.ports.http;
  });
  after(async () => {
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Opens a connection, writes `bytes`, and resolves with how long the server took to close it (ms) and what it said. */
  function abandon(bytes: string): Promise<{ ms: number; said: string }> {
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
      let said = '';
      socket.on('data', (c: Buffer) => (said += c.toString()));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve({ ms: performance.now() - start, said }));
      setTimeout(() => reject(new Error('the server never closed the connection')), 20_000).unref();
    });
  }

  it('a connection that sends nothing, headers that never end, or a body that stops short is closed after the read timeout, while others are served', async () => {
    const body = JSON.stringify({ inputs: jsonInputs('mlp') });
    const clients = [
      abandon(''),
      abandon('POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nX-Slow: '),
      abandon(`POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`),
    ];
    const ok = await inferJson(port, 'mlp', { inputs: jsonInputs('mlp') });
    assert.equal(ok.status, 200, 'served while the others hang');
    for (const [k, c] of (await Promise.all(clients)).entries()) {
      assert.ok(c.ms >= 900 && c.ms < 10_000, `client ${k} closed after ${Math.round(c.ms)} ms`);
      if (k > 0) assert.match(c.said, /^HTTP\/1\.1 408/, `client ${k} is told it timed out`);
    }
  });

  it('two inference-header-content-length headers, or one with a sign, are 400s', async () => {
    const [x] = jsonInputs('mlp');
    const raw = Buffer.from(new Float32Array(x.data).buffer);
    const { body, headerLength } = binaryBody({ inputs: [{ name: 'x', datatype: 'FP32', shape: x.shape, parameters: { binary_data_size: raw.length } }] }, raw);
    for (const value of [[String(headerLength), String(headerLength)], `+${headerLength}`]) {
      const r = await request(port, 'POST', '/v2/models/mlp/infer', body, { 'inference-header-content-length': value });
      assert.equal(r.status, 400, `${value}: ${r.body}`);
    }
    const r = await request(port, 'POST', '/v2/models/mlp/infer', body, { 'inference-header-content-length': String(headerLength) });
    assert.equal(r.status, 200);
  });
});

describe('tvm-node serve: hostile gRPC clients', function () {
  this.timeout(60_000);

  /** One gRPC call by hand: a frame with these bytes; resolves with the grpc-status it got. */
  function rawCall(port: number, frame: Buffer): Promise<{ status: string; message: string }> {
    return new Promise((resolve, reject) => {
      const c = http2.connect(`http://127.0.0.1:${port}`);
      c.on('error', reject);
      const req = c.request({ ':method': 'POST', ':path': '/inference.GRPCInferenceService/ModelInfer', 'content-type': 'application/grpc', te: 'trailers' });
      let got: { status: string; message: string } | undefined;
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h['grpc-status'] !== undefined) got = { status: String(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')) };
      };
      req.on('response', take);
      req.on('trailers', take);
      req.on('error', reject);
      req.on('close', () => {
        c.close();
        got ? resolve(got) : reject(new Error('no grpc-status'));
      });
      req.end(frame);
    });
  }

  it('garbage protobuf, a frame that claims 1 GiB, and HTTP/1 bytes get errors or a closed connection; the server keeps serving', async () => {
    const dir = makeRepository();
    const { server, ports } = await startServer(dir, { preload: false, maxBodyBytes: 2 ** 20 });
    try {
      const garbage = await rawCall(ports.grpc, Buffer.from([0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]));
      assert.equal(garbage.status, String(GrpcStatus.INTERNAL));
      assert.match(garbage.message, /deserializ/);
      const huge = await rawCall(ports.grpc, Buffer.from([0, 0x40, 0, 0, 0, 1, 2, 3]));
      assert.equal(huge.status, String(GrpcStatus.RESOURCE_EXHAUSTED));
      assert.match(huge.message, /larger than max/);
      const closed = await new Promise<boolean>((resolve) => {
        const sock = net.connect(ports.grpc, '127.0.0.1', () => sock.write(`GET / HTTP/1.1\r\n\r\n${'x'.repeat(100_000)}`));
        sock.on('error', () => undefined);
        sock.on('close', () => resolve(true));
        sock.resume();
      });
      assert.ok(closed);
      const ok = await inferJson(ports.http, 'mlp', { inputs: jsonInputs('mlp') });
      assert.equal(ok.status, 200);
      const answer = await runPython(
        `import tritonclient.grpc as g
c = g.InferenceServerClient(A["url"])
x = np.load(A["x"])
t = g.InferInput("x", list(x.shape), "FP32"); t.set_data_from_numpy(x)
out(y=c.infer("mlp", [t]).as_numpy("output0").ravel().tolist())`,
        { url: `127.0.0.1:${ports.grpc}`, x: arrayFile(fixture('mlp').cases[0].inputs[0]) },
        60_000,
        { python: clientsPython },
      );
      assert.ok(maxDiff(answer.y, referenceOutput('mlp')) < 1e-4, 'gRPC still serves');
    } finally {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tvm-node serve (CLI): SIGTERM drains', function () {
  this.timeout(120_000);
  let child: ChildProcess | undefined;
  let dir: string;
  before(() => {
    dir = makeRepository();
    fs.rmSync(path.join(dir, 'broken.so'));
  });
  after(() => {
    child?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a request in flight at SIGTERM is answered, readiness turns false, and the process exits 0', async () => {
    child = spawn(
      process.execPath,
      ['--require', 'tsx/cjs', path.join(repoRoot, 'lib', 'cli.ts'), 'serve', '--models', dir, '--http', '0', '--grpc', '0', '--log-level', 'warn'],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    const port = await new Promise<number>((resolve, reject) => {
      child!.stderr!.on('data', (c: Buffer) => {
        stderr += c.toString();
        const m = /HTTP \(KServe v2\): +http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
        if (m) resolve(Number(m[1]));
      });
      child!.once('exit', (code) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const slow = inferJson(port, 'slow', { inputs: jsonInputs('slow') });
    await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 20));
    const ready = await request(port, 'GET', '/v2/health/ready').catch((err: Error) => err);
    if (!(ready instanceof Error)) assert.equal(ready.status, 503, 'not ready while draining');
    const r = await slow;
    assert.equal(r.status, 200, 'the request in flight was answered');
    assert.ok(maxDiff(r.json().outputs[0].data, referenceOutput('slow')) < 1e-2);
    assert.equal(await exited, 0, stderr);
    child = undefined;
  });
});

/**
 * Helpers of the serving tests: a model repository of compiled fixtures, a running
 * {@link InferenceServer}, plain HTTP requests (to send bytes no client library would), a
 * Prometheus text parser, and the Python interpreter that has Triton's client (tvm/.venv-clients).
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { readNpy, toFloat32 } from '../../lib';
import { InferenceServer, type InferenceServerOptions, type ServePorts } from '../../lib/serve/server';
import { type ArraySpec, fixture, fixtureDir, repoRoot } from '../fixtures';

/** tritonclient's interpreter (scripts/bootstrap.mjs installs tvm/requirements-clients.txt there). */
export const clientsPython = path.join(repoRoot, 'tvm', '.venv-clients', 'bin', 'python');

/** The fixtures the serving tests serve (several inputs: pair, echo; several outputs: multi_out, echo; float16: fp16). */
export const SERVED = ['mlp', 'multi_out', 'pair', 'echo', 'fp16', 'slow'] as const;

/** A fresh folder with the fixtures' `.so` and manifests, plus `broken.so` (not a shared library). */
export function makeRepository(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-serve-'));
  for (const name of SERVED) {
    const f = fixture(name);
    fs.copyFileSync(f.path, path.join(dir, `${name}.so`));
    const manifest = f.path.replace(/\.so$/, '.json');
    if (fs.existsSync(manifest)) fs.copyFileSync(manifest, path.join(dir, `${name}.json`));
  }
  fs.writeFileSync(path.join(dir, 'broken.so'), 'this is not a shared library');
  return dir;
}

/** A started server on any free ports (HTTP, gRPC, TVM RPC). */
export async function startServer(dir: string, o: Partial<InferenceServerOptions> = {}): Promise<{ server: InferenceServer; ports: Required<ServePorts> }> {
  const server = new InferenceServer({ modelsDir: dir, http: 0, grpc: 0, rpc: 0, ...o });
  const ports = (await server.listen()) as Required<ServePorts>;
  return { server, ports };
}

/** Absolute path of a fixture array. */
export const arrayFile = (spec: ArraySpec) => path.join(fixtureDir(), spec.file);

/** KServe datatypes of the fixtures' dtypes. */
const DATATYPES: Record<string, string> = { float32: 'FP32', float16: 'FP16', int8: 'INT8', uint8: 'UINT8', int64: 'INT64' };

/** An .npy file's elements as JSON numbers (float16 as values). */
function numbersOf(file: string): { shape: number[]; dtype: string; data: number[] } {
  const a = readNpy(file);
  const data = a.dtype === 'float16' ? Array.from(toFloat32(a.data as Uint16Array, 'float16')) : Array.from(a.data as ArrayLike<number | bigint>, Number);
  return { shape: a.shape, dtype: a.dtype, data };
}

/** A fixture case's inputs as KServe JSON tensors (flat data). */
export function jsonInputs(name: string, caseIndex = 0): Array<{ name: string; datatype: string; shape: number[]; data: number[] }> {
  return fixture(name).cases[caseIndex].inputs.map((spec) => {
    const a = numbersOf(arrayFile(spec));
    return { name: spec.name!, datatype: DATATYPES[a.dtype], shape: a.shape, data: a.data };
  });
}

/** The reference output k of a fixture case as numbers. */
export function referenceOutput(name: string, k = 0, caseIndex = 0): number[] {
  return numbersOf(arrayFile(fixture(name).cases[caseIndex].outputs[k])).data;
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json(): any;
}

/** One HTTP request with exactly these headers and body bytes. */
export function request(port: number, method: string, urlPath: string, body?: Buffer | string, headers: http.OutgoingHttpHeaders = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes, json: () => JSON.parse(bytes.toString('utf8')) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** POSTs a JSON infer request. */
export const inferJson = (port: number, model: string, body: unknown) =>
  request(port, 'POST', `/v2/models/${model}/infer`, JSON.stringify(body), { 'content-type': 'application/json' });

/** A body in Triton's binary form: the JSON header, then `binary`; returns it with its header length. */
export function binaryBody(header: unknown, binary: Buffer): { body: Buffer; headerLength: number } {
  const json = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([json, binary]), headerLength: json.length };
}

/** Samples of a Prometheus text exposition: `name{a="x",b="y"}` -> value. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

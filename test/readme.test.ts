/**
 * README's TypeScript examples, run as a user runs them: each block copied as it is into a
 * fresh folder that has `tvm-node` installed (node_modules/tvm-node -> this package, built to
 * dist/ by tsc, loaded through package.json's `exports`), the files the examples name beside
 * it (model.so, mobilenet_v2.so, a split model in split/), and a server on the port the RPC example uses. A block
 * that fails, or prints nothing, fails its test.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { splitFixture } from '../bench/split-fixtures';
import { RPCServer } from '../lib/rpc/server';
import { fixture, python, repoRoot } from './fixtures';

/** The ```ts blocks of README.md, with the heading each is under. */
function readmeExamples(): Array<{ heading: string; code: string }> {
  const text = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const out: Array<{ heading: string; code: string }> = [];
  let heading = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^#+ /.test(lines[i])) heading = lines[i].replace(/^#+ /, '');
    if (lines[i].trim() !== '```ts') continue;
    const start = ++i;
    while (lines[i].trim() !== '```') i++;
    out.push({ heading, code: lines.slice(start, i).join('\n') });
  }
  return out;
}

/** Whether something already listens on 127.0.0.1:port. */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(true));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
  });
}

/** The benchmark's MobileNetV2 (compiled by the pinned TVM, cached): its .so and manifest. */
function mobilenet(): { so: string; manifest: string } {
  const script = path.join(repoRoot, 'scripts', 'compile_bench_models.py');
  const out = execFileSync(python, [script, '--only', 'mobilenet_v2'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()!;
  return { so: path.join(dir, 'mobilenet_v2.so'), manifest: path.join(dir, 'mobilenet_v2.json') };
}

/** Runs a command to its end (killed after `ms`): its status, signal and output. */
function run(
  cmd: string,
  args: string[],
  cwd: string,
  ms: number,
): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

describe('README examples, copied into a fresh folder and run as written', function () {
  this.timeout(300000);
  const examples = readmeExamples();
  let dir: string;
  let server: RPCServer | undefined;
  let serverSkip: string | undefined;

  before(async () => {
    // The package as an installed dependency: dist/ built by tsc, resolved through `exports`.
    execFileSync(process.execPath, [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
      cwd: repoRoot,
      stdio: 'inherit',
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-readme-'));
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(repoRoot, path.join(dir, 'node_modules', 'tvm-node'));
    fs.copyFileSync(fixture('mlp').path, path.join(dir, 'model.so'));
    const mb = mobilenet();
    fs.copyFileSync(mb.so, path.join(dir, 'mobilenet_v2.so'));
    fs.copyFileSync(mb.manifest, path.join(dir, 'mobilenet_v2.json'));
    // The offloading example runs a split model from split/ (as `tvm-node split ... -o split` writes it).
    fs.cpSync(await splitFixture('mobilenet_v2_tiny'), path.join(dir, 'split'), { recursive: true });
    // The RPC example talks to 127.0.0.1:9090, uploads model.so and infers 'mlp' from the
    // server's repository: a full-mode tvm-node server with that repository.
    if (await portInUse(9090)) {
      serverSkip = 'port 9090, which the RPC example uses, is taken on this machine';
    } else {
      const models = path.join(dir, 'repository');
      fs.mkdirSync(models);
      fs.copyFileSync(fixture('mlp').path, path.join(models, 'mlp.so'));
      server = new RPCServer({ port: 9090, modelsDir: models, prestartSessions: 1 });
      await server.listen();
    }
  });

  after(async () => {
    await server?.close(1000);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('finds the examples', () => {
    assert.ok(examples.length >= 4, `only ${examples.length} ts blocks in README.md`);
  });

  for (const [i, ex] of examples.entries()) {
    it(`example ${i + 1} (${ex.heading}) runs and prints`, async function () {
      if (/connect\('127\.0\.0\.1', 9090/.test(ex.code) && serverSkip) {
        // The reason goes into the report: mocha's skip() takes none.
        this.test!.title += ` (skipped: ${serverSkip})`;
        this.skip();
      }
      const file = path.join(dir, `example${i + 1}.mts`);
      fs.writeFileSync(file, ex.code);
      // tsx (to run TypeScript) comes from this repository, as a user's own dev dependency would.
      const tsx = pathToFileURL(path.join(repoRoot, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
      // Not spawnSync: the RPC example's server runs in this process and must keep serving.
      const r = await run(process.execPath, ['--import', tsx, file], dir, 240000);
      assert.equal(
        r.status,
        0,
        `example ${i + 1} failed (status ${r.status}, signal ${r.signal})\n--- code ---\n${ex.code}\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout}`,
      );
      assert.ok(r.stdout.trim().length > 0 || !/console\.log/.test(ex.code), `example ${i + 1} printed nothing`);
    });
  }
});

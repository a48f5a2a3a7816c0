/**
 * A module of the bench forked into a process of its own that answers one request at a time
 * over IPC: the rpc group's client processes and the transfer group's helper. The child side
 * is {@link serveJobs}; the parent side is {@link JobProcess}.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { repoRoot } from './fixtures';
import { withTimeout } from './peers';

type Reply<R> = { ok: R } | { error: string };

/** In the forked process: answers each request with `handle`'s result (or its error), in turn. */
export function serveJobs<Q, R>(handle: (request: Q) => Promise<R>): void {
  process.on('message', (request: Q) => {
    handle(request).then(
      (ok) => process.send!({ ok } satisfies Reply<R>),
      (err: Error) => process.send!({ error: String(err?.stack ?? err) } satisfies Reply<R>),
    );
  });
  process.once('disconnect', () => process.exit(0));
  process.send!('ready');
}

/** `file` forked with `flag` (it calls {@link serveJobs} when it sees the flag); `what` names it in errors. */
export class JobProcess<Q, R> {
  private readonly proc: ChildProcess;
  private readonly started: Promise<void>;
  private pending?: { resolve: (r: R) => void; reject: (e: Error) => void };
  private exited = false;

  constructor(
    file: string,
    flag: string,
    private readonly what: string,
  ) {
    const ts = !file.endsWith('.js');
    this.proc = fork(file, [flag], { cwd: repoRoot, execArgv: ts ? ['--require', 'tsx/cjs'] : [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.started = new Promise<void>((resolve, reject) => {
      this.proc.on('message', (m: 'ready' | Reply<R>) => {
        if (m === 'ready') return resolve();
        const p = this.pending;
        this.pending = undefined;
        if ('error' in m) p?.reject(new Error(`${what}: ${m.error}`));
        else p?.resolve(m.ok);
      });
      this.proc.once('exit', (code, signal) => {
        this.exited = true;
        const err = new Error(`${what} exited (${signal ?? code})`);
        reject(err);
        this.pending?.reject(err);
        this.pending = undefined;
      });
    });
    this.started.catch(() => undefined);
  }

  /** Resolves once the process is up. */
  ready(timeoutMs: number): Promise<void> {
    return withTimeout(this.started, timeoutMs, `${this.what} to start`);
  }

  /** Sends a request once the process is up; a late reply kills it and rejects. */
  async request(request: Q, timeoutMs: number, label: string): Promise<R> {
    await this.ready(timeoutMs);
    if (this.exited) throw new Error(`${this.what} is not running`);
    if (this.pending) throw new Error(`${this.what}: one request at a time`);
    const answer = new Promise<R>((resolve, reject) => {
      this.pending = { resolve, reject };
      this.proc.send(request as object);
    });
    return withTimeout(answer, timeoutMs, `${this.what}: ${label}`).catch((err: Error) => {
      this.proc.kill('SIGKILL');
      throw err;
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    if (this.proc.connected) this.proc.disconnect();
    await withTimeout(exited, 10000, `${this.what} to exit`).catch(() => this.proc.kill('SIGKILL'));
  }
}

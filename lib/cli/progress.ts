/**
 * The progress bar `bench` draws on stderr, only when stderr is a terminal (never into
 * pipes, files or CI logs).
 */
import { Presets, SingleBar } from 'cli-progress';
import type { BenchProgress } from './bench';

/** A progress bar on `stream` when it is a TTY and `enabled`, else one that draws nothing. */
export function progressBar(stream: NodeJS.WriteStream = process.stderr, enabled = true): BenchProgress {
  if (!enabled || !stream.isTTY) return { start() {}, tick() {}, stop() {} };
  const bar = new SingleBar(
    {
      stream,
      format: 'bench |{bar}| {value}/{total} runs  {duration_formatted} elapsed, {eta_formatted} left',
      hideCursor: false, // a Ctrl-C mid-run must not leave the cursor hidden
      clearOnComplete: true,
      fps: 10,
    },
    Presets.shades_classic,
  );
  let done = 0;
  return {
    start: (total) => bar.start(total, 0),
    tick: () => bar.update(++done),
    stop: () => bar.stop(),
  };
}

/** Progress through named stages (`compile`): a bar, or nothing. */
export interface StageProgress {
  /** The first stage is about to start; `total` stages in all. */
  start(total: number): void;
  /** Stage `index` (0-based) has started. */
  stage(index: number, title: string): void;
  stop(): void;
}

/**
 * A progress bar over stages (`compile |███░░░| 3/6 generating code  0:12`) on `stream` when
 * it is a TTY and `enabled`, else one that draws nothing. Elapsed time keeps counting while
 * a stage runs.
 */
export function stageBar(stream: NodeJS.WriteStream = process.stderr, enabled = true, title = 'compile'): StageProgress {
  if (!enabled || !stream.isTTY) return { start() {}, stage() {}, stop() {} };
  const bar = new SingleBar(
    {
      stream,
      format: `${title} |{bar}| {value}/{total} {stage}  {duration_formatted}`,
      hideCursor: false,
      clearOnComplete: true,
      fps: 4,
    },
    Presets.shades_classic,
  );
  let started = false;
  return {
    start: (total) => {
      bar.start(total, 0, { stage: '' });
      started = true;
    },
    // Stage i running: i stages done.
    stage: (index, stageTitle) => bar.update(index, { stage: stageTitle }),
    stop: () => {
      if (started) bar.stop();
      started = false;
    },
  };
}

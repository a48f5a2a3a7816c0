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

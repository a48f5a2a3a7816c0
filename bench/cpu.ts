/** What identifies this CPU to the caches of compiled code (no native addon needed). */
import fs from 'node:fs';
import os from 'node:os';

/** This CPU's feature flags (/proc/cpuinfo), sorted; none where they cannot be read. */
export function cpuFlags(): string[] {
  try {
    return /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1].trim().split(/\s+/).sort() ?? [];
  } catch {
    return []; // not Linux: the model name and architecture are what there is
  }
}

/**
 * This CPU, for the keys of caches that hold code compiled for it (preset `host`): its model
 * name, architecture and feature flags. The model name alone is not enough: VMs report
 * "AMD EPYC" for Zen 3 (AVX2) and Zen 4 (AVX-512) alike, and a library built on the second
 * dies of SIGILL on the first.
 */
export function cpuKey(): string {
  return `${os.cpus()[0]?.model ?? ''} ${os.arch()} ${cpuFlags().join(' ')}`;
}

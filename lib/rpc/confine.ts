/**
 * Full TVM mode's confinement of client-supplied file names to a session's work directory.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TvmValueError } from '../errors';

/**
 * Resolves a client-supplied file name inside `workDir`; `..`, absolute paths and anything
 * else that would leave it are refused (TVM's own server joins them blindly), by the name's
 * text and by what it resolves to on disk, so a symlink in the work directory cannot lead
 * out either. This guards against names, not against code: uploaded code the client runs
 * can read and write whatever this process can (full TVM mode runs it by design).
 */
export function confine(workDir: string, name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0')) {
    throw new TvmValueError('ValueError', 'file name must be a non-empty string');
  }
  const full = path.resolve(workDir, name);
  const outside = (root: string, p: string) => p !== root && !p.startsWith(root + path.sep);
  if (path.isAbsolute(name) || outside(workDir, full) || outside(fs.realpathSync(workDir), realPathSoFar(full))) {
    throw new TvmValueError('ValueError', `path '${name}' is outside the session's work directory`);
  }
  return full;
}

/** `p` with its longest existing prefix resolved through symlinks (the rest may not exist yet). */
function realPathSoFar(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    const parent = path.dirname(p);
    return parent === p ? p : path.join(realPathSoFar(parent), path.basename(p));
  }
}

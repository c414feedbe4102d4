// Reading a small file that someone else controls (the master's stamps on a node; reports/ and approved/ on the
// master): only a regular file is opened and read, at most `max` bytes, and nothing throws. One copy for both
// sides: the agent's readSmall (sys/fsutil.ts) and the builder's status and approve go through it.
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';

/** What readSmallFile found: the bytes of a regular file, or why they were not read. */
export type SmallRead =
  | { kind: 'read'; data: Buffer; mtimeMs: number }
  | { kind: 'gone' }
  /** Not a regular file (what: 'a symbolic link', 'a FIFO', ...): never opened, or closed unread. */
  | { kind: 'not a file'; what: string }
  | { kind: 'too large'; size: number; mtimeMs: number }
  | { kind: 'failed'; message: string; mtimeMs: number | null };

const what = (st: Stats) =>
  st.isSymbolicLink()
    ? 'a symbolic link'
    : st.isFIFO()
      ? 'a FIFO'
      : st.isSocket()
        ? 'a socket'
        : st.isCharacterDevice() || st.isBlockDevice()
          ? 'a device'
          : st.isDirectory()
            ? 'a directory'
            : 'not a regular file';

// Why: a symlink, FIFO or tty swapped in after lstat fails to open (ELOOP), does not block, is not made our tty.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | (constants.O_NOCTTY ?? 0);

// Why: reports/ and approved/ are hostile: only a regular file is opened and read, at most `max` bytes, no throw.
export function readSmallFile(path: string | Buffer, max: number): SmallRead {
  const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
  let st: Stats | undefined;
  try {
    st = lstatSync(path, { throwIfNoEntry: false });
  } catch (e) {
    return { kind: 'failed', message: message(e), mtimeMs: null };
  }
  if (!st) return { kind: 'gone' };
  if (!st.isFile()) return { kind: 'not a file', what: what(st) };
  if (st.size > max) return { kind: 'too large', size: st.size, mtimeMs: st.mtimeMs };
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'gone' };
    if (code === 'ELOOP') return { kind: 'not a file', what: 'a symbolic link' };
    return { kind: 'failed', message: message(e), mtimeMs: st.mtimeMs };
  }
  try {
    const fst = fstatSync(fd);
    if (!fst.isFile()) return { kind: 'not a file', what: what(fst) };
    if (fst.size > max) return { kind: 'too large', size: fst.size, mtimeMs: fst.mtimeMs };
    // one byte more than allowed: a file that grew since fstat is refused, not cut
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    if (n > max) return { kind: 'too large', size: Math.max(fst.size, n), mtimeMs: fst.mtimeMs };
    return { kind: 'read', data: buf.subarray(0, n), mtimeMs: fst.mtimeMs };
  } catch (e) {
    return { kind: 'failed', message: message(e), mtimeMs: st.mtimeMs };
  } finally {
    try {
      closeSync(fd);
    } catch {
      /* closing a read-only fd cannot lose data */
    }
  }
}

// Walking a tree for the content manifest, on the master (builder publish) and on the node (the slot check):
// lstat every path (never following a link), read link targets and xattrs (llistxattr/lgetxattr through bun:ffi:
// Bun has no xattr API), and hash regular files streamed (Bun.CryptoHasher, bounded memory).
import { dlopen, FFIType, ptr, read, type Pointer } from 'bun:ffi';
import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import type { EntryType, Observed } from '../contract/manifest.ts';

type Lib = ReturnType<typeof openLib>;
let lib: Lib | null | undefined;

function openLib() {
  return dlopen('libc.so.6', {
    llistxattr: { args: [FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    lgetxattr: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

function libc(): Lib['symbols'] | null {
  if (lib === undefined) {
    try {
      lib = openLib();
    } catch {
      lib = null;
    }
  }
  return lib?.symbols ?? null;
}

const ENODATA = 61;
const ENOTSUP = 95;
const ERANGE = 34;

function cpath(p: string): Buffer {
  return Buffer.concat([Buffer.from(p, 'latin1'), Buffer.from([0])]);
}

/** The xattrs of a path (not followed), names as latin1 byte strings, values hex, sorted by name. */
export function xattrs(path: string): Array<[string, string]> {
  const s = libc();
  if (!s) return [];
  const p = cpath(path);
  const errno = () => read.i32(s.__errno_location() as Pointer, 0);
  let size = Number(s.llistxattr(ptr(p), null, 0));
  if (size < 0) {
    const e = errno();
    if (e === ENOTSUP || e === ENODATA) return [];
    throw new Error(`llistxattr ${path}: errno ${e}`);
  }
  if (size === 0) return [];
  let list = Buffer.alloc(size);
  size = Number(s.llistxattr(ptr(p), ptr(list), list.length));
  if (size < 0) throw new Error(`llistxattr ${path}: errno ${errno()}`);
  list = list.subarray(0, size);
  const out: Array<[string, string]> = [];
  for (const nameBuf of list.toString('latin1').split('\0')) {
    if (nameBuf === '') continue;
    const n = cpath(nameBuf);
    let len = Number(s.lgetxattr(ptr(p), ptr(n), null, 0));
    if (len < 0) {
      if (errno() === ENODATA) continue; // removed meanwhile
      throw new Error(`lgetxattr ${path} ${nameBuf}: errno ${errno()}`);
    }
    let v = Buffer.alloc(Math.max(1, len));
    len = Number(s.lgetxattr(ptr(p), ptr(n), ptr(v), v.length));
    if (len < 0 && errno() === ERANGE) throw new Error(`lgetxattr ${path} ${nameBuf}: value grew`);
    if (len < 0) throw new Error(`lgetxattr ${path} ${nameBuf}: errno ${errno()}`);
    v = v.subarray(0, len);
    out.push([nameBuf, v.toString('hex')]);
  }
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function typeOf(st: Stats): EntryType {
  if (st.isFile()) return 'f';
  if (st.isDirectory()) return 'd';
  if (st.isSymbolicLink()) return 'l';
  if (st.isCharacterDevice()) return 'c';
  if (st.isBlockDevice()) return 'b';
  if (st.isFIFO()) return 'p';
  return 's';
}

/** Linux's dev_t split (glibc gnu_dev_major/minor). */
function rdevOf(rdev: number): string {
  const d = BigInt(rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major},${minor}`;
}

/** One path's facts (root: '.'), as the manifest describes them. */
export function observe(root: string, rel: string): Observed {
  const abs = rel === '.' ? root : `${root}/${rel}`;
  const st = lstatSync(Buffer.from(abs, 'latin1'));
  const type = typeOf(st);
  return {
    type,
    mode: type === 'l' ? 0o777 : st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: type === 'f' ? st.size : 0,
    rdev: type === 'c' || type === 'b' ? rdevOf(st.rdev) : null,
    target:
      type === 'l'
        ? (readlinkSync(Buffer.from(abs, 'latin1'), { encoding: 'buffer' }) as Buffer).toString('latin1')
        : null,
    xattrs: xattrs(abs),
    ino: st.ino,
  };
}

/**
 * Every path under root (root itself as '.'), with its facts. `root` is a plain path; paths are latin1 byte
 * strings relative to it. Calls tick() every few hundred entries (the agent feeds its watchdog there).
 */
export async function walkTree(root: string, tick: () => void = () => {}): Promise<Map<string, Observed>> {
  const out = new Map<string, Observed>();
  const todo: string[] = ['.'];
  let n = 0;
  while (todo.length > 0) {
    const rel = todo.pop() as string;
    const o = observe(root, rel);
    out.set(rel, o);
    if (++n % 500 === 0) {
      tick();
      await yieldToTimers();
    }
    if (o.type !== 'd') continue;
    const dir = Buffer.from(rel === '.' ? root : `${root}/${rel}`, 'latin1');
    for (const name of readdirSync(dir, { encoding: 'buffer' }) as Buffer[]) {
      const s = name.toString('latin1');
      todo.push(rel === '.' ? s : `${rel}/${s}`);
    }
  }
  return out;
}

const CHUNK = 1 << 20;

/**
 * Let timers run (the watchdog feeder is a setInterval in this process): an await of a resolved promise is only a
 * microtask and lets no timer in, so a long walk or hash must come back through the event loop now and then.
 */
export function yieldToTimers(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** sha256 hex of a regular file, read in 1 MiB chunks, never through a link; tick() after each chunk. */
export async function hashFile(path: string, tick: () => void = () => {}, buf = Buffer.alloc(CHUNK)): Promise<string> {
  const h = new Bun.CryptoHasher('sha256');
  const fd = openSync(Buffer.from(path, 'latin1'), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    let chunks = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      if (++chunks % 16 === 0) {
        tick();
        await yieldToTimers();
      }
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

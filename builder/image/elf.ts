// ELF dynamic-linking facts and shared-library closure inside a foreign sysroot (no ldd needed).
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';

export interface ElfInfo {
  class: 32 | 64;
  machine: number;
  interp?: string;
  needed: string[];
  runpath: string[];
  rpath: string[];
}

export interface ClosureFile {
  path: string;
  kind: 'file' | 'symlink';
  target?: string;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

// Reads the interpreter and DT_NEEDED/RPATH/RUNPATH of any-endian ELF32/ELF64; null if not ELF.
export function readElf(buf: Uint8Array): ElfInfo | null {
  if (buf.length < 16 || buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) return null;
  const is64 = buf[4] === 2;
  if (buf[4] !== 1 && !is64) throw new Error(`ELF: bad class ${buf[4]}`);
  if (buf[5] !== 1 && buf[5] !== 2) throw new Error(`ELF: bad data encoding ${buf[5]}`);
  const le = buf[5] === 1;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const check = (off: number, len: number) => {
    if (off < 0 || off + len > buf.length)
      throw new Error(`ELF: truncated (need ${len} bytes at ${off}, have ${buf.length})`);
  };
  const u16 = (off: number) => (check(off, 2), dv.getUint16(off, le));
  const u32 = (off: number) => (check(off, 4), dv.getUint32(off, le));
  const word = (off: number) => {
    if (!is64) return u32(off);
    check(off, 8);
    const v = dv.getBigUint64(off, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`ELF: value too large at ${off}`);
    return Number(v);
  };
  const cstr = (off: number, end = buf.length) => {
    check(off, 0);
    const stop = buf.subarray(off, end).indexOf(0);
    return new TextDecoder().decode(buf.subarray(off, stop < 0 ? end : off + stop));
  };

  const machine = u16(18);
  const phoff = word(is64 ? 32 : 28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  const phdrs = Array.from({ length: phnum }, (_, i) => {
    const p = phoff + i * phentsize;
    return is64
      ? { type: u32(p), offset: word(p + 8), vaddr: word(p + 16), filesz: word(p + 32) }
      : { type: u32(p), offset: word(p + 4), vaddr: word(p + 8), filesz: word(p + 16) };
  });

  const info: ElfInfo = { class: is64 ? 64 : 32, machine, needed: [], runpath: [], rpath: [] };
  const interp = phdrs.find((p) => p.type === PT_INTERP);
  if (interp) info.interp = cstr(interp.offset, interp.offset + interp.filesz);

  const dyn = phdrs.find((p) => p.type === PT_DYNAMIC);
  if (!dyn) return info;
  const entSize = is64 ? 16 : 8;
  const tags: [number, number][] = [];
  for (let off = dyn.offset; off + entSize <= dyn.offset + dyn.filesz; off += entSize) {
    const tag = word(off);
    if (tag === 0) break; // DT_NULL
    tags.push([tag, word(off + entSize / 2)]);
  }
  const strtabAddr = tags.find(([t]) => t === DT_STRTAB)?.[1];
  if (strtabAddr === undefined) return info;
  const seg = phdrs.find((p) => p.type === PT_LOAD && p.vaddr <= strtabAddr && strtabAddr < p.vaddr + p.filesz);
  if (!seg) throw new Error(`ELF: DT_STRTAB 0x${strtabAddr.toString(16)} is not in any PT_LOAD segment`);
  const strtab = seg.offset + (strtabAddr - seg.vaddr);
  const paths = (v: number) =>
    cstr(strtab + v)
      .split(':')
      .filter((s) => s !== '');
  for (const [tag, val] of tags) {
    if (tag === DT_NEEDED) info.needed.push(cstr(strtab + val));
    else if (tag === DT_RPATH) info.rpath.push(...paths(val));
    else if (tag === DT_RUNPATH) info.runpath.push(...paths(val));
  }
  return info;
}

const DEFAULT_DIRS: Record<number, string[]> = {
  183: ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu'],
  62: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64'],
  40: ['/lib/arm-linux-gnueabihf', '/usr/lib/arm-linux-gnueabihf'],
};

const hostPath = (sysroot: string, p: string) => (sysroot === '/' ? p : sysroot + p);

interface Resolved {
  real: string;
  links: ClosureFile[];
}

// Follows every symlink hop of an in-sysroot path without ever leaving the sysroot; null if absent.
function resolveInSysroot(sysroot: string, path: string): Resolved | null {
  const links: ClosureFile[] = [];
  let done: string[] = [];
  let todo = path.split('/');
  let hops = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      done.pop(); // ".." at the root stays at the root, as the kernel does inside a chroot
      continue;
    }
    const cur = '/' + [...done, c].join('/');
    let st;
    try {
      st = lstatSync(hostPath(sysroot, cur));
    } catch {
      return null;
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) throw new Error(`too many symlinks resolving ${path} in ${sysroot}`);
      const target = readlinkSync(hostPath(sysroot, cur));
      links.push({ path: cur, kind: 'symlink', target });
      if (target.startsWith('/')) done = [];
      todo = [...target.split('/'), ...todo];
    } else if (todo.some((t) => t !== '' && t !== '.') && !st.isDirectory()) {
      return null;
    } else {
      done.push(c);
    }
  }
  return { real: '/' + done.join('/'), links };
}

// Lists the programs, their interpreter and all shared libraries (with symlink hops) to copy into an image.
export function libraryClosure(
  sysroot: string,
  programs: string[],
  opts: { libDirs?: string[] } = {},
): { files: ClosureFile[]; missing: { lib: string; neededBy: string }[] } {
  const root = posix.resolve(sysroot);
  const files = new Map<string, ClosureFile>();
  const missing: { lib: string; neededBy: string }[] = [];
  const infoCache = new Map<string, ElfInfo | null>();
  const queue: { path: string; info: ElfInfo }[] = [];
  const seen = new Set<string>();

  const elfAt = (real: string): ElfInfo | null => {
    if (!infoCache.has(real)) {
      let info: ElfInfo | null = null;
      try {
        if (lstatSync(hostPath(root, real)).isFile()) info = readElf(readFileSync(hostPath(root, real)));
      } catch {
        info = null; // unreadable or malformed: not a usable candidate
      }
      infoCache.set(real, info);
    }
    return infoCache.get(real)!;
  };
  const add = (r: Resolved, info: ElfInfo | null) => {
    for (const l of r.links) files.set(l.path, l);
    files.set(r.real, { path: r.real, kind: 'file' });
    if (info && !seen.has(r.real)) {
      seen.add(r.real);
      queue.push({ path: r.real, info });
    }
  };
  const report = (lib: string, neededBy: string) => {
    if (!missing.some((m) => m.lib === lib && m.neededBy === neededBy)) missing.push({ lib, neededBy });
  };
  const findLib = (name: string, by: { path: string; info: ElfInfo }): Resolved | null => {
    const origin = posix.dirname(by.path);
    const own = by.info.runpath.length > 0 ? by.info.runpath : by.info.rpath; // RUNPATH disables RPATH
    const dirs = name.includes('/')
      ? ['']
      : [
          ...own.map((d) => d.replace(/\$(ORIGIN\b|\{ORIGIN\})/g, origin)),
          ...(opts.libDirs ?? []),
          ...(DEFAULT_DIRS[by.info.machine] ?? []),
          '/lib',
          '/usr/lib',
        ];
    for (const dir of dirs) {
      const candidate = posix.join(dir, name);
      if (!candidate.startsWith('/')) continue;
      const r = resolveInSysroot(root, candidate);
      const info = r && elfAt(r.real);
      if (r && info && info.class === by.info.class && info.machine === by.info.machine) return r;
    }
    return null;
  };

  for (const prog of programs) {
    const r = resolveInSysroot(root, prog);
    if (!r || !lstatSync(hostPath(root, r.real)).isFile())
      throw new Error(`program ${prog} not found in sysroot ${sysroot}`);
    add(r, elfAt(r.real));
  }
  while (queue.length > 0) {
    const item = queue.shift()!;
    const wants = item.info.interp ? [item.info.interp, ...item.info.needed] : item.info.needed;
    for (const lib of wants) {
      const r = findLib(lib, item);
      if (r) add(r, elfAt(r.real));
      else report(lib, item.path);
    }
  }
  return {
    files: [...files.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path))),
    missing,
  };
}

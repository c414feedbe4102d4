// In-memory newc ("070701") cpio writer: the format the Linux kernel unpacks as initramfs.

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

export interface CpioOptions {
  mtime?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const HEADER_LEN = 110;
const TRAILER = 'TRAILER!!!';
const enc = new TextEncoder();

interface CpioRecord {
  path: string;
  name: Uint8Array; // path bytes, without NUL
  mode: number; // including type bits
  nlink: number;
  data: Uint8Array;
  rmajor: number;
  rminor: number;
}

function normalisePath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0) throw new Error(`cpio: empty path ${JSON.stringify(p)}`);
  if (parts.includes('..')) throw new Error(`cpio: path must not contain "..": ${p}`);
  return parts.join('/');
}

function toRecord(e: CpioEntry, path: string): CpioRecord {
  const base = { path, name: enc.encode(path), rmajor: 0, rminor: 0 };
  switch (e.kind) {
    case 'dir':
      return { ...base, mode: S_IFDIR | ((e.mode ?? 0o755) & 0o7777), nlink: 2, data: new Uint8Array(0) };
    case 'file':
      return { ...base, mode: S_IFREG | ((e.mode ?? 0o644) & 0o7777), nlink: 1, data: e.data };
    case 'symlink':
      if (e.target === '') throw new Error(`cpio: empty symlink target for ${path}`);
      return { ...base, mode: S_IFLNK | 0o777, nlink: 1, data: enc.encode(e.target) };
    case 'chardev':
      return {
        ...base,
        mode: S_IFCHR | ((e.mode ?? 0o600) & 0o7777),
        nlink: 1,
        data: new Uint8Array(0),
        rmajor: e.major,
        rminor: e.minor,
      };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return (
    a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))
  );
}

function sameRecord(a: CpioRecord, b: CpioRecord): boolean {
  return a.mode === b.mode && a.rmajor === b.rmajor && a.rminor === b.rminor && sameBytes(a.data, b.data);
}

const pad4 = (n: number) => (n + 3) & ~3;

// Normalises, de-duplicates, adds parent dirs and sorts, so the archive is a pure function of its content.
function collect(entries: CpioEntry[]): CpioRecord[] {
  const byPath = new Map<string, CpioRecord>();
  for (const e of entries) {
    const path = normalisePath(e.path);
    const rec = toRecord(e, path);
    const prev = byPath.get(path);
    if (prev && !sameRecord(prev, rec)) throw new Error(`cpio: conflicting entries for path ${path}`);
    if (!prev) byPath.set(path, rec);
  }
  for (const path of [...byPath.keys()]) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const p = byPath.get(parent);
      if (!p) byPath.set(parent, toRecord({ kind: 'dir', path: parent }, parent));
      else if ((p.mode & 0o170000) !== S_IFDIR)
        throw new Error(`cpio: parent of ${path} is not a directory: ${parent}`);
    }
  }
  return [...byPath.values()].sort((a, b) => Buffer.compare(a.name, b.name));
}

function hex8(v: number, what: string): string {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`cpio: ${what} out of range: ${v}`);
  return v.toString(16).toUpperCase().padStart(8, '0');
}

// Writes header + name (+NUL, padded) at off; returns the offset where the data starts.
function writeHeader(out: Uint8Array, off: number, ino: number, r: CpioRecord, mtime: number): number {
  const fields = [ino, r.mode, 0, 0, r.nlink, mtime, r.data.length, 0, 0, r.rmajor, r.rminor, r.name.length + 1, 0];
  const what = [
    'ino',
    'mode',
    'uid',
    'gid',
    'nlink',
    'mtime',
    `size of ${r.path}`,
    'devmajor',
    'devminor',
    'rdevmajor',
    'rdevminor',
    'namesize',
    'check',
  ];
  const header = '070701' + fields.map((v, i) => hex8(v, what[i]!)).join('');
  enc.encodeInto(header, out.subarray(off, off + HEADER_LEN));
  out.set(r.name, off + HEADER_LEN);
  return pad4(off + HEADER_LEN + r.name.length + 1);
}

// Produces a reproducible initramfs archive; one allocation so ~100 MB payloads stay cheap.
export function writeCpio(entries: CpioEntry[], opts: CpioOptions = {}): Uint8Array {
  const mtime = opts.mtime ?? 0;
  const records = collect(entries);
  const trailer: CpioRecord = {
    path: TRAILER,
    name: enc.encode(TRAILER),
    mode: 0,
    nlink: 1,
    data: new Uint8Array(0),
    rmajor: 0,
    rminor: 0,
  };
  let total = 0;
  for (const r of [...records, trailer]) total = pad4(pad4(total + HEADER_LEN + r.name.length + 1) + r.data.length);
  total = Math.ceil(total / 512) * 512;

  const out = new Uint8Array(total); // zero-filled: padding needs no explicit writes
  let off = 0;
  records.forEach((r, i) => {
    off = writeHeader(out, off, i + 1, r, mtime);
    out.set(r.data, off);
    off = pad4(off + r.data.length);
  });
  writeHeader(out, off, 0, trailer, 0);
  return out;
}

// The signed content manifest (the OSTree/RAUC idea, at file level). `builder publish` freezes a template into
// snapshots/<name>/<id>/ and writes two files:
//   snapshots/<name>/<id>.files   the file list: every path with type, mode, owner, size, sha256, device,
//                                 link target and xattrs (large: ~110 bytes a path)
//   stamps/<name>.manifest (+.sig) the header (small, fetched with the stamps, Ed25519-signed with the stamp key):
//                                 the stamp it belongs to, the sha256 and size of the file list, and the master state
//                                 in force at publish time (the partition table's sha256, the approval switch, the
//                                 hosts with a reset flag)
// A node syncs the snapshot named by the stamp (never the live tree), checks the file list against the header and
// every received file against the file list before its slot becomes complete. Pure: no I/O.
//
// Paths are byte strings: a "latin1 string" holds one byte per character, so any file name round-trips
// (Buffer.from(p, 'latin1') for fs calls). In the text every byte <= 0x20, >= 0x7f and '%' ',' '=' is %XX.
import { createHash } from 'node:crypto';
import { STAMP_DIR } from './tree.ts';
import { verifyEd25519, type StampName } from './stamp.ts';

export const MANIFEST_HEADER = 'clusterboot-manifest 1';
export const FILES_HEADER = 'clusterboot-files 1';
/** snapshots/<name>/<id>/: the frozen trees, and their file lists next to them. */
export const SNAPSHOT_DIR = 'snapshots';
/** The header is fetched with the stamps (64 KiB bound); with a reset line per host it stays far below. */
export const MAX_MANIFEST = 64 * 1024;
/** The file list bound: a Debian root of 9,000 paths takes about 1 MB. */
export const MAX_FILE_LIST = 256 * 1024 * 1024;

export function manifestPath(name: StampName): string {
  return `${STAMP_DIR}/${name}.manifest`;
}
export function manifestSigPath(name: StampName): string {
  return `${STAMP_DIR}/${name}.manifest.sig`;
}
export function snapshotPath(name: StampName, id: string): string {
  return `${SNAPSHOT_DIR}/${name}/${id}`;
}
export function fileListPath(name: StampName, id: string): string {
  return `${SNAPSHOT_DIR}/${name}/${id}.files`;
}

export type EntryType = 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
const TYPES: readonly string[] = ['f', 'd', 'l', 'c', 'b', 'p', 's'];

/** One path of a tree. path/target/xattr names are latin1 byte strings; the root is '.'. */
export interface Entry {
  path: string;
  type: EntryType;
  /** Permission bits with setuid/setgid/sticky (mode & 0o7777); 0o777 for links. */
  mode: number;
  uid: number;
  gid: number;
  /** Regular files only; 0 otherwise. */
  size: number;
  /** Regular files only (hex). */
  sha256: string | null;
  /** Devices only: 'major,minor'. */
  rdev: string | null;
  /** Links only. */
  target: string | null;
  /** Sorted by name; values hex. */
  xattrs: Array<[string, string]>;
}

/** What the header says. */
export interface ManifestHeader {
  name: StampName;
  id: string;
  seq: number;
  files: { sha256: string; bytes: number; entries: number };
  /** sha256 of partitions.sfdisk, null: the master had none. */
  table: string | null;
  approval: boolean;
  /** Hosts whose nodes/<host>/reset flag was set. Sorted. */
  reset: string[];
}

const HEX64 = /^[0-9a-f]{64}$/;
const HOST = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const ID = /^[0-9A-Za-z._-]{1,64}$/;

export function sha256hex(data: string | Uint8Array): string {
  return createHash('sha256')
    .update(typeof data === 'string' ? Buffer.from(data, 'utf8') : data)
    .digest('hex');
}

function mustEscape(c: number): boolean {
  return c <= 0x20 || c >= 0x7f || c === 0x25 || c === 0x2c || c === 0x3d;
}

/** A latin1 byte string as a space-free field ('-' stays reserved for "none"). */
export function escapeField(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new Error('escapeField: not a byte string');
    out += mustEscape(c) ? `%${c.toString(16).toUpperCase().padStart(2, '0')}` : s[i];
  }
  return out === '-' ? '%2D' : out;
}

/** The inverse of escapeField; null for a malformed field (a bad %XX, or a byte that should have been escaped). */
export function unescapeField(f: string): string | null {
  let out = '';
  for (let i = 0; i < f.length; i++) {
    const c = f.charCodeAt(i);
    if (c === 0x25) {
      const h = f.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(h)) return null;
      out += String.fromCharCode(parseInt(h, 16));
      i += 2;
    } else if (mustEscape(c)) return null;
    else out += f[i];
  }
  return out;
}

// Why: the publisher and the node must put the same bytes in the same order.
function compareEntries(a: Entry, b: Entry): number {
  if (a.path === b.path) return 0;
  if (a.path === '.') return -1;
  if (b.path === '.') return 1;
  return a.path < b.path ? -1 : 1;
}

function renderEntry(e: Entry): string {
  const x = e.xattrs.length ? e.xattrs.map(([n, v]) => `${escapeField(n)}=${v}`).join(',') : '-';
  return [
    e.type,
    e.mode.toString(8).padStart(4, '0'),
    e.uid,
    e.gid,
    e.size,
    e.sha256 ?? '-',
    e.rdev ?? '-',
    e.path === '.' ? '.' : escapeField(e.path),
    e.target === null ? '-' : escapeField(e.target),
    x,
  ].join(' ');
}

/** The file list text (root first, then by path bytes). Throws on an entry the parser would refuse. */
export function renderFileList(entries: readonly Entry[]): string {
  const sorted = [...entries].sort(compareEntries);
  const text = `${FILES_HEADER}\n${sorted.map((e) => `${renderEntry(e)}\n`).join('')}`;
  const back = parseFileList(text);
  if (!back.ok) throw new Error(`renderFileList: ${back.error}`);
  return text;
}

function badPath(p: string): string | null {
  if (p === '.') return null;
  if (p === '' || p.startsWith('/') || p.endsWith('/')) return 'not a relative path';
  for (const part of p.split('/')) {
    if (part === '' || part === '.' || part === '..') return `has a '${part || '//'}' component`;
  }
  if (p.includes('\0')) return 'holds a NUL';
  return null;
}

const uint = (s: string, max = Number.MAX_SAFE_INTEGER) =>
  /^(0|[1-9][0-9]*)$/.test(s) && Number(s) <= max ? Number(s) : null;

/** Parse a file list from bytes (latin1-decoded text); never throws. */
export function parseFileList(text: string): { ok: true; entries: Entry[] } | { ok: false; error: string } {
  const fail = (error: string) => ({ ok: false as const, error });
  if (!text.startsWith(`${FILES_HEADER}\n`)) return fail(`not a clusterboot file list (first line)`);
  if (!text.endsWith('\n')) return fail('file list does not end with a newline (truncated?)');
  const lines = text.slice(FILES_HEADER.length + 1, -1).split('\n');
  if (lines.length === 1 && lines[0] === '') return fail('file list is empty (no root entry)');
  const entries: Entry[] = [];
  const dirs = new Set<string>();
  let last: Entry | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const at = `line ${i + 2}`;
    const f = line.split(' ');
    if (f.length !== 10) return fail(`${at}: ${f.length} fields, expected 10`);
    const [type, modeT, uidT, gidT, sizeT, sha, rdev, pathT, targetT, xT] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if (!TYPES.includes(type)) return fail(`${at}: unknown type '${type.slice(0, 8)}'`);
    if (!/^[0-7]{4}$/.test(modeT)) return fail(`${at}: mode '${modeT.slice(0, 8)}' is not 4 octal digits`);
    const uid = uint(uidT, 0xffffffff);
    const gid = uint(gidT, 0xffffffff);
    const size = uint(sizeT);
    if (uid === null || gid === null || size === null) return fail(`${at}: bad uid, gid or size`);
    const path = pathT === '.' ? '.' : unescapeField(pathT);
    if (path === null) return fail(`${at}: badly escaped path`);
    const why = badPath(path);
    if (why) return fail(`${at}: path ${JSON.stringify(path.slice(0, 60))} ${why}`);
    if (type === 'f' ? !HEX64.test(sha) : sha !== '-') return fail(`${at}: sha256 only and always for a file`);
    if (type !== 'f' && size !== 0) return fail(`${at}: size only for a file`);
    if (type === 'c' || type === 'b' ? !/^\d{1,10},\d{1,10}$/.test(rdev) : rdev !== '-')
      return fail(`${at}: device numbers only and always for a device`);
    let target: string | null = null;
    if (type === 'l') {
      target = targetT === '-' ? null : unescapeField(targetT);
      if (target === null || target === '') return fail(`${at}: a link needs a target`);
    } else if (targetT !== '-') return fail(`${at}: a target only for a link`);
    const xattrs: Array<[string, string]> = [];
    if (xT !== '-') {
      for (const kv of xT.split(',')) {
        const eq = kv.indexOf('=');
        const name = eq > 0 ? unescapeField(kv.slice(0, eq)) : null;
        const value = kv.slice(eq + 1);
        if (name === null || name === '' || !/^([0-9a-f]{2})*$/.test(value)) return fail(`${at}: bad xattr`);
        const prev = xattrs[xattrs.length - 1];
        if (prev && prev[0] >= name) return fail(`${at}: xattrs out of order`);
        xattrs.push([name, value]);
      }
    }
    const e: Entry = {
      path,
      type: type as EntryType,
      mode: parseInt(modeT, 8),
      uid,
      gid,
      size,
      sha256: type === 'f' ? sha : null,
      rdev: type === 'c' || type === 'b' ? rdev : null,
      target,
      xattrs,
    };
    if (i === 0) {
      if (path !== '.' || type !== 'd') return fail('the first entry must be the root directory "."');
    } else {
      if (last && compareEntries(last, e) >= 0) return fail(`${at}: out of order or duplicate`);
      const slash = path.lastIndexOf('/');
      const parent = slash < 0 ? '.' : path.slice(0, slash);
      if (!dirs.has(parent)) return fail(`${at}: parent of ${JSON.stringify(path.slice(0, 60))} is not a directory`);
    }
    if (type === 'd') dirs.add(path);
    entries.push(e);
    last = e;
  }
  return { ok: true, entries };
}

/** The header text; the last line sums all before it (integrity without a signature: a rotted copy is refused). */
export function renderManifest(h: ManifestHeader): string {
  const body =
    `${MANIFEST_HEADER}\nname ${h.name}\nid ${h.id}\nseq ${h.seq}\n` +
    `files ${h.files.sha256} ${h.files.bytes} ${h.files.entries}\n` +
    `table ${h.table ?? 'none'}\napproval ${h.approval ? 'on' : 'off'}\n` +
    [...h.reset]
      .sort()
      .map((r) => `reset ${r}\n`)
      .join('');
  const text = `${body}sum ${sha256hex(body)}\n`;
  const back = parseManifest(text);
  if (!back.ok) throw new Error(`renderManifest: ${back.error}`);
  return text;
}

/** Parse a header; never throws. */
export function parseManifest(text: string): { ok: true; header: ManifestHeader } | { ok: false; error: string } {
  const fail = (error: string) => ({ ok: false as const, error });
  if (typeof text !== 'string' || text.length === 0) return fail('manifest is empty');
  if (text.length > MAX_MANIFEST) return fail(`manifest is ${text.length} bytes (at most ${MAX_MANIFEST})`);
  if (/[^\x20-\x7e\n]/.test(text)) return fail('manifest contains a forbidden character');
  if (!text.endsWith('\n')) return fail('manifest does not end with a newline (truncated?)');
  const lines = text.slice(0, -1).split('\n');
  if (lines[0] !== MANIFEST_HEADER) return fail(`not a clusterboot manifest (first line '${lines[0]?.slice(0, 40)}')`);
  const sumLine = lines[lines.length - 1] ?? '';
  const sm = /^sum ([0-9a-f]{64})$/.exec(sumLine);
  if (!sm) return fail('manifest has no sum line (truncated?)');
  const body = text.slice(0, text.length - sumLine.length - 1);
  if (sha256hex(body) !== sm[1]) return fail('manifest sum does not match its content (corrupt copy)');
  const want = ['name', 'id', 'seq', 'files', 'table', 'approval'];
  const got: string[] = [];
  const reset: string[] = [];
  const v: Record<string, string> = {};
  for (const line of lines.slice(1, -1)) {
    const m = /^([a-z]+) (.+)$/.exec(line);
    if (!m) return fail(`bad manifest line '${line.slice(0, 40)}'`);
    const [, k, val] = m as unknown as [string, string, string];
    if (k === 'reset') {
      if (got.length !== want.length) return fail('reset lines come last');
      if (!HOST.test(val)) return fail(`reset '${val.slice(0, 40)}' is not a host name`);
      if (reset.length && (reset[reset.length - 1] as string) >= val) return fail('reset lines out of order');
      reset.push(val);
      continue;
    }
    if (want[got.length] !== k)
      return fail(`manifest field '${k}' unexpected (expected ${want[got.length] ?? 'reset'})`);
    got.push(k);
    v[k] = val;
  }
  if (got.length !== want.length) return fail(`manifest misses '${want[got.length]}'`);
  const name = v.name;
  if (name !== 'rootfs' && name !== 'bootfs') return fail(`manifest name '${name}' is neither rootfs nor bootfs`);
  const id = v.id as string;
  if (!ID.test(id)) return fail(`manifest id '${id.slice(0, 70)}' is not a slot id`);
  const seq = /^[1-9][0-9]*$/.test(v.seq as string) ? Number(v.seq) : NaN;
  if (!Number.isSafeInteger(seq)) return fail('manifest seq is not a positive integer');
  const fm = /^([0-9a-f]{64}) (\d{1,15}) (\d{1,12})$/.exec(v.files as string);
  if (!fm) return fail('manifest files line is not "<sha256> <bytes> <entries>"');
  const table = v.table === 'none' ? null : (v.table as string);
  if (table !== null && !HEX64.test(table)) return fail('manifest table is not a sha256 or none');
  if (v.approval !== 'on' && v.approval !== 'off') return fail('manifest approval is not on or off');
  return {
    ok: true,
    header: {
      name,
      id,
      seq,
      files: { sha256: fm[1] as string, bytes: Number(fm[2]), entries: Number(fm[3]) },
      table,
      approval: v.approval === 'on',
      reset,
    },
  };
}

/** Ed25519 over the header's exact bytes, checked as the stamp is (stamp.ts); null key: nothing to check. */
export function verifyManifestSig(
  text: string,
  sigBase64: string | null,
  publicKeyPem: string | null,
): { ok: true } | { ok: false; error: string } {
  return verifyEd25519(text, sigBase64, publicKeyPem, {
    unsigned: 'the manifest is unsigned',
    bad: 'the manifest signature does not verify with the packed key',
  });
}

/** The master's state a node fetched, to hold against the header's. */
export interface StateFacts {
  /** partitions.sfdisk's sha256 (null: none fetched). */
  tableSha256: string | null;
  approvalRequired: boolean;
  /** nodes/<host>/reset was fetched. */
  reset: boolean;
  host: string | null;
}

/** What a node makes of the header: use it, or refuse what it came with. */
export type ManifestVerdict =
  { ok: true; header: ManifestHeader; stateMismatch: string[] } | { ok: false; reason: string; remedy: string };

/**
 * Why: the one rule tying the stamp, the header and the master's small state together. With a key, the header must
 * be signed, and a table, approval switch or reset flag it does not carry refuses the whole master (`stateMismatch`
 * is then non-empty and the caller ignores the master); without a key the mismatches are only reported.
 */
export function decideManifest(f: {
  text: string | null;
  sig: string | null;
  publicKeyPem: string | null;
  stamp: { id: string; seq: number } | null;
  state: StateFacts;
}): ManifestVerdict {
  const publish = 'run `builder publish rootfs` on the master (it freezes the tree and writes the manifest)';
  if (f.text === null) return { ok: false, reason: 'the master has no rootfs manifest', remedy: publish };
  const p = parseManifest(f.text);
  if (!p.ok) return { ok: false, reason: `the master's rootfs manifest is invalid: ${p.error}`, remedy: publish };
  const v = verifyManifestSig(f.text, f.sig, f.publicKeyPem);
  if (!v.ok)
    return {
      ok: false,
      reason: v.error,
      remedy:
        'publish with the stamp key (`builder publish rootfs --sign <stamp_ed25519.pem>`), or re-pack the initramfs with its public half',
    };
  const h = p.header;
  if (h.name !== 'rootfs') return { ok: false, reason: `the rootfs manifest names '${h.name}'`, remedy: publish };
  if (f.stamp && (h.id !== f.stamp.id || h.seq !== f.stamp.seq))
    return {
      ok: false,
      reason: `the manifest is for ${h.id} (seq ${h.seq}), the stamp is ${f.stamp.id} (seq ${f.stamp.seq})`,
      remedy: `a publish may be under way: the node retries at its next boot; otherwise ${publish}`,
    };
  const s = f.state;
  const mismatch: string[] = [];
  if (s.tableSha256 !== h.table)
    mismatch.push(
      `partitions.sfdisk ${s.tableSha256 === null ? 'is missing' : `has sha256 ${s.tableSha256.slice(0, 12)}…`}, the manifest carries ${h.table === null ? 'none' : h.table.slice(0, 12) + '…'}`,
    );
  if (s.approvalRequired !== h.approval)
    mismatch.push(
      `approval.required is ${s.approvalRequired ? 'set' : 'absent'}, the manifest says ${h.approval ? 'on' : 'off'}`,
    );
  const carried = s.host !== null && h.reset.includes(s.host);
  if (s.reset !== carried)
    mismatch.push(
      `the reset flag for ${s.host ?? 'this node'} is ${s.reset ? 'set' : 'absent'}, the manifest ${carried ? 'carries' : 'does not carry'} it`,
    );
  return { ok: true, header: h, stateMismatch: mismatch };
}

/** The file list against the header's sum and size. */
export function checkFileList(
  bytes: Uint8Array,
  h: ManifestHeader,
): { ok: true; entries: Entry[] } | { ok: false; error: string } {
  if (bytes.length !== h.files.bytes)
    return { ok: false, error: `the file list is ${bytes.length} bytes, the manifest says ${h.files.bytes}` };
  if (sha256hex(bytes) !== h.files.sha256)
    return { ok: false, error: 'the file list does not match the manifest sha256' };
  const p = parseFileList(Buffer.from(bytes).toString('latin1'));
  if (!p.ok) return p;
  if (p.entries.length !== h.files.entries)
    return { ok: false, error: `the file list has ${p.entries.length} entries, the manifest says ${h.files.entries}` };
  return p;
}

/** What the node found at one path of its new slot (lstat + readlink + xattrs). */
export interface Observed {
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: string | null;
  target: string | null;
  xattrs: Array<[string, string]>;
  ino: number;
}

/** The previous verified slot: its file list and the inode of each regular file the new slot shares (hard links). */
export interface PrevSlot {
  entries: Map<string, Entry>;
  ino: Map<string, number>;
}

export interface VerifyPlan {
  /** Metadata mismatches, missing and extra paths (empty: metadata matches). */
  problems: string[];
  /** Regular files to hash (received, or linked from an unverified tree). */
  hash: string[];
  /** Regular files hard-linked to the same path of the previous verified slot with the same sha256. */
  trusted: number;
}

const shown = (p: string) => JSON.stringify(Buffer.from(p, 'latin1').toString('utf8'));

/**
 * Why: decides, from metadata alone, whether a received tree can match the file list and which files must be hashed:
 * every regular file except one hard-linked (same inode) to the same path of the previous slot, which was verified
 * when that slot was made, and whose sha256 the file list repeats.
 */
export function planVerify(
  entries: readonly Entry[],
  seen: ReadonlyMap<string, Observed>,
  prev: PrevSlot | null,
): VerifyPlan {
  const problems: string[] = [];
  const hash: string[] = [];
  let trusted = 0;
  const listed = new Set<string>();
  for (const e of entries) {
    listed.add(e.path);
    const o = seen.get(e.path);
    const at = shown(e.path);
    if (!o) {
      problems.push(`${at} is missing`);
      continue;
    }
    if (o.type !== e.type) {
      problems.push(`${at} is type ${o.type}, the manifest says ${e.type}`);
      continue;
    }
    if (e.type !== 'l' && o.mode !== e.mode)
      problems.push(`${at} has mode ${o.mode.toString(8)}, the manifest says ${e.mode.toString(8)}`);
    if (o.uid !== e.uid || o.gid !== e.gid)
      problems.push(`${at} is owned by ${o.uid}:${o.gid}, the manifest says ${e.uid}:${e.gid}`);
    if (e.type === 'f' && o.size !== e.size) problems.push(`${at} is ${o.size} bytes, the manifest says ${e.size}`);
    if (e.rdev !== o.rdev) problems.push(`${at} is device ${o.rdev}, the manifest says ${e.rdev}`);
    if (e.target !== o.target)
      problems.push(`${at} points to ${shown(o.target ?? '')}, the manifest says ${shown(e.target ?? '')}`);
    const xs = (x: Array<[string, string]>) => x.map(([n, v]) => `${n}=${v}`).join(',');
    if (xs(o.xattrs) !== xs(e.xattrs)) problems.push(`${at} has other xattrs than the manifest`);
    if (e.type !== 'f') continue;
    const p = prev?.entries.get(e.path);
    const ino = prev?.ino.get(e.path);
    if (p && p.type === 'f' && p.sha256 === e.sha256 && p.size === e.size && ino !== undefined && ino === o.ino)
      trusted++;
    else hash.push(e.path);
  }
  for (const path of seen.keys()) if (!listed.has(path)) problems.push(`${shown(path)} is not in the manifest`);
  return { problems, hash, trusted };
}

/**
 * The --files-from delta: the paths of the new list that are not the same file in the previous one (content,
 * metadata, type). Everything else the node links from its previous slot itself. Directories are always listed
 * (cheap, and rsync needs them to place their children), so the list is: changed files + all directories.
 */
export function planDelta(
  next: readonly Entry[],
  prev: ReadonlyMap<string, Entry>,
): { paths: string[]; bytes: number } {
  const paths: string[] = [];
  let bytes = 0;
  const same = (a: Entry, b: Entry) => renderEntry(a) === renderEntry(b);
  for (const e of next) {
    const p = prev.get(e.path);
    if (e.type === 'd' || !p || !same(e, p)) {
      paths.push(e.path);
      if (e.type === 'f' && !(p && same(e, p))) bytes += e.size;
    }
  }
  return { paths, bytes };
}

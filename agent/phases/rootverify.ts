// The root phase's content check: fetch the snapshot's file list, check it against the manifest header, and check
// every received file of a new slot against it before the slot record is written and the links flip.
import {
  copyFileSync,
  existsSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import {
  checkFileList,
  fileListPath,
  parseFileList,
  planDelta,
  planVerify,
  type Entry,
  type ManifestHeader,
  type PrevSlot,
} from '../contract/manifest.ts';
import { readSmallFile } from '../contract/smallread.ts';
import { writeAtomic } from '../contract/atomic.ts';
import type { Link } from '../net/link.ts';
import { hashFile, walkTree, yieldToTimers } from '../sys/tree.ts';
import { info } from '../log.ts';
import { watchdogProgress } from '../devices/watchdog.ts';
import { FETCH_DIR, ROOT_MNT } from '../paths.ts';

/** Verified file lists of the slots on the disk: manifests/<id>.files (outside the slots: never booted). */
export const LISTS_DIR = `${ROOT_MNT}/manifests`;

/** A slot the node refused: why, and what the admin does about it. */
export class SlotRefused extends Error {
  constructor(
    message: string,
    readonly remedy: string,
  ) {
    super(message);
  }
}

const REMEDY =
  "the master's snapshot does not match its signed manifest: check the master (disk, who serves it: transport=rsyncd has no host key), then run `builder publish rootfs` again";

/** Fetch snapshots/rootfs/<id>.files, bounded by the header's size, and check it against the header. */
export async function fetchFileList(
  link: Link,
  base: string,
  h: ManifestHeader,
  basisId: string | null,
): Promise<{ entries: Entry[]; text: string; bytes: number }> {
  const dir = `${FETCH_DIR}/list`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // the previous slot's list as the basis: rsync's delta sends only the lines that changed
  if (basisId !== null && existsSync(`${LISTS_DIR}/${basisId}.files`))
    copyFileSync(`${LISTS_DIR}/${basisId}.files`, `${dir}/${h.id}.files`);
  const out = await link.rsync(
    [
      '-t',
      '--stats',
      `--max-size=${h.files.bytes}`,
      '--timeout=120',
      link.remote(`${base}${fileListPath('rootfs', h.id)}`),
      `${dir}/`,
    ],
    { timeoutMs: 10 * 60_000 },
  );
  const bytes = Number(/^Total bytes received: ([\d,.]+)/m.exec(out.stdout)?.[1]?.replace(/[,.]/g, '') ?? 0);
  const r = readSmallFile(`${dir}/${h.id}.files`, h.files.bytes);
  if (r.kind !== 'read')
    throw new SlotRefused(
      `the file list of ${h.id} is ${r.kind === 'not a file' ? r.what : r.kind === 'too large' ? `${r.size} bytes, the manifest says ${h.files.bytes}` : r.kind}`,
      REMEDY,
    );
  const c = checkFileList(r.data, h);
  rmSync(dir, { recursive: true, force: true });
  if (!c.ok) throw new SlotRefused(`the file list of ${h.id}: ${c.error}`, REMEDY);
  return { entries: c.entries, text: r.data.toString('latin1'), bytes };
}

/** The verified list of a slot on the disk, null when there is none (a slot made before manifests). */
function storedList(id: string): Map<string, Entry> | null {
  const r = readSmallFile(`${LISTS_DIR}/${id}.files`, 256 * 1024 * 1024);
  if (r.kind !== 'read') return null;
  const p = parseFileList(r.data.toString('latin1'));
  return p.ok ? new Map(p.entries.map((e) => [e.path, e])) : null;
}

/**
 * Check a synced slot against the file list: metadata of every path, the sha256 of every regular file that is not
 * a hard link to the same verified file of the link-dest slot. Throws SlotRefused on any difference.
 */
export async function verifySlot(
  slotDir: string,
  entries: Entry[],
  linkDest: { dir: string; id: string } | null,
): Promise<{ hashed: number; hashedBytes: number; trusted: number; ms: number }> {
  const t0 = performance.now();
  const tick = () => watchdogProgress('checking the new root against the manifest');
  const seen = await walkTree(slotDir, tick);
  let prev: PrevSlot | null = null;
  const list = linkDest ? storedList(linkDest.id) : null;
  if (linkDest && list) {
    const ino = new Map<string, number>();
    for (const e of entries) {
      const o = seen.get(e.path);
      if (e.type !== 'f' || !o || o.type !== 'f') continue;
      const st = lstatSync(Buffer.from(`${linkDest.dir}/${e.path}`, 'latin1'), { throwIfNoEntry: false });
      if (st?.isFile() && st.ino === o.ino) ino.set(e.path, st.ino);
    }
    prev = { entries: list, ino };
  }
  const plan = planVerify(entries, seen, prev);
  const problems = [...plan.problems];
  const bySha = new Map(entries.map((e) => [e.path, e]));
  let hashedBytes = 0;
  const buf = Buffer.alloc(1 << 20);
  let lastYield = performance.now();
  let lastSay = lastYield;
  for (const [i, path] of plan.hash.entries()) {
    if (problems.length >= 5) break;
    const e = bySha.get(path) as Entry;
    const got = await hashFile(`${slotDir}/${path}`, tick, buf);
    hashedBytes += e.size;
    // small files never reach hashFile's own yield: feed the watchdog and let its timer run between files
    tick();
    const now = performance.now();
    if (now - lastYield > 100) {
      await yieldToTimers();
      lastYield = now;
    }
    if (now - lastSay > 5000) {
      info(
        'root',
        `checking the new root against the manifest: ${i + 1} of ${plan.hash.length} files, ${(hashedBytes / 1e6).toFixed(1)} MB`,
      );
      lastSay = now;
    }
    if (got !== e.sha256)
      problems.push(
        `${JSON.stringify(Buffer.from(path, 'latin1').toString('utf8'))} has sha256 ${got.slice(0, 12)}…, the manifest says ${e.sha256?.slice(0, 12)}…`,
      );
  }
  if (problems.length > 0) {
    const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : '';
    throw new SlotRefused(`content differs from the manifest: ${problems.slice(0, 3).join('; ')}${more}`, REMEDY);
  }
  return { hashed: plan.hash.length, hashedBytes, trusted: plan.trusted, ms: performance.now() - t0 };
}

/** Keep the verified list of a slot for the next sync's trust in its hard links. */
export function storeList(id: string, text: string): void {
  mkdirSync(LISTS_DIR, { recursive: true });
  writeAtomic(`${LISTS_DIR}/${id}.files`, Buffer.from(text, 'latin1'));
}

/** Remove lists whose slot is gone. */
export function pruneLists(): void {
  if (!existsSync(LISTS_DIR)) return;
  for (const f of readdirSync(LISTS_DIR)) {
    const id = f.endsWith('.files') ? f.slice(0, -'.files'.length) : null;
    if (id === null || !existsSync(`${ROOT_MNT}/slots/${id}`)) rmSync(`${LISTS_DIR}/${f}`, { force: true });
  }
}

/** The previous slot's verified list, for the --files-from delta and the file list's own delta. */
export function previousList(id: string): Map<string, Entry> | null {
  return storedList(id);
}

/**
 * The --files-from delta: lay into the new slot, from the previous verified slot, every directory (empty, rsync
 * sets its metadata), every unchanged file (a hard link: trusted by the check) and unchanged link, and return the
 * paths rsync must fetch (NUL-separated, for --from0): the directories, the changed entries, and whatever the node
 * cannot make itself (devices, FIFOs, sockets, links with xattrs). rsync then walks only those paths, so no file
 * list of the whole tree travels.
 */
export function prepareDelta(
  dest: string,
  prevDir: string,
  entries: readonly Entry[],
  prev: ReadonlyMap<string, Entry>,
): { list: string; paths: number; bytes: number; linked: number } {
  const plan = planDelta(entries, prev);
  const fetch = new Set(plan.paths);
  const b = (p: string) => Buffer.from(p, 'latin1');
  let linked = 0;
  for (const e of entries) {
    if (e.type === 'd') {
      if (e.path !== '.') mkdirSync(b(`${dest}/${e.path}`), { recursive: true, mode: 0o700 });
      continue;
    }
    if (fetch.has(e.path)) continue;
    if (e.type === 'f') {
      const st = lstatSync(b(`${prevDir}/${e.path}`), { throwIfNoEntry: false });
      if (st?.isFile() && st.size === e.size) {
        linkSync(b(`${prevDir}/${e.path}`), b(`${dest}/${e.path}`));
        linked++;
        continue;
      }
    } else if (e.type === 'l' && e.xattrs.length === 0 && e.target !== null) {
      symlinkSync(b(e.target), b(`${dest}/${e.path}`));
      lchownSync(b(`${dest}/${e.path}`), e.uid, e.gid);
      linked++;
      continue;
    }
    fetch.add(e.path); // the node cannot make it (or the old copy is not there): rsync brings it
  }
  const paths = entries.filter((e) => fetch.has(e.path)).map((e) => e.path);
  let bytes = 0;
  for (const e of entries) if (fetch.has(e.path) && e.type === 'f') bytes += e.size;
  return { list: paths.map((p) => `${p}\0`).join(''), paths: paths.length, bytes, linked };
}

// `builder publish` freezes what it publishes: snapshots/<name>/<id>/ is a copy of the live template (rsync
// --link-dest against the previous snapshot, so unchanged files are hard links and cost no space), its file list
// snapshots/<name>/<id>.files, and the signed header stamps/<name>.manifest. Nodes sync the snapshot, never the
// live tree, and check it against the manifest (agent/contract/manifest.ts has the format).
import { spawnSync } from 'node:child_process';
import { createPrivateKey, sign } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  fileListPath,
  manifestPath,
  manifestSigPath,
  parseFileList,
  renderFileList,
  renderManifest,
  sha256hex,
  SNAPSHOT_DIR,
  snapshotPath,
  verifyManifestSig,
  type Entry,
  type ManifestHeader,
} from '../../agent/contract/manifest.ts';
import { tableHash } from '../../agent/contract/approval.ts';
import { readSmallFile } from '../../agent/contract/smallread.ts';
import { APPROVAL_REQUIRED, NODES_DIR, PARTITION_TABLE, RESET_FLAG } from '../../agent/contract/tree.ts';
import type { StampName } from '../../agent/contract/stamp.ts';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { hashFile, walkTree } from '../../agent/sys/tree.ts';
import { createPublicKey } from 'node:crypto';

/** Snapshots kept per template: a node that fetched a stamp may wait up to 30 min for a sync slot. */
export const KEEP_SNAPSHOTS = 3;

const RSYNC = '/usr/bin/rsync';

/** The seq of a snapshot id ('<seq>-...'), NaN for anything else. */
function seqOf(id: string): number {
  const m = /^(\d+)-/.exec(id);
  return m ? Number(m[1]) : NaN;
}

/** The newest complete snapshot (its file list written), or null. */
export function lastSnapshot(masterRoot: string, name: StampName): { id: string; entries: Map<string, Entry> } | null {
  const dir = join(masterRoot, SNAPSHOT_DIR, name);
  if (!existsSync(dir)) return null;
  const ids = readdirSync(dir)
    .filter((f) => f.endsWith('.files'))
    .map((f) => f.slice(0, -'.files'.length))
    .filter((id) => !Number.isNaN(seqOf(id)) && existsSync(join(dir, id)))
    .sort((a, b) => seqOf(b) - seqOf(a));
  for (const id of ids) {
    const p = parseFileList(readFileSync(join(masterRoot, fileListPath(name, id))).toString('latin1'));
    if (p.ok) return { id, entries: new Map(p.entries.map((e) => [e.path, e])) };
  }
  return null;
}

/** The master state the manifest carries: the table's sha256, the approval switch, the hosts with a reset flag. */
export function masterState(masterRoot: string): Pick<ManifestHeader, 'table' | 'approval' | 'reset'> {
  const t = readSmallFile(join(masterRoot, PARTITION_TABLE), 64 * 1024);
  if (t.kind !== 'read' && t.kind !== 'gone')
    throw new Error(
      `publish: ${join(masterRoot, PARTITION_TABLE)} is ${t.kind === 'not a file' ? t.what : t.kind}: nodes would refuse it`,
    );
  const reset: string[] = [];
  const nodes = join(masterRoot, NODES_DIR);
  if (existsSync(nodes))
    for (const host of readdirSync(nodes)) {
      const st = lstatSync(join(nodes, host, RESET_FLAG), { throwIfNoEntry: false });
      if (st && /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(host)) reset.push(host);
    }
  return {
    table: t.kind === 'read' ? tableHash(t.data) : null,
    approval: existsSync(join(masterRoot, APPROVAL_REQUIRED)),
    reset: reset.sort(),
  };
}

/**
 * Copy the live template into snapshots/<name>/<id>/ and list it. Files hard-linked to the previous snapshot
 * (unchanged by rsync's check) keep that snapshot's sha256; only the others are read.
 */
export async function freeze(
  masterRoot: string,
  name: StampName,
  id: string,
): Promise<{ entries: Entry[]; text: string; hashed: number; linked: number }> {
  const dir = join(masterRoot, SNAPSHOT_DIR, name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const prev = lastSnapshot(masterRoot, name);
  const dest = join(dir, id);
  const tmp = join(dir, `.${id}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  if (existsSync(dest)) throw new Error(`publish: snapshot ${dest} exists already`);
  const r = spawnSync(
    RSYNC,
    [
      '-aHAX',
      '--numeric-ids',
      '--delete',
      ...(prev ? [`--link-dest=${join(dir, prev.id)}/`] : []),
      `${join(masterRoot, name)}/`,
      `${tmp}/`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
  );
  if (r.error || r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`publish: rsync into the snapshot failed: ${r.error?.message ?? r.stderr.trim().slice(-400)}`);
  }
  const seen = await walkTree(tmp);
  const prevIno = new Map<string, number>();
  if (prev)
    for (const [path, e] of prev.entries) {
      if (e.type !== 'f') continue;
      const st = lstatSync(Buffer.from(join(dir, prev.id, path), 'latin1'), { throwIfNoEntry: false });
      if (st?.isFile()) prevIno.set(path, st.ino);
    }
  const entries: Entry[] = [];
  let hashed = 0;
  let linked = 0;
  const buf = Buffer.alloc(1 << 20);
  for (const [path, o] of seen) {
    let sha: string | null = null;
    if (o.type === 'f') {
      const p = prev?.entries.get(path);
      if (p?.sha256 && prevIno.get(path) === o.ino && p.size === o.size) {
        sha = p.sha256;
        linked++;
      } else {
        sha = await hashFile(path === '.' ? tmp : `${tmp}/${path}`, () => {}, buf);
        hashed++;
      }
    }
    entries.push({
      path,
      type: o.type,
      mode: o.mode,
      uid: o.uid,
      gid: o.gid,
      size: o.size,
      sha256: sha,
      rdev: o.rdev,
      target: o.target,
      xattrs: o.xattrs,
    });
  }
  const text = renderFileList(entries);
  renameSync(tmp, dest);
  writeAtomic(join(masterRoot, fileListPath(name, id)), Buffer.from(text, 'latin1'));
  return { entries, text, hashed, linked };
}

/** Remove all but the newest `keep` snapshots (and their lists) of a template. */
export function pruneSnapshots(masterRoot: string, name: StampName, keep = KEEP_SNAPSHOTS): string[] {
  const dir = join(masterRoot, SNAPSHOT_DIR, name);
  if (!existsSync(dir)) return [];
  const ids = [
    ...new Set(
      readdirSync(dir)
        .map((f) => (f.endsWith('.files') ? f.slice(0, -'.files'.length) : f))
        .filter((id) => !Number.isNaN(seqOf(id))),
    ),
  ].sort((a, b) => seqOf(b) - seqOf(a));
  const gone = ids.slice(keep);
  for (const id of gone) {
    rmSync(join(masterRoot, fileListPath(name, id)), { force: true });
    rmSync(join(masterRoot, snapshotPath(name, id)), { recursive: true, force: true });
  }
  return gone;
}

/** Write the header (signature first, as for the stamp) for the snapshot just frozen. */
export function writeManifest(
  masterRoot: string,
  name: StampName,
  stamp: { id: string; seq: number },
  list: { text: string; entries: number },
  signKeyPem: string | undefined,
): ManifestHeader {
  const bytes = Buffer.from(list.text, 'latin1');
  const header: ManifestHeader = {
    name,
    id: stamp.id,
    seq: stamp.seq,
    files: { sha256: sha256hex(bytes), bytes: bytes.length, entries: list.entries },
    ...masterState(masterRoot),
  };
  const text = renderManifest(header);
  const sigFile = join(masterRoot, manifestSigPath(name));
  if (signKeyPem !== undefined) {
    const key = createPrivateKey(signKeyPem);
    const sig = sign(null, Buffer.from(text, 'utf8'), key).toString('base64');
    const pub = createPublicKey(key).export({ type: 'spki', format: 'pem' }) as string;
    if (!verifyManifestSig(text, sig, pub).ok) throw new Error('publish: self-check of the manifest signature failed');
    writeAtomic(sigFile, `${sig}\n`);
  } else if (existsSync(sigFile)) unlinkSync(sigFile);
  writeAtomic(join(masterRoot, manifestPath(name)), text);
  return header;
}

// Publishing on the master: freeze the template into a snapshot with its content manifest (snapshot.ts), then bump
// its stamp (seq+1, atomic, optionally signed) so nodes re-sync it.
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { newStamp, parseStamp, renderStamp, sigPath, stampPath } from '../../agent/contract/stamp.ts';
import type { Stamp, StampName } from '../../agent/contract/stamp.ts';
import { fsyncDir, writeAtomic } from '../../agent/contract/atomic.ts';
import { STAMP_DIR } from '../../agent/contract/tree.ts';
import { freeze, pruneSnapshots, writeManifest } from './snapshot.ts';

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

// lstat of rel inside root as the node will see it after switch_root: symlinks in the directory part are
// resolved inside root (absolute targets re-rooted), the last component is not followed.
function lstatInRoot(root: string, rel: string): ReturnType<typeof lstatSync> | null {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  const leaf = parts.pop();
  if (leaf === undefined) return null;
  let cur: string[] = [];
  let todo = parts;
  for (let hops = 0; todo.length > 0;) {
    const part = todo.shift() as string;
    if (part === '..') {
      cur.pop();
      continue;
    }
    const st = lstatSync(join(root, ...cur, part), { throwIfNoEntry: false });
    if (!st) return null;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return null;
      const target = readlinkSync(join(root, ...cur, part));
      if (target.startsWith('/')) cur = [];
      todo = [...target.split('/').filter((p) => p !== '' && p !== '.'), ...todo];
    } else if (st.isDirectory()) {
      cur.push(part);
    } else {
      return null;
    }
  }
  return lstatSync(join(root, ...cur, leaf), { throwIfNoEntry: false }) ?? null;
}

// Why: the one command that tells every node "this template changed"; seq+1, atomic, optionally signed.
// Not guarded against two publishes of the same template at once (run it from one shell).
export async function publish(opts: {
  masterRoot: string;
  name: StampName;
  signKeyPem?: string;
  now?: Date;
}): Promise<Stamp> {
  const { masterRoot, name } = opts;
  if (name !== 'rootfs' && name !== 'bootfs')
    throw new Error(`publish: unknown template '${String(name)}' (rootfs or bootfs)`);
  const tree = join(masterRoot, name);
  const st = statSync(tree, { throwIfNoEntry: false });
  if (!st || !st.isDirectory()) throw new Error(`publish: ${tree} is not a directory: nothing to publish`);
  if (name === 'rootfs') {
    const init = lstatInRoot(tree, 'sbin/init');
    if (!init || !(init.isFile() || init.isSymbolicLink())) {
      throw new Error(
        `publish: rootfs template has no /sbin/init: a node would not boot it (${join(tree, 'sbin/init')})`,
      );
    }
  }

  let key: ReturnType<typeof createPrivateKey> | null = null;
  if (opts.signKeyPem !== undefined) {
    if (!opts.signKeyPem.includes('-----BEGIN'))
      throw new Error('publish: signKeyPem must be the PEM text of the key, not a path');
    key = createPrivateKey(opts.signKeyPem);
    if (key.asymmetricKeyType !== 'ed25519')
      throw new Error(`publish: stamp signing key is ${key.asymmetricKeyType}, not ed25519`);
  }

  const dir = join(masterRoot, STAMP_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(masterRoot, stampPath(name));
  const sigFile = join(masterRoot, sigPath(name));
  let prev = 0;
  let old: string | null = null;
  try {
    old = readFileSync(file, 'latin1');
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
  }
  if (old !== null) {
    const p = parseStamp(old);
    if (!p.ok) {
      throw new Error(
        `publish: ${file} is corrupt (${p.error}); fix it by hand. Removing it restarts seq at 1, ` +
          'which nodes with a stamp key refuse as a downgrade',
      );
    }
    if (p.stamp.name !== name) throw new Error(`publish: ${file} names '${p.stamp.name}', expected '${name}'`);
    prev = p.stamp.seq;
  }

  const stamp = newStamp(name, prev + 1, opts.now ?? new Date());
  const text = renderStamp(stamp);
  // the content first: the snapshot the stamp names, its file list and the signed header, then the stamp
  const frozen = await freeze(masterRoot, name, stamp.id);
  writeManifest(masterRoot, name, stamp, { text: frozen.text, entries: frozen.entries.length }, opts.signKeyPem);
  if (key) {
    const sig = sign(null, Buffer.from(text, 'utf8'), key);
    if (!verify(null, Buffer.from(text, 'utf8'), createPublicKey(key), sig))
      throw new Error('publish: self-check of the signature failed');
    // Order: signature FIRST, then the stamp. A node syncing in between sees the new .sig with the old stamp,
    // refuses once ("does not verify") and retries; the reverse order would let a new stamp sit next to the old
    // signature. Both windows are a rename apart; neither makes a node sync a tree that was not signed.
    writeAtomic(sigFile, `${sig.toString('base64')}\n`);
    writeAtomic(file, text);
  } else {
    writeAtomic(file, text);
    // A stale .sig would belong to an older stamp: remove it so "unsigned" is reported, not "does not verify".
    try {
      unlinkSync(sigFile);
      fsyncDir(dir);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
    }
  }
  pruneSnapshots(masterRoot, name);
  return stamp;
}

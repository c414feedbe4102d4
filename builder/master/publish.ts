// Publishing on the master: bump a template's stamp so nodes re-sync it, and the keys/lines that let nodes
// read the master (read-only, host key pinned) and trust its stamps (Ed25519 signature).
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import {
  chmodSync, closeSync, existsSync, fchmodSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, renameSync,
  statSync, unlinkSync, writeFileSync, writeSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { newStamp, parseStamp, renderStamp, sigPath, stampPath } from '../../agent/contract/stamp.ts';
import type { Stamp, StampName } from '../../agent/contract/stamp.ts';
import { REPORT_DIR } from '../../agent/contract/report.ts';

const SSH_KEYGEN = '/usr/bin/ssh-keygen';

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Write to a dot-tmp file in the same directory, fsync it, rename over the target, fsync the directory:
// a reader (an rsync from a node, a TFTP client) sees either the old or the new file, never a torn one, even after a crash.
// The file gets exactly `mode` (fchmod, not the umask's cut of it): dnsmasq's TFTP server and the nodes' rrsync read
// these files, and a master with umask 077 must not make them private.
export function writeAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      fchmodSync(fd, mode);
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  fsyncDir(dirname(path));
}

// lstat of rel inside root as the node will see it after switch_root: symlinks in the directory part are
// resolved inside root (absolute targets re-rooted), the last component is not followed.
function lstatInRoot(root: string, rel: string): ReturnType<typeof lstatSync> | null {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  const leaf = parts.pop();
  if (leaf === undefined) return null;
  let cur: string[] = [];
  let todo = parts;
  for (let hops = 0; todo.length > 0; ) {
    const part = todo.shift() as string;
    if (part === '..') { cur.pop(); continue; }
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
export async function publish(opts: { masterRoot: string; name: StampName; signKeyPem?: string; now?: Date }): Promise<Stamp> {
  const { masterRoot, name } = opts;
  if (name !== 'rootfs' && name !== 'bootfs') throw new Error(`publish: unknown template '${String(name)}' (rootfs or bootfs)`);
  const tree = join(masterRoot, name);
  const st = statSync(tree, { throwIfNoEntry: false });
  if (!st || !st.isDirectory()) throw new Error(`publish: ${tree} is not a directory: nothing to publish`);
  if (name === 'rootfs') {
    const init = lstatInRoot(tree, 'sbin/init');
    if (!init || !(init.isFile() || init.isSymbolicLink())) {
      throw new Error(`publish: rootfs template has no /sbin/init: a node would not boot it (${join(tree, 'sbin/init')})`);
    }
  }

  let key: ReturnType<typeof createPrivateKey> | null = null;
  if (opts.signKeyPem !== undefined) {
    if (!opts.signKeyPem.includes('-----BEGIN')) throw new Error('publish: signKeyPem must be the PEM text of the key, not a path');
    key = createPrivateKey(opts.signKeyPem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`publish: stamp signing key is ${key.asymmetricKeyType}, not ed25519`);
  }

  const dir = join(masterRoot, 'stamps');
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
      throw new Error(`publish: ${file} is corrupt (${p.error}); fix it by hand. Removing it restarts seq at 1, ` +
        'which nodes with a stamp key refuse as a downgrade');
    }
    if (p.stamp.name !== name) throw new Error(`publish: ${file} names '${p.stamp.name}', expected '${name}'`);
    prev = p.stamp.seq;
  }

  const stamp = newStamp(name, prev + 1, opts.now ?? new Date());
  const text = renderStamp(stamp);
  if (key) {
    const sig = sign(null, Buffer.from(text, 'utf8'), key);
    if (!verify(null, Buffer.from(text, 'utf8'), createPublicKey(key), sig)) throw new Error('publish: self-check of the signature failed');
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
  return stamp;
}

export interface Keys {
  nodeKey: string;
  nodeKeyPub: string;
  signKey: string;
  signKeyPub: string;
  /** OpenSSH key the nodes push their boot reports with (write-only into <master root>/reports). */
  reportKey: string;
  reportKeyPub: string;
}

// Why: one-time master setup; the node key (OpenSSH) lets nodes read the master, the report key (OpenSSH) lets them
// drop boot reports, the stamp key (PEM) signs stamps.
// Existing keys are never overwritten; a missing public half is re-derived from its private key; a key added in a
// later version (the report key) is created next to the existing ones on the next call.
export function generateKeys(dir: string): Keys {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  } else if (!statSync(dir).isDirectory()) {
    throw new Error(`generateKeys: ${dir} is not a directory`);
  }
  const nodeKey = join(dir, 'node_ed25519');
  const nodeKeyPub = `${nodeKey}.pub`;
  const reportKey = join(dir, 'report_ed25519');
  const reportKeyPub = `${reportKey}.pub`;
  const signKey = join(dir, 'stamp_ed25519.pem');
  const signKeyPub = join(dir, 'stamp_ed25519.pub.pem');

  const keygen = (args: string[]) => {
    const r = spawnSync(SSH_KEYGEN, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    if (r.error) throw new Error(`generateKeys: cannot run ${SSH_KEYGEN}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`generateKeys: ssh-keygen ${args.join(' ')} exited with ${r.status}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const sshKey = (key: string, comment: string) => {
    const pub = `${key}.pub`;
    if (existsSync(key)) {
      if (!existsSync(pub)) writeFileSync(pub, keygen(['-y', '-f', key]), { mode: 0o644, flag: 'wx' });
    } else {
      if (existsSync(pub)) throw new Error(`generateKeys: ${pub} exists without its private key ${key}; remove it or restore the key`);
      keygen(['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', key]);
    }
  };
  sshKey(nodeKey, 'clusterboot-node');
  sshKey(reportKey, 'clusterboot-report');

  if (existsSync(signKey)) {
    const priv = createPrivateKey(readFileSync(signKey, 'utf8'));
    if (priv.asymmetricKeyType !== 'ed25519') throw new Error(`generateKeys: ${signKey} is ${priv.asymmetricKeyType}, not ed25519`);
    if (!existsSync(signKeyPub)) {
      writeFileSync(signKeyPub, createPublicKey(priv).export({ type: 'spki', format: 'pem' }) as string, { mode: 0o644, flag: 'wx' });
    }
  } else {
    if (existsSync(signKeyPub)) throw new Error(`generateKeys: ${signKeyPub} exists without its private key ${signKey}; remove it or restore the key`);
    const k = generateKeyPairSync('ed25519');
    // private half first: if interrupted before the public half, the next call re-derives it
    writeFileSync(signKey, k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600, flag: 'wx' });
    writeFileSync(signKeyPub, k.publicKey.export({ type: 'spki', format: 'pem' }) as string, { mode: 0o644, flag: 'wx' });
  }
  return { nodeKey, nodeKeyPub, signKey, signKeyPub, reportKey, reportKeyPub };
}

// One OpenSSH public key line: type, base64 blob whose embedded type matches, optional comment.
function parsePubKey(content: string, what: string): { type: string; blob: string; comment: string } {
  const lines = content.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length !== 1) throw new Error(`${what}: expected one OpenSSH public key line, got ${lines.length}`);
  const m = /^([a-z0-9@.-]+) ([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(lines[0] as string);
  if (!m) throw new Error(`${what}: not an OpenSSH public key line`);
  const type = m[1] as string;
  const blob = m[2] as string;
  const raw = Buffer.from(blob, 'base64');
  const len = raw.length >= 4 ? raw.readUInt32BE(0) : -1;
  if (len < 0 || 4 + len > raw.length || raw.subarray(4, 4 + len).toString('latin1') !== type) {
    throw new Error(`${what}: key blob does not match its type ${type}`);
  }
  return { type, blob, comment: (m[3] ?? '').trim() };
}

// Paths that go inside command="..." of an authorized_keys line: nothing sshd or rrsync could read as syntax.
export function checkCommandPaths(fn: string, paths: Array<readonly [string, string]>): void {
  const safe = /^\/[A-Za-z0-9._+\/-]*$/;
  for (const [what, p] of paths) {
    if (!isAbsolute(p) || !safe.test(p) || p.split('/').includes('..')) {
      throw new Error(`${fn}: ${what} '${p}' must be an absolute path of [A-Za-z0-9._+/-] without '..' (no spaces or quotes)`);
    }
  }
}

/** `<options> <type> <blob>[ <comment>]` from an OpenSSH public key; the comment only when it is plain. */
export function keyLine(options: string, pub: string, fn: string): string {
  const k = parsePubKey(pub, fn);
  const comment = /^[A-Za-z0-9@._-]+$/.test(k.comment) ? ` ${k.comment}` : '';
  return `${options} ${k.type} ${k.blob}${comment}`;
}

// Why: the master's authorized_keys entry that lets the node key do nothing but read-only rsync of the master root.
export function authorizedKeysLine(nodeKeyPub: string, masterRoot: string, rrsync = '/usr/bin/rrsync'): string {
  checkCommandPaths('authorizedKeysLine', [['masterRoot', masterRoot], ['rrsync', rrsync]]);
  return keyLine(`restrict,command="${rrsync} -ro ${masterRoot}"`, nodeKeyPub, 'authorizedKeysLine');
}

// Why: the entry that lets the report key do nothing but write-only rsync into <master root>/reports (boot reports).
// A separate key from the node key: sshd uses the first line that matches a key, so one key cannot have both commands.
// -no-lock: nodes report at the same moment after a mass reboot (rrsync's single-run lock would turn them away);
// -no-del: a node may replace its report but never delete anything.
export function reportKeysLine(reportKeyPub: string, masterRoot: string, rrsync = '/usr/bin/rrsync'): string {
  checkCommandPaths('reportKeysLine', [['masterRoot', masterRoot], ['rrsync', rrsync]]);
  const reports = `${masterRoot.replace(/\/+$/, '')}/${REPORT_DIR}`;
  return keyLine(`restrict,command="${rrsync} -wo -no-lock -no-del ${reports}"`, reportKeyPub, 'reportKeysLine');
}

// Why: the node's known_hosts pin, keyed by HostKeyAlias so it holds whatever address the master has.
export function knownHostsLine(hostKeyPub: string): string {
  const k = parsePubKey(hostKeyPub, 'knownHostsLine');
  return `clusterboot-master ${k.type} ${k.blob}`;
}

// Per-node identity, made once on the master: <master root>/nodes/<hostname>/files/ is a tree the agent lays onto
// the node's root at every boot (into the writable layer), so a node keeps its host name, machine-id and SSH host
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { FILES_DIR, NODES_DIR } from '../../agent/contract/tree.ts';

// keys across re-syncs, slot switches and wiped overlays, and a reinstalled disk comes back as the same machine
// (no "REMOTE HOST IDENTIFICATION HAS CHANGED", one journal, one DHCP client id).
// Only missing files are created, never overwritten: `builder stage` runs this on every stage.

export const SSH_KEYGEN = '/usr/bin/ssh-keygen';
/** The host key types sshd on Debian makes by default, in its order. */
export const HOST_KEY_TYPES = ['ed25519', 'ecdsa', 'rsa'] as const;

const LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** `<master root>/nodes/<hostname>/files`: what the agent lays onto the node's root. */
export function nodeFilesDir(masterRoot: string, hostname: string): string {
  return join(masterRoot, NODES_DIR, hostname, FILES_DIR);
}

/** The files ensureIdentity makes, relative to the node's root (and to nodeFilesDir). */
export function identityFiles(): string[] {
  return [
    'etc/hostname',
    'etc/machine-id',
    ...HOST_KEY_TYPES.flatMap((t) => [`etc/ssh/ssh_host_${t}_key`, `etc/ssh/ssh_host_${t}_key.pub`]),
  ];
}

/**
 * A new machine-id: 32 lower-case hex characters and a newline, as machine-id(5) wants. 128 bits from the CSPRNG
 * with the UUID v4 version and variant bits set, as systemd's own generator does; never all zero.
 */
export function newMachineId(random: (n: number) => Uint8Array = (n) => randomBytes(n)): string {
  for (;;) {
    const b = Buffer.from(random(16));
    if (b.length !== 16) throw new Error('newMachineId: the random source did not give 16 bytes');
    b[6] = ((b[6] as number) & 0x0f) | 0x40;
    b[8] = ((b[8] as number) & 0x3f) | 0x80;
    const hex = b.toString('hex');
    if (!/^0+$/.test(hex)) return `${hex}\n`;
  }
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Put a finished temp file at dest unless dest exists (link(2) refuses to replace, unlike rename(2)), so two stages
// at once, or a file that appeared meanwhile, never lose an identity. True: placed; false: dest was there.
function placeNew(tmp: string, dest: string): boolean {
  try {
    linkSync(tmp, dest);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
    // a file system without hard links: check, then rename (the race with another stage is the operator's)
    if (statSync(dest, { throwIfNoEntry: false })) return false;
    renameSync(tmp, dest);
    return true;
  }
  unlinkSync(tmp);
  return true;
}

function writeNew(path: string, data: string, mode: number): boolean {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      const bytes = Buffer.from(data, 'utf8');
      for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, mode);
    return placeNew(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

// Directories of the tree become the node's directories (/etc, /etc/ssh): 0755 whatever the master's umask.
function ensureDir(path: string): void {
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw e; // a file higher up: the parent's turn says which
  }
  if (st) {
    if (!st.isDirectory()) throw new Error(`ensureIdentity: ${path} exists and is not a directory: move it away`);
    return;
  }
  ensureDir(dirname(path));
  try {
    mkdirSync(path, { mode: 0o755 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return;
  }
  chmodSync(path, 0o755);
}

function keygen(args: string[]): string {
  const r = spawnSync(SSH_KEYGEN, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.error) throw new Error(`ensureIdentity: cannot run ${SSH_KEYGEN}: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(`ensureIdentity: ssh-keygen ${args.join(' ')} exited with ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

// The public half of a private key, with the comment ssh-keygen would have given it (older ssh-keygen -y prints none).
function derivePub(key: string, hostname: string): string {
  return `${keygen(['-y', '-f', key]).trim().split(/\s+/).slice(0, 2).join(' ')} root@${hostname}\n`;
}

// Why: the node's identity is made on the master once and then only read, so it survives everything that happens
// to the node's disk. Existing files are kept byte for byte; only missing ones are created. Host keys are made in a
// temp folder next to files/ (same file system, never laid onto a node) and moved into place public half first,
// so a crash leaves at worst a .pub without its private key, which the next call replaces (a public key alone is
// no identity: sshd cannot use it). A private key without its .pub gets the .pub derived from it.
// Returns the files created, as paths relative to files/ (etc/hostname, ...).
export function ensureIdentity(masterRoot: string, hostname: string): { created: string[] } {
  if (!LABEL_RE.test(hostname)) throw new Error(`ensureIdentity: '${hostname}' is not a host name (an RFC 1123 label)`);
  const nodeDir = join(masterRoot, NODES_DIR, hostname);
  const files = join(nodeDir, FILES_DIR);
  ensureDir(join(files, 'etc/ssh'));
  const created: string[] = [];
  const exists = (rel: string) => {
    const st = statSync(join(files, rel), { throwIfNoEntry: false });
    if (st && !st.isFile())
      throw new Error(`ensureIdentity: ${join(files, rel)} exists and is not a regular file: move it away`);
    return st !== undefined;
  };

  if (!exists('etc/hostname') && writeNew(join(files, 'etc/hostname'), `${hostname}\n`, 0o644))
    created.push('etc/hostname');
  if (!exists('etc/machine-id') && writeNew(join(files, 'etc/machine-id'), newMachineId(), 0o444))
    created.push('etc/machine-id');

  const missing = HOST_KEY_TYPES.filter(
    (t) => !exists(`etc/ssh/ssh_host_${t}_key`) || !exists(`etc/ssh/ssh_host_${t}_key.pub`),
  );
  if (missing.length) {
    const tmp = mkdtempSync(join(nodeDir, '.keygen-'));
    try {
      for (const t of missing) {
        const rel = `etc/ssh/ssh_host_${t}_key`;
        const key = join(files, rel);
        if (exists(rel)) {
          // the private half is there: derive the public one from it (same key, no new identity)
          if (writeNew(`${key}.pub`, derivePub(key, hostname), 0o644)) created.push(`${rel}.pub`);
          continue;
        }
        const k = join(tmp, `ssh_host_${t}_key`);
        keygen(['-q', '-N', '', '-t', t, '-C', `root@${hostname}`, '-f', k]);
        chmodSync(k, 0o600);
        chmodSync(`${k}.pub`, 0o644);
        fsyncPath(k);
        fsyncPath(`${k}.pub`);
        // public half first; an orphan .pub (from a crash between the two moves) is replaced
        renameSync(`${k}.pub`, `${key}.pub`);
        if (placeNew(k, key)) {
          created.push(rel, `${rel}.pub`);
          continue;
        }
        // another stage placed a private key meanwhile: keep it, and put its own public half back next to it
        const pub = join(tmp, `ssh_host_${t}_key.derived.pub`);
        writeNew(pub, derivePub(key, hostname), 0o644);
        renameSync(pub, `${key}.pub`);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    fsyncPath(join(files, 'etc/ssh'));
  }
  if (created.length) fsyncPath(join(files, 'etc'));
  return { created };
}

// Per-node identity on the master (builder/identity.ts): made once with the real ssh-keygen, then only kept.
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureIdentity, identityFiles, newMachineId, nodeFilesDir } from '../../../../builder/master/identity.ts';

let tmp = '';
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'identity-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
// a restrictive umask, as on a hardened master: the modes below must hold anyway (chmod, not the umask's cut)
let oldMask = 0;
beforeAll(() => {
  oldMask = process.umask(0o077);
});
afterEach(() => {
  process.umask(0o077);
});
afterAll(() => {
  process.umask(oldMask);
});

const master = () => {
  const m = join(tmp, `master${n++}`);
  mkdirSync(m);
  return m;
};
const mode = (p: string) => statSync(p).mode & 0o777;
const keygen = (...args: string[]) => spawnSync('/usr/bin/ssh-keygen', args, { encoding: 'utf8' });
/** Fingerprint line of a key file (private or public): `256 SHA256:... root@host (ED25519)`. */
const fingerprint = (f: string) => {
  const r = keygen('-l', '-f', f);
  expect(r.status).toBe(0);
  return r.stdout.trim();
};
const snapshot = (root: string, host: string) =>
  Object.fromEntries(identityFiles().map((f) => [f, readFileSync(join(nodeFilesDir(root, host), f))]));

describe('ensureIdentity', () => {
  test('creates hostname, machine-id and three host key pairs with their modes; directories 0755; no temp folder left', () => {
    const root = master();
    const r = ensureIdentity(root, 'rpinode01');
    expect([...r.created].sort()).toEqual(identityFiles().sort());
    const files = nodeFilesDir(root, 'rpinode01');
    expect(files).toBe(join(root, 'nodes/rpinode01/files'));
    for (const d of [
      'nodes',
      'nodes/rpinode01',
      'nodes/rpinode01/files',
      'nodes/rpinode01/files/etc',
      'nodes/rpinode01/files/etc/ssh',
    ]) {
      expect([d, mode(join(root, d))]).toEqual([d, 0o755]); // they become the node's /etc and /etc/ssh
    }
    expect(readFileSync(join(files, 'etc/hostname'), 'utf8')).toBe('rpinode01\n');
    expect(mode(join(files, 'etc/hostname'))).toBe(0o644);
    expect(readFileSync(join(files, 'etc/machine-id'), 'utf8')).toMatch(/^[0-9a-f]{32}\n$/);
    expect(mode(join(files, 'etc/machine-id'))).toBe(0o444);
    for (const [t, bits] of [
      ['ed25519', 'ED25519'],
      ['ecdsa', 'ECDSA'],
      ['rsa', 'RSA'],
    ]) {
      const key = join(files, `etc/ssh/ssh_host_${t}_key`);
      expect(mode(key)).toBe(0o600);
      expect(mode(`${key}.pub`)).toBe(0o644);
      // the .pub belongs to the private key (same fingerprint) and carries the node's comment
      expect(fingerprint(key)).toBe(fingerprint(`${key}.pub`));
      expect(fingerprint(`${key}.pub`)).toEndWith(`root@rpinode01 (${bits})`);
      expect(readFileSync(key, 'utf8')).toStartWith('-----BEGIN OPENSSH PRIVATE KEY-----');
    }
    // only the identity in files/, the keygen temp folder is gone
    expect(readdirSync(join(root, 'nodes/rpinode01'))).toEqual(['files']);
    expect(readdirSync(join(files, 'etc')).sort()).toEqual(['hostname', 'machine-id', 'ssh']);
  });

  test('a second call creates nothing and leaves every byte as it was', () => {
    const root = master();
    ensureIdentity(root, 'rpinode01');
    const before = snapshot(root, 'rpinode01');
    expect(ensureIdentity(root, 'rpinode01')).toEqual({ created: [] });
    expect(snapshot(root, 'rpinode01')).toEqual(before);
  });

  test('two hosts get different machine-ids and different host keys', () => {
    const root = master();
    ensureIdentity(root, 'rpinode01');
    ensureIdentity(root, 'rpinode02');
    const a = snapshot(root, 'rpinode01');
    const b = snapshot(root, 'rpinode02');
    expect(readFileSync(join(nodeFilesDir(root, 'rpinode02'), 'etc/hostname'), 'utf8')).toBe('rpinode02\n');
    for (const f of identityFiles().filter((x) => x !== 'etc/hostname'))
      expect([f, a[f]?.equals(b[f] as Buffer)]).toEqual([f, false]);
  });

  test("existing files are kept: an operator's machine-id and hostname survive, the missing files are made", () => {
    const root = master();
    const files = nodeFilesDir(root, 'rpinode03');
    mkdirSync(join(files, 'etc'), { recursive: true });
    writeFileSync(join(files, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
    writeFileSync(join(files, 'etc/hostname'), 'custom-name\n');
    const r = ensureIdentity(root, 'rpinode03');
    expect(r.created).not.toContain('etc/machine-id');
    expect(r.created).not.toContain('etc/hostname');
    expect(r.created).toHaveLength(6);
    expect(readFileSync(join(files, 'etc/machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
    expect(readFileSync(join(files, 'etc/hostname'), 'utf8')).toBe('custom-name\n');
  });

  test('a private key without its .pub gets the .pub derived from it (same key); an orphan .pub is replaced by a matching pair', () => {
    const root = master();
    ensureIdentity(root, 'rpinode04');
    const ssh = join(nodeFilesDir(root, 'rpinode04'), 'etc/ssh');
    const ed = join(ssh, 'ssh_host_ed25519_key');
    const edPriv = readFileSync(ed);
    const edPub = readFileSync(`${ed}.pub`, 'utf8');
    rmSync(`${ed}.pub`);
    // the state a crash between the two moves leaves: a .pub without its private key
    const rsa = join(ssh, 'ssh_host_rsa_key');
    const oldRsaPub = readFileSync(`${rsa}.pub`, 'utf8');
    rmSync(rsa);
    const r = ensureIdentity(root, 'rpinode04');
    expect([...r.created].sort()).toEqual([
      'etc/ssh/ssh_host_ed25519_key.pub',
      'etc/ssh/ssh_host_rsa_key',
      'etc/ssh/ssh_host_rsa_key.pub',
    ]);
    expect(readFileSync(ed)).toEqual(edPriv);
    expect(readFileSync(`${ed}.pub`, 'utf8')).toBe(edPub); // derived again, byte for byte (type, key, comment)
    expect(fingerprint(rsa)).toBe(fingerprint(`${rsa}.pub`));
    expect(readFileSync(`${rsa}.pub`, 'utf8')).not.toBe(oldRsaPub);
  });

  test('refuses a name that is not a host name (it becomes a path) and a file where a folder belongs', () => {
    const root = master();
    for (const bad of ['../etc', 'a/b', '', '-x', 'x'.repeat(64)])
      expect(() => ensureIdentity(root, bad)).toThrow(/is not a host name/);
    expect(existsSync(join(root, 'nodes'))).toBe(false);
    mkdirSync(join(root, 'nodes/rpinode05/files'), { recursive: true });
    writeFileSync(join(root, 'nodes/rpinode05/files/etc'), 'a file');
    expect(() => ensureIdentity(root, 'rpinode05')).toThrow(/files\/etc exists and is not a directory/);
  });
});

describe('newMachineId', () => {
  test("32 lower-case hex and a newline, UUID v4 bits like systemd's, different every time", () => {
    const ids = new Set(Array.from({ length: 50 }, () => newMachineId()));
    expect(ids.size).toBe(50);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}\n$/);
  });
  test('never all zero, even from a source that gives zeros', () => {
    const id = newMachineId((k) => new Uint8Array(k));
    expect(id).toBe('00000000000040008000000000000000\n');
    expect(id.trim()).not.toMatch(/^0+$/);
    expect(() => newMachineId(() => new Uint8Array(3))).toThrow(/16 bytes/);
  });
});

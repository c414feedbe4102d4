import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStamp, verifyStamp } from '../../../../agent/contract/stamp.ts';
import { publish } from '../../../../builder/master/publish.ts';
import { authorizedKeysLine, reportKeysLine } from '../../../../builder/master/keylines.ts';
import { knownHostsLine } from '../../../../builder/sshkeys.ts';
import { generateKeys } from '../../../../builder/master/keys.ts';

let tmp = '';
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'publish-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A fresh master root with a bootable rootfs template and a bootfs template. */
function master(): string {
  const root = join(tmp, `master${n++}`);
  mkdirSync(join(root, 'rootfs/sbin'), { recursive: true });
  mkdirSync(join(root, 'bootfs'), { recursive: true });
  writeFileSync(join(root, 'rootfs/sbin/init'), '#!/bin/sh\n');
  return root;
}
const read = (root: string, f: string) => readFileSync(join(root, 'stamps', f), 'utf8');

describe('publish', () => {
  test('seq increments 1, 2, 3 with ids from the given clock; no tmp files left', async () => {
    const root = master();
    const t = new Date('2026-11-25T11:00:00Z');
    for (const seq of [1, 2, 3]) {
      const s = await publish({ masterRoot: root, name: 'rootfs', now: t });
      expect(s).toEqual({ name: 'rootfs', seq, id: `${seq}-20261125T110000Z`, created: '2026-11-25T11:00:00.000Z' });
      const p = parseStamp(read(root, 'rootfs.stamp'));
      expect(p.ok && p.stamp).toEqual(s);
    }
    expect((await publish({ masterRoot: root, name: 'bootfs' })).seq).toBe(1);
    expect(readdirSync(join(root, 'stamps')).sort()).toEqual([
      'bootfs.manifest',
      'bootfs.stamp',
      'rootfs.manifest',
      'rootfs.stamp',
    ]);
  });

  test('signed: the signature verifies with the generated public key; unsigned publish removes the stale .sig', async () => {
    const root = master();
    const keys = generateKeys(join(tmp, `keys${n++}`));
    const priv = readFileSync(keys.signKey, 'utf8');
    const pub = readFileSync(keys.signKeyPub, 'utf8');
    await publish({ masterRoot: root, name: 'rootfs', signKeyPem: priv });
    const s2 = await publish({ masterRoot: root, name: 'rootfs', signKeyPem: priv });
    expect(s2.seq).toBe(2);
    expect(readdirSync(join(root, 'stamps')).sort()).toEqual([
      'rootfs.manifest',
      'rootfs.manifest.sig',
      'rootfs.stamp',
      'rootfs.stamp.sig',
    ]);
    const text = read(root, 'rootfs.stamp');
    const sig = read(root, 'rootfs.stamp.sig');
    expect(sig).toMatch(/^[A-Za-z0-9+/]{86}==\n$/);
    expect(verifyStamp(text, sig, pub)).toEqual({ ok: true });
    // a key of another master does not verify it
    const other = generateKeys(join(tmp, `keys${n++}`));
    expect(verifyStamp(text, sig, readFileSync(other.signKeyPub, 'utf8')).ok).toBe(false);

    await publish({ masterRoot: root, name: 'rootfs' });
    expect(readdirSync(join(root, 'stamps')).sort()).toEqual(['rootfs.manifest', 'rootfs.stamp']);
    expect(verifyStamp(read(root, 'rootfs.stamp'), null, pub)).toEqual({ ok: false, error: 'unsigned stamp' });
  });

  test('refuses a missing template, a rootfs without /sbin/init, and a non-Ed25519 or path-like key', async () => {
    const root = master();
    rmSync(join(root, 'bootfs'), { recursive: true });
    await expect(publish({ masterRoot: root, name: 'bootfs' })).rejects.toThrow(/not a directory/);
    writeFileSync(join(root, 'bootfs'), 'a file');
    await expect(publish({ masterRoot: root, name: 'bootfs' })).rejects.toThrow(/not a directory/);
    rmSync(join(root, 'rootfs/sbin/init'));
    await expect(publish({ masterRoot: root, name: 'rootfs' })).rejects.toThrow(
      'rootfs template has no /sbin/init: a node would not boot it',
    );
    mkdirSync(join(root, 'rootfs/sbin/init'));
    await expect(publish({ masterRoot: root, name: 'rootfs' })).rejects.toThrow(/no \/sbin\/init/);
    expect(existsSync(join(root, 'stamps/rootfs.stamp'))).toBe(false);
    const k = generateKeys(join(tmp, `keys${n++}`));
    const ok = master();
    await expect(publish({ masterRoot: ok, name: 'rootfs', signKeyPem: k.signKey })).rejects.toThrow(/PEM text/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    }) as string;
    await expect(publish({ masterRoot: ok, name: 'rootfs', signKeyPem: ec })).rejects.toThrow(/not ed25519/);
    expect(existsSync(join(ok, 'stamps/rootfs.stamp'))).toBe(false);
  });

  test('accepts /sbin/init as a dangling absolute symlink and sbin as an absolute symlink inside the template', async () => {
    const root = master();
    rmSync(join(root, 'rootfs/sbin'), { recursive: true });
    mkdirSync(join(root, 'rootfs/usr/sbin'), { recursive: true });
    symlinkSync('/usr/sbin', join(root, 'rootfs/sbin')); // absolute: must resolve inside the template, not on the master
    symlinkSync('/lib/systemd/systemd', join(root, 'rootfs/usr/sbin/init'));
    expect((await publish({ masterRoot: root, name: 'rootfs' })).seq).toBe(1);
    rmSync(join(root, 'rootfs/usr/sbin/init'));
    await expect(publish({ masterRoot: root, name: 'rootfs' })).rejects.toThrow(/no \/sbin\/init/);
  });

  test('a corrupt existing stamp is an error naming the file', async () => {
    const root = master();
    mkdirSync(join(root, 'stamps'));
    writeFileSync(join(root, 'stamps/rootfs.stamp'), 'garbage\n');
    await expect(publish({ masterRoot: root, name: 'rootfs' })).rejects.toThrow(join(root, 'stamps/rootfs.stamp'));
    expect(read(root, 'rootfs.stamp')).toBe('garbage\n');
  });
});

describe('generateKeys', () => {
  test('creates a 0700 dir with OpenSSH node and report keys and PEM stamp key; second call keeps the same bytes', () => {
    const dir = join(tmp, `keys${n++}`, 'sub');
    const k = generateKeys(dir);
    expect(k).toEqual({
      nodeKey: join(dir, 'node_ed25519'),
      nodeKeyPub: join(dir, 'node_ed25519.pub'),
      signKey: join(dir, 'stamp_ed25519.pem'),
      signKeyPub: join(dir, 'stamp_ed25519.pub.pem'),
      reportKey: join(dir, 'report_ed25519'),
      reportKeyPub: join(dir, 'report_ed25519.pub'),
    });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(k.signKey).mode & 0o077).toBe(0);
    expect(statSync(k.nodeKey).mode & 0o077).toBe(0);
    expect(readFileSync(k.nodeKey, 'utf8')).toStartWith('-----BEGIN OPENSSH PRIVATE KEY-----');
    expect(readFileSync(k.nodeKeyPub, 'utf8')).toMatch(/^ssh-ed25519 AAAA\S+ clusterboot-node\n$/);
    expect(statSync(k.reportKey).mode & 0o077).toBe(0);
    expect(readFileSync(k.reportKeyPub, 'utf8')).toMatch(/^ssh-ed25519 AAAA\S+ clusterboot-report\n$/);
    // two keys, not one key twice: sshd applies only the first authorized_keys line of a key
    expect(readFileSync(k.reportKeyPub, 'utf8').split(' ')[1]).not.toBe(
      readFileSync(k.nodeKeyPub, 'utf8').split(' ')[1],
    );
    expect(readFileSync(k.signKey, 'utf8')).toStartWith('-----BEGIN PRIVATE KEY-----');
    expect(readFileSync(k.signKeyPub, 'utf8')).toStartWith('-----BEGIN PUBLIC KEY-----');
    const before = Object.values(k).map((f) => readFileSync(f));
    expect(generateKeys(dir)).toEqual(k);
    expect(Object.values(k).map((f) => readFileSync(f))).toEqual(before);
    // a lost public half is re-derived, identical
    rmSync(k.nodeKeyPub);
    rmSync(k.signKeyPub);
    generateKeys(dir);
    expect(readFileSync(k.signKeyPub, 'utf8')).toBe((before[3] as Buffer).toString('utf8'));
    expect(readFileSync(k.nodeKeyPub, 'utf8').split(' ')[1]).toBe((before[1] as Buffer).toString('utf8').split(' ')[1]);
  });

  test('a key folder from before report keys gets one on the next call, once; the other keys keep their bytes', () => {
    const dir = join(tmp, `keys${n++}`);
    const k = generateKeys(dir);
    rmSync(k.reportKey);
    rmSync(k.reportKeyPub);
    const others = [k.nodeKey, k.nodeKeyPub, k.signKey, k.signKeyPub].map((f) => readFileSync(f));
    expect(generateKeys(dir)).toEqual(k);
    const report = readFileSync(k.reportKeyPub, 'utf8');
    expect(report).toMatch(/^ssh-ed25519 AAAA\S+ clusterboot-report\n$/);
    expect([k.nodeKey, k.nodeKeyPub, k.signKey, k.signKeyPub].map((f) => readFileSync(f))).toEqual(others);
    generateKeys(dir);
    expect(readFileSync(k.reportKeyPub, 'utf8')).toBe(report);
    // a report public half without its private key is refused like the node key's
    rmSync(k.reportKey);
    expect(() => generateKeys(dir)).toThrow(/report_ed25519\.pub exists without its private key/);
  });

  test('a public key without its private key is an error, not an overwrite', () => {
    const dir = join(tmp, `keys${n++}`);
    const k = generateKeys(dir);
    rmSync(k.signKey);
    const pub = readFileSync(k.signKeyPub);
    expect(() => generateKeys(dir)).toThrow(/without its private key/);
    expect(readFileSync(k.signKeyPub)).toEqual(pub);
  });
});

describe('authorized_keys and known_hosts lines', () => {
  const PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node\n';
  test('authorizedKeysLine format', () => {
    expect(authorizedKeysLine(PUB, '/data/slaves')).toBe(
      'restrict,command="/usr/bin/rrsync -ro /data/slaves" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node',
    );
    expect(authorizedKeysLine(PUB, '/data/slaves', '/usr/local/bin/rrsync')).toStartWith(
      'restrict,command="/usr/local/bin/rrsync -ro /data/slaves" ',
    );
  });
  test('authorizedKeysLine rejects unsafe roots and bad keys', () => {
    for (const root of ['/data/my slaves', 'data/slaves', '/data/"x', "/data/'x", '/data/../etc', '/data/x,y', '']) {
      expect(() => authorizedKeysLine(PUB, root)).toThrow(/masterRoot/);
    }
    expect(() => authorizedKeysLine(PUB, '/data/slaves', 'rrsync')).toThrow(/rrsync/);
    expect(() => authorizedKeysLine('', '/data/slaves')).toThrow(/one OpenSSH public key line/);
    expect(() => authorizedKeysLine(PUB + PUB, '/data/slaves')).toThrow(/one OpenSSH public key line/);
    expect(() => authorizedKeysLine(PUB.replace('ssh-ed25519', 'ssh-rsa'), '/data/slaves')).toThrow(/does not match/);
  });
  test('reportKeysLine: write-only rrsync into <master root>/reports, a trailing slash does not double', () => {
    const line =
      'restrict,command="/usr/bin/rrsync -wo -no-lock -no-del /data/slaves/reports" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node';
    expect(reportKeysLine(PUB, '/data/slaves')).toBe(line);
    expect(reportKeysLine(PUB, '/data/slaves/')).toBe(line);
    expect(reportKeysLine(PUB, '/data/slaves', '/usr/local/bin/rrsync')).toStartWith(
      'restrict,command="/usr/local/bin/rrsync -wo -no-lock -no-del /data/slaves/reports" ',
    );
  });
  test('reportKeysLine rejects what authorizedKeysLine rejects', () => {
    for (const root of ['/data/my slaves', 'data/slaves', '/data/"x', '/data/../etc', '/data/x,y', '']) {
      expect(() => reportKeysLine(PUB, root)).toThrow(/reportKeysLine: masterRoot/);
    }
    expect(() => reportKeysLine(PUB, '/data/slaves', 'rrsync')).toThrow(/rrsync/);
    expect(() => reportKeysLine('', '/data/slaves')).toThrow(/one OpenSSH public key line/);
    expect(() => reportKeysLine(PUB.replace('ssh-ed25519', 'ssh-rsa'), '/data/slaves')).toThrow(/does not match/);
  });
  test('knownHostsLine pins the key under the HostKeyAlias', () => {
    expect(
      knownHostsLine('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC root@master\n'),
    ).toBe('clusterboot-master ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC');
    expect(() => knownHostsLine('hello world')).toThrow();
  });
  test('lines built from a generated key', () => {
    const k = generateKeys(join(tmp, `keys${n++}`));
    expect(authorizedKeysLine(readFileSync(k.nodeKeyPub, 'utf8'), '/data/slaves')).toMatch(
      /^restrict,command="\/usr\/bin\/rrsync -ro \/data\/slaves" ssh-ed25519 AAAA[A-Za-z0-9+/]+=* clusterboot-node$/,
    );
  });
});

// rrsync (rsync 3.x's python script) as the forced command: checked against the installed /usr/bin/rrsync.
describe('rrsync -ro', () => {
  const RRSYNC = '/usr/bin/rrsync';
  test('is installed', () => {
    expect(existsSync(RRSYNC)).toBe(true);
  });

  test('refuses an upload: exit 1, "sending to read-only server is not allowed"', () => {
    const root = master();
    const r = spawnSync('python3', [RRSYNC, '-ro', root], {
      env: { ...process.env, SSH_ORIGINAL_COMMAND: 'rsync --server -logDtpre.iLsfxCIvu . rootfs/' },
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('sending to read-only server is not allowed');
  });

  // A real rsync through the exact forced command of authorizedKeysLine, with a fake "ssh" that runs it as sshd
  // would (`sh -c <command>` with SSH_ORIGINAL_COMMAND set): pull with --delete works, push and '..' do not.
  const haveRsync = spawnSync('rsync', ['--version']).status === 0;
  test.skipIf(!haveRsync)('the forced command allows a pull and refuses a push and an escape', () => {
    const root = master();
    const forced = /command="([^"]+)"/.exec(
      authorizedKeysLine('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC x', root),
    )?.[1];
    expect(forced).toBe(`/usr/bin/rrsync -ro ${root}`);
    const fakeSsh = join(tmp, `fakessh${n++}`);
    writeFileSync(fakeSsh, `#!/bin/sh\nshift\nSSH_ORIGINAL_COMMAND="$*" exec sh -c '${forced}'\n`);
    chmodSync(fakeSsh, 0o755);
    const rsync = (...args: string[]) =>
      spawnSync('rsync', ['-e', fakeSsh, ...args], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });

    const dst = join(tmp, `dst${n++}`);
    mkdirSync(dst);
    writeFileSync(join(dst, 'stale'), 'x');
    const pull = rsync('-a', '--delete', 'master:rootfs/', `${dst}/`);
    expect(pull.status).toBe(0);
    expect(readdirSync(dst).sort()).toEqual(['sbin']);

    const push = rsync('-a', `${dst}/`, 'master:rootfs/');
    expect(push.status).not.toBe(0);
    expect(push.stderr).toContain('sending to read-only server is not allowed');

    const escape = rsync('-a', 'master:../', `${dst}/`);
    expect(escape.status).not.toBe(0);
    expect(escape.stderr).toContain('do not use .. in arg');
  });

  // The report key's forced command, the same way: a node can drop its report into reports/ and read nothing back.
  test.skipIf(!haveRsync)("reportKeysLine's forced command allows a push into reports/ and refuses a pull", () => {
    const root = master();
    mkdirSync(join(root, 'reports'));
    const forced = /command="([^"]+)"/.exec(
      reportKeysLine('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC x', root),
    )?.[1];
    expect(forced).toBe(`/usr/bin/rrsync -wo -no-lock -no-del ${root}/reports`);
    const fakeSsh = join(tmp, `fakessh${n++}`);
    writeFileSync(fakeSsh, `#!/bin/sh\nshift\nSSH_ORIGINAL_COMMAND="$*" exec sh -c '${forced}'\n`);
    chmodSync(fakeSsh, 0o755);
    const rsync = (...args: string[]) =>
      spawnSync('rsync', ['-e', fakeSsh, ...args], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });

    const report = join(tmp, `b8-27-eb-cb-63-18.json`);
    writeFileSync(report, '{"schema":1}\n');
    // exactly as agent/reportsend.ts pushes: into the directory (rrsync pins a named leaf, so a second push
    // naming the file itself could not replace it), twice, the second replacing the first
    for (const body of ['{"schema":1}\n', '{"schema":1,"second":true}\n']) {
      writeFileSync(report, body);
      const push = rsync('-I', '--chmod=F0644', report, 'master:./');
      expect(push.stderr).toBe('');
      expect(push.status).toBe(0);
      expect(readFileSync(join(root, 'reports/b8-27-eb-cb-63-18.json'), 'utf8')).toBe(body);
    }
    // and it cannot delete other nodes' reports
    writeFileSync(join(root, 'reports/other.json'), '{}');
    const empty = join(tmp, `empty${n++}`);
    mkdirSync(empty);
    const del = rsync('-r', '--delete', `${empty}/`, 'master:./');
    expect(del.status).not.toBe(0);
    expect(readFileSync(join(root, 'reports/other.json'), 'utf8')).toBe('{}');

    const pull = rsync('master:b8-27-eb-cb-63-18.json', join(tmp, `pulled${n++}`));
    expect(pull.status).not.toBe(0);
    expect(pull.stderr).toContain('reading from write-only server is not allowed');
  });
});

// `builder pack` end to end on the host's own (merged-/usr) root as a sysroot: layout and reproducibility.
import { afterAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import { accessFiles, mergedUsr, pack, topLevelLinks } from '../../../../builder/image/pack.ts';
import { generateKeys } from '../../../../builder/master/keys.ts';

const work = mkdtempSync(join(tmpdir(), 'cb-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const hostHasTools = [
  '/bin/busybox',
  '/usr/bin/rsync',
  '/usr/bin/ssh',
  '/sbin/sfdisk',
  '/sbin/mke2fs',
  '/sbin/mkfs.fat',
].every((p) => existsSync(p));

const packInto = (out: string, epoch: number) =>
  pack({
    sysroot: '/',
    agent: '/usr/bin/true',
    skel: join(REPO, 'initramfs-skel'),
    out,
    modules: [],
    compress: 'none',
    arch: 'x86_64',
    sourceDateEpoch: epoch,
    extra: [{ path: 'etc/clusterboot/known_hosts', data: Buffer.from('clusterboot-master ssh-ed25519 AAAA\n') }],
  });

describe('pack', () => {
  test('entries under a linked top-level directory move to where the sysroot keeps them', () => {
    const fake = mkdtempSync(join(tmpdir(), 'cb-sysroot-'));
    execFileSync('mkdir', ['-p', join(fake, 'usr/bin')]);
    execFileSync('ln', ['-s', 'usr/bin', join(fake, 'bin')]);
    expect(topLevelLinks(fake)).toEqual(new Map([['bin', 'usr/bin']]));
    expect(
      mergedUsr(fake, [
        { kind: 'symlink', path: 'bin', target: 'usr/bin' },
        { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
        { kind: 'dir', path: 'etc' },
      ]),
    ).toEqual([
      { kind: 'symlink', path: 'usr/bin/sh', target: 'busybox' },
      { kind: 'dir', path: 'etc' },
      { kind: 'symlink', path: 'bin', target: 'usr/bin' },
    ]);
    rmSync(fake, { recursive: true });
  });

  test.skipIf(!hostHasTools)(
    'packs a merged-/usr sysroot; same inputs and epoch give the same bytes, another epoch does not',
    async () => {
      const a = await packInto(join(work, 'a'), 1700000000);
      const b = await packInto(join(work, 'b'), 1700000000);
      const c = await packInto(join(work, 'c'), 1700000001);
      const bytes = (r: { uimagePath: string }) => readFileSync(r.uimagePath);
      expect(bytes(a).equals(bytes(b))).toBe(true);
      expect(bytes(a).equals(bytes(c))).toBe(false);
      const list = execFileSync('cpio', ['-it', '--quiet'], { input: readFileSync(a.igzPath) })
        .toString()
        .split('\n');
      for (const p of [
        'init',
        'bin',
        'usr/bin/busybox',
        'usr/bin/sh',
        'usr/bin/rsync',
        'usr/sbin/sfdisk',
        'usr/sbin/clusterboot-agent',
        'sbin',
        'dev/console',
        'etc/udhcpc/default.script',
        'etc/clusterboot/known_hosts',
      ]) {
        expect(list).toContain(p);
      }
      expect(a.missingLibraries).toEqual([]);
    },
  );
});

describe('accessFiles', () => {
  const HOST = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC root@master\n';
  test("the report key is packed (0600, the private key's bytes) only when asked; the default leaves it out", () => {
    const keys = join(work, 'keys');
    const k = generateKeys(keys);
    const paths = (fs: { path: string }[]) => fs.map((f) => f.path);
    expect(paths(accessFiles({ keysDir: keys, masterHostKeyPub: HOST, sign: false }))).toEqual([
      'etc/clusterboot/node_key',
      'etc/clusterboot/known_hosts',
    ]);
    const files = accessFiles({ keysDir: keys, masterHostKeyPub: HOST, sign: true, report: true });
    expect(paths(files)).toEqual([
      'etc/clusterboot/node_key',
      'etc/clusterboot/known_hosts',
      'etc/clusterboot/stamp.pub.pem',
      'etc/clusterboot/report_key',
    ]);
    const rk = files.find((f) => f.path === 'etc/clusterboot/report_key');
    expect(rk?.mode).toBe(0o600);
    expect(Buffer.from(rk?.data ?? []).equals(readFileSync(k.reportKey))).toBe(true);
    // the node key and the report key are different files (two authorized_keys lines with different rights)
    expect(Buffer.from(rk?.data ?? []).equals(readFileSync(k.nodeKey))).toBe(false);
  });
  test('every master pinned under the one alias: the primary and its mirrors (ssh accepts any line that matches)', () => {
    const keys = join(work, 'keys2');
    generateKeys(keys);
    const MIRROR = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBJ3PmS2n7ZlN4ajnkjN2gNPb2ZQ0gT6sHzwXNSG9v3P root@mirror\n';
    const kh = accessFiles({ keysDir: keys, masterHostKeyPub: [HOST, MIRROR], sign: false }).find(
      (f) => f.path === 'etc/clusterboot/known_hosts',
    );
    const lines = Buffer.from(kh?.data ?? [])
      .toString()
      .split('\n')
      .filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.startsWith('clusterboot-master ssh-ed25519 '))).toBe(true);
    expect(lines[1]).toContain('AAAAIBJ3PmS2n7ZlN4ajnkjN2gNPb2ZQ0gT6sHzwXNSG9v3P');
  });
});

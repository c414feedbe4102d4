// The root template's clean-up (pure, over a file list) and the boot firmware set: what the seed removed by hand.
import { describe, expect, test } from 'bun:test';
import {
  BARE_HOSTS,
  bootConfig,
  cleanAuthorizedKeys,
  cleanFstab,
  copiedEntries,
  firmwareFiles,
  relativeTo,
  rsyncExactRule,
  templateCleanup,
  type TreeEntry,
} from '../../../../builder/master/template.ts';

const f = (path: string): TreeEntry => ({ path, kind: 'file' });
const d = (path: string): TreeEntry => ({ path, kind: 'dir' });

const SYSTEM: TreeEntry[] = [
  d('bin'),
  f('bin/busybox'),
  d('data'),
  d('data/slaves'),
  f('data/slaves/partitions.sfdisk'),
  d('etc'),
  d('etc/clusterboot'),
  f('etc/clusterboot/node_ed25519'),
  d('etc/dnsmasq.d'),
  f('etc/dnsmasq.d/clusterboot.conf'),
  f('etc/dnsmasq.d/README'),
  f('etc/fstab'),
  f('etc/hosts'),
  d('etc/ssh'),
  f('etc/ssh/sshd_config'),
  f('etc/ssh/ssh_host_ed25519_key'),
  f('etc/ssh/ssh_host_ed25519_key.pub'),
  d('etc/systemd/system/multi-user.target.wants'),
  { path: 'etc/systemd/system/multi-user.target.wants/dnsmasq.service', kind: 'link' },
  { path: 'etc/systemd/system/multi-user.target.wants/ssh.service', kind: 'link' },
  d('etc/udev/rules.d'),
  f('etc/udev/rules.d/70-persistent-net.rules'),
  f('etc/udev/rules.d/99-local.rules'),
  d('home'),
  d('home/pi'),
  f('home/pi/.bash_history'),
  f('home/pi/.zsh_history'),
  f('home/pi/.bashrc'),
  d('root'),
  f('root/.bash_history'),
  f('root/.profile'),
  d('root/.ssh'),
  f('root/.ssh/authorized_keys'),
  d('sbin'),
  { path: 'sbin/init', kind: 'link' },
  d('srv'),
  d('srv/slaves'),
  f('srv/slaves/x'),
  d('tmp'),
  f('tmp/build.log'),
  d('var/cache/apt'),
  d('var/cache/apt/archives'),
  d('var/cache/apt/archives/partial'),
  f('var/cache/apt/archives/rsync.deb'),
  f('var/cache/apt/pkgcache.bin'),
  d('var/lib/apt/lists'),
  f('var/lib/apt/lists/lock'),
  f('var/lib/apt/lists/deb.debian.org_InRelease'),
  d('var/lib/clusterboot'),
  f('var/lib/clusterboot/sync-slot'),
  f('var/lib/misc/dnsmasq.leases'),
  f('var/swap'),
];

const NODE_BLOB = 'AAAAC3NzaC1lZDI1NTE5AAAAINodeKey';
const texts = {
  'etc/fstab':
    'proc /proc proc defaults 0 0\nPARTUUID=1-02 / ext4 defaults 0 1\n/dev/mmcblk0p1 /boot vfat defaults 0 2\nUUID=abc /data ext4 defaults 0 2\n#/dev/sdb1 / ext4\ntmpfs /tmp tmpfs defaults 0 0\n',
  'etc/hosts': '127.0.0.1 localhost\n127.0.1.1 master\n',
  'root/.ssh/authorized_keys': `ssh-ed25519 AAAAadmin admin@laptop\nrestrict,command="/usr/bin/rrsync -ro /data/slaves" ssh-ed25519 ${NODE_BLOB} clusterboot-node\n`,
};

describe('template clean-up', () => {
  const plan = templateCleanup({
    entries: SYSTEM,
    texts,
    exclude: ['srv/slaves', 'not/there'],
    clusterKeys: [NODE_BLOB],
  });

  test("leaves out the seed's clutter and the master's secrets, and nothing else", () => {
    expect(plan.exclude).toEqual([
      'data',
      'etc/clusterboot',
      'etc/dnsmasq.d/clusterboot.conf',
      'etc/ssh/ssh_host_ed25519_key',
      'etc/ssh/ssh_host_ed25519_key.pub',
      'etc/systemd/system/multi-user.target.wants/dnsmasq.service',
      'etc/udev/rules.d/70-persistent-net.rules',
      'home/pi/.bash_history',
      'home/pi/.zsh_history',
      'root/.bash_history',
      'srv/slaves',
      'tmp/build.log',
      'var/cache/apt/archives/rsync.deb',
      'var/cache/apt/pkgcache.bin',
      'var/lib/apt/lists/deb.debian.org_InRelease',
      'var/lib/clusterboot',
      'var/lib/misc/dnsmasq.leases',
      'var/swap',
    ]);
    const kept = copiedEntries(SYSTEM, plan.exclude).map((e) => e.path);
    for (const p of [
      'etc/dnsmasq.d/README',
      'etc/ssh/sshd_config',
      'etc/systemd/system/multi-user.target.wants/ssh.service',
      'etc/udev/rules.d/99-local.rules',
      'home/pi/.bashrc',
      'root/.profile',
      'sbin/init',
      'tmp',
      'var/cache/apt/archives/partial',
      'var/lib/apt/lists/lock',
    ])
      expect(kept).toContain(p);
    expect(kept.filter((p) => p.startsWith('data') || p.startsWith('etc/clusterboot'))).toEqual([]);
    // 18 exclusions, 5 of them directories with 5 entries below them
    expect(kept.length).toBe(SYSTEM.length - 23);
  });

  test('rewrites fstab (no /, /boot, /data lines), a bare hosts, authorized_keys without the node key', () => {
    const byPath = Object.fromEntries(plan.rewrite.map((r) => [r.path, r.text]));
    expect(Object.keys(byPath).sort()).toEqual(['etc/fstab', 'etc/hosts', 'root/.ssh/authorized_keys']);
    expect(byPath['etc/fstab']?.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([
      'proc /proc proc defaults 0 0',
      'tmpfs /tmp tmpfs defaults 0 0',
    ]);
    expect(byPath['etc/fstab']).toContain('#PARTUUID=1-02 / ext4 defaults 0 1');
    expect(byPath['etc/hosts']).toBe(BARE_HOSTS);
    expect(byPath['root/.ssh/authorized_keys']).toBe('ssh-ed25519 AAAAadmin admin@laptop\n');
  });

  test('a clean system needs no rewrite; the clean-up of a clean-up is the same', () => {
    const clean = templateCleanup({
      entries: copiedEntries(SYSTEM, plan.exclude),
      texts: Object.fromEntries(plan.rewrite.map((r) => [r.path, r.text])),
      exclude: [],
      clusterKeys: [NODE_BLOB],
    });
    expect(clean.rewrite).toEqual([]);
    expect(clean.exclude).toEqual([]);
  });

  test('an excluded authorized_keys is not rewritten', () => {
    const p = templateCleanup({ entries: SYSTEM, texts, exclude: ['root'], clusterKeys: [NODE_BLOB] });
    expect(p.exclude).toContain('root');
    expect(p.exclude.filter((x) => x.startsWith('root/'))).toEqual([]);
    expect(p.rewrite.map((r) => r.path)).not.toContain('root/.ssh/authorized_keys');
  });

  test('fstab: every device spelling, comments and short lines kept', () => {
    expect(
      cleanFstab('LABEL=root  /  ext4 x 0 1\n# a comment\n\nUUID=1 /data/big xfs x 0 0\n/dev/x /home ext4 x 0 0'),
    ).toBe('#LABEL=root  /  ext4 x 0 1\n# a comment\n\n#UUID=1 /data/big xfs x 0 0\n/dev/x /home ext4 x 0 0');
    expect(cleanFstab('/dev/mmcblk0p1 /boot/firmware vfat defaults 0 2')).toBe(
      '#/dev/mmcblk0p1 /boot/firmware vfat defaults 0 2',
    );
    expect(cleanAuthorizedKeys('a b c\n', [''])).toBe('a b c\n');
  });

  test('paths under the system root; exact rsync rules', () => {
    expect(relativeTo('/', '/data/slaves')).toBe('data/slaves');
    expect(relativeTo('/srv/sys', '/srv/sys/etc/clusterboot')).toBe('etc/clusterboot');
    expect(relativeTo('/srv/sys', '/srv/system')).toBe(null);
    expect(relativeTo('/srv/sys', '/srv/sys')).toBe('');
    expect(rsyncExactRule('etc/fstab')).toBe('/etc/fstab');
    expect(rsyncExactRule('home/a*b/[x]')).toBe('/home/a\\*b/\\[x]');
  });
});

describe('boot firmware', () => {
  test('firmware, device trees and overlays; not kernels, initramfs, cmdline or another U-Boot', () => {
    expect(
      firmwareFiles([
        'bootcode.bin',
        'start4.elf',
        'fixup4.dat',
        'bcm2711-rpi-4-b.dtb',
        'kernel8.img',
        'kernel_2712.img',
        'initramfs8',
        'cmdline.txt',
        'config.txt',
        'u-boot.bin',
        'issue.txt',
      ]),
    ).toEqual(['bcm2711-rpi-4-b.dtb', 'bootcode.bin', 'fixup4.dat', 'start4.elf']);
  });

  test("config.txt: the seed's grep -v initramfs, kernel=u-boot.bin, 64-bit; idempotent", () => {
    const c = bootConfig('dtparam=audio=on\ninitramfs initrd.img followkernel\nkernel=kernel8.img\narm_64bit=0\n');
    expect(c).toContain('dtparam=audio=on\n');
    expect(c).not.toContain('initramfs');
    expect(c).not.toContain('kernel8');
    expect(c).toContain('[all]\narm_64bit=1\nkernel=u-boot.bin\n');
    expect(bootConfig(c)).toBe(c);
    expect(bootConfig(null)).toStartWith('# clusterboot');
  });
});

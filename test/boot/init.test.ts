// `builder init` makes a master from a running system: here the rig's Debian arm64 sysroot stands in for that system
// (with an init, firmware files, U-Boot and the clutter a used machine has: shell histories, persistent-net rules,
// fstab lines, apt caches, a master's own keys and /data), and init runs in the virtual cluster's network namespace
// against a directory prefix, so nothing of the host is touched. Two nodes boot from blank disks from what it made,
// through the dnsmasq it started itself (no systemd in the namespace) and the rig's sshd on the authorized_keys it
// wrote. Then init runs again and changes nothing, and `builder doctor` passes on that master.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../builder/image/agentbuild.ts';
import { parseSfdiskDump } from '../../agent/plans/sfdisk.ts';
import { agentBinary, sysroot } from '../rig/images.ts';
import { MASTER_IP, VirtualCluster, nodeSpecs, type NodeSpec } from '../rig/cluster.ts';
import { TEMPLATE_INIT, testKeys } from '../rig/master.ts';
import type { BootResult } from '../rig/boot.ts';

const BUN = join(REPO, 'node_modules/.bin/bun');
const [a, b] = nodeSpecs(2) as [NodeSpec, NodeSpec];
let work = '';
let prefix = '';
let system = '';
let vc: InitCluster;
let first: { status: number; output: string };
const hostPaths = ['/data/slaves', '/etc/clusterboot', '/var/lib/clusterboot', '/etc/dnsmasq.d/clusterboot.conf'];
const hostBefore = new Map<string, string>();

/** The rig's cluster with the paths `builder init --prefix` chose: its sshd reads init's authorized_keys. */
class InitCluster extends VirtualCluster {
  override get masterRoot(): string {
    return join(prefix, 'data/slaves');
  }
  override get conf(): string {
    return join(prefix, 'etc/dnsmasq.d/clusterboot.conf');
  }
  override get authorizedKeys(): string {
    return join(prefix, 'root/.ssh/authorized_keys');
  }
  override get stateDir(): string {
    return join(prefix, 'var/lib/clusterboot');
  }
  override get leaseFile(): string {
    return join(prefix, 'var/lib/misc/dnsmasq.leases');
  }
}

const bootargs = 'console=ttyAMA0 panic=10 disk=/dev/vda retries=3 leds=gpiochip0:4,5,6';

/** `builder init` in the cluster's namespace, as root on the master would run it. */
async function init(): Promise<{ status: number; output: string }> {
  const agent = await agentBinary();
  const r = spawnSync(
    'ip',
    [
      ...['netns', 'exec', vc.ns, BUN, join(REPO, 'builder/cli.ts'), 'init'],
      ...['--nodes', join(work, 'nodes.txt'), '--interface', 'cbbr0', '--prefix', prefix, '--system-root', system],
      ...['--master-host-key', `${testKeys().hostKey}.pub`, '--agent', agent, '--modules', 'i6300esb'],
      ...['--card-size', '2GB', '--exclude', '/lib/modules', '--bootargs', bootargs, '--domain', 'cluster.test'],
      '--no-apt',
    ],
    { encoding: 'utf8', timeout: 600_000 },
  );
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

/** Every entry under dir: path, type, mode, size, mtime and content: equal hashes mean nothing was written. */
function treeHash(dir: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    for (const n of readdirSync(join(dir, rel)).sort()) {
      const p = `${rel}/${n}`;
      const st = lstatSync(join(dir, p), { bigint: true });
      h.update(`${p} ${st.mode} ${st.size} ${st.mtimeNs}\n`);
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) h.update(readlinkSync(join(dir, p)));
      else if (st.isFile()) h.update(readFileSync(join(dir, p)));
    }
  };
  walk('');
  return h.digest('hex');
}

const hostState = (p: string) => {
  const st = statSync(p, { throwIfNoEntry: false });
  return st ? `${st.mode} ${st.mtimeMs}` : 'missing';
};

/** The stand-in for the running system: the sysroot (hard links: it is never written), an init, firmware, clutter. */
function standIn(sysrootDir: string): void {
  const r = spawnSync('cp', ['-al', sysrootDir, system]);
  if (r.status !== 0) cpSync(sysrootDir, system, { recursive: true, verbatimSymlinks: true });
  const put = (rel: string, data: string, mode = 0o644) => {
    const p = join(system, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    rmSync(p, { force: true }); // a new inode: the sysroot's file stays as it is
    writeFileSync(p, data, { mode });
  };
  put('sbin/init', TEMPLATE_INIT, 0o755);
  rmSync(join(system, 'bin/sh'), { force: true });
  symlinkSync('busybox', join(system, 'bin/sh'));
  put('etc/template-version', 'init\n');
  put('usr/share/data/readme', 'the stand-in of a running system\n');
  put('boot/firmware/start4.elf', 'firmware start4\n');
  put('boot/firmware/fixup4.dat', 'firmware fixup4\n');
  put('boot/firmware/bootcode.bin', 'firmware bootcode\n');
  put('boot/firmware/bcm2711-rpi-4-b.dtb', 'device tree\n');
  put('boot/firmware/overlays/disable-bt.dtbo', 'overlay\n');
  put('boot/firmware/kernel8.img', 'the Pi kernel (U-Boot replaces it)\n');
  put('boot/firmware/cmdline.txt', 'console=serial0 root=PARTUUID=1234-02\n');
  put('boot/firmware/config.txt', 'dtparam=audio=on\ninitramfs initrd.img followkernel\nkernel=kernel8.img\n');
  put('usr/lib/u-boot/rpi_arm64/u-boot.bin', 'U-Boot for the Pi\n');
  put('root/.bash_history', 'rm -rf /tmp/x\n');
  put('home/pi/.bash_history', 'sudo -i\n');
  put(
    'etc/udev/rules.d/70-persistent-net.rules',
    'SUBSYSTEM=="net", ATTR{address}=="b8:27:eb:00:00:01", NAME="eth0"\n',
  );
  put(
    'etc/fstab',
    'proc /proc proc defaults 0 0\nPARTUUID=1234-02 / ext4 defaults,noatime 0 1\nPARTUUID=1234-01 /boot/firmware vfat defaults 0 2\n/dev/sda1 /data auto defaults 0 1\ntmpfs /tmp tmpfs defaults 0 0\n',
  );
  put('etc/hosts', '127.0.0.1 localhost\n127.0.1.1 master\n');
  put('var/cache/apt/archives/rsync_3.5.0_arm64.deb', 'a downloaded package\n');
  put('var/cache/apt/pkgcache.bin', 'apt cache\n');
  put('var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease', 'an apt list\n');
  put('etc/clusterboot/node_ed25519', 'the master-system clusterboot key (must not reach the nodes)\n', 0o600);
  put('var/lib/clusterboot/sync-slot', '#!/bin/sh\n', 0o755);
  put('etc/ssh/ssh_host_ed25519_key', 'the master host key (must not reach the nodes)\n', 0o600);
  put('data/slaves/rootfs/secret', 'the seed master tree\n');
}

beforeAll(async () => {
  for (const p of hostPaths) hostBefore.set(p, hostState(p));
  const sr = await sysroot();
  work = mkdtempSync(join(tmpdir(), 'cb-init-'));
  chmodSync(work, 0o755); // dnsmasq drops to nobody: it must reach tftp/
  prefix = join(work, 'm');
  system = join(work, 'system');
  standIn(sr.root);
  writeFileSync(
    join(work, 'nodes.txt'),
    `# the seed's form\n${[a, b].map((n) => `dhcp-host=${n.mac},,${n.hostname},${n.ip},1h`).join('\n')}\n`,
  );
  vc = new InitCluster(work, [a, b], join(sr.root, 'bin/busybox'), { bootargs });
  vc.network(2);
  first = await init();
  if (first.status !== 0) throw new Error(`builder init failed:\n${first.output}`);
  const tftp = join(vc.masterRoot, 'tftp');
  vc.img = {
    dir: tftp,
    kernel: join(tftp, 'vmlinuz'),
    initramfs: join(tftp, 'initramfs.igz.uimg'),
    sysroot: sr.root,
    kernelVersion: sr.kernelVersion,
    pack: {} as never,
  };
  await vc.startMaster({ dnsmasq: false });
  vc.blankDisks([a, b], 2048);
}, 15 * 60_000);

afterAll(async () => {
  await vc?.stop();
  const pid = Number(
    existsSync(join(prefix, 'var/lib/clusterboot/dnsmasq.pid'))
      ? readFileSync(join(prefix, 'var/lib/clusterboot/dnsmasq.pid'), 'utf8')
      : 0,
  );
  if (pid > 0) spawnSync('kill', [String(pid)]);
  if (process.env.KEEP) console.error(`kept ${work}`);
  else if (work) rmSync(work, { recursive: true, force: true });
});

describe('builder init', () => {
  test('made the seed layout, the keys, a table for the card, bootfs/ and a clean template', () => {
    console.error(
      first.output
        .split('\n')
        .filter((l) => l.startsWith('builder:') || l.startsWith('init:'))
        .join('\n'),
    );
    const root = vc.masterRoot;
    for (const p of ['partitions.sfdisk', 'stamps/rootfs.stamp', 'stamps/bootfs.stamp', 'tftp/boot.scr.uimg'])
      expect(existsSync(join(root, p))).toBe(true);
    // the node list and the reports: in the state dir, not in the master root the node key reads
    expect(existsSync(join(vc.stateDir, 'nodes.list'))).toBe(true);
    expect(existsSync(join(root, 'nodes.list'))).toBe(false);
    for (const k of ['node_ed25519', 'report_ed25519', 'stamp_ed25519.pem'])
      expect(statSync(join(prefix, 'etc/clusterboot', k)).mode & 0o777).toBe(0o600);
    const t = parseSfdiskDump(readFileSync(join(root, 'partitions.sfdisk'), 'utf8'));
    expect(t.ok).toBe(true);
    if (t.ok) {
      expect(t.table.partitions.map((p) => p.index)).toEqual([1, 2, 3, 4]);
      const end = Math.max(...t.table.partitions.map((p) => p.start + p.size));
      expect(end * 512).toBeLessThanOrEqual(2e9);
    }
    // bootfs: the firmware, the device trees and overlays, U-Boot, and the seed's config.txt
    const bootfs = join(root, 'bootfs');
    expect(readdirSync(bootfs).sort()).toEqual([
      'bcm2711-rpi-4-b.dtb',
      'bootcode.bin',
      'config.txt',
      'fixup4.dat',
      'overlays',
      'start4.elf',
      'u-boot.bin',
    ]);
    expect(readFileSync(join(bootfs, 'u-boot.bin'), 'utf8')).toBe('U-Boot for the Pi\n');
    const config = readFileSync(join(bootfs, 'config.txt'), 'utf8');
    expect(config).toContain('dtparam=audio=on');
    expect(config).toContain('kernel=u-boot.bin');
    expect(config).not.toContain('initramfs');
    expect(config).not.toContain('kernel8.img');
    // the template: the system's files, without the seed's clean-ups' targets and the master's secrets
    const rootfs = join(root, 'rootfs');
    expect(readFileSync(join(rootfs, 'sbin/init'), 'utf8')).toBe(TEMPLATE_INIT);
    expect(existsSync(join(rootfs, 'usr/bin/rsync'))).toBe(true);
    for (const gone of [
      'root/.bash_history',
      'home/pi/.bash_history',
      'etc/udev/rules.d/70-persistent-net.rules',
      'var/cache/apt/archives/rsync_3.5.0_arm64.deb',
      'var/cache/apt/pkgcache.bin',
      'var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease',
      'etc/clusterboot',
      'var/lib/clusterboot',
      'etc/ssh/ssh_host_ed25519_key',
      'data',
      'lib/modules',
    ])
      expect(existsSync(join(rootfs, gone))).toBe(false);
    expect(existsSync(join(rootfs, 'var/cache/apt/archives'))).toBe(true);
    const fstab = readFileSync(join(rootfs, 'etc/fstab'), 'utf8');
    expect(fstab.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([
      'proc /proc proc defaults 0 0',
      'tmpfs /tmp tmpfs defaults 0 0',
    ]);
    expect(readFileSync(join(rootfs, 'etc/hosts'), 'utf8')).not.toContain('127.0.1.1');
    // the running system itself was only read
    expect(existsSync(join(system, 'root/.bash_history'))).toBe(true);
    expect(readFileSync(join(system, 'etc/hosts'), 'utf8')).toContain('127.0.1.1 master');
    expect(first.output).toContain('start dnsmasq (no systemd here');
    expect(first.output).toContain('sfdisk /dev/sdX');
  });

  test(
    'two nodes boot from blank disks from what it made, through its dnsmasq',
    async () => {
      const t0 = performance.now();
      const runs = await Promise.all([vc.bootUntilUp(a, 0), vc.bootUntilUp(b, 1)]);
      const secs = (performance.now() - t0) / 1000;
      console.error(`cold boot of both nodes: ${secs.toFixed(1)} s`);
      for (const [i, rs] of runs.entries()) {
        const last = rs.at(-1) as BootResult;
        if (last.ending !== 'template') console.error(last.console);
        expect(last.ending).toBe('template');
        expect(last.console).toContain(`hostname=${[a, b][i]?.hostname}`);
        expect(last.console).toContain('version=init');
      }
      // the leases are the dnsmasq init started: its lease file, under the prefix
      const leases = vc.leases();
      expect(leases.get(a.mac)?.ip).toBe(a.ip);
      expect(leases.get(b.mac)?.ip).toBe(b.ip);
      expect(vc.reports().size).toBeGreaterThanOrEqual(2);
    },
    12 * 60_000,
  );

  test('a second init changes nothing', async () => {
    const before = treeHash(prefix);
    const again = await init();
    if (again.status !== 0) console.error(again.output);
    expect(again.status).toBe(0);
    expect(again.output).toContain('init: nothing to do: this master is as asked');
    expect(treeHash(prefix)).toBe(before);
  }, 120_000);

  test('builder doctor passes on that master', () => {
    const k = testKeys();
    const r = spawnSync(
      'ip',
      [
        ...['netns', 'exec', vc.ns, BUN, join(REPO, 'builder/cli.ts'), 'doctor'],
        ...['--master-root', vc.masterRoot, '--master-ip', MASTER_IP, '--keys', join(prefix, 'etc/clusterboot')],
        ...['--authorized-keys', vc.authorizedKeys, '--state-dir', vc.stateDir, '--dnsmasq-conf', vc.conf],
        ...['--master-host-key', `${k.hostKey}.pub`],
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    console.error(r.stdout);
    expect(r.stdout).toMatch(/^doctor: \d+ checks: \d+ ok, \d+ warnings, 0 failed/m);
    expect(r.stdout).not.toMatch(/^FAIL /m);
    expect(r.stdout).toMatch(/^ok {3}dnsmasq: dnsmasq runs/m);
    expect(r.stdout).toMatch(/^ok {3}ssh read: /m);
    expect(r.status).toBe(0);
  }, 120_000);

  test('nothing of the host was written', () => {
    for (const p of hostPaths) expect(hostState(p)).toBe(hostBefore.get(p) as string);
  });
});

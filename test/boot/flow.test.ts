// The heart of clusterboot on the real chain: repartition, sync, overlay, switch_root, and the fast path.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { boot, diskHash, kernelToSwitchRoot, sfdiskDump } from '../rig/boot.ts';
import type { Images } from '../rig/images.ts';
import { randomBytes, startMasterRig, stopMasterRig, TestMaster, type MasterRig } from '../rig/master.ts';
import { blankDisk } from '../rig/qemu.ts';

/** A 1 GiB card laid out as Raspberry Pi OS writes it: vfat p1 with config.txt and the firmware, ext4 p2 with a root. */
function piOsCard(path: string): void {
  blankDisk(path, 1024);
  const sh = (argv: string[], stdin?: string) => {
    const r = Bun.spawnSync(argv, stdin === undefined ? {} : { stdin: Buffer.from(stdin) });
    if (r.exitCode !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.toString()}`);
  };
  sh(
    ['sfdisk', '-q', path],
    'label: dos\nlabel-id: 0x3a90e54f\nstart=8192, size=524288, type=c\nstart=532480, type=83\n',
  );
  const files = join(work, 'pios-files');
  const p1 = join(work, 'pios-p1.img');
  rmSync(p1, { force: true });
  sh(['mkfs.fat', '-F', '32', '-n', 'BOOTFS', '-C', p1, String(524288 / 2)]);
  mkdirSync(join(files, 'root/etc'), { recursive: true });
  writeFileSync(join(files, 'config.txt'), '[all]\narm_64bit=1\nkernel=kernel8.img\n');
  writeFileSync(join(files, 'cmdline.txt'), 'console=serial0,115200 root=PARTUUID=3a90e54f-02 rootfstype=ext4\n');
  writeFileSync(join(files, 'start4.elf'), randomBytes(4096, 9));
  for (const f of ['config.txt', 'cmdline.txt', 'start4.elf']) sh(['mcopy', '-i', p1, join(files, f), `::${f}`]);
  sh(['dd', `if=${p1}`, `of=${path}`, 'bs=1M', 'seek=4', 'conv=notrunc,sparse', 'status=none']);
  rmSync(p1);
  writeFileSync(join(files, 'root/etc/hostname'), 'raspberrypi\n');
  sh([
    'mke2fs',
    '-q',
    '-F',
    '-t',
    'ext4',
    '-E',
    `offset=${532480 * 512}`,
    '-d',
    join(files, 'root'),
    path,
    `${(2097152 - 532480) / 2}k`,
  ]);
}

let img: Images;
let work: string;
let master: TestMaster;
let rig: MasterRig | undefined;
const disk = () => join(work, 'disk.img');

beforeAll(async () => {
  rig = await startMasterRig('flow');
  ({ img, work, master } = rig);
  blankDisk(disk(), 1024);
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

const phaseDone = (r: { events: { kind: string; phase: string; summary?: unknown }[] }, phase: string) =>
  r.events.find((e) => e.kind === 'phase-done' && e.phase === phase)?.summary as string | undefined;

describe('boot flow', () => {
  test('boot 1 on a blank disk partitions, formats, fills the boot partition and reboots', async () => {
    const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
    expect(r.ending).toBe('reboot');
    expect(r.console).toContain('rebooting: new partition table written');
    const dump = sfdiskDump(disk());
    expect(dump).toMatch(/disk\.img1 : start=\s*2048, size=\s*65536, type=c, bootable/);
    expect(dump).toMatch(/disk\.img4 : start=\s*1378304, size=\s*409600, type=83/);
  }, 400_000);

  test('boot 2 syncs the whole root and hands off to the template init as PID 1 on an overlay', async () => {
    const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
    expect(r.ending).toBe('template');
    expect(r.console).toMatch(/TEMPLATE-INIT pid=1 version=1/);
    expect(r.console).toMatch(/TEMPLATE-ROOT overlay overlay/);
    expect(r.console).toContain('TEMPLATE-LAYERS ');
    const procs = r.console.split('\n').filter((l) => l.startsWith('TEMPLATE-PROC '));
    expect(procs.length).toBeGreaterThan(0);
    expect(procs.filter((l) => /ssh|rsync|clusterboot-agent|udhcpc/.test(l))).toEqual([]);
    expect(phaseDone(r, 'root')).toMatch(/^slots\//);
    expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(true);
  }, 400_000);

  test('boot 3 with an unchanged root runs no rsync of the root and switches root', async () => {
    const before = master.handshakes();
    const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
    expect(r.ending).toBe('template');
    expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    expect(r.console).not.toContain('syncing');
    expect(master.handshakes() - before).toBe(1);
    console.error(
      `measure: boot 3 Starting kernel -> switch_root ${kernelToSwitchRoot(r)?.toFixed(1)} s (kernel uptime), wall ${r.seconds.toFixed(1)} s`,
    );
  }, 400_000);

  test('a one-file change transfers about that file, not the tree', async () => {
    writeFileSync(join(master.root, 'rootfs/usr/share/data/blob1'), randomBytes(1 << 20, 999));
    writeFileSync(join(master.root, 'rootfs/etc/template-version'), '2\n');
    await master.publish('rootfs');
    const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
    expect(r.ending).toBe('template');
    expect(r.console).toMatch(/TEMPLATE-INIT pid=1 version=2/);
    const stats = r.events.find((e) => e.phase === 'root' && (e.data as { rsync?: unknown } | undefined)?.rsync)
      ?.data as { rsync: { bytesReceived: number; regularTransferred: number } };
    console.error(
      `measure: one-file change (1 MiB of a 4 MiB tree + busybox): ${stats.rsync.bytesReceived} bytes received`,
    );
    expect(stats.rsync.bytesReceived).toBeGreaterThan(1_000_000);
    expect(stats.rsync.bytesReceived).toBeLessThan(1.1 * (1 << 20) + 65536);
  }, 400_000);

  test('a foreign disk is refused untouched, and taken with wipe=<its serial>', async () => {
    const foreign = join(work, 'foreign.img');
    blankDisk(foreign, 1024);
    Bun.spawnSync(['sfdisk', foreign], { stdin: Buffer.from('label: dos\n,100M,83\n,,83\n') });
    const hash = diskHash(foreign);
    const r = await boot(img, work, { disk: foreign, serial: 'FOREIGN01', bootargs: master.bootargs() });
    expect(r.ending).toBe('fatal');
    expect(r.console).toContain('is not a clusterboot disk');
    expect(r.console).toContain('wipe=FOREIGN01');
    expect(diskHash(foreign)).toBe(hash);
    const w = await boot(img, work, {
      disk: foreign,
      serial: 'FOREIGN01',
      bootargs: master.bootargs('wipe=FOREIGN01'),
    });
    expect(w.ending).toBe('reboot');
    expect(sfdiskDump(foreign)).toMatch(/foreign\.img2 : start=\s*67584, size=\s*786432/);
  }, 800_000);

  // #15: boot firmware on p1 no longer makes a disk ours (every Raspberry Pi OS card has it); adopt=<serial> takes one
  test('a stock Raspberry Pi OS card is refused untouched; adopt=<its serial> takes it', async () => {
    const card = join(work, 'pios.img');
    piOsCard(card);
    const hash = diskHash(card);
    const r = await boot(img, work, { disk: card, serial: 'PIOS0001', bootargs: master.bootargs() });
    expect(r.ending).toBe('fatal');
    expect(r.console).toContain('p1 holds boot firmware but no clusterboot marker');
    expect(r.console).toContain('adopt=PIOS0001');
    expect(diskHash(card)).toBe(hash);
    const a = await boot(img, work, { disk: card, serial: 'PIOS0001', bootargs: master.bootargs('adopt=PIOS0001') });
    expect(a.console).toContain('adopt=PIOS0001 names this disk: adopting it');
    expect(a.ending).toBe('reboot');
    expect(sfdiskDump(card)).toMatch(/pios\.img2 : start=\s*67584, size=\s*786432/);
  }, 800_000);

  test('transport=rsyncd provisions and boots a node from a read-only rsync daemon module', async () => {
    await master.startRsyncd();
    const d = join(work, 'rsyncd.img');
    blankDisk(d, 1024);
    const args = `console=ttyAMA0 panic=10 masterip=10.0.2.2 transport=rsyncd masterport=${master.rsyncdPort} disk=/dev/vda retries=2`;
    expect((await boot(img, work, { disk: d, bootargs: args })).ending).toBe('reboot');
    const r = await boot(img, work, { disk: d, bootargs: args });
    expect(r.ending).toBe('template');
    expect(r.console).toMatch(/TEMPLATE-INIT pid=1 version=2/);
  }, 400_000);
});

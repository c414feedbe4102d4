// The verified local first stage, on the virtual cluster with real U-Boot and dnsmasq: a node caches the kernel
// and initramfs that booted it well, loads them from its disk while they are still the announced ones, boots
// them when the master is silent, abandons a new first stage that keeps failing, and notices a damaged copy.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeCpio } from '../../builder/image/cpio.ts';
import { writeUImage } from '../../agent/contract/uimage.ts';
import { accessFiles } from '../../builder/image/pack.ts';
import { images, sysroot } from '../rig/images.ts';
import { testKeys } from '../rig/master.ts';
import { VirtualCluster, nodeSpecs, type NodeSpec } from '../rig/cluster.ts';
import { diskHash, type BootResult } from '../rig/boot.ts';
import { blankDisk } from '../rig/qemu.ts';

let vc: VirtualCluster;
let work: string;
const [a, b] = nodeSpecs(2) as [NodeSpec, NodeSpec];
const blank: NodeSpec = { hostname: 'blank', mac: '52:54:00:c1:00:77', ip: '' };
let firstId = '';

beforeAll(async () => {
  const sr = await sysroot();
  work = mkdtempSync(join(tmpdir(), 'cb-firststage-'));
  vc = new VirtualCluster(work, [a, b], join(sr.root, 'bin/busybox'));
  await vc.start({ taps: 3 });
  vc.blankDisks([a, b]);
  blankDisk(vc.disk(blank), 256);
}, 20 * 60_000);

afterAll(async () => {
  await vc?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

const report = (n: NodeSpec) => vc.reports().get(`${n.mac.replace(/:/g, '-')}.json`) as Record<string, any> | undefined;
const announced = () =>
  /^cb_id=(\S+)$/m.exec(readFileSync(join(vc.masterRoot, 'tftp/firststage.env'), 'utf8'))?.[1] ?? '';
const uboot = (r: BootResult) =>
  r.raw
    .split(/\r?\n/)
    .filter((l) => l.startsWith('clusterboot: ') && !/^clusterboot: +\d/.test(l))
    .join('\n');

/** A first stage whose /init is not a program: the kernel finds no init and panics (the rig's panic=1 reboots). */
function brokenInitramfs(): string {
  const cpio = writeCpio([{ kind: 'file', path: 'init', data: Buffer.from('this is not a program\n'), mode: 0o755 }], {
    mtime: 0,
  });
  const path = join(work, 'broken.igz.uimg');
  writeFileSync(
    path,
    writeUImage(gzipSync(cpio), { arch: 'arm64', type: 'ramdisk', comp: 'gzip', name: 'broken first stage' }),
  );
  return path;
}

/** Set the FAT dirty bit of the disk image's p1 (sector 2048), as a power cut during a write would leave it. */
function setP1Dirty(disk: string): void {
  const p1 = 2048 * 512;
  const h = openSync(disk, 'r+');
  try {
    const boot = Buffer.alloc(512);
    readSync(h, boot, 0, 512, p1);
    const off = boot.toString('latin1', 82, 87) === 'FAT32' ? 0x41 : 0x25;
    boot[off] = (boot[off] ?? 0) | 1;
    writeSync(h, boot, off, 1, p1 + off);
    fsyncSync(h);
  } finally {
    closeSync(h);
  }
}

/** Flip one byte inside a file on the disk image's root partition (p2 at sector 67584), as SD-card rot would. */
function flipByteInP2(disk: string, path: string): void {
  const p2 = 67584 * 512;
  const loop = execFileSync(
    'losetup',
    ['-f', '--show', '-r', '-o', String(p2), '--sizelimit', String(786432 * 512), disk],
    { encoding: 'utf8' },
  ).trim();
  let block = 0;
  let blockSize = 0;
  try {
    const debugfs = (cmd: string) =>
      execFileSync('debugfs', ['-R', cmd, loop], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    block = Number(debugfs(`bmap ${path} 100`).trim());
    blockSize = Number(/^Block size:\s+(\d+)/m.exec(debugfs('stats'))?.[1]);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
  if (!(block > 0 && blockSize > 0))
    throw new Error(`debugfs: no block for ${path} (${block}, block size ${blockSize})`);
  const off = p2 + block * blockSize + 123;
  const h = openSync(disk, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(h, byte, 0, 1, off);
    byte[0] = (byte[0] ?? 0) ^ 0xff;
    writeSync(h, byte, 0, 1, off);
    fsyncSync(h);
  } finally {
    closeSync(h);
  }
}

describe('verified local first stage', () => {
  test('two nodes provision from blank disks; the first stage that booted them well is cached at the commit point', async () => {
    firstId = announced();
    expect(firstId).toMatch(/^[0-9a-f]{16}$/);
    const rs = await Promise.all([vc.bootUntilUp(a, 0), vc.bootUntilUp(b, 1)]);
    for (const [i, n] of [a, b].entries()) {
      const r = rs[i] ?? [];
      expect(r.map((x) => x.ending)).toEqual(['reboot', 'template']);
      // blank disk: U-Boot's dhcp target ran the network script, which TFTPed the first stage
      expect(uboot(r[1] as BootResult)).toContain(`first stage ${firstId} loaded by TFTP`);
      expect(r[1]?.console).toContain(`first stage ${firstId} booted well: cached`);
      expect(report(n)?.firstStage).toEqual({ booted: firstId, from: 'tftp', announced: firstId, cached: firstId });
    }
  }, 900_000);

  test('a warm boot of both loads the first stage from the disk: at most 64 KiB per node from the master (TFTP + SSH)', async () => {
    const bytes0 = vc.masterBytesSent();
    const t0 = performance.now();
    const warm = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
    const sent = vc.masterBytesSent() - bytes0;
    console.error(
      `measure: first stage warm nodes=2 wall_s=${((performance.now() - t0) / 1000).toFixed(1)} master_bytes_sent=${sent} per_node=${Math.round(sent / 2)}`,
    );
    for (const r of warm) {
      expect(r.ending).toBe('template');
      expect(uboot(r)).toContain(`first stage ${firstId} loaded from the disk`);
      expect(r.raw).not.toContain('loaded by TFTP');
    }
    expect(sent).toBeLessThanOrEqual(2 * 64 * 1024);
    expect(report(a)?.firstStage?.from).toBe('cache');
  }, 600_000);

  test('master down (dnsmasq and sshd stopped): a provisioned node boots its cached first stage, then its last root; a blank one stays untouched', async () => {
    await vc.stopMaster();
    try {
      const r = await vc.bootOnce(a, { tap: 0, timeoutMs: 300_000 });
      expect(uboot(r)).toContain('no first stage from the master (no DHCP or TFTP answer): booting the cached one');
      expect(r.ending).toBe('template');
      expect(r.console).toContain('TEMPLATE-INIT pid=1');
      expect(r.console).toMatch(/continuing offline/);
      // a blank disk: nothing to boot and nothing written
      const before = diskHash(vc.disk(blank));
      const node = await vc.powerOn(blank, { tap: 2 });
      try {
        await node.waitFor(/=> $/, 240_000);
      } finally {
        await node.kill();
      }
      expect(diskHash(vc.disk(blank))).toBe(before);
    } finally {
      await vc.startMaster();
    }
  }, 600_000);

  let secondId = '';
  test('a new initramfs staged: each node fetches it once, boots it and caches it; the next warm boot loads it from the disk', async () => {
    const k = testKeys();
    const img2 = await images({
      extra: [
        ...accessFiles({
          keysDir: k.dir,
          masterHostKeyPub: readFileSync(`${k.hostKey}.pub`, 'utf8'),
          sign: false,
          report: true,
        }),
        { path: 'etc/clusterboot/variant', data: Buffer.from('2\n') },
      ],
    });
    vc.stage({ initramfs: img2.initramfs });
    secondId = announced();
    expect(secondId).not.toBe(firstId);
    // p1 as a cut write leaves it: this boot's bootfs is up to date, so the first-stage commit is what writes p1
    setP1Dirty(vc.disk(a));
    const r1 = await vc.bootOnce(a, { tap: 0 });
    expect(r1.ending).toBe('template');
    expect(r1.console).toMatch(/firststage\].*fsck\.fat repaired the boot partition \/dev\/vda1: .*[Dd]irty bit/);
    expect(uboot(r1)).toContain(`new first stage ${secondId}: try 1 of 3`);
    expect(uboot(r1)).toContain(`first stage ${secondId} loaded by TFTP`);
    expect(r1.console).toContain(`first stage ${secondId} booted well: cached, ${firstId} kept as the previous one`);
    const bytes0 = vc.masterBytesSent();
    const r2 = await vc.bootOnce(a, { tap: 0 });
    const sent = vc.masterBytesSent() - bytes0;
    expect(uboot(r2)).toContain(`first stage ${secondId} loaded from the disk`);
    expect(sent).toBeLessThanOrEqual(64 * 1024);
  }, 600_000);

  test('a flipped byte in the cached initramfs: with the master down the previous copy boots; with it up the copy is fetched again', async () => {
    flipByteInP2(vc.disk(a), `/firststage/${secondId}/initramfs.igz.uimg`);
    await vc.stopMaster();
    try {
      const down = await vc.bootOnce(a, { tap: 0, timeoutMs: 300_000 });
      expect(uboot(down)).toContain(`cached first stage ${secondId} does not verify (damaged on the disk)`);
      expect(uboot(down)).toContain(`booting the previous cached first stage ${firstId}`);
      expect(down.ending).toBe('template');
    } finally {
      await vc.startMaster();
    }
    const up = await vc.bootOnce(a, { tap: 0 });
    expect(uboot(up)).toContain(`cached first stage ${secondId} does not verify (damaged on the disk)`);
    expect(uboot(up)).toContain(`fetching first stage ${secondId} again from the master`);
    expect(up.ending).toBe('template');
    expect(up.console).toContain(`first stage ${secondId} cached again (the disk's copy was damaged)`);
    const again = await vc.bootOnce(a, { tap: 0 });
    expect(uboot(again)).toContain(`first stage ${secondId} loaded from the disk`);
  }, 900_000);

  test('a broken new first stage is abandoned after its tries: the cached one boots, the report names the failed image; a good one heals', async () => {
    vc.stage({ initramfs: brokenInitramfs(), tries: 2 });
    const broken = announced();
    const tries: BootResult[] = [];
    for (let i = 0; i < 2; i++) tries.push(await vc.bootOnce(b, { tap: 1, timeoutMs: 300_000 }));
    for (const [i, r] of tries.entries()) {
      expect(uboot(r)).toContain(`new first stage ${broken}: try ${i + 1} of 2`);
      expect(r.raw).toMatch(/Kernel panic|No working init found/);
    }
    const rolled = await vc.bootOnce(b, { tap: 1 });
    expect(uboot(rolled)).toContain(`first stage ${broken} failed 2 times in a row`);
    expect(rolled.ending).toBe('template');
    expect(report(b)?.firstStage).toMatchObject({ booted: firstId, from: 'rollback', failed: broken });
    expect((report(b)?.errors as string[]).some((e) => e.includes(`first stage ${broken} failed`))).toBe(true);
    // the master stages a good first stage again (the one node2 has cached): it loads from the disk at once
    vc.stage({ tries: 3, initramfs: vc.img?.initramfs ?? '' });
    const healed = await vc.bootOnce(b, { tap: 1 });
    expect(uboot(healed)).toContain(`first stage ${firstId} loaded from the disk`);
    expect(healed.ending).toBe('template');
  }, 900_000);
});

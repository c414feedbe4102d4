// The Raspberry Pi firmware first stage (no U-Boot). QEMU 7.2 has no Pi 4 machine, so the EEPROM bootloader
// cannot run here: QEMU's virt machine boots with -kernel/-initrd/-append taken from exactly the files and
// cmdline.txt that `builder stage --first-stage firmware` wrote under the node's TFTP prefix. The agent must come
// up, provision the disk and keep the pair in p1's set a; a boot from that set (what the firmware would load
// from the card) then meets a new announcement, writes set b and reboots with LINUX_REBOOT_CMD_RESTART2 "0 tryboot".
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stage } from '../../builder/master/stage.ts';
import {
  BOOTFS_AUTOBOOT,
  BOOTFS_CONFIG,
  FW_ANNOUNCEMENT,
  parseFirmwareAnnouncement,
  parseSwitch,
} from '../../agent/contract/firmware.ts';
import { startMasterRig, stopMasterRig, type MasterRig } from '../rig/master.ts';
import { blankDisk, QemuNode } from '../rig/qemu.ts';

// p1 of 256 MiB: two sets of ~95 MB (raw kernel + initramfs) beside the bootfs files
const TABLE = `label: dos
unit: sectors

/dev/mmcblk0p1 : start=        2048, size=      524288, type=c, bootable
/dev/mmcblk0p2 : start=      526336, size=      786432, type=83
/dev/mmcblk0p3 : start=     1312768, size=      262144, type=83
`;
const MAC = '52:54:00:12:34:56'; // QEMU's default NIC address: TFTP_PREFIX=2 asks under 52-54-00-12-34-56/
const PREFIX = '52-54-00-12-34-56';

let rig: MasterRig;
let disk = '';

/** A file from the disk image's p1 (FAT at 1 MiB), read with mtools as a boot ROM would: no mount, no repair. */
function p1File(path: string): Buffer {
  return execFileSync('mcopy', ['-n', '-i', `${disk}@@1M`, `::${path}`, '-'], { maxBuffer: 512 << 20 });
}

function stageFirmware(bootargs: string): { id: string; dir: string } {
  const r = stage({
    nodesFile: join(rig.work, 'nodes.txt'),
    masterRoot: rig.master.root,
    stateDir: join(rig.work, 'state'),
    kernel: rig.img.kernel,
    initramfs: rig.img.initramfs,
    bootargs,
    arch: 'arm64',
    dnsmasqConf: join(rig.work, 'dnsmasq.conf'),
    masterIp: '10.0.2.2',
    subnet: '10.0.2.0/24',
    domain: 'cluster.lan',
    lease: '1h',
    firstStage: 'firmware',
    tftpPrefix: 'mac',
  });
  expect(r.firmware?.prefixes).toEqual([{ hostname: 'node1', prefix: PREFIX }]);
  return { id: r.firmware?.id ?? '', dir: join(rig.master.root, 'tftp', PREFIX) };
}

/** The kernel, initramfs and command line exactly as the stage's config.txt and cmdline.txt name them. */
function fromStage(dir: string): { kernel: string; initrd: string; append: string } {
  const config = readFileSync(join(dir, 'config.txt'), 'utf8');
  const kernel = /^kernel=(\S+)$/m.exec(config)?.[1];
  const initrd = /^initramfs (\S+) followkernel$/m.exec(config)?.[1];
  expect(kernel).toBeDefined();
  expect(initrd).toBeDefined();
  const append = readFileSync(join(dir, 'cmdline.txt'), 'utf8').trim();
  return { kernel: join(dir, kernel as string), initrd: join(dir, initrd as string), append };
}

async function bootDirect(files: { kernel: string; initrd: string; append: string }, timeoutMs = 300_000) {
  const node = new QemuNode({
    tftpDir: join(rig.master.root, 'tftp'),
    disk,
    direct: files,
    logFile: join(rig.work, 'console.log'),
  });
  try {
    await node.waitForExit(timeoutMs);
  } finally {
    await node.kill();
  }
  return node;
}

beforeAll(async () => {
  rig = await startMasterRig('firmware', { table: TABLE });
  const bootfs = join(rig.master.root, 'bootfs');
  execFileSync('mkdir', ['-p', join(bootfs, 'overlays')]);
  writeFileSync(join(bootfs, 'start4.elf'), Buffer.alloc(8192, 4));
  writeFileSync(join(bootfs, 'fixup4.dat'), Buffer.alloc(1024, 5));
  writeFileSync(join(bootfs, 'bcm2711-rpi-4-b.dtb'), Buffer.alloc(4096, 6));
  writeFileSync(join(bootfs, 'overlays/disable-bt.dtbo'), Buffer.alloc(512, 8));
  writeFileSync(join(bootfs, 'config.txt'), BOOTFS_CONFIG);
  writeFileSync(join(bootfs, 'autoboot.txt'), BOOTFS_AUTOBOOT);
  await rig.master.publish('bootfs');
  writeFileSync(join(rig.work, 'nodes.txt'), `${MAC} node1 10.0.2.15\n`);
  disk = join(rig.work, 'disk.img');
  blankDisk(disk, 1024);
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

describe('Raspberry Pi firmware first stage (QEMU virt with the staged files)', () => {
  let firstId = '';
  test('the files under the prefix boot the agent, which provisions a blank disk and keeps the pair in p1:/clusterboot.a/', async () => {
    const s = stageFirmware(rig.master.bootargs());
    firstId = s.id;
    expect(realpathSync(s.dir)).toBe(join(realpathSync(rig.master.root), 'tftp', `firmware-${firstId}`));
    const files = fromStage(s.dir);
    expect(files.append).toContain(`clusterboot.fs=${firstId} clusterboot.from=tftp clusterboot.set=net`);
    const t0 = performance.now();
    const b1 = await bootDirect(files);
    expect(b1.console).toContain('rebooting: new partition table written');
    const b2 = await bootDirect(files);
    console.error(`measure: firmware provision two boots wall_s=${((performance.now() - t0) / 1000).toFixed(1)}`);
    expect(b2.console).toContain(`first stage ${firstId} booted well by TFTP: kept in p1:/clusterboot.a/`);
    expect(b2.console).toContain('TEMPLATE-DONE');
    // p1 holds byte for byte what the stage wrote, as the firmware will read it from the card
    const ann = parseFirmwareAnnouncement(readFileSync(join(rig.master.root, 'tftp', FW_ANNOUNCEMENT), 'utf8'));
    expect(ann.ok).toBe(true);
    for (const f of ann.ok ? ann.announcement.files : [])
      expect(p1File(`/clusterboot.a/${f.path}`).equals(readFileSync(join(s.dir, f.path)))).toBe(true);
    expect(parseSwitch(p1File('/clusterboot.config.txt').toString())).toEqual({ current: 'a', trial: 'a', tries: 0 });
    expect(p1File('/clusterboot.a/cmdline.txt').toString()).toContain(
      `clusterboot.fs=${firstId} clusterboot.from=cache clusterboot.set=a`,
    );
    expect(p1File('/config.txt').toString()).toBe(BOOTFS_CONFIG);
  }, 900_000);

  test('booted from set a, a new announcement: set b is written and the node reboots with "0 tryboot"; set a is untouched', async () => {
    const a0 = p1File('/clusterboot.a/initramfs.cpio.gz');
    const s = stageFirmware(rig.master.bootargs('retries=3'));
    expect(s.id).not.toBe(firstId);
    const work = rig.work;
    writeFileSync(join(work, 'a-vmlinuz'), p1File('/clusterboot.a/vmlinuz'));
    writeFileSync(join(work, 'a-initramfs.cpio.gz'), a0);
    const append = p1File('/clusterboot.a/cmdline.txt').toString().trim();
    const b = await bootDirect({ kernel: join(work, 'a-vmlinuz'), initrd: join(work, 'a-initramfs.cpio.gz'), append });
    expect(b.console).toContain(
      `the master announces ${s.id}, set a holds ${firstId}: writing set b and trying it once (tryboot)`,
    );
    expect(b.console).toContain('rebooting: trying the new first stage');
    expect(b.console).not.toContain('TEMPLATE-DONE');
    expect(parseSwitch(p1File('/clusterboot.config.txt').toString())).toEqual({
      current: 'a',
      trial: 'b',
      trialId: s.id,
      tries: 1,
    });
    expect(p1File('/clusterboot.b/clusterboot.set').toString()).toBe(`cb_set_id=${s.id}\n`);
    expect(p1File('/clusterboot.b/cmdline.txt').toString()).toContain('retries=3');
    expect(p1File('/clusterboot.a/initramfs.cpio.gz').equals(a0)).toBe(true);
    expect(p1File('/clusterboot.a/clusterboot.set').toString()).toBe(`cb_set_id=${firstId}\n`);
  }, 600_000);
});

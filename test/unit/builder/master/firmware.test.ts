// The firmware first stage's TFTP layout against the documented rules of the Pi 4/5 EEPROM bootloader:
// the prefix (serial number "9ffefdef/", TFTP_PREFIX=2 the MAC "dc-a6-32-01-36-c2/"), start4.elf and fixup4.dat,
// the DTBs and overlays, config.txt with kernel= and `initramfs <file> followkernel`, cmdline.txt, a plain cpio.gz,
// and the 65535-block TFTP ceiling.
import { afterAll, describe, expect, test } from 'bun:test';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  ceilingProblem,
  firmwareSet,
  nodePrefixes,
  parseSerials,
  plainInitramfs,
  tftpPrefix,
  writeFirmwareStage,
  type FirmwareInputs,
} from '../../../../builder/master/firmware.ts';
import {
  BOOTFS_AUTOBOOT,
  BOOTFS_CONFIG,
  FIRMWARE_TFTP_MAX,
  parseFirmwareAnnouncement,
} from '../../../../agent/contract/firmware.ts';
import { writeUImage } from '../../../../agent/contract/uimage.ts';
import { TFTP_CEILING } from '../../../../builder/master/doctor.ts';

const cpio = new TextEncoder().encode('070701 fake cpio');
const gz = new Uint8Array(gzipSync(cpio));
const uimg = writeUImage(gz, { arch: 'arm64', type: 'ramdisk', comp: 'gzip', name: 'initramfs' });
const bootfs = new Map<string, Uint8Array>([
  ['start4.elf', new Uint8Array([1, 2, 3])],
  ['fixup4.dat', new Uint8Array([4])],
  ['bcm2711-rpi-4-b.dtb', new Uint8Array([5])],
  ['bcm2712-rpi-5-b.dtb', new Uint8Array([6])],
  ['overlays/disable-bt.dtbo', new Uint8Array([7])],
  ['overlays/README', new Uint8Array([8])],
  ['u-boot.bin', new Uint8Array([9])],
  ['config.txt', new TextEncoder().encode(BOOTFS_CONFIG)],
]);
const inputs = (o: Partial<FirmwareInputs> = {}): FirmwareInputs => ({
  bootfs,
  bootfsConfig: BOOTFS_CONFIG,
  bootfsAutoboot: BOOTFS_AUTOBOOT,
  kernel: new Uint8Array(1000).fill(3),
  initramfs: uimg,
  bootargs: 'console=serial0,115200 disk=/dev/mmcblk0',
  ...o,
});
const work = mkdtempSync(join(tmpdir(), 'cb-fw-unit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the TFTP prefix', () => {
  test('serial (TFTP_PREFIX=0): 8 lower-case hex digits, e.g. 9ffefdef/; MAC (TFTP_PREFIX=2): dc-a6-32-01-36-c2/', () => {
    expect(tftpPrefix('serial', { mac: 'x', serial: '9FFEFDEF' })).toBe('9ffefdef');
    expect(tftpPrefix('serial', { mac: 'x', serial: '100000009ffefdef' })).toBe('9ffefdef');
    expect(tftpPrefix('serial', { mac: 'x' })).toBeNull();
    expect(tftpPrefix('mac', { mac: 'DC:A6:32:01:36:C2' })).toBe('dc-a6-32-01-36-c2');
  });
  test('serials file by hostname or MAC; a node without one in serial mode is a problem with the remedy', () => {
    const s = parseSerials('# serials\nnode1 9ffefdef\ndc:a6:32:00:00:02 0x1234ABCD\nbad line here\n');
    expect(s.errors).toHaveLength(1);
    const nodes = [
      { mac: 'dc:a6:32:00:00:01', hostname: 'node1', ip: '10.0.0.1', line: 1 },
      { mac: 'dc:a6:32:00:00:02', hostname: 'node2', ip: '10.0.0.2', line: 2 },
      { mac: 'dc:a6:32:00:00:03', hostname: 'node3', ip: '10.0.0.3', line: 3 },
    ];
    const r = nodePrefixes(nodes, 'serial', s.serials);
    expect(r.prefixes).toEqual([
      { hostname: 'node1', prefix: '9ffefdef' },
      { hostname: 'node2', prefix: '1234abcd' },
    ]);
    expect(r.problems[0]).toContain('node3');
    expect(r.problems[0]).toContain('TFTP_PREFIX=2');
    expect(nodePrefixes(nodes, 'mac', new Map()).prefixes.map((p) => p.prefix)).toEqual([
      'dc-a6-32-00-00-01',
      'dc-a6-32-00-00-02',
      'dc-a6-32-00-00-03',
    ]);
  });
});

describe('the set', () => {
  const r = firmwareSet(inputs());
  if (!r.ok) throw new Error(r.problems.join('; '));
  const files = new Map(r.set.files.map((f) => [f.path, f.data]));
  const text = (p: string) => new TextDecoder().decode(files.get(p));
  test('start4.elf, fixup4.dat, every DTB and overlays/ from bootfs/; not U-Boot nor bootfs/config.txt', () => {
    for (const p of [
      'start4.elf',
      'fixup4.dat',
      'bcm2711-rpi-4-b.dtb',
      'bcm2712-rpi-5-b.dtb',
      'overlays/disable-bt.dtbo',
    ])
      expect(files.get(p)).toEqual(bootfs.get(p) as Uint8Array);
    expect(files.has('u-boot.bin')).toBe(false);
    expect(text('config.txt')).not.toContain('include');
  });
  test('config.txt names the kernel and the initramfs right after it; both files are there', () => {
    const c = text('config.txt');
    const kernel = /^kernel=(\S+)$/m.exec(c)?.[1] as string;
    const initrd = /^initramfs (\S+) followkernel$/m.exec(c)?.[1] as string;
    expect(c).toMatch(/^arm_64bit=1$/m);
    expect(files.get(kernel)).toEqual(inputs().kernel);
    // a plain cpio.gz: the U-Boot header is gone and it unpacks to the archive
    expect(new Uint8Array(gunzipSync(files.get(initrd) as Uint8Array))).toEqual(cpio);
    expect(r.set.files.at(-1)?.path).toBe('config.txt');
  });
  test("cmdline.txt: one line, the agent's parameters and the set's own (from the firmware's TFTP)", () => {
    const c = text('cmdline.txt');
    expect(c.split('\n').filter(Boolean)).toHaveLength(1);
    expect(c).toBe(
      `console=serial0,115200 disk=/dev/mmcblk0 clusterboot.fs=${r.set.announcement.id} clusterboot.from=tftp clusterboot.set=net\n`,
    );
  });
  test('the announcement lists the set files p1 keeps (not config.txt, cmdline.txt, start4.elf) and parses back', () => {
    const paths = r.set.announcement.files.map((f) => f.path);
    expect(paths).toContain('vmlinuz');
    expect(paths).toContain('initramfs.cpio.gz');
    expect(paths).toContain('overlays/disable-bt.dtbo');
    for (const p of ['config.txt', 'cmdline.txt', 'start4.elf', 'fixup4.dat']) expect(paths).not.toContain(p);
    expect(r.warnings).toEqual([]);
  });
  test('the id changes with the bootargs, the initramfs or a DTB, and only then', () => {
    const id = (o: Partial<FirmwareInputs>) => {
      const x = firmwareSet(inputs(o));
      return x.ok ? x.set.announcement.id : '';
    };
    expect(id({})).toBe(r.set.announcement.id);
    expect(id({ bootargs: 'console=serial0,115200' })).not.toBe(r.set.announcement.id);
    expect(id({ initramfs: new Uint8Array(gzipSync(new Uint8Array([1]))) })).not.toBe(r.set.announcement.id);
    const b2 = new Map(bootfs);
    b2.set('bcm2711-rpi-4-b.dtb', new Uint8Array([55]));
    expect(id({ bootfs: b2 })).not.toBe(r.set.announcement.id);
  });
  test('a bootfs/ that cannot boot the SD sets: a warning with the lines; no start4.elf or no DTB: refused', () => {
    const w = firmwareSet(inputs({ bootfsAutoboot: null }));
    expect(w.ok && w.warnings[0]).toContain('tryboot_a_b=1');
    const b = new Map(bootfs);
    b.delete('start4.elf');
    const x = firmwareSet(inputs({ bootfs: b }));
    expect(!x.ok && x.problems[0]).toContain('bootfs/start4.elf is missing');
    const nodtb = new Map([...bootfs].filter(([p]) => !p.endsWith('.dtb')));
    const y = firmwareSet(inputs({ bootfs: nodtb }));
    expect(!y.ok && y.problems.join(' ')).toContain('no *.dtb');
  });
});

describe('the 64 MiB TFTP ceiling', () => {
  test('the rule is 65535 blocks of 1 KiB minus one byte, the same as builder doctor', () => {
    expect(FIRMWARE_TFTP_MAX).toBe(67_107_839);
    expect(FIRMWARE_TFTP_MAX).toBe(TFTP_CEILING);
    expect(ceilingProblem('x', FIRMWARE_TFTP_MAX)).toBeNull();
    expect(ceilingProblem('x', FIRMWARE_TFTP_MAX + 1)).toContain('silently truncate');
  });
  test('an initramfs over it is refused with the remedy (signed boot.img over HTTP, or a smaller image)', () => {
    const big = new Uint8Array(FIRMWARE_TFTP_MAX + 1);
    big[0] = 0x1f;
    big[1] = 0x8b;
    const x = firmwareSet(inputs({ initramfs: big }));
    expect(x.ok).toBe(false);
    const msg = x.ok ? '' : x.problems.join('\n');
    expect(msg).toContain('67107840 bytes');
    expect(msg).toContain('signed boot.img');
    expect(msg).toContain('smaller');
    const edge = new Uint8Array(FIRMWARE_TFTP_MAX);
    edge[0] = 0x1f;
    edge[1] = 0x8b;
    expect(firmwareSet(inputs({ initramfs: edge })).ok).toBe(true);
  });
  test('a U-Boot image that is not a gzip ramdisk is refused', () => {
    expect(plainInitramfs(writeUImage(cpio, { arch: 'arm64', type: 'ramdisk', comp: 'none', name: 'x' })).ok).toBe(
      false,
    );
    expect(plainInitramfs(new Uint8Array([0, 1, 2, 3])).ok).toBe(false);
  });
});

describe('writeFirmwareStage', () => {
  test('one folder per set, each prefix a symlink to it; a new set switches every prefix and the old one goes', () => {
    const tftp = join(work, 'tftp');
    mkdirSync(tftp, { recursive: true });
    const r1 = firmwareSet(inputs());
    const r2 = firmwareSet(inputs({ bootargs: 'console=serial0,115200' }));
    if (!r1.ok || !r2.ok) throw new Error('set');
    const pre = [{ prefix: '9ffefdef' }, { prefix: 'dc-a6-32-01-36-c2' }];
    writeFirmwareStage(tftp, r1.set, pre);
    const id1 = r1.set.announcement.id;
    for (const p of pre) {
      expect(lstatSync(join(tftp, p.prefix)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(tftp, p.prefix))).toBe(`firmware-${id1}`);
      expect(readFileSync(join(tftp, p.prefix, 'start4.elf'))).toEqual(Buffer.from([1, 2, 3]));
      expect(readFileSync(join(tftp, p.prefix, 'overlays/disable-bt.dtbo'))).toEqual(Buffer.from([7]));
    }
    const ann = parseFirmwareAnnouncement(readFileSync(join(tftp, 'firmware.env'), 'utf8'));
    expect(ann.ok && ann.announcement.id).toBe(id1);
    writeFirmwareStage(tftp, r2.set, pre.slice(0, 1));
    const id2 = r2.set.announcement.id;
    expect(readlinkSync(join(tftp, '9ffefdef'))).toBe(`firmware-${id2}`);
    expect(existsSync(join(tftp, `firmware-${id1}`))).toBe(false);
    // the node no longer listed loses its link with the old set
    expect(lstatSync(join(tftp, 'dc-a6-32-01-36-c2'), { throwIfNoEntry: false })).toBeUndefined();
  });
});

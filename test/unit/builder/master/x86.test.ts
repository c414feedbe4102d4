// x86-64 nodes (#17): the node list's arch field, the dnsmasq PXE rules, the iPXE script, stage's checks and
// files for amd64 nodes, and the GPT table with an ESP for the boot role.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderDnsmasq } from '../../../../builder/master/dnsmasq.ts';
import { parseNodeList, renderNodesList, type NodeEntry } from '../../../../builder/master/nodelist.ts';
import {
  dhcpHostLine,
  INITRAMFS_AMD64,
  IPXE_BIOS,
  IPXE_EFI,
  IPXE_SCRIPT,
  KERNEL_AMD64,
  pxeDnsmasqLines,
  pxeProblems,
  renderIpxeScript,
} from '../../../../builder/master/pxe.ts';
import { stage, StageError, type StageOptions } from '../../../../builder/master/stage.ts';
import { ESP_GUID, espProblem, layoutTable, renderLayout } from '../../../../builder/master/tables.ts';
import { hasOurLabelId } from '../../../../agent/plans/disk.ts';
import { parseSfdiskDump, partName, planPartitions, validateTable } from '../../../../agent/plans/sfdisk.ts';
import { writeUImage } from '../../../../agent/contract/uimage.ts';
import { stagePlan } from '../../../fixtures/stageplan.ts';

const node = (line: number, mac: string, hostname: string, ip: string, arch?: 'amd64' | 'arm64'): NodeEntry => ({
  mac,
  hostname,
  ip,
  ...(arch ? { arch } : {}),
  line,
});
const plan = (nodes: NodeEntry[]) => stagePlan(nodes);

describe('node list: arch', () => {
  test('plain and dhcp-host forms take arch=, with aliases; absent means arm64 and stays absent', () => {
    const r = parseNodeList(
      [
        'b8:27:eb:cb:63:18 rpinode01 10.77.0.11',
        '52:54:00:00:00:02 pc02 10.77.0.12 arch=amd64',
        '52:54:00:00:00:03 pc03 10.77.0.13 arch=X86_64',
        'dhcp-host=52:54:00:00:00:04,,pc04,10.77.0.14,2h,arch=x64',
        'dhcp-host=52:54:00:00:00:05,pi05,10.77.0.15,arch=aarch64',
        'dhcp-host=52:54:00:00:00:06,,pi06,10.77.0.16',
      ].join('\n'),
    );
    expect(r.errors).toEqual([]);
    expect(r.nodes.map((n) => n.arch)).toEqual([undefined, 'amd64', 'amd64', 'amd64', 'arm64', undefined]);
    expect(r.nodes[3]).toEqual({
      mac: '52:54:00:00:00:04',
      hostname: 'pc04',
      ip: '10.77.0.14',
      lease: '2h',
      arch: 'amd64',
      line: 4,
    });
    expect('arch' in (r.nodes[0] as object)).toBe(false);
  });

  test('an unknown arch, two arch fields, or a fourth field that is no arch are errors with the line', () => {
    const r = parseNodeList(
      [
        '52:54:00:00:00:01 a 10.77.0.11 arch=riscv64',
        'dhcp-host=52:54:00:00:00:02,b,10.77.0.12,arch=amd64,arch=arm64',
        '52:54:00:00:00:03 c 10.77.0.13 amd64',
      ].join('\n'),
    );
    expect(r.nodes).toEqual([]);
    expect(r.errors[0]).toMatch(/^line 1: 'arch=riscv64' names no architecture.*arch=amd64/);
    expect(r.errors[1]).toMatch(/^line 2: dhcp-host= has two arch= fields/);
    expect(r.errors[2]).toMatch(/^line 3: expected .* got 4 fields/);
  });

  test('nodes.list writes arch only for amd64 nodes and reads back unchanged', () => {
    const nodes = [
      node(4, 'b8:27:eb:cb:63:18', 'pi1', '10.77.0.11'),
      node(5, '52:54:00:00:00:02', 'pc1', '10.77.0.12', 'amd64'),
    ];
    const text = renderNodesList(nodes, 'nodes.txt');
    expect(text).toContain('\nb8:27:eb:cb:63:18 pi1 10.77.0.11\n');
    expect(text).toContain('\n52:54:00:00:00:02 pc1 10.77.0.12 arch=amd64\n');
    const back = parseNodeList(text);
    expect(back.errors).toEqual([]);
    expect(back.nodes.map(({ line: _, ...n }) => n)).toEqual(nodes.map(({ line: _, ...n }) => n));
  });
});

describe('dnsmasq PXE rules', () => {
  const pi = node(1, 'b8:27:eb:cb:63:18', 'pi1', '10.77.0.11');
  const pc = node(2, '52:54:00:00:00:02', 'pc1', '10.77.0.12', 'amd64');

  test('arm64 only: the configuration is as before (one plain dhcp-boot, no tags)', () => {
    const conf = renderDnsmasq(plan([pi]));
    expect(conf).toContain('\ndhcp-boot=boot.scr.uimg\n');
    expect(conf).not.toContain('dhcp-match');
    expect(conf).not.toContain('tag:');
    expect(conf).toContain('\ndhcp-host=b8:27:eb:cb:63:18,pi1,10.77.0.11,1h\n');
  });

  test('with an amd64 node: its host is tagged; BIOS, UEFI and iPXE each get one file', () => {
    const conf = renderDnsmasq(plan([pi, pc]));
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:02,set:cb-amd64,pc1,10.77.0.12,1h\n');
    expect(conf).toContain('\ndhcp-host=b8:27:eb:cb:63:18,pi1,10.77.0.11,1h\n');
    const lines = pxeDnsmasqLines([pi, pc], 'boot.scr.uimg');
    for (const l of lines) expect(conf).toContain(`\n${l}\n`);
    expect(lines).toContain('dhcp-match=set:cb-ipxe,175');
    expect(lines).toContain('dhcp-match=set:cb-efi64,option:client-arch,7');
    expect(lines).toContain('dhcp-match=set:cb-efi64,option:client-arch,9');
    expect(conf).not.toContain('\ndhcp-boot=boot.scr.uimg\n');
  });

  // dnsmasq's own rule: a dhcp-boot applies when all its tags match (tag:!x: x not set). A small model of it
  // checks that exactly one line applies to every kind of request, so the order of the lines cannot matter.
  test('exactly one dhcp-boot line matches each kind of client', () => {
    const boots = pxeDnsmasqLines([pc], 'boot.scr.uimg')
      .filter((l) => l.startsWith('dhcp-boot='))
      .map((l) => {
        const f = l.slice('dhcp-boot='.length).split(',');
        return { tags: f.filter((x) => x.startsWith('tag:')).map((x) => x.slice(4)), file: f.at(-1) };
      });
    const pick = (set: string[]) =>
      boots
        .filter((b) => b.tags.every((t) => (t.startsWith('!') ? !set.includes(t.slice(1)) : set.includes(t))))
        .map((b) => b.file);
    expect(pick([])).toEqual(['boot.scr.uimg']); // U-Boot node (client-arch 0x16 or none)
    expect(pick(['cb-amd64'])).toEqual([IPXE_BIOS]); // PC, BIOS PXE (client-arch 0)
    expect(pick(['cb-amd64', 'cb-efi64'])).toEqual([IPXE_EFI]); // PC, UEFI PXE (7 or 9)
    expect(pick(['cb-amd64', 'cb-ipxe'])).toEqual([IPXE_SCRIPT]); // iPXE itself (BIOS)
    expect(pick(['cb-amd64', 'cb-ipxe', 'cb-efi64'])).toEqual([IPXE_SCRIPT]); // iPXE itself (UEFI)
    expect(pick(['cb-ipxe'])).toEqual(['boot.scr.uimg']); // an unlisted iPXE machine gets no PC chain
  });

  test('dhcpHostLine keeps a node lease', () => {
    expect(dhcpHostLine({ ...pc, lease: '12h' }, '1h')).toBe(
      'dhcp-host=52:54:00:00:00:02,set:cb-amd64,pc1,10.77.0.12,12h',
    );
  });
});

describe('iPXE script', () => {
  test('kernel with initrd= and the bootargs, the initramfs, boot; names relative to the TFTP server', () => {
    const s = renderIpxeScript({ bootargs: 'console=ttyS0 disk=/dev/nvme0n1', id: 'abc' });
    const lines = s.split('\n');
    expect(lines[0]).toBe('#!ipxe');
    expect(lines).toContain(`kernel ${KERNEL_AMD64} initrd=${INITRAMFS_AMD64} console=ttyS0 disk=/dev/nvme0n1`);
    expect(lines).toContain(`initrd ${INITRAMFS_AMD64}`);
    expect(lines.indexOf('boot')).toBeGreaterThan(lines.indexOf(`initrd ${INITRAMFS_AMD64}`));
    expect(s).toContain('# first stage abc');
    expect(s).not.toMatch(/tftp:\/\//);
  });
});

describe('stage with amd64 nodes', () => {
  let tmp = '';
  let n = 0;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'x86-stage-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  // a bzImage as far as the check reads it: "HdrS" at 0x202
  const bzImage = () => {
    const b = Buffer.alloc(4096, 0x90);
    b.write('HdrS', 0x202, 'latin1');
    return b;
  };
  function setup(list: string): StageOptions & { dir: string } {
    const dir = join(tmp, `s${n++}`);
    mkdirSync(join(dir, 'ipxe'), { recursive: true });
    writeFileSync(join(dir, 'nodes.txt'), list);
    writeFileSync(join(dir, 'vmlinuz'), Buffer.alloc(8192, 3));
    writeFileSync(
      join(dir, 'initramfs.igz.uimg'),
      writeUImage(new Uint8Array(4096).fill(0x1f), { arch: 'arm64', type: 'ramdisk', comp: 'gzip', name: 'x' }),
    );
    writeFileSync(join(dir, 'bzImage'), bzImage());
    writeFileSync(join(dir, 'initramfs.igz'), Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]));
    writeFileSync(join(dir, 'ipxe', IPXE_BIOS), 'bios-ipxe');
    writeFileSync(join(dir, 'ipxe', IPXE_EFI), 'efi-ipxe');
    return {
      dir,
      nodesFile: join(dir, 'nodes.txt'),
      masterRoot: join(dir, 'slaves'),
      stateDir: join(dir, 'state'),
      kernel: join(dir, 'vmlinuz'),
      initramfs: join(dir, 'initramfs.igz.uimg'),
      bootargs: 'console=ttyAMA0 disk=/dev/mmcblk0',
      arch: 'arm64',
      dnsmasqConf: join(dir, 'dnsmasq.conf'),
      masterIp: '10.77.0.1',
      subnet: '10.77.0.0/24',
      domain: 'cluster.lan',
      lease: '1h',
      ipxeDir: join(dir, 'ipxe'),
    };
  }
  const LIST = 'b8:27:eb:cb:63:18 pi1 10.77.0.11\n52:54:00:00:00:02 pc1 10.77.0.12 arch=amd64\n';
  const problems = (f: () => unknown): string[] => {
    try {
      f();
    } catch (e) {
      if (e instanceof StageError) return e.problems;
      throw e;
    }
    return [];
  };

  test('writes the amd64 kernel, the plain initramfs, both iPXE binaries and the script into tftp/', () => {
    const o = setup(LIST);
    const amd64 = {
      kernel: join(o.dir, 'bzImage'),
      initramfs: join(o.dir, 'initramfs.igz'),
      bootargs: 'console=ttyS0 disk=/dev/sda',
    };
    const r = stage({ ...o, amd64 });
    const tftp = join(o.masterRoot, 'tftp');
    expect(readFileSync(join(tftp, KERNEL_AMD64))).toEqual(bzImage());
    expect(readFileSync(join(tftp, INITRAMFS_AMD64))).toEqual(readFileSync(amd64.initramfs));
    expect(readFileSync(join(tftp, IPXE_BIOS), 'utf8')).toBe('bios-ipxe');
    expect(readFileSync(join(tftp, IPXE_EFI), 'utf8')).toBe('efi-ipxe');
    expect(readFileSync(join(tftp, IPXE_SCRIPT), 'utf8')).toContain('console=ttyS0 disk=/dev/sda');
    expect(r.written).toContain(join(tftp, IPXE_SCRIPT));
    expect(readFileSync(o.dnsmasqConf, 'utf8')).toContain('set:cb-amd64,pc1');
    expect(readFileSync(join(o.stateDir, 'nodes.list'), 'utf8')).toContain('pc1 10.77.0.12 arch=amd64');
  });

  test('an arm64-only list writes no PXE files even with --kernel-amd64', () => {
    const o = setup('b8:27:eb:cb:63:18 pi1 10.77.0.11\n');
    stage({
      ...o,
      amd64: { kernel: join(o.dir, 'bzImage'), initramfs: join(o.dir, 'initramfs.igz'), bootargs: 'x=1' },
    });
    expect(existsSync(join(o.masterRoot, 'tftp', IPXE_SCRIPT))).toBe(false);
  });

  test('refused before writing: amd64 nodes without an amd64 first stage, a uImage, a non-bzImage, no iPXE', () => {
    const o = setup(LIST);
    expect(problems(() => stage(o))).toEqual([
      expect.stringMatching(/amd64 nodes \(pc1\) but no amd64 first stage: give --kernel-amd64/),
    ]);
    expect(existsSync(o.dnsmasqConf)).toBe(false);
    const p = problems(() =>
      stage({
        ...o,
        ipxeDir: join(o.dir, 'none'),
        amd64: { kernel: o.kernel, initramfs: o.initramfs, bootargs: 'a=$x' },
      }),
    );
    expect(p.some((x) => /--initramfs-amd64 .* is a U-Boot image: PCs boot the plain initramfs\.igz/.test(x))).toBe(
      true,
    );
    expect(p.some((x) => /--kernel-amd64 .* is not an x86 bzImage/.test(x))).toBe(true);
    expect(p.some((x) => /^--bootargs-amd64: bootargs may not hold/.test(x))).toBe(true);
    expect(p.filter((x) => /iPXE binary .* does not exist: install Debian's ipxe package/.test(x))).toHaveLength(2);
    expect(existsSync(o.dnsmasqConf)).toBe(false);
  });

  test('pxeProblems is silent for a list without amd64 nodes', () => {
    expect(pxeProblems([node(1, 'b8:27:eb:cb:63:18', 'pi1', '10.77.0.11')], undefined)).toEqual([]);
  });
});

describe('GPT with an ESP for the boot role', () => {
  const sizes = { bootMiB: 256, rootMiB: 4096, writableMiB: 2048, dataMiB: 1024 };

  test('layout: p1 the ESP, p2-p4 Linux, MiB-aligned, our disk identifier; sfdisk dump round trip', () => {
    const t = layoutTable('gpt', sizes);
    expect(t.partitions.map((p) => [p.index, p.start, p.size, p.type === ESP_GUID])).toEqual([
      [1, 2048, 256 * 2048, true],
      [2, 2048 + 256 * 2048, 4096 * 2048, false],
      [3, 2048 + 4352 * 2048, 2048 * 2048, false],
      [4, 2048 + 6400 * 2048, 1024 * 2048, false],
    ]);
    const text = renderLayout('gpt', sizes, '/dev/nvme0n1');
    expect(text).toContain(
      `/dev/nvme0n1p1 : start=2048, size=524288, type=${ESP_GUID}, name="ESP", attrs="LegacyBIOSBootable"`,
    );
    expect(hasOurLabelId(text)).toBe(true);
    const back = parseSfdiskDump(text);
    expect(back.ok).toBe(true);
    if (!back.ok) return;
    expect(back.table.partitions).toEqual(t.partitions);
    // 8 GiB: fits (the backup GPT at the end included); 7 GiB does not
    expect(validateTable(back.table, 8 * 1024 * 2048)).toEqual([]);
    expect(validateTable(back.table, 7 * 1024 * 2048).length).toBeGreaterThan(0);
    expect(espProblem(text)).toBeNull();
  });

  test('/dev/sda names partitions sda1.., /dev/nvme0n1 nvme0n1p1..', () => {
    expect(renderLayout('gpt', sizes, '/dev/sda')).toMatch(/^\/dev\/sda1 : start=2048,/m);
    expect(renderLayout('gpt', sizes, '/dev/sda')).toMatch(/^\/dev\/sda4 : /m);
    expect(partName('/dev/nvme0n1', 1)).toBe('/dev/nvme0n1p1');
    expect(partName('/dev/sda', 3)).toBe('/dev/sda3');
  });

  test('a blank disk gets the GPT and p1 (the ESP) is formatted vfat like the boot role', () => {
    const p = planPartitions({
      wantedText: renderLayout('gpt', sizes),
      currentText: null,
      diskSectors: 16 * 1024 * 2048,
    });
    expect(p.action).toBe('repartition');
    if (p.action !== 'repartition') return;
    expect(p.table.label).toBe('gpt');
    expect(p.format.find((r) => r.index === 1)).toEqual({ index: 1, role: 'boot', fs: 'vfat' });
  });

  test('dos layout for Pis; a GPT whose p1 is not the ESP is named', () => {
    const dos = renderLayout('dos', sizes, '/dev/mmcblk0');
    expect(dos).toMatch(/^\/dev\/mmcblk0p1 : start=2048, size=524288, type=c, bootable$/m);
    expect(espProblem(dos)).toBeNull();
    const bad = renderLayout('gpt', sizes).replace(ESP_GUID, '0FC63DAF-8483-4772-8E79-3D69D8477DE4');
    expect(espProblem(bad)).toMatch(/p1 .* is the boot role but has type 0FC63DAF.*not the EFI system partition/);
    expect(() => layoutTable('gpt', { ...sizes, rootMiB: 0 })).toThrow(/partition 2 \(root\)/);
  });
});

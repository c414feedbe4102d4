// An x86-64 node in the virtual cluster beside an arm64 one (#17): the master's dnsmasq, staged by
// `builder stage` from a node list that says `arch=amd64`, answers the PC's PXE ROM (QEMU's own iPXE, from
// Debian's ipxe-qemu, `-boot n`) with clusterboot.ipxe, which loads the amd64 kernel and the plain initramfs by
// TFTP. The x64 agent runs the same phases on an NVMe disk (disk=/dev/nvme0n1, partitions nvme0n1pN) and
// boots the template's amd64 init; both nodes report into the same `builder status` table. One cold boot each.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accessFiles } from '../../builder/image/pack.ts';
import { INITRAMFS_AMD64, IPXE_SCRIPT, KERNEL_AMD64, TAG_AMD64 } from '../../builder/master/pxe.ts';
import { resultOf, sfdiskDump, type BootResult } from '../rig/boot.ts';
import { MASTER_IP, VirtualCluster, nodeSpecs, type NodeSpec } from '../rig/cluster.ts';
import { AMD64_INIT, addAmd64Init, imagesAmd64, kvmWorks, x86Argv, type Amd64Images } from '../rig/images-amd64.ts';
import { sysroot } from '../rig/images.ts';
import { templateSum, testKeys } from '../rig/master.ts';
import { QemuNode } from '../rig/qemu.ts';
import { PHASE_NAMES } from '../../agent/sequence.ts';

let vc: VirtualCluster;
let work: string;
let x86: Amd64Images;
let kvm = false;
const [arm] = nodeSpecs(1) as [NodeSpec];
const pc: NodeSpec = { hostname: 'pc1', mac: '52:54:00:c1:00:21', ip: '10.77.0.31', arch: 'amd64' };
const PC_DISK = '/dev/nvme0n1';

beforeAll(async () => {
  const sr = await sysroot();
  const k = testKeys();
  x86 = await imagesAmd64({
    extra: accessFiles({
      keysDir: k.dir,
      masterHostKeyPub: readFileSync(`${k.hostKey}.pub`, 'utf8'),
      sign: false,
      report: true,
    }),
  });
  kvm = kvmWorks(x86.kernel);
  console.error(`x86 node: ${kvm ? 'KVM' : 'TCG (KVM absent or not working here)'}`);
  work = mkdtempSync(join(tmpdir(), 'cb-x86-'));
  vc = new VirtualCluster(work, [arm, pc], join(sr.root, 'bin/busybox'));
  vc.amd64 = {
    kernel: x86.kernel,
    initramfs: x86.initramfs,
    bootargs: `console=ttyS0 panic=10 disk=${PC_DISK} retries=3 leds=off syslog=${MASTER_IP} init=${AMD64_INIT}`,
  };
  await vc.start({ taps: 2 });
  // the template gets its amd64 init beside the arm64 one, then is published again
  addAmd64Init(vc.masterRoot, x86.busybox, PC_DISK);
  await vc.master.publish('rootfs');
  vc.blankDisks([arm, pc]);
}, 20 * 60_000);

afterAll(async () => {
  await vc?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

/** Power the PC on (again after each reboot) until its template's init ran. */
async function bootPc(maxBoots = 4): Promise<BootResult[]> {
  const out: BootResult[] = [];
  for (let i = 0; i < maxBoots; i++) {
    const node = new QemuNode({
      tftpDir: '',
      disk: vc.disk(pc),
      wrap: vc.wrap,
      logFile: join(work, `${pc.hostname}.console.log`),
      argv: x86Argv({ tap: 1, mac: pc.mac, disk: vc.disk(pc), kvm }),
    });
    const t0 = performance.now();
    try {
      await node.waitForExit(600_000);
    } finally {
      await node.kill();
    }
    const r = resultOf(node, t0);
    out.push(r);
    if (r.ending !== 'reboot') break;
  }
  return out;
}

let pcBoots: BootResult[] = [];
let armBoots: BootResult[] = [];

describe('x86-64 node', () => {
  test('stage writes the PXE chain: dnsmasq rules for amd64 nodes, the iPXE script and its files', () => {
    const conf = readFileSync(vc.conf, 'utf8');
    expect(conf).toContain(`dhcp-host=${pc.mac},set:${TAG_AMD64},pc1,${pc.ip},1h`);
    expect(conf).toContain(`dhcp-host=${arm.mac},node1,${arm.ip},1h`);
    expect(conf).toMatch(/^dhcp-match=set:cb-ipxe,175$/m);
    expect(conf).toMatch(/^dhcp-boot=tag:cb-amd64,tag:cb-ipxe,clusterboot\.ipxe$/m);
    const tftp = join(vc.masterRoot, 'tftp');
    for (const f of [KERNEL_AMD64, INITRAMFS_AMD64, IPXE_SCRIPT, 'undionly.kpxe', 'snponly.efi'])
      expect(existsSync(join(tftp, f))).toBe(true);
    expect(readFileSync(join(tftp, IPXE_SCRIPT), 'utf8')).toContain(`disk=${PC_DISK}`);
    expect(readFileSync(join(vc.stateDir, 'nodes.list'), 'utf8')).toContain(`${pc.mac} pc1 ${pc.ip} arch=amd64`);
  });

  test('from blank disks at once: the PC PXE-boots through iPXE, the arm64 node through U-Boot; both run every phase and hand off', async () => {
    const t0 = performance.now();
    [pcBoots, armBoots] = await Promise.all([bootPc(), vc.bootUntilUp(arm, 0)]);
    const total = (performance.now() - t0) / 1000;
    const secs = pcBoots.map((r) => r.seconds.toFixed(1));
    console.error(
      `x86 node: ${pcBoots.length} power-ons (${secs.join(' s + ')} s = ${pcBoots.reduce((n, r) => n + r.seconds, 0).toFixed(1)} s); ` +
        `arm64 node: ${armBoots.length} (${armBoots.map((r) => r.seconds.toFixed(1)).join(' s + ')} s); both done in ${total.toFixed(1)} s`,
    );
    const last = pcBoots.at(-1);
    expect(pcBoots.map((r) => r.ending)).toEqual(['reboot', 'template']);
    expect(armBoots.at(-1)?.ending).toBe('template');
    // the PXE chain, from the master's side: iPXE was given the script, and fetched the amd64 first stage
    expect(vc.dnsmasqLog).toMatch(
      new RegExp(`sent \\S*/${IPXE_SCRIPT.replace('.', '\\.')} to ${pc.ip.replace(/\./g, '\\.')}`),
    );
    expect(vc.dnsmasqLog).toMatch(new RegExp(`sent \\S*/${KERNEL_AMD64} to ${pc.ip.replace(/\./g, '\\.')}`));
    expect(vc.dnsmasqLog).toMatch(
      new RegExp(`sent \\S*/${INITRAMFS_AMD64.replace('.', '\\.')} to ${pc.ip.replace(/\./g, '\\.')}`),
    );
    // an x86-64 kernel ran the x64 agent through every phase
    expect(last?.raw).toMatch(/Linux version \S+-amd64/);
    const started = [
      ...new Set(pcBoots.flatMap((r) => r.events.filter((e) => e.kind === 'phase-start').map((e) => e.phase))),
    ];
    expect(started).toEqual([...PHASE_NAMES]);
    // the disk is an NVMe namespace: partitioned and formatted as the master's table says
    expect(pcBoots[0]?.console).toMatch(
      /\[5\/12 disk\] \/dev\/nvme0n1: .*serial cbx86disk, no partition table; blank disk/,
    );
    expect(pcBoots[0]?.console).toContain('formatting /dev/nvme0n1p1 as vfat (boot)');
    expect(sfdiskDump(vc.disk(pc))).toMatch(/pc1\.img4 : start=\s*1378304, size=\s*409600/);
    // the template's amd64 init: its own host name, the overlay root, the master's bytes, p4 on nvme0n1p4
    expect(last?.console).toContain('TEMPLATE-INIT pid=1');
    expect(last?.console).toContain('hostname=pc1');
    expect(last?.console).toMatch(/TEMPLATE-ROOT overlay overlay/);
    expect(last?.console).toContain(`TEMPLATE-SUM ${templateSum(vc.masterRoot)}`);
    expect(last?.console).toContain('TEMPLATE-P4 before=no');
  }, 900_000);

  test('builder status: the PC and the Pi in one table, both ok', () => {
    const text = vc.status();
    console.error(text);
    expect(text).toMatch(/pc1\s+52:54:00:c1:00:21\s+10\.77\.0\.31\s+.*\bok\b/);
    expect(text).toMatch(/node1\s+52:54:00:c1:00:01\s+10\.77\.0\.11\s+.*\bok\b/);
    const rows = (JSON.parse(vc.status(true)) as { rows: Array<Record<string, unknown>> }).rows;
    expect(rows.find((r) => r.mac === pc.mac)?.result).toBe('ok');
    expect(rows.find((r) => r.mac === arm.mac)?.result).toBe('ok');
  });
});

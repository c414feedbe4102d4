// What an x86-64 test node boots: the amd64 sysroot (Debian's amd64 packages and linux-image-amd64, in
// .cache/sysroot-amd64), the x64 agent, the plain initramfs; and the amd64 init the template gets beside its
// arm64 one, so one template serves both kinds of node in the virtual cluster.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildAgent, REPO } from '../../builder/image/agentbuild.ts';
import { type ExtraFile, type PackResult } from '../../builder/image/pack.ts';
import { DEFAULT_PACKAGES, fetchSysroot, KERNEL_PACKAGES } from '../../builder/image/sysroot.ts';
import { AMD64_MODULES } from '../../builder/master/pxe.ts';
import { CACHE, hashTree, packOnce } from './images.ts';
import { withCacheLock } from './cachelock.ts';
import { TEMPLATE_INIT } from './master.ts';

export interface Amd64Images {
  kernel: string;
  /** The plain initramfs (what iPXE loads). */
  initramfs: string;
  sysroot: string;
  kernelVersion: string;
  busybox: string;
  pack: PackResult;
}

export async function sysrootAmd64(): Promise<{ root: string; kernelVersion: string }> {
  const r = await withCacheLock(CACHE, 'sysroot-amd64', () =>
    fetchSysroot({
      cache: join(CACHE, 'sysroot-amd64'),
      packages: [...DEFAULT_PACKAGES, KERNEL_PACKAGES.amd64],
      arch: 'amd64',
      log: (s) => console.error(s),
    }),
  );
  const kernelVersion = r.kernels[0];
  if (!kernelVersion) throw new Error('the amd64 sysroot has no kernel: linux-image-amd64 did not unpack');
  return { root: r.root, kernelVersion };
}

/** The x64 agent, rebuilt only when agent/ or package.json changed. */
export async function agentBinaryX64(): Promise<string> {
  const h = createHash('sha256');
  hashTree(h, join(REPO, 'agent'));
  h.update(readFileSync(join(REPO, 'package.json')));
  const dir = join(CACHE, 'agent', `${h.digest('hex').slice(0, 16)}-x64`);
  const path = join(dir, 'clusterboot-agent-x64');
  if (!existsSync(path))
    await withCacheLock(CACHE, 'agent x64', async () => {
      if (!existsSync(path)) await buildAgent('x64', dir);
    });
  return path;
}

/** Kernel + plain initramfs for an x86-64 test node; `extra` files (keys) are part of the cache key. */
export async function imagesAmd64(opts: { extra?: ExtraFile[] } = {}): Promise<Amd64Images> {
  const sr = await sysrootAmd64();
  const agent = await agentBinaryX64();
  const h = createHash('sha256');
  h.update(agent);
  hashTree(h, join(REPO, 'initramfs-skel'));
  hashTree(h, join(REPO, 'builder'));
  h.update(JSON.stringify({ arch: 'amd64', k: sr.kernelVersion }));
  for (const x of opts.extra ?? []) {
    h.update(x.path);
    h.update(x.data);
  }
  const dir = join(CACHE, 'images', `${h.digest('hex').slice(0, 16)}-amd64`);
  const result = await packOnce(dir, join(sr.root, 'boot', `vmlinuz-${sr.kernelVersion}`), {
    sysroot: sr.root,
    agent,
    skel: join(REPO, 'initramfs-skel'),
    arch: 'x86_64',
    kernelModules: join(sr.root, 'lib/modules', sr.kernelVersion),
    modules: AMD64_MODULES,
    compress: 'gzip',
    sourceDateEpoch: 0,
    extra: opts.extra ?? [],
  });
  return {
    kernel: join(dir, 'vmlinuz'),
    initramfs: join(dir, 'initramfs.igz'),
    sysroot: sr.root,
    kernelVersion: sr.kernelVersion,
    busybox: join(sr.root, 'bin/busybox'),
    pack: result,
  };
}

/** Where the amd64 init lives in the template; an x86 node boots it with `init=`. */
export const AMD64_INIT = '/sbin/init-amd64';
export const AMD64_BUSYBOX = '/bin/busybox-amd64';

/**
 * The template's init for amd64 nodes: the arm64 one (TEMPLATE_INIT), run by the amd64 busybox, probing
 * p4 of `disk`. Written into <master root>/rootfs beside the arm64 busybox; publish rootfs afterwards.
 */
export function addAmd64Init(masterRoot: string, busybox: string, disk: string): void {
  const rootfs = join(masterRoot, 'rootfs');
  copyFileSync(busybox, join(rootfs, AMD64_BUSYBOX));
  chmodSync(join(rootfs, AMD64_BUSYBOX), 0o755);
  const p4 = /[0-9]$/.test(disk) ? `${disk}p4` : `${disk}4`;
  const init = TEMPLATE_INIT.replace(/^#!\/bin\/sh\n/, `#!${AMD64_BUSYBOX} sh\n`)
    .replace('B=/bin/busybox\n', `B=${AMD64_BUSYBOX}\n`)
    .replaceAll('/dev/vda4', p4);
  if (!init.startsWith(`#!${AMD64_BUSYBOX} sh\n`) || !init.includes(`B=${AMD64_BUSYBOX}\n`))
    throw new Error('TEMPLATE_INIT changed its first lines: addAmd64Init must follow it');
  writeFileSync(join(rootfs, AMD64_INIT), init, { mode: 0o755 });
}

/** QEMU for an x86-64 PC on a tap: SeaBIOS, `-boot n` into QEMU's own iPXE NIC ROM (ipxe-qemu), an NVMe disk. */
export function x86Argv(o: {
  tap: number;
  mac: string;
  disk: string;
  serial?: string;
  memoryMb?: number;
  kvm: boolean;
}): string[] {
  return [
    'qemu-system-x86_64',
    '-machine',
    `pc,accel=${o.kvm ? 'kvm' : 'tcg'}`,
    // Bun's x64 build needs AVX2: the host's CPU under KVM (arch-capabilities off: nested KVM refuses its MSR),
    // QEMU's max model under TCG (7.2 emulates AVX2)
    '-cpu',
    o.kvm ? 'host,arch-capabilities=off' : 'max',
    '-smp',
    '1',
    '-m',
    String(o.memoryMb ?? 1024),
    '-display',
    'none',
    '-serial',
    'stdio',
    '-monitor',
    'none',
    '-no-reboot',
    '-boot',
    'n',
    '-netdev',
    `tap,id=n0,ifname=cbtap${o.tap},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=n0,mac=${o.mac}`, // QEMU's default ROM: iPXE (efi-virtio.rom, ipxe-qemu),
    '-drive',
    `if=none,id=d0,file=${o.disk},format=raw,cache=unsafe`,
    '-device',
    `nvme,drive=d0,serial=${o.serial ?? 'cbx86disk'}`,
    '-device',
    'i6300esb',
  ];
}

/** QEMU's iPXE ROM for virtio-net (BIOS and UEFI in one file), from Debian's ipxe-qemu; QEMU finds it by itself (an explicit romfile= path here loaded no ROM at all). */
export const X86_NIC_ROM = '/usr/lib/ipxe/qemu/efi-virtio.rom';

let kvm: boolean | undefined;
/**
 * Whether KVM really runs an x86-64 guest here: /dev/kvm can exist and still hang every guest (nested
 * virtualisation), so the amd64 kernel is started under KVM for at most 10 s and must print its banner.
 * Run it under the QEMU lock, like every boot.
 */
export function kvmWorks(kernel: string): boolean {
  if (kvm !== undefined) return kvm;
  if (!existsSync('/dev/kvm')) return (kvm = false);
  const r = spawnSync(
    'qemu-system-x86_64',
    [
      '-machine',
      'pc,accel=kvm',
      '-cpu',
      'host,arch-capabilities=off',
      '-m',
      '256',
      '-display',
      'none',
      '-monitor',
      'none',
      '-serial',
      'stdio',
      '-no-reboot',
      '-kernel',
      kernel,
      '-append',
      'console=ttyS0 panic=-1',
    ],
    { encoding: 'utf8', timeout: 10_000, killSignal: 'SIGKILL' },
  );
  return (kvm = /Linux version/.test(r.stdout ?? ''));
}

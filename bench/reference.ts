// The benchmark's yardstick: an initramfs with the same sysroot tools, kernel modules, skeleton and access
// files as the agent's (builder/pack.ts), but bench/init.sh (the seed's flow in busybox sh) as /init and no
// agent binary. Built once per input hash into .cache/images-ref/<hash>, as test/rig/images.ts does for the
// agent's images, with the same kernel copied next to it so a benchmark can boot either one.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scriptImage } from '../agent/contract/uimage.ts';
import { REPO } from '../builder/image/agentbuild.ts';
import type { Compression } from '../builder/image/compress.ts';
import { pack, type ExtraFile, type PackResult } from '../builder/image/pack.ts';
import { hashTree, type Images } from '../test/rig/images.ts';

/** The reference /init. */
export const REFERENCE_INIT = join(REPO, 'bench', 'init.sh');
/** Separate from the agent's .cache/images: the two never share a directory. */
export const REFERENCE_CACHE = join(REPO, '.cache', 'images-ref');

export interface ReferenceOptions {
  /** The unpacked sysroot and its kernel; default: test/rig/images.ts sysroot() (fetched once into .cache). */
  sysroot?: { root: string; kernelVersion: string };
  /** Access files (node key, pinned known_hosts, ...); default: test/rig/master.ts testAccessFiles(), as the test cluster packs. */
  extra?: ExtraFile[];
  /** Extra modules besides the phases' list; default ['i6300esb'], as test/rig/images.ts. */
  modules?: string[];
  compress?: Compression;
  /** Cache root; default .cache/images-ref. */
  cache?: string;
  /** The init script; default bench/init.sh. */
  init?: string;
}

/** The same shape as the agent's images, so the rig boots either. */
export type ReferenceImages = Images;

/** Build (or reuse) the reference initramfs.igz.uimg; same inputs as the agent's image, minus the agent. */
export async function packReference(opts: ReferenceOptions = {}): Promise<ReferenceImages> {
  const sr = opts.sysroot ?? (await (await import('../test/rig/images.ts')).sysroot());
  const extra = opts.extra ?? (await import('../test/rig/master.ts')).testAccessFiles();
  const modules = opts.modules ?? ['i6300esb'];
  const compression = opts.compress ?? 'gzip';
  const init = readFileSync(opts.init ?? REFERENCE_INIT);

  const h = createHash('sha256');
  h.update('clusterboot reference initramfs 1\0');
  h.update(init);
  hashTree(h, join(REPO, 'initramfs-skel'));
  hashTree(h, join(REPO, 'builder'));
  h.update(JSON.stringify({ c: compression, m: modules, k: sr.kernelVersion, s: sr.root }));
  for (const x of extra) {
    h.update(`${x.path}\0${x.mode ?? 0o644}\0`);
    h.update(x.data);
  }
  const dir = join(opts.cache ?? REFERENCE_CACHE, h.digest('hex').slice(0, 16));
  const manifest = join(dir, 'initramfs.manifest.json');
  const vmlinuz = join(sr.root, 'boot', `vmlinuz-${sr.kernelVersion}`);
  const kernel = existsSync(vmlinuz) ? join(dir, 'vmlinuz') : '';

  let result: PackResult;
  if (existsSync(manifest) && (kernel === '' || existsSync(kernel))) {
    result = JSON.parse(readFileSync(manifest, 'utf8')) as PackResult;
  } else {
    result = await pack({
      sysroot: sr.root,
      agent: null,
      init,
      skel: join(REPO, 'initramfs-skel'),
      out: dir,
      arch: 'arm64',
      kernelModules: join(sr.root, 'lib/modules', sr.kernelVersion),
      modules,
      compress: compression,
      sourceDateEpoch: 0,
      extra,
      name: 'clusterboot reference initramfs',
    });
    if (kernel !== '') copyFileSync(vmlinuz, kernel);
  }
  return {
    dir,
    kernel,
    initramfs: join(dir, 'initramfs.igz.uimg'),
    sysroot: sr.root,
    kernelVersion: sr.kernelVersion,
    pack: result,
  };
}

/**
 * The reference's network script (tftp/boot.scr.uimg): the seed's flow, every boot TFTPs the kernel and the
 * initramfs and boots them; no cache, no checks, no tries. It takes the U-Boot settings the agent's scripts use
 * (TFTP block size, the initrd left in place), so the two differ only in where the first stage comes from.
 * `vmlinuz.gz` (default) is the gzip'd kernel `builder stage` serves (booti decompresses it); `vmlinuz` the raw Image.
 */
export function referenceNetScript(o: { bootargs: string; kernel?: 'vmlinuz.gz' | 'vmlinuz' }): string {
  const kernel = o.kernel ?? 'vmlinuz.gz';
  const fail = (what: string) => `else echo "refboot: TFTP of ${what} failed, resetting in 10s"; sleep 10; reset; fi`;
  return [
    '# clusterboot benchmark: the reference network script (the seed flow: kernel + initramfs by TFTP, every boot)',
    'echo "refboot: reference network script from ${serverip}"',
    'setenv autoload no',
    'setenv initrd_high 0xffffffffffffffff',
    'setenv tftpblocksize 1468',
    `if tftp \${kernel_addr_r} ${kernel}; then echo "refboot: kernel loaded"; ${fail(kernel)}`,
    ...(kernel === 'vmlinuz.gz'
      ? [
          'setenv kernel_comp_size ${filesize}',
          'if test -z "${kernel_comp_addr_r}"; then setexpr kernel_comp_addr_r ${ramdisk_addr_r} + 0x6000000; fi',
        ]
      : []),
    `if tftp \${ramdisk_addr_r} initramfs.igz.uimg; then echo "refboot: initramfs loaded"; ${fail('initramfs.igz.uimg')}`,
    `setenv bootargs "${o.bootargs.replace(/"/g, '')}"`,
    'booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}',
    'echo "refboot: boot failed, resetting in 10s"',
    'sleep 10',
    'reset',
    '',
  ].join('\n');
}

/**
 * A TFTP folder for the reference on the virtual cluster: `dir` is `<master tftp>/<node IP>`, which dnsmasq
 * serves to that node alone with `tftp-unique-root=ip` (every other node falls back to the master's own folder).
 * The kernel is the one `builder stage` wrote (copied from `kernelFrom`), the initramfs the reference's.
 */
export function referenceTftp(
  dir: string,
  o: { kernelFrom: string; initramfs: string; bootargs: string; kernel?: 'vmlinuz.gz' | 'vmlinuz' },
): string {
  mkdirSync(dir, { recursive: true });
  const kernel = o.kernel ?? 'vmlinuz.gz';
  copyFileSync(o.kernelFrom, join(dir, kernel));
  copyFileSync(o.initramfs, join(dir, 'initramfs.igz.uimg'));
  writeFileSync(
    join(dir, 'boot.scr.uimg'),
    scriptImage(referenceNetScript({ bootargs: o.bootargs, kernel }), {
      arch: 'arm64',
      name: 'clusterboot reference',
      time: 0,
    }),
  );
  return dir;
}

// The benchmark's yardstick: an initramfs with the same sysroot tools, kernel modules, skeleton and access
// files as the agent's (builder/pack.ts), but bench/init.sh (the seed's flow in busybox sh) as /init and no
// agent binary. Built once per input hash into .cache/images-ref/<hash>, as test/rig/images.ts does for the
// agent's images, with the same kernel copied next to it so a benchmark can boot either one.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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

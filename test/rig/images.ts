// Builds what a test node boots (sysroot, agent, initramfs, kernel) once, cached by the hash of its inputs.
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { buildAgent, REPO } from '../../builder/image/agentbuild.ts';
import { bootScript } from '../../builder/image/bootscript.ts';
import type { Compression } from '../../builder/image/compress.ts';
import { pack, type ExtraFile, type PackOptions, type PackResult } from '../../builder/image/pack.ts';
import { DEFAULT_PACKAGES, fetchSysroot, TEST_KERNEL_PACKAGE } from '../../builder/image/sysroot.ts';
import { scriptImage } from '../../agent/contract/uimage.ts';
import { withCacheLock } from './cachelock.ts';

export const CACHE = join(REPO, '.cache');

export interface Images {
  dir: string;
  kernel: string;
  initramfs: string;
  sysroot: string;
  kernelVersion: string;
  pack: PackResult;
}

/** Hash a tree's paths (relative to the repo) and contents, in a stable order: the cache keys. */
export function hashTree(h: ReturnType<typeof createHash>, dir: string): void {
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    const st = statSync(full);
    if (st.isDirectory()) hashTree(h, full);
    else {
      h.update(relative(REPO, full));
      h.update(readFileSync(full));
    }
  }
}

export async function sysroot(): Promise<{ root: string; kernelVersion: string }> {
  const r = await withCacheLock(CACHE, 'sysroot-arm64', () =>
    fetchSysroot({
      cache: join(CACHE, 'sysroot-arm64'),
      packages: [...DEFAULT_PACKAGES, TEST_KERNEL_PACKAGE],
      arch: 'arm64',
      log: (s) => console.error(s),
    }),
  );
  const kernelVersion = r.kernels[0];
  if (!kernelVersion) throw new Error('the sysroot has no kernel: linux-image-arm64 did not unpack');
  return { root: r.root, kernelVersion };
}

let agentPromise: Promise<string> | null = null;

/** The arm64 agent, rebuilt only when agent/ or package.json changed. */
export function agentBinary(): Promise<string> {
  agentPromise ??= (async () => {
    const h = createHash('sha256');
    hashTree(h, join(REPO, 'agent'));
    h.update(readFileSync(join(REPO, 'package.json')));
    const dir = join(CACHE, 'agent', h.digest('hex').slice(0, 16));
    const path = join(dir, 'clusterboot-agent-arm64');
    if (!existsSync(path))
      await withCacheLock(CACHE, 'agent arm64', async () => {
        if (!existsSync(path)) await buildAgent('arm64', dir);
      });
    return path;
  })();
  return agentPromise;
}

/** Kernel + initramfs for a test node; `extra` files (keys, known_hosts) are part of the cache key. */
export async function images(
  opts: { compress?: Compression; extra?: ExtraFile[]; modules?: string[] } = {},
): Promise<Images> {
  const sr = await sysroot();
  const agent = await agentBinary();
  const h = createHash('sha256');
  h.update(agent);
  hashTree(h, join(REPO, 'initramfs-skel'));
  hashTree(h, join(REPO, 'builder'));
  h.update(JSON.stringify({ c: opts.compress ?? 'gzip', m: opts.modules ?? [], k: sr.kernelVersion }));
  for (const x of opts.extra ?? []) {
    h.update(x.path);
    h.update(x.data);
  }
  const dir = join(CACHE, 'images', h.digest('hex').slice(0, 16));
  const result = await packOnce(dir, join(sr.root, 'boot', `vmlinuz-${sr.kernelVersion}`), {
    sysroot: sr.root,
    agent,
    skel: join(REPO, 'initramfs-skel'),
    arch: 'arm64',
    kernelModules: join(sr.root, 'lib/modules', sr.kernelVersion),
    modules: opts.modules ?? ['i6300esb'],
    compress: opts.compress ?? 'gzip',
    sourceDateEpoch: 0,
    extra: opts.extra ?? [],
  });
  return {
    dir,
    kernel: join(dir, 'vmlinuz'),
    initramfs: join(dir, 'initramfs.igz.uimg'),
    sysroot: sr.root,
    kernelVersion: sr.kernelVersion,
    pack: result,
  };
}

/**
 * The kernel and initramfs in `dir`, packed once across test processes (the .cache lock): whoever holds the lock
 * checks again, and the kernel goes in first, since pack writes initramfs.manifest.json last and a process that
 * sees it uses the folder without the lock. Returns what pack recorded.
 */
export async function packOnce(dir: string, kernel: string, o: Omit<PackOptions, 'out'>): Promise<PackResult> {
  const manifest = join(dir, 'initramfs.manifest.json');
  if (!existsSync(manifest))
    await withCacheLock(CACHE, `initramfs ${o.arch}`, async () => {
      if (existsSync(manifest)) return;
      mkdirSync(dir, { recursive: true });
      copyFileSync(kernel, join(dir, 'vmlinuz'));
      await pack({ ...o, out: dir });
    });
  return JSON.parse(readFileSync(manifest, 'utf8')) as PackResult;
}

/** A TFTP folder for one node: links to the shared kernel and initramfs, and its own boot script. */
export function tftpFolder(dir: string, img: Images, bootargs: string): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, target] of [
    ['vmlinuz', img.kernel],
    ['initramfs.igz.uimg', img.initramfs],
  ] as const) {
    const p = join(dir, name);
    rmSync(p, { force: true });
    symlinkSync(target, p);
  }
  const text = bootScript({ arch: 'arm64', kernel: 'vmlinuz', initramfs: 'initramfs.igz.uimg', bootargs });
  writeFileSync(join(dir, 'boot.scr.uimg'), scriptImage(text, { arch: 'arm64', name: 'clusterboot test', time: 0 }));
  return dir;
}

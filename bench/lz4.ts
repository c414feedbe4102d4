// An lz4 initramfs for the compression benchmark. builder/image/compress.ts has no lz4 (gzip, zstd, xz, none),
// and the builder is not changed for a measurement: this takes the cpio of the uncompressed image, compresses it
// with `lz4 -l -9` (the legacy frame the kernel's unpacker reads) and wraps it for U-Boot the way pack.ts does.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeUImage } from '../agent/contract/uimage.ts';
import { REPO } from '../builder/image/agentbuild.ts';
import type { Images } from '../test/rig/images.ts';

/** `base` must be an image packed with compress 'none' (its initramfs.igz is the plain cpio). */
export async function lz4Images(base: Images): Promise<Images> {
  const cpio = readFileSync(base.pack.igzPath);
  const dir = join(
    REPO,
    '.cache',
    'images-lz4',
    createHash('sha256').update('lz4 -l -9\0').update(cpio).digest('hex').slice(0, 16),
  );
  const igzPath = join(dir, 'initramfs.igz');
  const uimagePath = join(dir, 'initramfs.igz.uimg');
  if (!existsSync(uimagePath)) {
    const lz4 = Bun.which('lz4');
    if (lz4 === null) throw new Error('lz4 not found on PATH (apt-get install lz4)');
    const proc = Bun.spawn([lz4, '-l', '-9', '-q', '-c'], { stdin: cpio, stdout: 'pipe', stderr: 'pipe' });
    const [out, err, code] = await Promise.all([
      new Response(proc.stdout).arrayBuffer(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    if (code !== 0) throw new Error(`lz4 -l -9 exited with ${code}: ${err.trim()}`);
    const packed = new Uint8Array(out);
    mkdirSync(dir, { recursive: true });
    writeFileSync(igzPath, packed);
    writeFileSync(
      uimagePath,
      writeUImage(packed, { arch: 'arm64', type: 'ramdisk', comp: 'lz4', name: 'clusterboot initramfs', time: 0 }),
    );
  }
  return {
    ...base,
    dir,
    initramfs: uimagePath,
    pack: { ...base.pack, compressedBytes: statSync(igzPath).size, uimagePath, igzPath },
  };
}

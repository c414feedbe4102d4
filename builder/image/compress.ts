// Deterministic compression of initramfs images with codecs the Linux kernel can unpack.
import { gzipSync } from 'node:zlib';

export type Compression = 'gzip' | 'zstd' | 'xz' | 'none';

async function pipeThrough(tool: string, args: string[], data: Uint8Array): Promise<Uint8Array> {
  const exe = Bun.which(tool, { PATH: process.env.PATH ?? '' });
  if (exe === null) throw new Error(`compress: ${tool} not found on PATH (install it on the build host)`);
  // Bun writes the buffer to stdin itself while we drain stdout, so large inputs cannot deadlock.
  const proc = Bun.spawn([exe, ...args], { stdin: data, stdout: 'pipe', stderr: 'pipe' });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).arrayBuffer(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) throw new Error(`compress: ${tool} ${args.join(' ')} exited with ${code}: ${err.trim()}`);
  return new Uint8Array(out);
}

// Compresses an image reproducibly (same input and settings give the same bytes).
export async function compress(data: Uint8Array, how: Compression, opts: { level?: number } = {}): Promise<Uint8Array> {
  switch (how) {
    case 'none':
      return data;
    case 'gzip':
      // node:zlib writes mtime 0 and no file name, so the header is deterministic.
      return new Uint8Array(gzipSync(data, { level: opts.level ?? 9 }));
    case 'zstd': {
      const level = opts.level ?? 19;
      return pipeThrough('zstd', [...(level > 19 ? ['--ultra'] : []), `-${level}`, '-T2', '-q', '-c'], data);
    }
    case 'xz':
      // The kernel's XZ decoder only supports CRC32/none integrity checks, not xz's default CRC64.
      return pipeThrough(
        'xz',
        ['--check=crc32', opts.level === undefined ? '-9e' : `-${opts.level}`, '-T1', '-c'],
        data,
      );
  }
}

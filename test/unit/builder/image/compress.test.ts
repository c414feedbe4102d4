import { describe, expect, test, beforeAll, afterAll } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { compress } from '../../../../builder/image/compress.ts';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'compress-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Compressible but not trivial: repeated text with a changing counter, ~280 KB (larger than a pipe buffer).
const input = new TextEncoder().encode(
  Array.from({ length: 10_000 }, (_, i) => `line ${i} of the initramfs\n`).join(''),
);

function decompressWith(tool: string, data: Uint8Array): Uint8Array {
  const r = spawnSync(tool, ['-d', '-c'], { input: data, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${tool} -d failed: ${r.stderr}`);
  return new Uint8Array(r.stdout);
}

async function withPath<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = path;
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

describe('compress', () => {
  test('none returns the input unchanged', async () => {
    expect(await compress(input, 'none')).toEqual(input);
  });

  test('gzip round-trips and has a zero mtime and level-9 flag in its header', async () => {
    const gz = await compress(input, 'gzip');
    expect({ header: Array.from(gz.subarray(0, 10)), back: new Uint8Array(gunzipSync(gz)) }).toEqual({
      // magic, deflate, no flags, mtime 0, XFL=2 (max compression), OS=3 (unix)
      header: [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3],
      back: input,
    });
  });

  test('zstd round-trips through the zstd tool', async () => {
    expect(decompressWith('zstd', await compress(input, 'zstd'))).toEqual(input);
  });

  test('xz round-trips through the xz tool', async () => {
    expect(decompressWith('xz', await compress(input, 'xz', { level: 6 }))).toEqual(input);
  });

  test('xz streams use the CRC32 check the kernel decoder needs', async () => {
    const xz = await compress(input, 'xz');
    // stream header: 6 magic bytes, then flags 0x00 and check type (1 = CRC32)
    expect(Array.from(xz.subarray(0, 8))).toEqual([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01]);
    const file = join(dir, 'check.xz');
    writeFileSync(file, xz);
    const listing = spawnSync('xz', ['-l', '--robot', file], { encoding: 'utf8' }).stdout;
    expect(
      listing
        .split('\n')
        .find((l) => l.startsWith('file\t'))
        ?.split('\t')[6],
    ).toBe('CRC32');
  });

  test('every codec is deterministic', async () => {
    const codecs = ['gzip', 'zstd', 'xz'] as const;
    const first = await Promise.all(codecs.map((c) => compress(input, c)));
    const second = await Promise.all(codecs.map((c) => compress(input, c)));
    expect(second).toEqual(first);
  });

  test('a missing tool is a clear error', async () => {
    await withPath(dir, async () => {
      await expect(compress(input, 'zstd')).rejects.toThrow('zstd not found on PATH');
    });
  });

  test('a failing tool that never reads its input reports its exit code and stderr', async () => {
    const fake = join(dir, 'xz');
    writeFileSync(fake, '#!/bin/sh\necho "out of memory" >&2\nexit 3\n');
    chmodSync(fake, 0o755);
    await withPath(`${dir}:/usr/bin:/bin`, async () => {
      await expect(compress(input, 'xz')).rejects.toThrow('exited with 3: out of memory');
    });
  });
});

import { describe, expect, test, beforeAll, afterAll } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, readUImageHeader, scriptImage, writeUImage } from '../../../../agent/contract/uimage.ts';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'uimage-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function mkimage(args: string[], input: Uint8Array): Uint8Array {
  const src = join(dir, 'in.bin');
  const out = join(dir, 'out.img');
  writeFileSync(src, input);
  run('mkimage', [...args, '-d', src, out], { SOURCE_DATE_EPOCH: '1234' });
  return new Uint8Array(readFileSync(out));
}

const payload = new Uint8Array(5003).map((_, i) => (i * 7919 + 13) & 0xff);
const script = 'setenv bootargs console=ttyS0\nsource ${scriptaddr}\n';

describe('crc32', () => {
  test('matches the IEEE check value for "123456789"', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
  test('of empty input is zero', () => {
    expect(crc32(new Uint8Array(0))).toBe(0);
  });
});

describe('writeUImage', () => {
  test('is byte-identical to mkimage for a gzip arm64 ramdisk', () => {
    const ours = writeUImage(payload, {
      arch: 'arm64',
      type: 'ramdisk',
      comp: 'gzip',
      name: 'clusterboot initrd',
      time: 1234,
    });
    const theirs = mkimage(
      ['-A', 'arm64', '-O', 'linux', '-T', 'ramdisk', '-C', 'gzip', '-n', 'clusterboot initrd'],
      payload,
    );
    expect(ours).toEqual(theirs);
  });

  test('truncates names to 32 bytes exactly like mkimage', () => {
    const name = 'a-name-that-is-much-longer-than-thirty-two-bytes';
    const ours = writeUImage(payload, {
      arch: 'arm',
      type: 'kernel',
      comp: 'none',
      name,
      time: 1234,
      load: 0x8000,
      entry: 0x8000,
    });
    const theirs = mkimage(
      ['-A', 'arm', '-O', 'linux', '-T', 'kernel', '-C', 'none', '-a', '8000', '-e', '8000', '-n', name],
      payload,
    );
    expect(ours).toEqual(theirs);
    expect(readUImageHeader(ours).name).toBe(name.slice(0, 32));
  });

  test('is described by mkimage -l as an AArch64 gzip ramdisk of the right size', () => {
    const file = join(dir, 'listed.img');
    writeFileSync(file, writeUImage(payload, { arch: 'arm64', type: 'ramdisk', comp: 'gzip', name: 'initrd' }));
    const lines = run('mkimage', ['-l', file])
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('Created:'));
    expect(lines).toEqual([
      'Image Name:   initrd',
      'Image Type:   AArch64 Linux RAMDisk Image (gzip compressed)',
      'Data Size:    5003 Bytes = 4.89 KiB = 0.00 MiB',
      'Load Address: 00000000',
      'Entry Point:  00000000',
    ]);
  });

  test('header reads back with all fields', () => {
    const img = writeUImage(payload, {
      arch: 'x86_64',
      type: 'kernel',
      comp: 'zstd',
      name: 'k',
      time: 99,
      load: 0x1000,
      entry: 0x2000,
    });
    const { hcrc, ...rest } = readUImageHeader(img);
    expect(rest).toEqual({
      magic: 0x27051956,
      time: 99,
      size: payload.length,
      load: 0x1000,
      entry: 0x2000,
      dcrc: crc32(payload),
      os: 5,
      arch: 24,
      type: 2,
      comp: 6,
      name: 'k',
    });
    expect(hcrc).toBe(new DataView(img.buffer).getUint32(4));
  });
});

describe('scriptImage', () => {
  test('is byte-identical to mkimage -T script -C none', () => {
    const ours = scriptImage(script, { arch: 'arm64', name: 'boot script', time: 1234 });
    const theirs = mkimage(
      ['-A', 'arm64', '-O', 'linux', '-T', 'script', '-C', 'none', '-n', 'boot script'],
      new TextEncoder().encode(script),
    );
    expect(ours).toEqual(theirs);
  });

  test('dumpimage extracts the length table followed by the script', () => {
    const img = join(dir, 'boot.scr');
    const out = join(dir, 'extracted');
    writeFileSync(img, scriptImage(script, { arch: 'arm64', name: 'boot' }));
    run('dumpimage', ['-T', 'script', '-p', '0', '-o', out, img]);
    const got = new Uint8Array(readFileSync(out));
    const body = new TextEncoder().encode(script);
    expect(Array.from(got.subarray(0, 8))).toEqual([0, 0, 0, body.length, 0, 0, 0, 0]);
    expect(new TextDecoder().decode(got.subarray(8))).toBe(script);
  });
});

describe('readUImageHeader', () => {
  test('rejects a bad magic', () => {
    const img = writeUImage(payload, { arch: 'arm64', type: 'ramdisk', comp: 'none', name: 'x' });
    img[0] = 0;
    expect(() => readUImageHeader(img)).toThrow('bad uImage magic');
  });

  test('rejects a header whose CRC does not match', () => {
    const img = writeUImage(payload, { arch: 'arm64', type: 'ramdisk', comp: 'none', name: 'x' });
    img[40] = 0x41; // corrupt the name
    expect(() => readUImageHeader(img)).toThrow('bad uImage header CRC');
  });

  test('rejects a buffer shorter than a header', () => {
    expect(() => readUImageHeader(new Uint8Array(10))).toThrow('uImage too short');
  });
});

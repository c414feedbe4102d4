// U-Boot legacy image ("uImage") writer/reader, byte-compatible with mkimage.
import { crc32 } from './crc32.ts';

export { crc32 };

export type UArch = 'arm' | 'arm64' | 'x86_64';
export type UType = 'ramdisk' | 'script' | 'kernel';
export type UComp = 'none' | 'gzip' | 'bzip2' | 'lzma' | 'lzo' | 'lz4' | 'zstd';

export interface UImageOptions {
  arch: UArch;
  type: UType;
  comp: UComp;
  name: string;
  time?: number;
  load?: number;
  entry?: number;
  os?: 'linux';
}

export interface UImageHeader {
  magic: number;
  hcrc: number;
  time: number;
  size: number;
  load: number;
  entry: number;
  dcrc: number;
  os: number;
  arch: number;
  type: number;
  comp: number;
  name: string;
}

const IH_MAGIC = 0x27051956;
const HEADER_SIZE = 64;
const IH_NMLEN = 32;
const IH_OS_LINUX = 5;
const ARCH: Record<UArch, number> = { arm: 2, arm64: 22, x86_64: 24 };
const TYPE: Record<UType, number> = { kernel: 2, ramdisk: 3, script: 6 };
const COMP: Record<UComp, number> = { none: 0, gzip: 1, bzip2: 2, lzma: 3, lzo: 4, lz4: 5, zstd: 6 };

function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`uImage ${name} out of range: ${v}`);
  return v;
}

// Wraps a payload (ramdisk, kernel, script) in the 64-byte header U-Boot's bootm/source expect.
export function writeUImage(data: Uint8Array, opts: UImageOptions): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, IH_MAGIC);
  dv.setUint32(8, u32('time', opts.time ?? 0));
  dv.setUint32(12, u32('size', data.length));
  dv.setUint32(16, u32('load', opts.load ?? 0));
  dv.setUint32(20, u32('entry', opts.entry ?? 0));
  dv.setUint32(24, crc32(data));
  out[28] = IH_OS_LINUX;
  out[29] = ARCH[opts.arch];
  out[30] = TYPE[opts.type];
  out[31] = COMP[opts.comp];
  // strncpy semantics: up to 32 bytes, NUL-padded, no terminator when exactly 32.
  out.set(new TextEncoder().encode(opts.name).subarray(0, IH_NMLEN), 32);
  dv.setUint32(4, crc32(out.subarray(0, HEADER_SIZE)));
  out.set(data, HEADER_SIZE);
  return out;
}

// Builds a boot.scr the way `mkimage -T script -C none` does (multi-file layout with one part).
export function scriptImage(script: string, opts: { arch: UArch; name: string; time?: number }): Uint8Array {
  const body = new TextEncoder().encode(script);
  const data = new Uint8Array(8 + body.length);
  new DataView(data.buffer).setUint32(0, body.length); // length table: [len, 0 terminator]
  data.set(body, 8);
  return writeUImage(data, { arch: opts.arch, type: 'script', comp: 'none', name: opts.name, time: opts.time });
}

// Parses and validates a header, so tests and tools can inspect images we (or mkimage) produced.
export function readUImageHeader(buf: Uint8Array): UImageHeader {
  if (buf.length < HEADER_SIZE) throw new Error(`uImage too short: ${buf.length} bytes`);
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== IH_MAGIC) throw new Error(`bad uImage magic 0x${magic.toString(16)}`);
  const hcrc = dv.getUint32(4);
  const copy = new Uint8Array(buf.subarray(0, HEADER_SIZE)); // a copy: Buffer#slice would be a view, and fill() would zero the caller's CRC
  copy.fill(0, 4, 8);
  const want = crc32(copy);
  if (hcrc !== want) throw new Error(`bad uImage header CRC 0x${hcrc.toString(16)} (expected 0x${want.toString(16)})`);
  const nameBytes = buf.subarray(32, 64);
  const nul = nameBytes.indexOf(0);
  return {
    magic,
    hcrc,
    time: dv.getUint32(8),
    size: dv.getUint32(12),
    load: dv.getUint32(16),
    entry: dv.getUint32(20),
    dcrc: dv.getUint32(24),
    os: buf[28]!,
    arch: buf[29]!,
    type: buf[30]!,
    comp: buf[31]!,
    name: new TextDecoder().decode(nul < 0 ? nameBytes : nameBytes.subarray(0, nul)),
  };
}

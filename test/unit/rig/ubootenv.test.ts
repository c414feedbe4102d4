// The rig's U-Boot flash environment: read out of a binary, bootdelay changed, laid out as U-Boot checks it.
import { describe, expect, test } from 'bun:test';
import { existsSync, readFileSync } from 'node:fs';
import { UBOOT } from '../../rig/qemu.ts';
import { defaultEnv, envImage, withBootdelay } from '../../rig/ubootenv.ts';

const bin = (vars: string[], before = 'junk%s%d\0', after = '\0\0more') =>
  Buffer.from(before + vars.join('\0') + after, 'latin1');

describe('U-Boot default environment', () => {
  test('found between bootcmd= and the double NUL, with bootdelay replaced', () => {
    const vars = ['bootcmd=run distro_bootcmd', 'bootdelay=2', 'baudrate=115200', 'x=${y} z'];
    expect(defaultEnv(bin(vars))).toEqual(vars);
    expect(withBootdelay(vars, 0)).toEqual([
      'bootcmd=run distro_bootcmd',
      'bootdelay=0',
      'baudrate=115200',
      'x=${y} z',
    ]);
  });

  test('no environment, or a block that is not key=value text: null', () => {
    expect(defaultEnv(bin(['bootcmd=x', 'baudrate=1']))).toBeNull(); // no bootdelay
    expect(defaultEnv(bin(['bootcmd=x', 'bootdelay=2', '\x01\x02']))).toBeNull();
    expect(defaultEnv(Buffer.from('bootdelay=2\0\0', 'latin1'))).toBeNull();
  });

  test('image: CRC32 little-endian over the NUL-padded data, 256 KiB in all', () => {
    const img = envImage(['bootcmd=x', 'bootdelay=0']);
    expect(img.length).toBe(0x40000);
    expect(img.readUInt32LE(0)).toBe(Bun.hash.crc32(img.subarray(4)) >>> 0);
    expect(img.subarray(4, 26).toString('latin1')).toBe('bootcmd=x\0bootdelay=0\0');
    expect(img[26]).toBe(0);
  });

  test.skipIf(!existsSync(UBOOT))("Debian's qemu_arm64 U-Boot: its default environment is read", () => {
    const vars = defaultEnv(readFileSync(UBOOT));
    expect(vars).not.toBeNull();
    expect(vars).toContain('bootdelay=2');
    expect(vars?.some((v) => v.startsWith('distro_bootcmd='))).toBe(true);
  });
});

// After a power cut between writing the table and the end of formatting, only partitions that hold
// nothing recognisable may be formatted: these checks decide that.
import { describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { foreign, hasExt, hasFat, HEAD_BYTES, unformatted } from '../../../../agent/plans/fsprobe.ts';
import { DEFAULT_ROLES } from '../../../../agent/plans/sfdisk.ts';

function head(path: string): Uint8Array {
  const b = new Uint8Array(HEAD_BYTES);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, b, 0, b.length, 0);
  } finally {
    closeSync(fd);
  }
  return b;
}

function image(mk: (p: string) => void): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'cb-probe-'));
  const p = join(dir, 'fs.img');
  writeFileSync(p, '');
  execFileSync('truncate', ['-s', '40M', p]);
  try {
    mk(p);
    return head(p);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('filesystem signatures, on images made by the real mkfs', () => {
  const ext4 = image((p) => execFileSync('/sbin/mke2fs', ['-q', '-F', '-t', 'ext4', p]));
  const vfat = image((p) => execFileSync('/sbin/mkfs.fat', [p], { stdio: 'ignore' }));
  const swap = image((p) => execFileSync('/sbin/mkswap', [p], { stdio: 'ignore' }));
  const zero = new Uint8Array(HEAD_BYTES);

  test('ext4 and FAT are recognised, and not confused with each other', () => {
    expect(hasExt(ext4)).toBe(true);
    expect(hasFat(ext4)).toBe(false);
    expect(hasFat(vfat)).toBe(true);
    expect(hasExt(vfat)).toBe(false);
  });
  test("swap is someone else's: never formatted", () => {
    expect(foreign(swap)).toBe('swap');
    expect(unformatted(DEFAULT_ROLES, () => swap)).toEqual([]);
  });
  test('an all-zero partition (a format cut before it wrote anything) is formatted; a made one is not', () => {
    expect(unformatted(DEFAULT_ROLES, (i) => (i === 1 ? zero : ext4)).map((r) => r.index)).toEqual([1]);
    expect(unformatted(DEFAULT_ROLES, (i) => (i === 1 ? vfat : ext4))).toEqual([]);
  });
  test("unrecognised but not empty: p1 (only the master's firmware) is formatted, a data partition is left to e2fsck", () => {
    const junk = new Uint8Array(HEAD_BYTES).fill(0xa5);
    expect(unformatted(DEFAULT_ROLES, () => junk).map((r) => r.role)).toEqual(['boot']);
  });
  test('a missing partition device is not formatted', () => {
    expect(unformatted(DEFAULT_ROLES, () => null)).toEqual([]);
  });
  test('xfs, LUKS, btrfs magic are foreign', () => {
    const with_ = (o: number, s: string) => {
      const b = new Uint8Array(HEAD_BYTES);
      b.set(Buffer.from(s), o);
      return b;
    };
    expect(foreign(with_(0, 'XFSB'))).toBe('xfs');
    expect(foreign(with_(0, 'LUKS\xba\xbe'))).toBe('LUKS');
    expect(foreign(with_(65600, '_BHRfS_M'))).toBe('btrfs');
    expect(foreign(zero)).toBeNull();
  });
});

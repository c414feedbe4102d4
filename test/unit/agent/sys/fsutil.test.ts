// writeInRoot: a template's symlinks, dirs and devices at a path the agent writes never send the write outside root.
import { afterAll, afterEach, beforeEach, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSmall, writeInRoot } from '../../../../agent/sys/fsutil.ts';

// an absolute link target that, if followed on the host instead of re-rooted, would appear at the real /
const HOST_ELSEWHERE = '/etc-elsewhere';
const hostElsewhereBefore = existsSync(HOST_ELSEWHERE);

let tmp = '';
let root = '';
let outside = '';
let outsideDir = '';

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'cb-inroot-'));
  root = join(tmp, 'root');
  outside = join(tmp, 'outside');
  outsideDir = join(tmp, 'outside-dir');
  mkdirSync(root);
  mkdirSync(outsideDir);
  writeFileSync(outside, 'untouched\n');
});

afterEach(() => {
  // nothing outside root changed: the outside file and directory are as made
  expect(readFileSync(outside, 'utf8')).toBe('untouched\n');
  expect(readdirSync(outsideDir)).toEqual([]);
  expect(readdirSync(tmp).sort()).toEqual(['outside', 'outside-dir', 'root']);
  expect(existsSync(HOST_ELSEWHERE)).toBe(hostElsewhereBefore);
  rmSync(tmp, { recursive: true, force: true });
});

afterAll(() => {
  expect(existsSync(HOST_ELSEWHERE)).toBe(hostElsewhereBefore);
});

const read = (rel: string) => readFileSync(join(root, rel), 'utf8');
const isPlainFile = (rel: string) => lstatSync(join(root, rel)).isFile();

describe('writeInRoot', () => {
  test('creates missing parents inside root and writes the file with its mode', () => {
    writeInRoot(root, 'etc/hostname', 'n1\n', 0o644);
    writeInRoot(root, 'a/b/c/machine-id', new TextEncoder().encode('id\n'), 0o444);
    expect(read('etc/hostname')).toBe('n1\n');
    expect(statSync(join(root, 'etc/hostname')).mode & 0o777).toBe(0o644);
    expect(read('a/b/c/machine-id')).toBe('id\n');
    expect(statSync(join(root, 'a/b/c/machine-id')).mode & 0o777).toBe(0o444);
    expect(statSync(join(root, 'a/b')).isDirectory()).toBe(true);
  });

  test('an existing regular file is overwritten, truncated and given the mode', () => {
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/hostname'), 'a much longer old name\n', { mode: 0o600 });
    writeInRoot(root, 'etc/hostname', 'n2\n', 0o644);
    expect(read('etc/hostname')).toBe('n2\n');
    expect(statSync(join(root, 'etc/hostname')).mode & 0o777).toBe(0o644);
  });

  test('an absolute dir link is re-rooted: etc -> /etc-elsewhere means root/etc-elsewhere, never the host path', () => {
    symlinkSync(HOST_ELSEWHERE, join(root, 'etc'));
    writeInRoot(root, 'etc/hostname', 'n3\n', 0o644);
    expect(read('etc-elsewhere/hostname')).toBe('n3\n');
    expect(readlinkSync(join(root, 'etc'))).toBe(HOST_ELSEWHERE);
    expect(existsSync(HOST_ELSEWHERE)).toBe(hostElsewhereBefore);
  });

  test('an absolute dir link to a real outside directory is re-rooted too', () => {
    symlinkSync(outsideDir, join(root, 'etc'));
    writeInRoot(root, 'etc/hostname', 'n4\n', 0o644);
    expect(read(`${outsideDir}/hostname`)).toBe('n4\n');
  });

  test("a relative dir link climbing out (etc -> ../outside-dir) stops at root's top", () => {
    symlinkSync('../outside-dir', join(root, 'etc'));
    writeInRoot(root, 'etc/hostname', 'n5\n', 0o644);
    expect(read('outside-dir/hostname')).toBe('n5\n');
  });

  test("'..' in the path itself never leaves root", () => {
    writeInRoot(root, '../../outside', 'n6\n', 0o644);
    expect(read('outside')).toBe('n6\n');
  });

  test('a final link to an outside file is replaced by a regular file, the outside file unchanged', () => {
    mkdirSync(join(root, 'etc'));
    symlinkSync(outside, join(root, 'etc/hostname'));
    writeInRoot(root, 'etc/hostname', 'n7\n', 0o644);
    expect(isPlainFile('etc/hostname')).toBe(true);
    expect(read('etc/hostname')).toBe('n7\n');
  });

  test('a dangling final link is replaced as well', () => {
    mkdirSync(join(root, 'etc'));
    symlinkSync('/nowhere/at/all', join(root, 'etc/machine-id'));
    writeInRoot(root, 'etc/machine-id', 'id\n', 0o444);
    expect(isPlainFile('etc/machine-id')).toBe(true);
    expect(existsSync(join(root, 'nowhere'))).toBe(false);
  });

  test('a directory at the target is refused and left alone', () => {
    mkdirSync(join(root, 'etc/hostname'), { recursive: true });
    expect(() => writeInRoot(root, 'etc/hostname', 'n8\n', 0o644)).toThrow(/not a regular file/);
    expect(readdirSync(join(root, 'etc/hostname'))).toEqual([]);
  });

  test('a device node or a fifo at the target is refused', () => {
    mkdirSync(join(root, 'etc'));
    const made = [
      spawnSync('mknod', [join(root, 'etc/hostname'), 'c', '1', '3']).status === 0 && 'etc/hostname',
      spawnSync('mkfifo', [join(root, 'etc/machine-id')]).status === 0 && 'etc/machine-id',
    ].filter((p): p is string => p !== false);
    if (made.length === 0) console.warn('neither mknod nor mkfifo worked here: device refusal untested');
    for (const rel of made) {
      expect(() => writeInRoot(root, rel, 'x\n', 0o644)).toThrow(/not a regular file/);
      expect(lstatSync(join(root, rel)).isFile()).toBe(false);
    }
  });

  test('a link loop is an error, not a hang', () => {
    symlinkSync('/etc', join(root, 'etc'));
    expect(() => writeInRoot(root, 'etc/hostname', 'n9\n', 0o644)).toThrow(/loop/);
  });
});

describe('readSmall: what the master sent, bounded and never through a link', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cb-readsmall-'));
  test('absent: null; a small regular file: its text', () => {
    expect(readSmall(join(dir, 'none'))).toEqual({ text: null });
    writeFileSync(join(dir, 'stamp'), 'clusterboot-stamp 1\n');
    expect(readSmall(join(dir, 'stamp'))).toEqual({ text: 'clusterboot-stamp 1\n' });
  });
  test('a symlink (to /dev/zero, to a file) is refused unread', () => {
    symlinkSync('/dev/zero', join(dir, 'zero'));
    expect(readSmall(join(dir, 'zero'))).toEqual({ text: null, refused: 'a symlink' });
    symlinkSync(join(dir, 'stamp'), join(dir, 'tofile'));
    expect(readSmall(join(dir, 'tofile')).text).toBeNull();
  });
  test('a FIFO is refused without blocking; a file over the limit is refused by its size', () => {
    Bun.spawnSync(['mkfifo', join(dir, 'fifo')]);
    expect(readSmall(join(dir, 'fifo'))).toEqual({ text: null, refused: 'not a regular file' });
    writeFileSync(join(dir, 'big'), Buffer.alloc(64 * 1024 + 1, 0x41));
    expect(readSmall(join(dir, 'big')).refused).toBe(`${64 * 1024 + 1} bytes (at most ${64 * 1024})`);
    expect(readSmall(join(dir, 'big'), 128 * 1024).text?.length).toBe(64 * 1024 + 1);
  });
});

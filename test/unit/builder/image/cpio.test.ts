import { describe, expect, test, beforeAll, afterAll } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeCpio, type CpioEntry } from '../../../../builder/image/cpio.ts';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const enc = new TextEncoder();
const busybox = new Uint8Array(1234).map((_, i) => (i * 31) & 0xff);
const initScript = enc.encode('#!/bin/sh\nexec /bin/busybox sh\n');

const entries: CpioEntry[] = [
  { kind: 'file', path: '/bin/busybox', data: busybox, mode: 0o755 },
  { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
  { kind: 'file', path: 'init', data: initScript, mode: 0o700 },
  { kind: 'chardev', path: '/dev/console', major: 5, minor: 1 },
  { kind: 'dir', path: 'proc', mode: 0o555 },
  { kind: 'file', path: 'etc/empty', data: new Uint8Array(0) },
];

function cpio(args: string[], archive: Uint8Array, cwd = dir): string {
  const r = spawnSync('cpio', args, {
    input: archive,
    cwd,
    encoding: 'utf8',
    env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' },
  });
  if (r.status !== 0) throw new Error(`cpio ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

describe('writeCpio', () => {
  test('GNU cpio lists every path, parents included, in sorted order', () => {
    const listing = cpio(['-it', '--quiet'], writeCpio(entries)).split('\n').filter(Boolean);
    expect(listing).toEqual(['bin', 'bin/busybox', 'bin/sh', 'dev', 'dev/console', 'etc', 'etc/empty', 'init', 'proc']);
  });

  test('verbose listing shows types, modes, symlink target and device numbers', () => {
    const lines = cpio(['-itv', '--quiet'], writeCpio(entries, { mtime: 1700000000 }))
      .split('\n')
      .filter(Boolean);
    expect(lines).toEqual([
      'drwxr-xr-x   2 root     root            0 Nov 14  2023 bin',
      '-rwxr-xr-x   1 root     root         1234 Nov 14  2023 bin/busybox',
      'lrwxrwxrwx   1 root     root            7 Nov 14  2023 bin/sh -> busybox',
      'drwxr-xr-x   2 root     root            0 Nov 14  2023 dev',
      'crw-------   1 root     root       5,   1 Nov 14  2023 dev/console',
      'drwxr-xr-x   2 root     root            0 Nov 14  2023 etc',
      '-rw-r--r--   1 root     root            0 Nov 14  2023 etc/empty',
      '-rwx------   1 root     root           31 Nov 14  2023 init',
      'dr-xr-xr-x   2 root     root            0 Nov 14  2023 proc',
    ]);
  });

  test('extraction reproduces contents, modes, links and mtime', () => {
    const out = mkdtempSync(join(dir, 'x-'));
    // chardev creation needs privileges we may not have; extract everything else
    const archive = writeCpio(
      entries.filter((e) => e.kind !== 'chardev'),
      { mtime: 1600000000 },
    );
    cpio(['-idm', '--quiet', '--no-absolute-filenames'], archive, out);
    const mode = (p: string) => lstatSync(join(out, p)).mode & 0o7777;
    expect({
      busybox: new Uint8Array(readFileSync(join(out, 'bin/busybox'))),
      init: readFileSync(join(out, 'init'), 'utf8'),
      empty: readFileSync(join(out, 'etc/empty')).length,
      sh: readlinkSync(join(out, 'bin/sh')),
      modes: { busybox: mode('bin/busybox'), init: mode('init'), empty: mode('etc/empty'), proc: mode('proc') },
      mtime: lstatSync(join(out, 'init')).mtimeMs / 1000,
    }).toEqual({
      busybox,
      init: '#!/bin/sh\nexec /bin/busybox sh\n',
      empty: 0,
      sh: 'busybox',
      modes: { busybox: 0o755, init: 0o700, empty: 0o644, proc: 0o555 },
      mtime: 1600000000,
    });
  });

  test('same entries in a different order give identical bytes', () => {
    const shuffled = [entries[3]!, entries[0]!, entries[5]!, entries[2]!, entries[1]!, entries[4]!];
    expect(writeCpio(shuffled)).toEqual(writeCpio(entries));
  });

  test('identical duplicates are merged', () => {
    const dup = [
      ...entries,
      { kind: 'symlink', path: '/bin/sh', target: 'busybox' } as const,
      { kind: 'dir', path: 'bin/' } as const,
    ];
    expect(writeCpio(dup)).toEqual(writeCpio(entries));
  });

  test('conflicting duplicates throw naming the path', () => {
    const bad: CpioEntry[] = [...entries, { kind: 'file', path: 'init', data: enc.encode('other'), mode: 0o700 }];
    expect(() => writeCpio(bad)).toThrow('conflicting entries for path init');
  });

  test('a parent that is not a directory is rejected', () => {
    const bad: CpioEntry[] = [
      { kind: 'symlink', path: 'lib', target: 'usr/lib' },
      { kind: 'file', path: 'lib/x', data: busybox },
    ];
    expect(() => writeCpio(bad)).toThrow('parent of lib/x is not a directory: lib');
  });

  test('layout: header fields, 4-byte alignment and 512-byte total', () => {
    const archive = writeCpio([{ kind: 'file', path: 'd/ab', data: enc.encode('xyz') }], { mtime: 0x10 });
    const text = new TextDecoder().decode(archive);
    const header = (fields: string[]) => '070701' + fields.map((h) => h.padStart(8, '0')).join('');
    // "d": 110 + "d\0" = 112; "d/ab": 112 + 110 + 5 = 227 -> 228, + 3 data = 231 -> 232; trailer at 232
    expect({
      length: archive.length,
      dir: text.slice(0, 112),
      file: text.slice(112, 228),
      data: text.slice(228, 232),
      trailer: text.slice(232, 353),
      restIsZero: archive.subarray(353).every((b) => b === 0),
    }).toEqual({
      length: 512,
      dir: header(['1', '41ED', '0', '0', '2', '10', '0', '0', '0', '0', '0', '2', '0']) + 'd\0',
      file: header(['2', '81A4', '0', '0', '1', '10', '3', '0', '0', '0', '0', '5', '0']) + 'd/ab\0\0',
      data: 'xyz\0',
      trailer: header(['0', '0', '0', '0', '1', '0', '0', '0', '0', '0', '0', 'B', '0']) + 'TRAILER!!!\0',
      restIsZero: true,
    });
  });

  test('paths with ".." are rejected', () => {
    expect(() => writeCpio([{ kind: 'dir', path: 'a/../b' }])).toThrow('must not contain ".."');
  });

  test('a 110 MB file is written quickly and lands at the right offset', () => {
    const big = new Uint8Array(110 * 1024 * 1024);
    big[0] = 1;
    big[big.length - 1] = 2;
    const t0 = performance.now();
    const archive = writeCpio([{ kind: 'file', path: 'big', data: big }]);
    const ms = performance.now() - t0;
    const dataStart = 112 + 4; // 110 + "big\0" = 114 -> 116
    expect({
      size: archive.length,
      first: archive[dataStart],
      last: archive[dataStart + big.length - 1],
      fast: ms < 3000,
    }).toEqual({ size: Math.ceil((116 + big.length + 124) / 512) * 512, first: 1, last: 2, fast: true });
  });
});

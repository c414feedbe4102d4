import { describe, expect, test, beforeAll, afterAll } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { libraryClosure, readElf, type ElfInfo } from '../../../../builder/image/elf.ts';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'elf-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const EM_X86_64 = 62;
const EM_AARCH64 = 183;
const EM_ARM = 40;

/** Builds a minimal ELF with PT_LOAD (at a non-zero vaddr), optional PT_INTERP, and PT_DYNAMIC. */
function makeElf(o: {
  is64: boolean;
  le: boolean;
  machine: number;
  interp?: string;
  needed?: string[];
  runpath?: string;
  rpath?: string;
}): Uint8Array {
  const enc = new TextEncoder();
  const ehsize = o.is64 ? 64 : 52;
  const phentsize = o.is64 ? 56 : 32;
  const phnum = o.interp ? 3 : 2;
  const base = 0x400000;
  let off = ehsize + phnum * phentsize;
  const interpOff = off;
  const interpBytes = o.interp ? enc.encode(o.interp + '\0') : new Uint8Array(0);
  off += interpBytes.length;
  // string table: leading NUL, then each string
  const strs: string[] = [...(o.needed ?? []), ...(o.runpath ? [o.runpath] : []), ...(o.rpath ? [o.rpath] : [])];
  const strIndex = new Map<string, number>();
  let strtab = '\0';
  for (const s of strs) {
    strIndex.set(s, strtab.length);
    strtab += s + '\0';
  }
  const strtabOff = off;
  const strBytes = enc.encode(strtab);
  off += strBytes.length;
  off = (off + 7) & ~7;
  const dyn: [number, number][] = [
    ...(o.needed ?? []).map((n): [number, number] => [1, strIndex.get(n)!]),
    [5, base + strtabOff],
    ...(o.rpath ? [[15, strIndex.get(o.rpath)!] as [number, number]] : []),
    ...(o.runpath ? [[29, strIndex.get(o.runpath)!] as [number, number]] : []),
    [0, 0],
  ];
  const dynOff = off;
  const entSize = o.is64 ? 16 : 8;
  const total = dynOff + dyn.length * entSize;
  const buf = new Uint8Array(total);
  const dv = new DataView(buf.buffer);
  const w16 = (at: number, v: number) => dv.setUint16(at, v, o.le);
  const w32 = (at: number, v: number) => dv.setUint32(at, v, o.le);
  const word = (at: number, v: number) => (o.is64 ? dv.setBigUint64(at, BigInt(v), o.le) : dv.setUint32(at, v, o.le));
  buf.set([0x7f, 0x45, 0x4c, 0x46, o.is64 ? 2 : 1, o.le ? 1 : 2, 1]);
  w16(16, 3); // ET_DYN
  w16(18, o.machine);
  w32(20, 1);
  word(o.is64 ? 32 : 28, ehsize); // e_phoff
  w16(o.is64 ? 52 : 40, ehsize);
  w16(o.is64 ? 54 : 42, phentsize);
  w16(o.is64 ? 56 : 44, phnum);
  const phdr = (i: number, type: number, offset: number, size: number) => {
    const p = ehsize + i * phentsize;
    w32(p, type);
    if (o.is64) {
      word(p + 8, offset);
      word(p + 16, base + offset);
      word(p + 24, base + offset);
      word(p + 32, size);
      word(p + 40, size);
    } else {
      word(p + 4, offset);
      word(p + 8, base + offset);
      word(p + 12, base + offset);
      word(p + 16, size);
      word(p + 20, size);
    }
  };
  phdr(0, 1, 0, total); // PT_LOAD covering the file at vaddr base
  phdr(1, 2, dynOff, dyn.length * entSize); // PT_DYNAMIC
  if (o.interp) phdr(2, 3, interpOff, interpBytes.length); // PT_INTERP
  buf.set(interpBytes, interpOff);
  buf.set(strBytes, strtabOff);
  dyn.forEach(([t, v], i) => {
    word(dynOff + i * entSize, t);
    word(dynOff + i * entSize + entSize / 2, v);
  });
  return buf;
}

/** What binutils' readelf says about a host binary, as an ElfInfo. */
function readelfInfo(path: string): ElfInfo {
  const run = (args: string[]) =>
    spawnSync('readelf', ['-W', ...args, path], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }).stdout;
  const header = run(['-h']);
  const dynamic = run(['-d']);
  const program = run(['-l']);
  const bracketed = (tag: string) =>
    dynamic
      .split('\n')
      .filter((l) => l.includes(`(${tag})`))
      .flatMap((l) => l.slice(l.indexOf('[') + 1, l.lastIndexOf(']')).split(':'));
  const interp = /Requesting program interpreter: (.*)\]/.exec(program)?.[1];
  return {
    class: header.includes('ELF64') ? 64 : 32,
    machine: header.includes('X86-64') ? EM_X86_64 : -1,
    ...(interp ? { interp } : {}),
    needed: bracketed('NEEDED'),
    runpath: bracketed('RUNPATH'),
    rpath: bracketed('RPATH'),
  };
}

describe('readElf', () => {
  test('agrees with readelf on a host binary', () => {
    expect(readElf(readFileSync('/usr/bin/rsync'))).toEqual(readelfInfo('/usr/bin/rsync'));
  });

  test('agrees with readelf on a host shared library', () => {
    const lib = realpathSync('/lib/x86_64-linux-gnu/libc.so.6');
    expect(readElf(readFileSync(lib))).toEqual(readelfInfo(lib));
  });

  test('returns null for a shell script and for an empty file', () => {
    expect([readElf(new TextEncoder().encode('#!/bin/sh\necho hi\n')), readElf(new Uint8Array(0))]).toEqual([
      null,
      null,
    ]);
  });

  test('reads big-endian ELF32 through a PT_LOAD mapping', () => {
    const elf = makeElf({
      is64: false,
      le: false,
      machine: EM_ARM,
      interp: '/lib/ld-linux.so.3',
      needed: ['libc.so.6', 'libm.so.6'],
      rpath: '/opt/a:$ORIGIN/../lib',
    });
    expect(readElf(elf)).toEqual({
      class: 32,
      machine: EM_ARM,
      interp: '/lib/ld-linux.so.3',
      needed: ['libc.so.6', 'libm.so.6'],
      runpath: [],
      rpath: ['/opt/a', '$ORIGIN/../lib'],
    });
  });

  test('reads little-endian ELF64 without an interpreter', () => {
    const elf = makeElf({ is64: true, le: true, machine: EM_AARCH64, needed: ['libz.so.1'], runpath: '$ORIGIN' });
    expect(readElf(elf)).toEqual({
      class: 64,
      machine: EM_AARCH64,
      needed: ['libz.so.1'],
      runpath: ['$ORIGIN'],
      rpath: [],
    });
  });

  test('throws on a truncated ELF', () => {
    const elf = makeElf({ is64: true, le: true, machine: EM_AARCH64, needed: ['libz.so.1'] });
    expect(() => readElf(elf.subarray(0, 100))).toThrow('ELF: truncated');
  });
});

describe('libraryClosure on the host root', () => {
  test('covers exactly the files ldd resolves for rsync, plus the symlink hops', () => {
    const ldd = spawnSync('ldd', ['/usr/bin/rsync'], { encoding: 'utf8' }).stdout;
    const resolved = ldd
      .split('\n')
      .map((l) => /=> (\S+) \(/.exec(l)?.[1] ?? /^\s+(\/\S+) \(/.exec(l)?.[1])
      .filter((p): p is string => p !== undefined);
    const expectedFiles = [...new Set(['/usr/bin/rsync', ...resolved].map((p) => realpathSync(p)))].sort();

    const { files, missing } = libraryClosure('/', ['/usr/bin/rsync']);
    expect({ missing, realFiles: files.filter((f) => f.kind === 'file').map((f) => f.path) }).toEqual({
      missing: [],
      realFiles: expectedFiles,
    });
    expect(files).toEqual(
      expect.arrayContaining([
        { path: '/lib', kind: 'symlink', target: readlinkSync('/lib') },
        { path: '/lib64', kind: 'symlink', target: readlinkSync('/lib64') },
        {
          path: '/usr/lib64/ld-linux-x86-64.so.2',
          kind: 'symlink',
          target: readlinkSync('/usr/lib64/ld-linux-x86-64.so.2'),
        },
        { path: realpathSync('/lib/x86_64-linux-gnu/libc.so.6'), kind: 'file' },
      ]),
    );
  });
});

describe('libraryClosure in a fake sysroot', () => {
  const put = (root: string, path: string, data: Uint8Array | string) => {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), data);
  };
  const link = (root: string, path: string, target: string) => {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    symlinkSync(target, join(root, path));
  };

  test('copied host zstd resolves inside the sysroot only and reports the lib left out', () => {
    const root = join(dir, 'copied');
    const arch = '/usr/lib/x86_64-linux-gnu';
    const lzma = readlinkSync('/lib/x86_64-linux-gnu/liblzma.so.5');
    mkdirSync(join(root, arch), { recursive: true });
    put(root, '/usr/bin/zstd', readFileSync('/usr/bin/zstd'));
    put(root, `${arch}/libz.so.1`, readFileSync('/lib/x86_64-linux-gnu/libz.so.1'));
    put(root, `${arch}/${lzma}`, readFileSync('/lib/x86_64-linux-gnu/liblzma.so.5'));
    link(root, `${arch}/liblzma.so.5`, lzma);
    put(root, '/opt/glibc/libc.so.6', readFileSync('/lib/x86_64-linux-gnu/libc.so.6'));
    link(root, `${arch}/libc.so.6`, '/opt/glibc/libc.so.6'); // absolute: must stay in the sysroot
    put(root, `${arch}/ld-linux-x86-64.so.2`, readFileSync('/lib64/ld-linux-x86-64.so.2'));
    link(root, '/usr/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2');
    link(root, '/lib64', '/usr/lib64');
    link(root, '/lib', 'usr/lib');
    // liblz4.so.1 is deliberately absent (the host has one; it must not be used)

    expect(libraryClosure(root, ['/usr/bin/zstd'])).toEqual({
      files: [
        { path: '/lib', kind: 'symlink', target: 'usr/lib' },
        { path: '/lib64', kind: 'symlink', target: '/usr/lib64' },
        { path: '/opt/glibc/libc.so.6', kind: 'file' },
        { path: '/usr/bin/zstd', kind: 'file' },
        { path: `${arch}/ld-linux-x86-64.so.2`, kind: 'file' },
        { path: `${arch}/libc.so.6`, kind: 'symlink', target: '/opt/glibc/libc.so.6' },
        { path: `${arch}/liblzma.so.5`, kind: 'symlink', target: lzma },
        { path: `${arch}/${lzma}`, kind: 'file' },
        { path: `${arch}/libz.so.1`, kind: 'file' },
        {
          path: '/usr/lib64/ld-linux-x86-64.so.2',
          kind: 'symlink',
          target: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
        },
      ],
      missing: [{ lib: 'liblz4.so.1', neededBy: '/usr/bin/zstd' }],
    });
  });

  test('honours $ORIGIN runpath and libDirs, skips wrong-machine candidates, keeps scripts', () => {
    const root = join(dir, 'synthetic');
    const a64 = (o: { interp?: string; needed?: string[]; runpath?: string }) =>
      makeElf({ is64: true, le: true, machine: EM_AARCH64, ...o });
    put(
      root,
      '/usr/bin/prog',
      a64({
        interp: '/lib/ld-linux-aarch64.so.1',
        needed: ['libfoo.so.1', 'libc.so.6'],
        runpath: '$ORIGIN/../lib/prog',
      }),
    );
    put(root, '/usr/bin/helper.sh', '#!/bin/sh\nexec /usr/bin/prog "$@"\n');
    put(root, '/usr/lib/prog/libfoo.so.1', a64({ needed: ['libbar.so.2', 'libc.so.6'] }));
    put(root, '/opt/wrong/libbar.so.2', makeElf({ is64: true, le: true, machine: EM_X86_64 }));
    put(root, '/opt/right/libbar.so.2', a64({ needed: ['libgone.so.9'] }));
    put(root, '/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1', a64({}));
    put(root, '/lib/aarch64-linux-gnu/libc.so.6', a64({ needed: ['ld-linux-aarch64.so.1'] }));
    link(root, '/lib/ld-linux-aarch64.so.1', 'aarch64-linux-gnu/ld-linux-aarch64.so.1');

    expect(
      libraryClosure(root, ['/usr/bin/prog', '/usr/bin/helper.sh'], { libDirs: ['/opt/wrong', '/opt/right'] }),
    ).toEqual({
      files: [
        { path: '/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1', kind: 'file' },
        { path: '/lib/aarch64-linux-gnu/libc.so.6', kind: 'file' },
        { path: '/lib/ld-linux-aarch64.so.1', kind: 'symlink', target: 'aarch64-linux-gnu/ld-linux-aarch64.so.1' },
        { path: '/opt/right/libbar.so.2', kind: 'file' },
        { path: '/usr/bin/helper.sh', kind: 'file' },
        { path: '/usr/bin/prog', kind: 'file' },
        { path: '/usr/lib/prog/libfoo.so.1', kind: 'file' },
      ],
      missing: [{ lib: 'libgone.so.9', neededBy: '/opt/right/libbar.so.2' }],
    });
  });

  test('a symlink climbing out with ".." stays inside the sysroot', () => {
    const root = join(dir, 'escape');
    put(root, '/usr/bin/prog', makeElf({ is64: true, le: true, machine: EM_AARCH64, needed: ['libc.so.6'] }));
    put(root, '/lib/libc.so.6', makeElf({ is64: true, le: true, machine: EM_AARCH64 }));
    link(root, '/lib/aarch64-linux-gnu', '../../../../../lib');
    expect(libraryClosure(root, ['/usr/bin/prog'])).toEqual({
      files: [
        { path: '/lib/aarch64-linux-gnu', kind: 'symlink', target: '../../../../../lib' },
        { path: '/lib/libc.so.6', kind: 'file' },
        { path: '/usr/bin/prog', kind: 'file' },
      ],
      missing: [],
    });
  });

  test('a program absent from the sysroot is an error', () => {
    expect(() => libraryClosure(join(dir, 'synthetic'), ['/usr/bin/nope'])).toThrow('program /usr/bin/nope not found');
  });
});

describe('libraryClosure in the arm64 Debian sysroot', () => {
  test.skipIf(!existsSync('/tmp/sysroot/usr/bin/ssh'))('ssh needs aarch64 libc and the ld.so symlink', () => {
    const { files, missing } = libraryClosure('/tmp/sysroot', ['/usr/bin/ssh']);
    const ssh = readElf(readFileSync('/tmp/sysroot/usr/bin/ssh'));
    expect({ machine: ssh?.machine, missing }).toEqual({ machine: EM_AARCH64, missing: [] });
    expect(files).toEqual(
      expect.arrayContaining([
        { path: '/usr/bin/ssh', kind: 'file' },
        expect.objectContaining({ path: '/lib/aarch64-linux-gnu/libc.so.6' }),
        { path: '/lib/ld-linux-aarch64.so.1', kind: 'symlink', target: 'aarch64-linux-gnu/ld-linux-aarch64.so.1' },
        { path: '/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1', kind: 'file' },
      ]),
    );
  });
});

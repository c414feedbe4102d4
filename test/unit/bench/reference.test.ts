// The benchmark's reference init (bench/init.sh) and its initramfs (bench/reference.ts): the script is valid
// POSIX sh, uses the agent's tool paths and ssh options, and its table/stats parsing works on real sfdisk and
// rsync output; the image has the agent's tools, libraries, modules, skeleton and keys, and no agent.
import { describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { sshOptions } from '../../../agent/net/link.ts';
import { TOOLS } from '../../../agent/sys/tools.ts';
import { REPO } from '../../../builder/image/agentbuild.ts';
import { readElf } from '../../../builder/image/elf.ts';
import { kernelsIn } from '../../../builder/image/sysroot.ts';
import { packReference, REFERENCE_INIT, type ReferenceImages } from '../../../bench/reference.ts';
import { testAccessFiles } from '../../rig/master.ts';

const SCRIPT = readFileSync(REFERENCE_INIT, 'utf8');
const has = (p: string) => existsSync(p);
const HOST_BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find(has);

// One shell function of the script, as text, to run it on the host.
function fn(name: string): string {
  const m = new RegExp(`^${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}\\n`, 'm').exec(SCRIPT);
  if (!m) throw new Error(`bench/init.sh has no function ${name}()`);
  return m[0];
}

function sh(script: string, args: string[] = []): { out: string; err: string; status: number | null } {
  const r = spawnSync('/bin/sh', ['-c', script, 'sh', ...args], { encoding: 'utf8' });
  return { out: r.stdout, err: r.stderr, status: r.status };
}

/** The command word of every simple command of a shell script (a lint, not a parser: enough for init.sh). */
function commandWords(script: string): string[] {
  let text = script
    .replace(/\\\n/g, ' ')
    .replace(/\$B awk '[^']*'/g, '$B awk PROGRAM')
    .replace(/\$\(\([^()]*\)\)/g, 'ARITH'); // awk programs, $((...))
  const substitutions = [...text.matchAll(/\$\(([^()]*)\)/g)].map((m) => m[1] ?? '');
  text = [text.replace(/\$\(([^()]*)\)/g, 'SUBST'), ...substitutions].join('\n');
  const words: string[] = [];
  for (const raw of text.split('\n')) {
    if (/^\s*[a-z_]+\(\) \{$/.test(raw)) continue; // function definition
    const line = raw
      .replace(/"(?:[^"\\]|\\.)*"/g, 'STR')
      .replace(/'[^']*'/g, 'STR')
      .replace(/(^|\s)#.*$/, '')
      .replace(/(^|;;|\bcase\s+\S+\s+in)\s*[^()\s;][^();]*\)/g, '$1 ;') // case arm patterns (they contain |)
      .replace(/\bcase\s+\S+\s+in\b/g, ';');
    for (let seg of line.split(/&&|\|\||[;|]/)) {
      seg = seg.trim();
      for (let prev = ''; prev !== seg;) {
        prev = seg;
        seg = seg
          .replace(/^(if|then|else|elif|do|done|fi|esac|while|until|case|in|exec|!|\{|\})(\s+|$)/, '')
          .replace(/^[A-Za-z_][A-Za-z0-9_]*=\S*(\s+|$)/, '') // assignments
          .replace(/^[0-9]*[<>]+&?\s*\S+\s*/, ''); // redirections
      }
      const word = seg.split(/\s+/)[0] ?? '';
      if (word !== '') words.push(word);
    }
  }
  return words;
}

describe('bench/init.sh', () => {
  test('is POSIX sh: sh -n, dash -n, busybox sh -n and shellcheck -s sh are clean', () => {
    const shells: string[][] = [
      ['/bin/sh', '-n'],
      ['/usr/bin/dash', '-n'],
      ...(HOST_BUSYBOX ? [[HOST_BUSYBOX, 'sh', '-n']] : []),
    ];
    for (const [cmd, ...args] of shells) {
      if (!cmd || !has(cmd)) continue;
      const r = spawnSync(cmd, [...args, REFERENCE_INIT], { encoding: 'utf8' });
      expect({ cmd, status: r.status, err: r.stderr }).toEqual({ cmd, status: 0, err: '' });
    }
    const sc = spawnSync('shellcheck', ['-s', 'sh', REFERENCE_INIT], { encoding: 'utf8' });
    if (sc.error) console.error('shellcheck not installed: skipped (apt-get install -y shellcheck)');
    else expect(sc.stdout + sc.stderr).toBe('');
    expect(SCRIPT.startsWith('#!/bin/sh\n')).toBe(true);
    expect(statSync(REFERENCE_INIT).mode & 0o777).toBe(0o755);
  });

  test('calls the tools by the absolute paths the agent packs (agent/tools.ts)', () => {
    const vars = Object.fromEntries([...SCRIPT.matchAll(/^([A-Z0-9]+)=(\/\S+)$/gm)].map((m) => [m[1], m[2]]));
    expect({
      B: vars.B,
      RSYNC: vars.RSYNC,
      SSH: vars.SSH,
      SFDISK: vars.SFDISK,
      MKE2FS: vars.MKE2FS,
      MKFAT: vars.MKFAT,
    }).toEqual({
      B: TOOLS.busybox,
      RSYNC: TOOLS.rsync,
      SSH: TOOLS.ssh,
      SFDISK: TOOLS.sfdisk,
      MKE2FS: TOOLS.mke2fs,
      MKFAT: TOOLS.mkfsVfat,
    });
    // Every command is a tool variable, a shell builtin/keyword or a function of the script: no PATH lookups.
    const functions = [...SCRIPT.matchAll(/^([a-z_]+)\(\) \{$/gm)].map((m) => m[1] as string);
    const builtins = new Set([
      'case',
      'for',
      'read',
      'set',
      'export',
      'echo',
      'return',
      'continue',
      'break',
      '[',
      ':',
      'shift',
      ...functions,
    ]);
    const unknown = commandWords(SCRIPT).filter(
      (w) => !builtins.has(w) && !/^\$(B|RSYNC|SSH|SFDISK|MKE2FS|MKFAT)$/.test(w),
    );
    expect(unknown).toEqual([]);
    expect(commandWords(SCRIPT)).toContain('$SFDISK');
    expect(
      commandWords(
        'x=1 $B mount || /bin/foo; if ! bar; then baz | $B sort; fi\nv=$(qux -r) n=$((n + 1))\ncase $x in a | b) zap ;; *) : ;; esac\ncase $y in\n  c) $B x \\\n  y ;;\nesac\nwhile read -r l; do :; done < f',
      ),
    ).toEqual(['$B', '/bin/foo', 'bar', 'baz', '$B', 'zap', ':', '$B', 'read', ':', 'qux']);
  });

  test("uses the agent's ssh options (agent/link.ts sshOptions), without its shared connection", () => {
    const rshLines = SCRIPT.split('\n')
      .filter((l) => l.startsWith('RSH='))
      .join('\n');
    const r = sh(`SSH=${TOOLS.ssh} KEYDIR=/etc/clusterboot PORT=2222\n${rshLines}\nprintf '%s' "$RSH"`);
    expect(r.status).toBe(0);
    const agent = [TOOLS.ssh, ...sshOptions({ host: 'm', user: 'root', port: 2222 })];
    const i = agent.indexOf('ControlPath=/run/clusterboot/ssh.sock');
    expect(i).toBeGreaterThan(0);
    agent.splice(i - 1, 2); // '-o', 'ControlPath=...'
    expect(r.out.split(' ')).toEqual(agent);
    expect(SCRIPT).toContain('$RSYNC -e "$RSH" "$M:partitions.sfdisk" /tmp/');
    expect(SCRIPT).toContain('-aHAX --numeric-ids --delete --stats');
  });

  test('prints the lines the benchmark reads', () => {
    expect(SCRIPT).toMatch(/\nlog "switch_root"\n[\s\S]*\nexec \$B switch_root "\$NEWROOT" \/sbin\/init\n$/);
    expect(SCRIPT).toContain('log "rsync done bytes=${BYTES:-0}"');
    const r = sh(`B=${HOST_BUSYBOX ?? 'busybox'}\n${fn('log')}\nlog switch_root`);
    expect(r.out).toMatch(/^refinit: [0-9]+\.[0-9]+s switch_root\n$/);
    // (the shell loop that follows is replaced: here it would never return)
    const failFn = fn('fail').replace('while :; do $B sh; done', 'return 0');
    expect(failFn).not.toBe(fn('fail'));
    const f = sh(`B=true\n${failFn}\nfail partitions "sfdisk refused the table"`);
    expect(f.out).toBe('refinit: partitions: sfdisk refused the table\nrefinit: FAILED partitions\n');
  });

  const SEED = `# partition table of /dev/mmcblk0
unit: sectors

/dev/mmcblk0p1 : start=       16, size=    97712, Id= b
/dev/mmcblk0p2 : start=    97728, size=  2000000, Id=83
/dev/mmcblk0p3 : start=  2097728, size=  2000000, Id=83
/dev/mmcblk0p4 : start=        0, size=        0, Id= 0
`;
  const MODERN = `label: dos
label-id: 0xa86ba406
device: /dev/vda
unit: sectors
sector-size: 512

/dev/vda1 : start=          16, size=       97712, type=b, bootable
/dev/vda2 : start=       97728, size=     2000000, type=83
/dev/vda3 : start=     2097728, size=     2000000, type=83
`;

  test.skipIf(!HOST_BUSYBOX)(
    'norm(): the seed dialect and sfdisk -d of the same table compare equal; a change does not',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'cb-refinit-'));
      try {
        const norm = (text: string): string => {
          writeFileSync(join(dir, 't'), text);
          const r = sh(`B=${HOST_BUSYBOX}\n${fn('norm')}\nnorm "$1"`, [join(dir, 't')]);
          expect(r.err).toBe('');
          return r.out;
        };
        expect(norm(SEED).split('\n').sort()).toEqual(['', '16 97712 b', '2097728 2000000 83', '97728 2000000 83']);
        expect(norm(MODERN)).toBe(norm(SEED));
        expect(
          norm(MODERN.replace('size=     2000000, type=83\n/dev/vda3', 'size=     2000001, type=83\n/dev/vda3')),
        ).not.toBe(norm(SEED));
        expect(norm(MODERN.replace('type=b', 'type=c'))).not.toBe(norm(SEED));
        expect(norm(MODERN.replaceAll('\n', '\r\n'))).toBe(norm(SEED));
        expect(
          norm('label: gpt\n\nx1 : start=2048, size=8, type=0fc63daf-8483-4772-8e79-3d69d8477de4, name="a: b, c"\n'),
        ).toBe(norm('label: gpt\n\nstart=2048,size=8,type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n'));
        expect(norm('')).toBe('');
        // what sfdisk really writes and dumps, when the host has it
        if (has(TOOLS.sfdisk)) {
          const img = join(dir, 'disk.img');
          writeFileSync(img, '');
          truncateSync(img, 4096 * 1024 * 1024);
          const w = spawnSync(TOOLS.sfdisk, ['-q', '--wipe-partitions', 'never', img], {
            input: SEED,
            encoding: 'utf8',
          });
          expect(w.status).toBe(0);
          const d = spawnSync(TOOLS.sfdisk, ['-d', img], { encoding: 'utf8' });
          expect(norm(d.stdout)).toBe(norm(SEED));
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  test.skipIf(!HOST_BUSYBOX)(
    'received_bytes(): the "Total bytes received" of rsync --stats, separators dropped',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'cb-refinit-'));
      try {
        const stats =
          'Number of files: 17 (reg: 13, dir: 3, link: 1)\nTotal bytes sent: 3,121,628\nTotal bytes received: 1,786,274\n\nsent 3,121,628 bytes  received 1,786,274 bytes  6,243,804.00 bytes/sec\n';
        writeFileSync(join(dir, 'log'), stats);
        expect(sh(`B=${HOST_BUSYBOX}\n${fn('received_bytes')}\nreceived_bytes "$1"`, [join(dir, 'log')]).out).toBe(
          '1786274\n',
        );
        // and on a real local rsync --stats run, when the host has rsync
        if (has('/usr/bin/rsync')) {
          writeFileSync(join(dir, 'f'), 'x'.repeat(5000));
          const r = spawnSync('/usr/bin/rsync', ['-a', '--stats', join(dir, 'f'), join(dir, 'g')], {
            encoding: 'utf8',
          });
          writeFileSync(join(dir, 'log'), r.stdout);
          const n = sh(`B=${HOST_BUSYBOX}\n${fn('received_bytes')}\nreceived_bytes "$1"`, [
            join(dir, 'log'),
          ]).out.trim();
          expect(n).toMatch(/^[0-9]+$/);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

// ---- the reference initramfs ----

interface Entry {
  path: string;
  mode: number;
  data: Buffer;
}

/** newc ("070701") archive -> entries; symlink targets are the data. */
function readNewc(buf: Buffer): Entry[] {
  const out: Entry[] = [];
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    const magic = buf.toString('latin1', off, off + 6);
    if (magic !== '070701') throw new Error(`bad cpio magic ${JSON.stringify(magic)} at ${off}`);
    const field = (i: number) => Number.parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    const dataAt = align(off + 110 + nameSize);
    if (name === 'TRAILER!!!') return out;
    out.push({ path: name.replace(/^\.?\//, ''), mode, data: buf.subarray(dataAt, dataAt + size) });
    off = align(dataAt + size);
  }
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** Follow symlinks in the archive (component by component) to the entry a path names at boot. */
function resolveIn(byPath: Map<string, Entry>, path: string, depth = 0): Entry | undefined {
  if (depth > 20) return undefined;
  const parts = path.replace(/^\/+/, '').split('/');
  for (let i = 1; i <= parts.length; i++) {
    const prefix = parts.slice(0, i).join('/');
    const e = byPath.get(prefix);
    if (e === undefined) return undefined;
    if ((e.mode & S_IFMT) === S_IFLNK) {
      const target = e.data.toString('utf8');
      const base = target.startsWith('/') ? target : posix.join(posix.dirname(`/${prefix}`), target);
      return resolveIn(byPath, posix.join(base, ...parts.slice(i)), depth + 1);
    }
  }
  return byPath.get(parts.join('/'));
}

const SYSROOT = join(REPO, '.cache', 'sysroot-arm64', 'root');
const SYSROOT_KERNEL = existsSync(SYSROOT) ? kernelsIn(SYSROOT)[0] : undefined;

describe.skipIf(SYSROOT_KERNEL === undefined)('packReference (real arm64 sysroot)', () => {
  let ref: ReferenceImages | undefined;
  let entries: Entry[] = [];
  let byPath = new Map<string, Entry>();
  const build = async (): Promise<ReferenceImages> => {
    if (ref) return ref;
    ref = await packReference({
      sysroot: { root: SYSROOT, kernelVersion: SYSROOT_KERNEL ?? '' },
      extra: testAccessFiles(),
    });
    entries = readNewc(gunzipSync(readFileSync(ref.pack.igzPath)));
    byPath = new Map(entries.map((e) => [e.path, e]));
    return ref;
  };

  test('builds (cached by input hash under .cache/images-ref) a U-Boot ramdisk around a gzip newc cpio', async () => {
    const r = await build();
    expect(r.dir.startsWith(join(REPO, '.cache', 'images-ref'))).toBe(true);
    const uimg = readFileSync(r.initramfs);
    expect(uimg.readUInt32BE(0)).toBe(0x27051956);
    expect(uimg.length).toBe(r.pack.compressedBytes + 64);
    expect(r.pack.missingLibraries).toEqual([]);
    expect(r.pack.missingModules).toEqual([]);
    // a second call with the same inputs is the same directory, not a rebuild
    const again = await packReference({
      sysroot: { root: SYSROOT, kernelVersion: SYSROOT_KERNEL ?? '' },
      extra: testAccessFiles(),
    });
    expect(again.dir).toBe(r.dir);
    expect(statSync(again.initramfs).mtimeMs).toBe(statSync(r.initramfs).mtimeMs);
    // GNU cpio lists the same names as the reader below
    const gnu = spawnSync('cpio', ['-it', '--quiet'], {
      input: gunzipSync(readFileSync(r.pack.igzPath)),
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    if (!gnu.error) expect(gnu.stdout.trim().split('\n')).toEqual(entries.map((e) => e.path));
  }, 300_000);

  test('/init is bench/init.sh, mode 0755, and there is no agent', async () => {
    await build();
    const init = byPath.get('init');
    expect(init).toBeDefined();
    expect((init?.mode ?? 0) & S_IFMT).toBe(S_IFREG);
    expect((init?.mode ?? 0) & 0o7777).toBe(0o755);
    expect(init?.data.equals(readFileSync(REFERENCE_INIT))).toBe(true);
    expect(entries.filter((e) => /clusterboot-agent/.test(e.path))).toEqual([]);
    expect(entries.filter((e) => e.path === 'init')).toHaveLength(1);
    // /bin/sh for the #! line
    expect(resolveIn(byPath, '/bin/sh')?.data.equals(resolveIn(byPath, TOOLS.busybox)?.data ?? Buffer.alloc(0))).toBe(
      true,
    );
  }, 300_000);

  test("has the agent's tools, every library they need, and the modules with their list", async () => {
    const r = await build();
    for (const tool of [
      TOOLS.busybox,
      TOOLS.rsync,
      TOOLS.ssh,
      TOOLS.sfdisk,
      TOOLS.mke2fs,
      TOOLS.mkfsVfat,
      TOOLS.e2fsck,
      TOOLS.fsckVfat,
    ]) {
      const e = resolveIn(byPath, tool);
      expect({
        tool,
        present: e !== undefined && (e.mode & S_IFMT) === S_IFREG,
        executable: ((e?.mode ?? 0) & 0o111) !== 0,
      }).toEqual({ tool, present: true, executable: true });
      const elf = readElf(new Uint8Array(e?.data ?? []));
      expect(elf).not.toBeNull();
      if (!elf) continue;
      if (elf.interp)
        expect({ tool, interp: elf.interp, found: resolveIn(byPath, elf.interp) !== undefined }).toEqual({
          tool,
          interp: elf.interp,
          found: true,
        });
      for (const lib of elf.needed) {
        const found = ['lib/aarch64-linux-gnu', 'usr/lib/aarch64-linux-gnu', 'lib', 'usr/lib'].some(
          (d) => resolveIn(byPath, `${d}/${lib}`) !== undefined,
        );
        expect({ tool, lib, found }).toEqual({ tool, lib, found: true });
      }
    }
    expect(r.pack.modules.length).toBeGreaterThan(5);
    for (const want of ['ext4.ko', 'overlay.ko', 'vfat.ko', 'virtio_net.ko', 'virtio_blk.ko'])
      expect(r.pack.modules.some((m) => m.endsWith(`/${want}`))).toBe(true);
    for (const m of r.pack.modules)
      expect({ m, found: resolveIn(byPath, `/lib/modules/${r.kernelVersion}/${m}`) !== undefined }).toEqual({
        m,
        found: true,
      });
    expect(resolveIn(byPath, '/etc/clusterboot/modules.list')?.data.toString()).toBe(`${r.pack.modules.join('\n')}\n`);
  }, 300_000);

  test('has the skeleton (udhcpc hook, passwd, ...) and the access files, byte for byte', async () => {
    await build();
    const skel = join(REPO, 'initramfs-skel');
    const walk = (d: string): string[] =>
      readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
    for (const file of walk(skel)) {
      const rel = file.slice(skel.length + 1);
      if (rel === 'init' || rel.endsWith('.keep')) continue;
      const e = resolveIn(byPath, rel);
      expect({ rel, same: e?.data.equals(readFileSync(file)) ?? false }).toEqual({ rel, same: true });
      expect({ rel, mode: (e?.mode ?? 0) & 0o777 }).toEqual({ rel, mode: statSync(file).mode & 0o111 ? 0o755 : 0o644 });
    }
    expect(resolveIn(byPath, '/etc/udhcpc/default.script')).toBeDefined();
    const extra = testAccessFiles();
    expect(extra.map((x) => x.path)).toContain('etc/clusterboot/node_key');
    for (const x of extra) {
      const e = resolveIn(byPath, x.path);
      expect({
        path: x.path,
        same: e?.data.equals(Buffer.from(x.data)) ?? false,
        mode: (e?.mode ?? 0) & 0o777,
      }).toEqual({ path: x.path, same: true, mode: x.mode ?? 0o644 });
    }
    expect(byPath.get('dev/console')).toBeDefined();
  }, 300_000);

  test("is much smaller than the agent's initramfs", async () => {
    const r = await build();
    // The agent's images as test/rig/images.ts caches them; else the agent binary alone.
    const cached = (dir: string, file: string) =>
      existsSync(dir)
        ? readdirSync(dir)
            .map((d) => join(dir, d, file))
            .filter(has)
        : [];
    const manifests = cached(join(REPO, '.cache', 'images'), 'initramfs.manifest.json').map(
      (p) => JSON.parse(readFileSync(p, 'utf8')) as { compressedBytes: number; cpioBytes: number },
    );
    const agents = cached(join(REPO, '.cache', 'agent'), 'clusterboot-agent-arm64').map((p) => statSync(p).size);
    console.error(
      `reference initramfs: ${r.pack.compressedBytes} bytes compressed (${r.pack.cpioBytes} bytes of cpio, ${r.pack.files} entries)` +
        (manifests.length
          ? `; smallest cached agent initramfs: ${Math.min(...manifests.map((m) => m.compressedBytes))} bytes compressed`
          : ''),
    );
    if (manifests.length > 0) {
      for (const m of manifests) {
        expect(r.pack.compressedBytes * 3).toBeLessThan(m.compressedBytes);
        expect(r.pack.cpioBytes * 3).toBeLessThan(m.cpioBytes);
      }
    } else if (agents.length > 0) {
      expect(r.pack.cpioBytes).toBeLessThan(Math.min(...agents));
    } else {
      expect(r.pack.compressedBytes).toBeLessThan(20 * 1024 * 1024);
    }
  }, 300_000);
});

// `builder pack`: the agent, busybox, the tools with their libraries, the modules, the skeleton and
// the master-side files, as one reproducible newc cpio, compressed, wrapped for U-Boot.
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { APPLETS, TOOLS } from '../../agent/sys/tools.ts';
import { SEQUENCE } from '../../agent/sequence.ts';
import { MODULE_LIST } from '../../agent/contract/initramfs.ts';
import { compress, type Compression } from './compress.ts';
import { writeCpio, type CpioEntry } from './cpio.ts';
import { libraryClosure, readElf, type ClosureFile } from './elf.ts';
import { moduleClosure, parseModulesBuiltin, parseModulesDep } from './kmod.ts';
import { writeUImage, type UArch } from '../../agent/contract/uimage.ts';
import { knownHostsLine } from '../sshkeys.ts';

export interface ExtraFile {
  path: string;
  data: Uint8Array;
  mode?: number;
}

export interface PackOptions {
  sysroot: string;
  /** The agent binary; null packs no agent and none of its libraries (bench/: a reference init without it). */
  agent: string | null;
  skel: string;
  /** Replaces the skeleton's /init (mode 0755); default: the skeleton's, which execs the agent. */
  init?: Uint8Array;
  out: string;
  kernelModules?: string;
  modules: string[];
  compress: Compression;
  arch: UArch;
  sourceDateEpoch: number;
  extra?: ExtraFile[];
  name?: string;
}

export interface PackResult {
  cpioBytes: number;
  compressedBytes: number;
  uimagePath: string;
  igzPath: string;
  files: number;
  modules: string[];
  missingLibraries: { lib: string; neededBy: string }[];
  missingModules: string[];
}

/** Modules every boot needs whatever the phases say (the virt machine's disk and PCI transport). */
export const BASE_MODULES = [
  'virtio_pci',
  'virtio_blk',
  'virtio_net',
  'ext4',
  'vfat',
  'nls_cp437',
  'nls_iso8859_1',
  'nls_ascii',
  'overlay',
  'crc32c_generic',
  'libcrc32c',
];

/** Modules the phases declare, plus the base list and the command line's. */
export function wantedModules(extra: string[]): string[] {
  const declared = SEQUENCE.flatMap((p) => p.needs.modules ?? []);
  return [...new Set([...BASE_MODULES, ...declared, ...extra].map((m) => m.replace(/-/g, '_')))];
}

/** Tools the phases declare (all of TOOLS today: the rescue shell wants them too). */
export function wantedTools(): string[] {
  const declared = SEQUENCE.flatMap((p) => p.needs.tools ?? []);
  const all = new Set<string>([...Object.keys(TOOLS), ...declared]);
  return [...all].map((t) => TOOLS[t as keyof typeof TOOLS]).filter((p) => p !== TOOLS.sh);
}

/** Walk the skeleton directory: files keep their executable bit; `.keep` placeholders only make dirs. */
export function skelEntries(dir: string): CpioEntry[] {
  const out: CpioEntry[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const rel = relative(dir, full);
      const st = lstatSync(full);
      if (st.isDirectory()) {
        out.push({ kind: 'dir', path: rel, mode: 0o755 });
        walk(full);
      } else if (st.isSymbolicLink()) {
        out.push({ kind: 'symlink', path: rel, target: readlinkSync(full) });
      } else if (name !== '.keep') {
        out.push({ kind: 'file', path: rel, data: readFileSync(full), mode: st.mode & 0o111 ? 0o755 : 0o644 });
      }
    }
  };
  walk(dir);
  return out;
}

function sysrootFile(sysroot: string, path: string): Uint8Array {
  return readFileSync(join(sysroot, path));
}

/** Closure files as archive entries: symlinks stay symlinks, files keep their permission bits. */
function closureEntries(sysroot: string, files: ClosureFile[]): CpioEntry[] {
  return files.map((f): CpioEntry => {
    const rel = f.path.replace(/^\//, '');
    return f.kind === 'symlink'
      ? { kind: 'symlink', path: rel, target: f.target ?? '' }
      : {
          kind: 'file',
          path: rel,
          data: sysrootFile(sysroot, f.path),
          mode: statSync(join(sysroot, f.path)).mode & 0o777,
        };
  });
}

export async function pack(o: PackOptions): Promise<PackResult> {
  const entries: CpioEntry[] = [];
  entries.push(
    ...skelEntries(o.skel).map((e): CpioEntry =>
      o.init && e.path === 'init' ? { kind: 'file', path: 'init', data: o.init, mode: 0o755 } : e,
    ),
  );
  if (o.init && !entries.some((e) => e.path === 'init'))
    entries.push({ kind: 'file', path: 'init', data: o.init, mode: 0o755 });
  entries.push({ kind: 'dir', path: 'tmp', mode: 0o1777 });
  entries.push({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ kind: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  if (o.agent !== null)
    entries.push({ kind: 'file', path: 'sbin/clusterboot-agent', data: readFileSync(o.agent), mode: 0o755 });

  // busybox and the applet links the agent and the rescue shell use
  entries.push({ kind: 'file', path: 'bin/busybox', data: sysrootFile(o.sysroot, TOOLS.busybox), mode: 0o755 });
  for (const a of APPLETS) entries.push({ kind: 'symlink', path: `bin/${a}`, target: 'busybox' });

  // the real tools and every library they and the agent need, found from ELF NEEDED entries
  const programs = wantedTools().filter((p) => p !== TOOLS.busybox);
  const missingPrograms = programs.filter((p) => !existsSync(join(o.sysroot, p)));
  if (missingPrograms.length) {
    throw new Error(
      `the sysroot ${o.sysroot} lacks ${missingPrograms.join(', ')}: install rsync, openssh-client, fdisk, e2fsprogs and dosfstools in it (builder sysroot does)`,
    );
  }
  const closure = libraryClosure(o.sysroot, programs);
  entries.push(...closureEntries(o.sysroot, closure.files));
  // the agent's own libraries come from the sysroot too (it is a glibc program)
  const agentLibs = o.agent !== null ? libraryClosureForAgent(o.sysroot, o.agent) : { files: [], missing: [] };
  const missingLibraries = [...closure.missing, ...agentLibs.missing];
  entries.push(...closureEntries(o.sysroot, agentLibs.files));

  // kernel modules and their dependencies, in load order
  let modulesOrder: string[] = [];
  let missingModules: string[] = [];
  if (o.kernelModules) {
    const kver = o.kernelModules.replace(/\/+$/, '').split('/').pop() ?? '';
    const dep = parseModulesDep(readFileSync(join(o.kernelModules, 'modules.dep'), 'utf8'));
    const builtinPath = join(o.kernelModules, 'modules.builtin');
    const builtin = existsSync(builtinPath)
      ? parseModulesBuiltin(readFileSync(builtinPath, 'utf8'))
      : new Set<string>();
    const mc = moduleClosure(dep, wantedModules(o.modules), builtin);
    modulesOrder = mc.order;
    missingModules = mc.missing;
    for (const rel of mc.order) {
      entries.push({
        kind: 'file',
        path: `lib/modules/${kver}/${rel}`,
        data: readFileSync(join(o.kernelModules, rel)),
        mode: 0o644,
      });
    }
    const depLines = mc.order.map((m) => `${m}: ${(dep.get(m) ?? []).join(' ')}`.trimEnd());
    entries.push({
      kind: 'file',
      path: `lib/modules/${kver}/modules.dep`,
      data: Buffer.from(depLines.join('\n') + '\n'),
    });
    if (existsSync(builtinPath))
      entries.push({ kind: 'file', path: `lib/modules/${kver}/modules.builtin`, data: readFileSync(builtinPath) });
    entries.push({ kind: 'file', path: MODULE_LIST.replace(/^\//, ''), data: Buffer.from(mc.order.join('\n') + '\n') });
  }
  for (const x of o.extra ?? [])
    entries.push({ kind: 'file', path: x.path.replace(/^\//, ''), data: x.data, mode: x.mode ?? 0o644 });

  const cpio = writeCpio(mergedUsr(o.sysroot, entries), { mtime: o.sourceDateEpoch });
  const packed = await compress(cpio, o.compress);
  mkdirSync(o.out, { recursive: true });
  const igzPath = join(o.out, 'initramfs.igz');
  const uimagePath = join(o.out, 'initramfs.igz.uimg');
  writeFileSync(igzPath, packed);
  writeFileSync(
    uimagePath,
    writeUImage(packed, {
      arch: o.arch,
      type: 'ramdisk',
      comp: o.compress === 'none' ? 'none' : o.compress === 'xz' ? 'lzma' : o.compress,
      name: o.name ?? 'clusterboot initramfs',
      time: o.sourceDateEpoch,
    }),
  );
  const result: PackResult = {
    cpioBytes: cpio.length,
    compressedBytes: packed.length,
    uimagePath,
    igzPath,
    files: entries.length,
    modules: modulesOrder,
    missingLibraries,
    missingModules,
  };
  writeFileSync(join(o.out, 'initramfs.manifest.json'), JSON.stringify(result, null, 2) + '\n');
  return result;
}

/** The agent lives outside the sysroot: find its interpreter and NEEDED libraries inside the sysroot. */
/** Top-level directories the sysroot links into /usr (merged /usr: Debian 12, Raspberry Pi OS bookworm). */
export function topLevelLinks(sysroot: string): Map<string, string> {
  const links = new Map<string, string>();
  for (const d of ['bin', 'sbin', 'lib', 'lib64']) {
    try {
      if (!lstatSync(join(sysroot, d)).isSymbolicLink()) continue;
      const target = readlinkSync(join(sysroot, d)).replace(/^\/+/, '').replace(/\/+$/, '');
      if (target && !target.includes('..')) links.set(d, target);
    } catch {
      // absent: nothing to map
    }
  }
  return links;
}

/** Put every entry where the sysroot really keeps it, and keep its top-level links, so a merged-/usr
 * template packs without a directory and a symlink fighting over the same name. */
export function mergedUsr(sysroot: string, entries: CpioEntry[]): CpioEntry[] {
  const links = topLevelLinks(sysroot);
  if (links.size === 0) return entries;
  const out: CpioEntry[] = [];
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    const top = path.split('/')[0] ?? '';
    const to = links.get(top);
    if (to && path === top) continue;
    out.push(to ? { ...e, path: `${to}${path.slice(top.length)}` } : e);
  }
  for (const [d, t] of links) out.push({ kind: 'symlink', path: d, target: t });
  return out;
}

function libraryClosureForAgent(sysroot: string, agent: string) {
  const elf = readElf(readFileSync(agent));
  if (!elf) throw new Error(`${agent} is not an ELF executable`);
  const dirs =
    elf.machine === 183
      ? ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib', '/usr/lib']
      : ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/lib', '/usr/lib'];
  const found: string[] = elf.interp ? [elf.interp] : [];
  const missing: { lib: string; neededBy: string }[] = [];
  for (const lib of elf.needed) {
    const hit = dirs.map((d) => `${d}/${lib}`).find((p) => existsSync(join(sysroot, p)));
    if (hit) found.push(hit);
    else missing.push({ lib, neededBy: 'clusterboot-agent' });
  }
  const c = libraryClosure(sysroot, found);
  return { files: c.files, missing: [...missing, ...c.missing] };
}

/** The files that let a node read the master: its key, the master's pinned host key, the stamp-verify key, and
 * (report: true) the key it pushes its boot report with (write-only into <master root>/reports on the master). */
export function accessFiles(o: {
  keysDir: string;
  /** The master's host key, or every master's (the primary and its mirrors): each is pinned under the alias. */
  masterHostKeyPub: string | readonly string[];
  sign: boolean;
  report?: boolean;
}): ExtraFile[] {
  const files: ExtraFile[] = [
    { path: 'etc/clusterboot/node_key', data: readFileSync(join(o.keysDir, 'node_ed25519')), mode: 0o600 },
    {
      path: 'etc/clusterboot/known_hosts',
      data: Buffer.from(
        [o.masterHostKeyPub]
          .flat()
          .map((k) => `${knownHostsLine(k)}\n`)
          .join(''),
      ),
      mode: 0o644,
    },
  ];
  if (o.sign)
    files.push({
      path: 'etc/clusterboot/stamp.pub.pem',
      data: readFileSync(join(o.keysDir, 'stamp_ed25519.pub.pem')),
      mode: 0o644,
    });
  if (o.report)
    files.push({
      path: 'etc/clusterboot/report_key',
      data: readFileSync(join(o.keysDir, 'report_ed25519')),
      mode: 0o600,
    });
  return files;
}

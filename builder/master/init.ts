// `builder init`: the machine it runs on becomes a master, as the seed's 'Master Node Installation' did by hand.
// Three parts: the facts about the machine (what is installed, which files exist, what the last run made), a pure
// plan from those facts and the options (a list of actions, each with its description and the files it writes:
// empty when the master is already what the options ask), and the effects, one function per kind of action, which
// reuse the builder's own commands: keys (keys.ts), pack (image/pack.ts), stage (stage.ts), publish (publish.ts).
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { ANNOUNCEMENT_FILE, KERNEL_GZ } from '../../agent/contract/firststage.ts';
import { STAMP_NAMES } from '../../agent/contract/stamp.ts';
import {
  BOOT_SCRIPT,
  BOOTFS_DIR,
  INITRAMFS,
  KERNEL,
  NODES_DIR,
  NODES_LIST,
  PARTITION_TABLE,
  ROOTFS_DIR,
  STAMP_DIR,
  TFTP_DIR,
} from '../../agent/contract/tree.ts';
import { LABEL_ID } from '../../agent/plans/disk.ts';
import { parseSfdiskDump, renderDump, type PartitionSpec } from '../../agent/plans/sfdisk.ts';
import { MARKER } from '../../agent/paths.ts';
import { TOOLS } from '../../agent/sys/tools.ts';
import { buildAgent, REPO } from '../image/agentbuild.ts';
import { DEFAULT_BOOTARGS } from '../image/bootscript.ts';
import { accessFiles, pack } from '../image/pack.ts';
import { checkRsyncVersion } from './doctor.ts';
import { validateStage } from './dnsmasq.ts';
import { generateKeys } from './keys.ts';
import { formatIPv4, parseIPv4, parseNodeList, parseSubnet, inSubnet } from './nodelist.ts';
import { publish } from './publish.ts';
import { stage } from './stage.ts';
import { DEFAULT_SYNC_SLOTS } from './syncslot.ts';
import {
  bootConfig,
  copiedEntries,
  copySystem,
  firmwareFiles,
  FSTAB,
  HOSTS,
  ROOT_AUTHORIZED_KEYS,
  relativeTo,
  templateCleanup,
  walkSystem,
  type CleanupPlan,
  type TreeEntry,
} from './template.ts';

// ---------------------------------------------------------------------------------------------------------------
// options

export interface InitOptions {
  /** The node list: the seed's `dhcp-host=` lines or `MAC NAME IP`. */
  nodesFile: string;
  /** The cluster NIC (dnsmasq serves only there); the master's address and the subnet default to its own. */
  interface: string;
  subnet?: string;
  masterIp?: string;
  range?: string;
  domain: string;
  /** Every default path below is under this directory ('' = the machine itself). */
  prefix: string;
  masterRoot: string;
  keysDir: string;
  stateDir: string;
  dnsmasqConf: string;
  authorizedKeys: string;
  dhcpLeases: string;
  masterHostKey: string;
  /** The running system the template is copied from ('/'). */
  systemRoot: string;
  /** The root the initramfs tools come from (default: the system root). */
  sysroot: string;
  kernel?: string;
  kernelModules?: string;
  /** The Pi firmware directory (start*.elf, fixup*.dat, device trees, overlays/, config.txt). */
  firmware?: string;
  uBoot?: string;
  /** Card sizes in bytes: the table fits the smallest. */
  cardSizes: number[];
  /** More absolute paths of the system root left out of the template. */
  exclude: string[];
  bootargs: string;
  modules: string[];
  agent?: string;
  syncSlots: number;
  sign: boolean;
  apt: boolean;
  force: boolean;
}

/** The defaults of every path, under a prefix ('' for the machine itself). */
export function defaultPaths(
  prefix: string,
): Pick<
  InitOptions,
  'masterRoot' | 'keysDir' | 'stateDir' | 'dnsmasqConf' | 'authorizedKeys' | 'dhcpLeases' | 'masterHostKey'
> {
  const p = (x: string) => (prefix ? join(resolve(prefix), x) : x);
  return {
    masterRoot: p('/data/slaves'),
    keysDir: p('/etc/clusterboot'),
    stateDir: p('/var/lib/clusterboot'),
    dnsmasqConf: p('/etc/dnsmasq.d/clusterboot.conf'),
    authorizedKeys: p('/root/.ssh/authorized_keys'),
    dhcpLeases: p('/var/lib/misc/dnsmasq.leases'),
    masterHostKey: p('/etc/ssh/ssh_host_ed25519_key.pub'),
  };
}

/** `16G`, `8GB` (decimal, as cards are sold), `2GiB`, `512M`, or bytes. */
export function parseSize(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(|k|m|g|t|kb|mb|gb|tb|kib|mib|gib|tib)$/i.exec(s.trim());
  if (!m) return null;
  const u = (m[2] ?? '').toLowerCase();
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4 }[u.replace(/i?b$/, '')] ?? 0;
  const base = u.endsWith('ib') ? 1024 : 1000;
  const n = Math.floor(Number(m[1]) * base ** pow);
  return Number.isFinite(n) && n > 0 ? n : null;
}

// ---------------------------------------------------------------------------------------------------------------
// the partition table

const MIB = 1048576;
const SECTORS_PER_MIB = MIB / 512;
export const BOOT_MIB = 128;
/** Cards hold a little less than they are sold as, and not all the same: the table uses 96 % of the size told. */
export const CARD_MARGIN = 0.96;
export const MIN_CARD_BYTES = Math.ceil(((1 + BOOT_MIB + 768) * MIB) / CARD_MARGIN);

/**
 * The first table, for the smallest card: the seed's four partitions (p1 FAT boot firmware, p2 root slots and the
 * cached first stage, p3 the writable layer, p4 data), aligned to 1 MiB, with clusterboot's disk identifier.
 * p1 is 128 MiB (firmware, device trees, U-Boot: about 40 MB today); of the rest p2 takes half, p3 and p4 a quarter.
 */
export function cardTable(cardBytes: number): { text: string } | { problem: string } {
  if (!(cardBytes >= MIN_CARD_BYTES))
    return {
      problem: `--card-size ${cardBytes} bytes is too small: a card needs at least ${MIN_CARD_BYTES} bytes (${(MIN_CARD_BYTES / 1e9).toFixed(2)} GB) for the boot firmware, root slots and writable layer`,
    };
  const usable = Math.floor((cardBytes * CARD_MARGIN) / MIB);
  const rest = usable - 1 - BOOT_MIB;
  const p2 = Math.floor(rest / 2);
  const p3 = Math.floor(rest / 4);
  const p4 = rest - p2 - p3;
  const parts: PartitionSpec[] = [];
  let start = 1;
  for (const [i, size, type] of [
    [1, BOOT_MIB, 'c'],
    [2, p2, '83'],
    [3, p3, '83'],
    [4, p4, '83'],
  ] as const) {
    parts.push({ index: i, start: start * SECTORS_PER_MIB, size: size * SECTORS_PER_MIB, type, bootable: i === 1 });
    start += size;
  }
  const body = renderDump(
    { label: 'dos', unit: 'sectors', sectorSize: 512, labelId: LABEL_ID.dos, partitions: parts },
    '/dev/mmcblk0',
  );
  return {
    text: `# clusterboot init: for cards of ${cardBytes} bytes or more (p1 boot firmware, p2 root slots, p3 writable layer, p4 data)\n${body}`,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// facts

/** What `builder init` needs to know of the machine; gathered by gatherFacts, or made up by the unit tests. */
export interface InitFacts {
  /** The master's programs, by absolute path on the machine: present or not. */
  programs: Record<string, boolean>;
  /** Installed Debian packages: their version, null when not installed. */
  packages: Record<string, string | null>;
  /** `rsync --version`, `dnsmasq --version`, `ssh -V` output; null when it did not run. */
  versions: { rsync: string | null; dnsmasq: string | null; ssh: string | null };
  /** PID 1 is systemd (/run/systemd/system exists). */
  systemd: boolean;
  /** dnsmasq runs: the systemd unit is active and enabled, or the one init started (its pid file) is alive. */
  dnsmasq: { running: boolean; enabled: boolean };
  /** sshd runs (systemd: ssh.service active; else an sshd process). */
  sshd: boolean;
  /** The cluster NIC's IPv4 addresses, CIDR. */
  addresses: string[];
  /** Paths that exist (absolute). */
  exists: Record<string, boolean>;
  /** Directories with at least one entry. */
  nonEmpty: Record<string, boolean>;
  nodesText: string | null;
  /** The kernel and its modules, when found. */
  kernel: { path: string; modules: string } | { problem: string };
  /** The firmware directory: its top-level file names and overlays/ entries. */
  firmware: { dir: string; names: string[]; overlays: string[]; config: string | null } | null;
  uBoot: string | null;
  /** The system root's entries and the texts the clean-up reads (only when a template is to be made). */
  system: { entries: TreeEntry[]; texts: Record<string, string> } | null;
  /** Key blobs of the clusterboot keys (node, report), when they exist. */
  clusterKeys: string[];
  /** The inputs of the first stage now (hash), and of `builder stage`; null when they cannot be known yet. */
  packInputs: string | null;
  stageInputs: string | null;
  /** What the last init packed and staged (<state-dir>/init.json). */
  record: InitRecord | null;
}

export interface InitRecord {
  pack: string;
  stage: string;
}

export const RECORD_FILE = 'init.json';
export const FIRSTSTAGE_DIR = 'firststage';
export const DNSMASQ_PID = 'dnsmasq.pid';
export const MASTER_PACKAGES = ['dnsmasq', 'openssh-server', 'rsync'] as const;
export const PROGRAMS = {
  dnsmasq: '/usr/sbin/dnsmasq',
  sshd: '/usr/sbin/sshd',
  rsync: '/usr/bin/rsync',
  rrsync: '/usr/bin/rrsync',
  python3: '/usr/bin/python3',
  sshKeygen: '/usr/bin/ssh-keygen',
} as const;
/** Which package brings each program (rrsync: Debian's rsync since 3.2.4; before, it was only an example). */
const PROGRAM_PACKAGE: Record<string, string> = {
  [PROGRAMS.dnsmasq]: 'dnsmasq',
  [PROGRAMS.sshd]: 'openssh-server',
  [PROGRAMS.rsync]: 'rsync',
  [PROGRAMS.rrsync]: 'rsync',
  [PROGRAMS.python3]: 'python3-minimal',
  [PROGRAMS.sshKeygen]: 'openssh-client',
};
/** The initramfs tools (agent/sys/tools.ts) and the packages that bring them. */
export const TOOL_PACKAGE: Record<string, string> = {
  [TOOLS.busybox]: 'busybox-static',
  [TOOLS.rsync]: 'rsync',
  [TOOLS.ssh]: 'openssh-client',
  [TOOLS.sshKeygen]: 'openssh-client',
  [TOOLS.sfdisk]: 'fdisk',
  [TOOLS.mke2fs]: 'e2fsprogs',
  [TOOLS.e2fsck]: 'e2fsprogs',
  [TOOLS.mkfsVfat]: 'dosfstools',
  [TOOLS.fsckVfat]: 'dosfstools',
};

// ---------------------------------------------------------------------------------------------------------------
// the plan

export type Action =
  | { kind: 'apt'; packages: string[] }
  | { kind: 'dirs'; dirs: string[] }
  | { kind: 'keys'; dir: string; files: string[] }
  | { kind: 'table'; path: string; text: string; cardBytes: number }
  | { kind: 'template'; from: string; to: string; cleanup: CleanupPlan; copied: TreeEntry[]; replace: boolean }
  | {
      kind: 'bootfs';
      to: string;
      copies: Array<{ from: string; to: string }>;
      config: { path: string; text: string };
      replace: boolean;
    }
  | { kind: 'publish'; name: 'rootfs' | 'bootfs' }
  | { kind: 'pack'; out: string; why: string }
  | { kind: 'stage'; why: string }
  | { kind: 'dnsmasq'; how: 'systemd' | 'self'; why: string }
  | { kind: 'ssh'; why: string };

export interface InitPlan {
  actions: Action[];
  /** Nothing is done when there is one. */
  problems: string[];
  warnings: string[];
  /** The master's address and subnet (given, or from the interface). */
  masterIp: string;
  subnet: string;
}

/** One line per action: what it does. */
export function describe(a: Action): string {
  switch (a.kind) {
    case 'apt':
      return `install ${a.packages.join(', ')} (apt-get install)`;
    case 'dirs':
      return `create the seed layout (${a.dirs.length} director${a.dirs.length === 1 ? 'y' : 'ies'})`;
    case 'keys':
      return `make the missing keys in ${a.dir} (node key, report key, stamp signing key; existing keys are kept)`;
    case 'table':
      return `write the first partition table ${a.path}, for cards of ${(a.cardBytes / 1e9).toFixed(2)} GB or more`;
    case 'template':
      return `${a.replace ? 'replace' : 'make'} the root template ${a.to} from ${a.from} (cp -ax, ${a.copied.length} entries; left out: ${a.cleanup.exclude.length}; rewritten: ${a.cleanup.rewrite.map((r) => r.path).join(', ') || 'none'})`;
    case 'bootfs':
      return `${a.replace ? 'replace' : 'fill'} ${a.to} with the boot firmware and U-Boot (${a.copies.length} files and config.txt)`;
    case 'publish':
      return `publish ${a.name} (a new stamp: nodes sync it at their next boot)`;
    case 'pack':
      return `pack the initramfs into ${a.out} (${a.why})`;
    case 'stage':
      return `stage: the dnsmasq configuration, the TFTP folder, nodes.list, the authorized_keys lines (${a.why})`;
    case 'dnsmasq':
      return a.how === 'systemd'
        ? `enable and restart dnsmasq through systemd (${a.why})`
        : `start dnsmasq (no systemd here: init starts it itself, with its pid file in the state dir) (${a.why})`;
    case 'ssh':
      return `enable and start sshd through systemd (${a.why})`;
  }
}

/** Every file an action writes (a template: every entry it copies). */
export function filesOf(
  a: Action,
  o: Pick<InitOptions, 'masterRoot' | 'keysDir' | 'stateDir' | 'dnsmasqConf' | 'authorizedKeys'>,
): string[] {
  const tftp = join(o.masterRoot, TFTP_DIR);
  switch (a.kind) {
    case 'apt':
      return [];
    case 'dirs':
      return a.dirs;
    case 'keys':
      return a.files;
    case 'table':
      return [a.path];
    case 'template':
      return [
        ...a.copied.map((e) => join(a.to, e.path)),
        ...a.cleanup.rewrite.map((r) => `${join(a.to, r.path)} (rewritten: ${r.why})`),
      ];
    case 'bootfs':
      return [...a.copies.map((c) => c.to), a.config.path];
    case 'publish':
      return [join(o.masterRoot, STAMP_DIR, `${a.name}.stamp`)];
    case 'pack':
      return [join(a.out, 'initramfs.igz'), join(a.out, INITRAMFS), join(a.out, 'initramfs.manifest.json')];
    case 'stage':
      return [
        ...[KERNEL, KERNEL_GZ, INITRAMFS, BOOT_SCRIPT, ANNOUNCEMENT_FILE].map((f) => join(tftp, f)),
        join(o.stateDir, NODES_LIST),
        o.dnsmasqConf,
        join(o.stateDir, 'sync-slot'),
        join(o.stateDir, 'report-sink'),
        join(o.stateDir, 'report-peers'),
        `${o.authorizedKeys} (the node and report key lines, once)`,
        join(o.stateDir, RECORD_FILE),
      ];
    case 'dnsmasq':
      return a.how === 'self' ? [join(o.stateDir, DNSMASQ_PID)] : [];
    case 'ssh':
      return [];
  }
}

export const KEY_FILES = [
  'node_ed25519',
  'node_ed25519.pub',
  'report_ed25519',
  'report_ed25519.pub',
  'stamp_ed25519.pem',
  'stamp_ed25519.pub.pem',
];

const cmp = (a: number[], b: number[]) => {
  for (let i = 0; i < Math.max(a.length, b.length); i++)
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
};
const nums = (s: string) => s.split('.').map(Number);

/** The versions the master relies on: rsync (doctor's rule), OpenSSH 7.2 (`restrict`), dnsmasq 2.80. */
export function versionProblems(v: InitFacts['versions']): { problems: string[]; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  if (v.rsync !== null) {
    const r = checkRsyncVersion(v.rsync);
    if (r.level === 'fail') problems.push(`${r.detail}; remedy: ${r.remedy ?? ''}`);
    if (r.level === 'warn') warnings.push(`${r.detail}; remedy: ${r.remedy ?? ''}`);
  }
  const ssh = v.ssh === null ? null : /OpenSSH_(\d+\.\d+)/.exec(v.ssh)?.[1];
  if (v.ssh !== null && !ssh) warnings.push(`cannot read OpenSSH's version from \`${v.ssh.trim().slice(0, 60)}\``);
  else if (ssh && cmp(nums(ssh), [7, 2]) < 0)
    problems.push(
      `OpenSSH ${ssh} is older than 7.2: the node key's authorized_keys line needs \`restrict\`; remedy: upgrade openssh-server`,
    );
  const dm = v.dnsmasq === null ? null : /Dnsmasq version (\d+\.\d+)/.exec(v.dnsmasq)?.[1];
  if (v.dnsmasq !== null && !dm)
    warnings.push(`cannot read dnsmasq's version from \`${v.dnsmasq.trim().slice(0, 60)}\``);
  else if (dm && cmp(nums(dm), [2, 80]) < 0)
    problems.push(
      `dnsmasq ${dm} is older than 2.80 (the configuration's tftp and dhcp-host forms): remedy: upgrade dnsmasq`,
    );
  return { problems, warnings };
}

/** The master's address on the subnet from the interface's addresses; and the subnet from it when not given. */
export function addressOf(
  addresses: readonly string[],
  subnet: string | undefined,
): { ip: string; subnet: string } | { problem: string } {
  const parsed = addresses
    .map((a) => /^([0-9.]+)\/(\d+)$/.exec(a))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ ip: m[1] as string, prefix: Number(m[2]) }));
  if (subnet !== undefined) {
    const s = parseSubnet(subnet);
    if (!s.ok) return { problem: s.error };
    const hit = parsed.find((a) => {
      const n = parseIPv4(a.ip);
      return n !== null && inSubnet(n, s.subnet);
    });
    return hit
      ? { ip: hit.ip, subnet }
      : {
          problem: `the interface has no address in ${subnet} (it has ${addresses.join(', ') || 'none'}): give it one (e.g. in /etc/network/interfaces), or say --master-ip`,
        };
  }
  if (parsed.length !== 1)
    return {
      problem: `cannot tell the cluster subnet from the interface's addresses (${addresses.join(', ') || 'none'}): give --subnet`,
    };
  const a = parsed[0] as { ip: string; prefix: number };
  const n = parseIPv4(a.ip) as number;
  const mask = (0xffffffff << (32 - a.prefix)) >>> 0;
  return { ip: a.ip, subnet: `${formatIPv4((n & mask) >>> 0)}/${a.prefix}` };
}

// Why: every decision in one pure place, so a second run on the result plans nothing, --force and --dry-run are
// tested without a machine, and nothing is written when any input is wrong.
export function planInit(f: InitFacts, o: InitOptions): InitPlan {
  const problems: string[] = [];
  const warnings: string[] = [];
  const actions: Action[] = [];
  const root = o.masterRoot;
  const has = (p: string) => f.exists[p] === true;

  // the master's own programs
  const missing = Object.values(PROGRAMS).filter((p) => !f.programs[p]);
  const pkgs = new Set(missing.map((p) => PROGRAM_PACKAGE[p] as string));
  if (f.systemd) for (const p of MASTER_PACKAGES) if (f.packages[p] === null) pkgs.add(p);
  // the initramfs tools from the running system itself
  const selfPack = resolve(o.sysroot) === '/';
  const tools = Object.keys(TOOL_PACKAGE).filter((t) => !has(join(o.sysroot, t)));
  if (selfPack) for (const t of tools) pkgs.add(TOOL_PACKAGE[t] as string);
  else if (tools.length)
    problems.push(
      `the initramfs tools are not in ${o.sysroot}: ${tools.join(', ')}; remedy: install ${[...new Set(tools.map((t) => TOOL_PACKAGE[t]))].join(', ')} there, or give --sysroot a root that has them (\`builder sysroot\`)`,
    );
  if (pkgs.size) {
    const list = [...pkgs].sort();
    if (o.apt) actions.push({ kind: 'apt', packages: list });
    else
      problems.push(
        `missing, and --no-apt: ${list.join(', ')} (${missing.join(', ') || 'packages'}); remedy: apt-get install ${list.join(' ')}, or run init without --no-apt`,
      );
  }
  const vp = versionProblems(f.versions);
  problems.push(...vp.problems);
  warnings.push(...vp.warnings);

  // the node list and the network
  const addr = o.masterIp
    ? o.subnet
      ? { ip: o.masterIp, subnet: o.subnet }
      : { problem: '--master-ip needs --subnet' }
    : addressOf(f.addresses, o.subnet);
  const masterIp = 'ip' in addr ? addr.ip : '';
  const subnet = 'ip' in addr ? addr.subnet : (o.subnet ?? '');
  if ('problem' in addr) problems.push(`--interface ${o.interface}: ${addr.problem}`);
  if (f.nodesText === null) problems.push(`cannot read the node list ${o.nodesFile}`);
  else {
    const parsed = parseNodeList(f.nodesText);
    problems.push(...parsed.errors.map((e) => `${o.nodesFile} ${e}`));
    if ('ip' in addr)
      problems.push(
        ...validateStage({
          nodes: parsed.nodes,
          nodesFile: o.nodesFile,
          masterIp,
          subnet,
          domain: o.domain,
          lease: '1h',
          tftpRoot: join(root, TFTP_DIR),
          interface: o.interface,
          ...(o.range !== undefined ? { range: o.range } : {}),
        }),
      );
  }
  if ('problem' in f.kernel) problems.push(f.kernel.problem);
  if (!has(o.masterHostKey))
    problems.push(
      `the master's host key ${o.masterHostKey} is missing (the nodes pin it); remedy: install openssh-server (it makes the host keys: ssh-keygen -A), or give --master-host-key`,
    );

  // the seed layout
  const dirs = [
    root,
    ...[BOOTFS_DIR, ROOTFS_DIR, STAMP_DIR, NODES_DIR, TFTP_DIR].map((d) => join(root, d)),
    o.stateDir,
  ].filter((d) => !has(d));
  if (dirs.length) actions.push({ kind: 'dirs', dirs });
  const keyFiles = KEY_FILES.map((k) => join(o.keysDir, k)).filter((k) => !has(k));
  if (keyFiles.length) actions.push({ kind: 'keys', dir: o.keysDir, files: keyFiles });

  const tablePath = join(root, PARTITION_TABLE);
  if (!has(tablePath) || o.force) {
    const smallest = Math.min(...o.cardSizes);
    const t = cardTable(smallest);
    if ('problem' in t) problems.push(t.problem);
    else actions.push({ kind: 'table', path: tablePath, text: t.text, cardBytes: smallest });
  }

  const rootfs = join(root, ROOTFS_DIR);
  const template = !f.nonEmpty[rootfs] || o.force;
  if (template) {
    if (!f.system) problems.push(`cannot read the system root ${o.systemRoot}`);
    else {
      // the master's own paths are paths of this machine; --exclude names paths inside the system root
      const excluded = [
        ...[root, o.keysDir, o.stateDir, o.dnsmasqConf, o.dhcpLeases, ...(o.prefix ? [o.prefix] : [])]
          .map((p) => relativeTo(resolve(o.systemRoot), resolve(p)))
          .filter((p): p is string => p !== null && p !== ''),
        ...o.exclude.map((p) => p.replace(/^\/+/, '').replace(/\/+$/, '')).filter(Boolean),
      ];
      const cleanup = templateCleanup({
        entries: f.system.entries,
        texts: f.system.texts,
        exclude: excluded,
        clusterKeys: f.clusterKeys,
      });
      if (!f.system.entries.some((e) => e.path === 'sbin/init' && e.kind !== 'dir'))
        problems.push(
          `${o.systemRoot} has no /sbin/init: the nodes could not boot a template made from it; remedy: give --system-root a root that boots (systemd or another init)`,
        );
      actions.push({
        kind: 'template',
        from: o.systemRoot,
        to: rootfs,
        cleanup,
        copied: copiedEntries(f.system.entries, cleanup.exclude),
        replace: f.nonEmpty[rootfs] === true,
      });
    }
  }

  const bootfs = join(root, BOOTFS_DIR);
  const bootfsWanted = !f.nonEmpty[bootfs] || o.force;
  if (bootfsWanted) {
    if (!f.firmware)
      problems.push(
        `no Raspberry Pi boot firmware found (start*.elf, fixup*.dat in ${o.systemRoot}/boot/firmware or /boot); remedy: give --firmware DIR (Raspberry Pi OS: /boot/firmware; Debian: apt install raspi-firmware, /usr/lib/raspi-firmware)`,
      );
    if (!f.uBoot)
      problems.push(
        `no U-Boot for the Pi found (${o.systemRoot}/usr/lib/u-boot/rpi_arm64/u-boot.bin); remedy: apt install u-boot-rpi, or give --u-boot FILE`,
      );
    if (f.firmware && f.uBoot) {
      const fw = f.firmware;
      const copies = [
        ...firmwareFiles(fw.names).map((n) => ({ from: join(fw.dir, n), to: join(bootfs, n) })),
        ...fw.overlays.map((n) => ({ from: join(fw.dir, 'overlays', n), to: join(bootfs, 'overlays', n) })),
        { from: f.uBoot, to: join(bootfs, 'u-boot.bin') },
      ];
      actions.push({
        kind: 'bootfs',
        to: bootfs,
        copies,
        config: { path: join(bootfs, 'config.txt'), text: bootConfig(fw.config) },
        replace: f.nonEmpty[bootfs] === true,
      });
    }
  }
  for (const name of STAMP_NAMES) {
    const made = name === 'rootfs' ? template : bootfsWanted;
    if (made || !has(join(root, STAMP_DIR, `${name}.stamp`))) actions.push({ kind: 'publish', name });
  }

  const out = join(o.stateDir, FIRSTSTAGE_DIR);
  const packWhy = o.force
    ? '--force'
    : keyFiles.length
      ? 'new keys'
      : !has(join(out, INITRAMFS))
        ? 'none yet'
        : f.packInputs !== f.record?.pack
          ? 'the agent, the keys or the pinned host key changed'
          : '';
  if (packWhy) actions.push({ kind: 'pack', out, why: packWhy });
  const tftp = join(root, TFTP_DIR);
  const outputs = [
    ...[KERNEL, KERNEL_GZ, INITRAMFS, BOOT_SCRIPT, ANNOUNCEMENT_FILE].map((x) => join(tftp, x)),
    join(o.stateDir, NODES_LIST),
    o.dnsmasqConf,
  ];
  const stageWhy = packWhy
    ? 'a new initramfs'
    : outputs.some((p) => !has(p))
      ? 'not staged yet'
      : f.stageInputs !== f.record?.stage
        ? 'the node list, the kernel or the options changed'
        : '';
  if (stageWhy) actions.push({ kind: 'stage', why: stageWhy });

  if (f.systemd) {
    const why = stageWhy
      ? 'a new configuration'
      : !f.dnsmasq.running
        ? 'not running'
        : !f.dnsmasq.enabled
          ? 'not enabled'
          : '';
    if (why) actions.push({ kind: 'dnsmasq', how: 'systemd', why });
    if (!f.sshd) actions.push({ kind: 'ssh', why: 'sshd is not running' });
  } else {
    const why = stageWhy ? 'a new configuration' : !f.dnsmasq.running ? 'not running' : '';
    if (why) actions.push({ kind: 'dnsmasq', how: 'self', why });
    if (!f.sshd)
      warnings.push(
        'no systemd and no sshd running: start sshd yourself (/usr/sbin/sshd); the nodes read the master through it',
      );
  }
  return { actions, problems, warnings, masterIp, subnet };
}

// ---------------------------------------------------------------------------------------------------------------
// facts from the machine

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function hashTreeInto(h: ReturnType<typeof createHash>, dir: string): void {
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    const st = statSync(full);
    if (st.isDirectory()) hashTreeInto(h, full);
    else {
      h.update(full.slice(dir.length));
      h.update(readFileSync(full));
    }
  }
}

const text = (p: string): string | null => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
};

const run = (cmd: string, args: string[]): { status: number; out: string } => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.error ? -1 : (r.status ?? -1), out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
};

function pidAlive(pidFile: string, comm: string): boolean {
  const pid = Number(text(pidFile)?.trim());
  return Number.isInteger(pid) && pid > 0 && text(`/proc/${pid}/comm`)?.trim() === comm;
}

function processRuns(comm: string): boolean {
  for (const p of readdirSync('/proc')) if (/^\d+$/.test(p) && text(`/proc/${p}/comm`)?.trim() === comm) return true;
  return false;
}

/** The kernel of the system root: its only /boot/vmlinuz-<version> with /lib/modules/<version>. */
export function findKernel(
  bootNames: readonly string[],
  moduleVersions: readonly string[],
  systemRoot: string,
): { path: string; modules: string } | { problem: string } {
  const versions = bootNames.filter((n) => n.startsWith('vmlinuz-')).map((n) => n.slice(8));
  const ok = versions.filter((v) => moduleVersions.includes(v));
  if (ok.length === 1) {
    const v = ok[0] as string;
    return { path: join(systemRoot, 'boot', `vmlinuz-${v}`), modules: join(systemRoot, 'lib/modules', v) };
  }
  return {
    problem: `${ok.length ? `several kernels in ${systemRoot}/boot (${ok.join(', ')})` : `no /boot/vmlinuz-<version> with its /lib/modules/<version> in ${systemRoot}`}: give --kernel FILE and --kernel-modules DIR (Raspberry Pi OS: --kernel /boot/firmware/kernel8.img --kernel-modules /lib/modules/<version>-v8+)`,
  };
}

const FIRMWARE_DIRS = ['boot/firmware', 'boot', 'usr/lib/raspi-firmware'];
const UBOOT = 'usr/lib/u-boot/rpi_arm64/u-boot.bin';
const ls = (d: string): string[] => {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
};

export function stageInputsHash(
  o: InitOptions,
  masterIp: string,
  subnet: string,
  kernel: string,
  nodesText: string,
): string | null {
  const initramfs = join(o.stateDir, FIRSTSTAGE_DIR, INITRAMFS);
  if (!existsSync(initramfs) || !existsSync(kernel)) return null;
  return createHash('sha256')
    .update(
      JSON.stringify({
        nodesText,
        masterIp,
        subnet,
        range: o.range ?? null,
        iface: o.interface,
        domain: o.domain,
        bootargs: o.bootargs,
        root: o.masterRoot,
        conf: o.dnsmasqConf,
        ak: o.authorizedKeys,
        state: o.stateDir,
        leases: o.dhcpLeases,
        keys: o.keysDir,
        slots: o.syncSlots,
        kernel: sha256File(kernel),
        initramfs: sha256File(initramfs),
      }),
    )
    .digest('hex');
}

export function packInputsHash(o: InitOptions, kernelModules: string | null): string | null {
  const files = [join(o.keysDir, 'node_ed25519'), join(o.keysDir, 'report_ed25519'), o.masterHostKey];
  if (o.sign) files.push(join(o.keysDir, 'stamp_ed25519.pub.pem'));
  if (!files.every((p) => existsSync(p))) return null;
  const h = createHash('sha256');
  for (const p of files) h.update(readFileSync(p));
  if (o.agent) h.update(sha256File(o.agent));
  else {
    hashTreeInto(h, join(REPO, 'agent'));
    h.update(readFileSync(join(REPO, 'package.json')));
  }
  hashTreeInto(h, join(REPO, 'initramfs-skel'));
  hashTreeInto(h, join(REPO, 'builder/image'));
  h.update(JSON.stringify({ sysroot: resolve(o.sysroot), kernelModules, modules: o.modules, sign: o.sign }));
  return h.digest('hex');
}

export function gatherFacts(o: InitOptions): InitFacts {
  const sys = resolve(o.systemRoot);
  const programs = Object.fromEntries(Object.values(PROGRAMS).map((p) => [p, existsSync(p)]));
  const packages: Record<string, string | null> = {};
  for (const p of MASTER_PACKAGES) {
    const r = run('dpkg-query', ['-W', '-f', '${Status} ${Version}', p]);
    const m = /install ok installed (\S+)/.exec(r.out);
    packages[p] = r.status === 0 && m ? (m[1] as string) : null;
  }
  const ver = (cmd: string, args: string[]) => (existsSync(cmd) ? run(cmd, args).out : null);
  const systemd = existsSync('/run/systemd/system');
  const active = (unit: string) => systemd && run('systemctl', ['is-active', '--quiet', unit]).status === 0;
  const dnsmasq = systemd
    ? { running: active('dnsmasq'), enabled: run('systemctl', ['is-enabled', '--quiet', 'dnsmasq']).status === 0 }
    : { running: pidAlive(join(o.stateDir, DNSMASQ_PID), 'dnsmasq'), enabled: true };
  const addrJson = run('ip', ['-j', '-4', 'addr', 'show', 'dev', o.interface]);
  let addresses: string[] = [];
  try {
    addresses = (JSON.parse(addrJson.out) as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>)
      .flatMap((i) => i.addr_info ?? [])
      .map((a) => `${a.local}/${a.prefixlen}`);
  } catch {
    addresses = [];
  }
  const root = o.masterRoot;
  const paths = [
    root,
    ...[BOOTFS_DIR, ROOTFS_DIR, STAMP_DIR, NODES_DIR, TFTP_DIR].map((d) => join(root, d)),
    o.stateDir,
    ...KEY_FILES.map((k) => join(o.keysDir, k)),
    join(root, PARTITION_TABLE),
    join(root, STAMP_DIR, 'rootfs.stamp'),
    join(root, STAMP_DIR, 'bootfs.stamp'),
    join(o.stateDir, FIRSTSTAGE_DIR, INITRAMFS),
    ...[KERNEL, KERNEL_GZ, INITRAMFS, BOOT_SCRIPT, ANNOUNCEMENT_FILE].map((x) => join(root, TFTP_DIR, x)),
    join(o.stateDir, NODES_LIST),
    o.dnsmasqConf,
    o.masterHostKey,
    ...Object.keys(TOOL_PACKAGE).map((t) => join(o.sysroot, t)),
  ];
  const exists = Object.fromEntries(paths.map((p) => [p, existsSync(p)]));
  const nonEmpty = Object.fromEntries(
    [join(root, ROOTFS_DIR), join(root, BOOTFS_DIR)].map((d) => [d, ls(d).length > 0]),
  );
  const kernel =
    o.kernel !== undefined
      ? o.kernelModules !== undefined
        ? { path: o.kernel, modules: o.kernelModules }
        : { problem: '--kernel needs --kernel-modules (the /lib/modules/<version> of that kernel)' }
      : findKernel(ls(join(sys, 'boot')), ls(join(sys, 'lib/modules')), sys);
  if ('path' in kernel && !existsSync(kernel.path))
    Object.assign(kernel, { problem: `kernel ${kernel.path} does not exist` });
  let firmware: InitFacts['firmware'] = null;
  for (const d of o.firmware !== undefined ? [resolve(o.firmware)] : FIRMWARE_DIRS.map((x) => join(sys, x))) {
    const names = ls(d).filter((n) => statSync(join(d, n), { throwIfNoEntry: false })?.isFile());
    if (names.some((n) => /^start\w*\.elf$/.test(n))) {
      const overlays = ls(join(d, 'overlays'))
        .filter((n) => statSync(join(d, 'overlays', n), { throwIfNoEntry: false })?.isFile())
        .sort();
      firmware = { dir: d, names, overlays, config: text(join(d, 'config.txt')) };
      break;
    }
  }
  const uBootPath = o.uBoot !== undefined ? resolve(o.uBoot) : join(sys, UBOOT);
  const template = !nonEmpty[join(root, ROOTFS_DIR)] || o.force;
  let system: InitFacts['system'] = null;
  if (template && existsSync(sys)) {
    const texts: Record<string, string> = {};
    for (const f of [FSTAB, HOSTS, ROOT_AUTHORIZED_KEYS]) {
      const p = join(sys, f);
      if (lstatSync(p, { throwIfNoEntry: false })?.isFile()) texts[f] = text(p) ?? '';
    }
    system = { entries: walkSystem(sys), texts };
  }
  const clusterKeys = ['node_ed25519.pub', 'report_ed25519.pub']
    .map((k) => text(join(o.keysDir, k))?.trim().split(/\s+/)[1])
    .filter((b): b is string => Boolean(b));
  const record = (() => {
    try {
      return JSON.parse(readFileSync(join(o.stateDir, RECORD_FILE), 'utf8')) as InitRecord;
    } catch {
      return null;
    }
  })();
  const nodesText = text(o.nodesFile);
  const addr = o.masterIp && o.subnet ? { ip: o.masterIp, subnet: o.subnet } : addressOf(addresses, o.subnet);
  return {
    programs,
    packages,
    versions: {
      rsync: ver(PROGRAMS.rsync, ['--version']),
      dnsmasq: ver(PROGRAMS.dnsmasq, ['--version']),
      ssh: ver('/usr/bin/ssh', ['-V']),
    },
    systemd,
    dnsmasq,
    sshd: systemd ? active('ssh') : processRuns('sshd'),
    addresses,
    exists,
    nonEmpty,
    nodesText,
    kernel,
    firmware,
    uBoot: existsSync(uBootPath) ? uBootPath : null,
    system,
    clusterKeys,
    packInputs: packInputsHash(o, 'path' in kernel ? kernel.modules : null),
    stageInputs:
      'path' in kernel && nodesText !== null && 'ip' in addr
        ? stageInputsHash(o, addr.ip, addr.subnet, kernel.path, nodesText)
        : null,
    record,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// effects

export interface InitResult {
  plan: InitPlan;
  done: string[];
  /** What to put on a new node's SD card. */
  sdCard: string;
}

/** What a new node's SD card needs: one FAT partition as the table's p1, marked ours, holding bootfs/. */
export function sdCardText(masterRoot: string, tableText: string | null): string {
  const t = tableText ? parseSfdiskDump(tableText) : null;
  const p1 = t?.ok ? t.table.partitions.find((p) => p.index === 1) : undefined;
  const start = p1?.start ?? 2048;
  const size = p1?.size ?? BOOT_MIB * SECTORS_PER_MIB;
  const bootfs = join(masterRoot, BOOTFS_DIR);
  return [
    `A new node's SD card (or USB disk) needs only the boot firmware and U-Boot; the node partitions the rest itself at`,
    `its first boot, from ${join(masterRoot, PARTITION_TABLE)}. On any Linux machine, with the card as /dev/sdX (check with lsblk!):`,
    '',
    `  printf 'label: dos\\nlabel-id: ${LABEL_ID.dos}\\nstart=${start}, size=${size}, type=c, bootable\\n' | sfdisk /dev/sdX`,
    '  mkfs.vfat -F 32 -n CBBOOT /dev/sdX1',
    `  mount /dev/sdX1 /mnt && cp -r ${bootfs}/. /mnt/ && touch /mnt/${MARKER} && umount /mnt`,
    '',
    `p1 matches the table's p1, and the disk identifier ${LABEL_ID.dos} (and ${MARKER}) mark the card as clusterboot's, so the`,
    "agent takes it: it writes p2-p4, keeps p1, and fills it from bootfs/ from then on. Add the node's MAC to the node list",
    'and run `builder init` (or `builder stage`) again, then power it on.',
  ].join('\n');
}

function writeRecord(o: InitOptions, plan: InitPlan, kernel: string): void {
  const nodesText = readFileSync(o.nodesFile, 'utf8');
  const rec: InitRecord = {
    pack: packInputsHash(o, o.kernelModules ?? null) ?? '',
    stage: stageInputsHash(o, plan.masterIp, plan.subnet, kernel, nodesText) ?? '',
  };
  writeAtomic(join(o.stateDir, RECORD_FILE), `${JSON.stringify(rec, null, 2)}\n`, 0o600);
}

/** Fill a new directory beside `to`, then put it in `to`'s place in two renames; the old one is removed after. */
function replaceDir(to: string, fill: (next: string) => void): void {
  const next = `${to}.init-new`;
  rmSync(next, { recursive: true, force: true });
  mkdirSync(next, { mode: 0o755 });
  fill(next);
  const old = `${to}.init-old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(to)) renameSync(to, old);
  renameSync(next, to);
  rmSync(old, { recursive: true, force: true });
}

async function apply(a: Action, o: InitOptions, f: InitFacts, plan: InitPlan, say: (s: string) => void): Promise<void> {
  const kernel = f.kernel as { path: string; modules: string };
  switch (a.kind) {
    case 'apt': {
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      for (const args of [['update'], ['install', '-y', '--no-install-recommends', ...a.packages]]) {
        const r = spawnSync('apt-get', args, { stdio: 'inherit', env });
        if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status ?? r.error?.message})`);
      }
      const vp = versionProblems({
        rsync: run(PROGRAMS.rsync, ['--version']).out,
        dnsmasq: run(PROGRAMS.dnsmasq, ['--version']).out,
        ssh: run('/usr/bin/ssh', ['-V']).out,
      });
      if (vp.problems.length) throw new Error(vp.problems.join('\n'));
      for (const w of vp.warnings) say(`warning: ${w}`);
      return;
    }
    case 'dirs':
      for (const d of a.dirs) mkdirSync(d, { recursive: true, mode: 0o755 });
      return;
    case 'keys':
      generateKeys(a.dir);
      return;
    case 'table':
      writeAtomic(a.path, a.text);
      return;
    case 'template':
      replaceDir(a.to, (next) => {
        copySystem(a.from, next, a.cleanup.exclude);
        for (const r of a.cleanup.rewrite) {
          const p = join(next, r.path);
          const mode = lstatSync(p, { throwIfNoEntry: false })?.isFile() ? statSync(p).mode & 0o7777 : 0o644;
          rmSync(p, { force: true });
          writeAtomic(p, r.text, mode);
        }
      });
      return;
    case 'bootfs':
      replaceDir(a.to, (next) => {
        for (const c of a.copies) {
          const to = join(next, c.to.slice(a.to.length + 1));
          mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
          cpSync(c.from, to, { dereference: true, preserveTimestamps: true });
        }
        writeAtomic(join(next, 'config.txt'), a.config.text);
      });
      return;
    case 'publish': {
      const s = await publish({
        masterRoot: o.masterRoot,
        name: a.name,
        ...(o.sign ? { signKeyPem: readFileSync(join(o.keysDir, 'stamp_ed25519.pem'), 'utf8') } : {}),
      });
      say(`published ${a.name} ${s.id}${o.sign ? ' (signed)' : ''}`);
      return;
    }
    case 'pack': {
      const agent = o.agent ?? (await buildAgent('arm64', join(o.stateDir, 'build'))).path;
      const r = await pack({
        sysroot: resolve(o.sysroot),
        agent,
        skel: join(REPO, 'initramfs-skel'),
        out: a.out,
        modules: o.modules,
        compress: 'gzip',
        arch: 'arm64',
        sourceDateEpoch: 0,
        kernelModules: kernel.modules,
        extra: accessFiles({
          keysDir: o.keysDir,
          masterHostKeyPub: readFileSync(o.masterHostKey, 'utf8'),
          sign: o.sign,
          report: true,
        }),
      });
      for (const m of r.missingLibraries) say(`warning: ${m.neededBy} needs ${m.lib}, not found in ${o.sysroot}`);
      for (const m of r.missingModules) say(`warning: module ${m} not found in ${kernel.modules}`);
      say(`initramfs ${r.uimagePath}: ${(r.compressedBytes / 1e6).toFixed(1)} MB (${r.modules.length} modules)`);
      return;
    }
    case 'stage': {
      const r = stage({
        nodesFile: o.nodesFile,
        masterRoot: o.masterRoot,
        kernel: kernel.path,
        initramfs: join(o.stateDir, FIRSTSTAGE_DIR, INITRAMFS),
        bootargs: o.bootargs,
        arch: 'arm64',
        dnsmasqConf: o.dnsmasqConf,
        masterIp: plan.masterIp,
        subnet: plan.subnet,
        domain: o.domain,
        lease: '1h',
        interface: o.interface,
        ...(o.range !== undefined ? { range: o.range } : {}),
        keysDir: o.keysDir,
        authorizedKeys: o.authorizedKeys,
        syncSlots: o.syncSlots,
        stateDir: o.stateDir,
        dhcpLeases: o.dhcpLeases,
      });
      for (const w of r.warnings) say(`warning: ${w}`);
      say(
        `staged ${r.nodes.length} node(s): ${r.nodes.map((n) => n.hostname).join(', ')}; first stage ${r.firstStage.id}`,
      );
      writeRecord({ ...o, kernelModules: kernel.modules }, plan, kernel.path);
      return;
    }
    case 'dnsmasq': {
      if (a.how === 'systemd') {
        for (const args of [
          ['enable', 'dnsmasq'],
          ['restart', 'dnsmasq'],
        ]) {
          const r = run('systemctl', args);
          if (r.status !== 0) throw new Error(`systemctl ${args.join(' ')} failed: ${r.out.trim()}`);
        }
        return;
      }
      const pidFile = join(o.stateDir, DNSMASQ_PID);
      const pid = Number(text(pidFile)?.trim());
      if (pidAlive(pidFile, 'dnsmasq')) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 100 && pidAlive(pidFile, 'dnsmasq'); i++) await Bun.sleep(50);
      }
      mkdirSync(dirname(o.dhcpLeases), { recursive: true });
      const r = run(PROGRAMS.dnsmasq, [
        `--conf-file=${o.dnsmasqConf}`,
        `--pid-file=${pidFile}`,
        `--dhcp-leasefile=${o.dhcpLeases}`,
      ]);
      if (r.status !== 0) throw new Error(`dnsmasq did not start: ${r.out.trim()}`);
      say(`dnsmasq started (pid ${text(pidFile)?.trim() ?? '?'}): no systemd, so it will not come back after a reboot`);
      return;
    }
    case 'ssh': {
      const r = run('systemctl', ['enable', '--now', 'ssh']);
      if (r.status !== 0) throw new Error(`systemctl enable --now ssh failed: ${r.out.trim()}`);
      return;
    }
  }
}

/** Plan, and unless dryRun do it; the caller prints. Throws with every problem when there is one. */
export async function runInit(
  o: InitOptions,
  opts: { dryRun: boolean; say: (s: string) => void },
): Promise<InitResult> {
  const f = gatherFacts(o);
  const plan = planInit(f, o);
  const sd = () =>
    sdCardText(
      o.masterRoot,
      text(join(o.masterRoot, PARTITION_TABLE)) ?? plan.actions.find((a) => a.kind === 'table')?.text ?? null,
    );
  if (plan.problems.length)
    throw new Error(
      `${plan.problems.length} problem${plan.problems.length === 1 ? '' : 's'}, nothing done:\n  - ${plan.problems.join('\n  - ')}`,
    );
  for (const w of plan.warnings) opts.say(`warning: ${w}`);
  if (opts.dryRun) return { plan, done: [], sdCard: sd() };
  const done: string[] = [];
  for (const a of plan.actions) {
    opts.say(describe(a));
    await apply(a, o, f, plan, opts.say);
    done.push(describe(a));
  }
  return { plan, done, sdCard: sd() };
}

export const INIT_DEFAULTS = {
  domain: 'cluster.lan',
  bootargs: DEFAULT_BOOTARGS,
  syncSlots: DEFAULT_SYNC_SLOTS,
  cardSize: '8GB',
};

// `builder stage`: from a node list to what the master serves: the dnsmasq configuration (fixed leases, DNS names,
// TFTP with option 66 pointing at the master), the TFTP folder (kernel, initramfs, boot script), the normalised
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  REPORT_DIR,
  APPROVAL_REQUIRED,
  BOOTFS_DIR,
  NODES_DIR,
  BOOT_SCRIPT,
  INITRAMFS,
  KERNEL,
  NODES_LIST,
  TFTP_DIR,
} from '../../agent/contract/tree.ts';
import { approvalModeOn, setApprovalMode } from './approve.ts';
import { ensureIdentity, SSH_KEYGEN } from './identity.ts';
import { DEFAULT_REPORT_USER, installReportSink, SPARE_REPORT_FILES } from './reportsink.ts';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import {
  DEFAULT_STATE_DIR,
  DEFAULT_SYNC_LEASE,
  DEFAULT_SYNC_PER_ADDRESS,
  DEFAULT_SYNC_STALL,
  installSyncSlot,
  syncSlotProblems,
} from './syncslot.ts';
import { readUImageHeader, scriptImage, type UArch } from '../../agent/contract/uimage.ts';
import { accessKeyLines, writeAuthorizedKeys } from './access.ts';
import { type StagePlan, renderDnsmasq, validateStage } from './dnsmasq.ts';
import {
  bootfsDirProblem,
  firmwareSet,
  nodePrefixes,
  parseSerials,
  readBootfs,
  writeFirmwareStage,
  type FirmwareSet,
  type TftpPrefixMode,
} from './firmware.ts';
import { type NodeEntry, parseNodeList, renderNodesList } from './nodelist.ts';
import { type Amd64Stage, pxeFiles, pxeProblems } from './pxe.ts';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  ANNOUNCEMENT_FILE,
  bootargsProblem,
  DEFAULT_TRIES,
  KERNEL_GZ,
  renderAnnouncement,
  renderNetScript,
  stageFile,
  stageId,
  type Announcement,
} from '../../agent/contract/firststage.ts';

// nodes.list that `builder status` reads, the reports/ folder, and the master's authorized_keys lines; per node
// an identity (identity.ts); the sync-slot limiter in front of root pulls (syncslot.ts); approval mode (approve.ts).
// Pure parts (parse, validate, render) first; `stage()` does the I/O, and writes nothing unless every check passed.

// ---------------------------------------------------------------------------------------------------------------
// effects

/** The dnsmasq fields are StagePlan's; the nodes come from nodesFile and the TFTP root is <masterRoot>/tftp. */
export interface StageOptions extends Omit<StagePlan, 'nodes' | 'tftpRoot'> {
  masterRoot: string;
  kernel: string;
  initramfs: string;
  bootargs: string;
  arch: UArch;
  /** The first stage of the node list's arch=amd64 nodes (PXE and iPXE, pxe.ts); needed when it has any. */
  amd64?: Amd64Stage;
  /** Where Debian's iPXE binaries are (default /usr/lib/ipxe). */
  ipxeDir?: string;
  dnsmasqConf: string;
  /** Directory from `builder keys`: node_ed25519.pub and report_ed25519.pub. Absent: no authorized_keys lines. */
  keysDir?: string;
  /** Append the lines to this file unless present; absent: the caller prints `keyLines`. */
  authorizedKeys?: string;
  /** uImage time of boot.scr.uimg (SOURCE_DATE_EPOCH). */
  time?: number;
  rrsync?: string;
  /** Create missing per-node identity files under <master root>/nodes/<host>/files (default false: nodes make their own). */
  identity?: boolean;
  /** At most this many root pulls at once (sync-slot in the node key's line); 0 or absent: no limit, plain rrsync. */
  syncSlots?: number;
  /**
   * The master's own state, outside the master root (the node key, which anyone can take from the initramfs, reads
   * the whole master root): nodes.list, reports/, the report sink, the sync-slot script and its slots, private/.
   */
  stateDir: string;
  /** A root pull is killed this many seconds after it took its slot (default 3600); 0: no lease. */
  syncLease?: number;
  /** The master's rsync gives up on a root pull it could not write to for this long (default 300); 0: off. */
  syncStall?: number;
  /** At most this many root pulls at once from one client address (default 1); 0: no per-address limit. */
  syncPerAddress?: number;
  /** A new first stage that fails this many boots in a row is abandoned for the cached one (default 3). */
  tries?: number;
  /** true: create <master root>/approval.required; false: remove it; absent: leave it as it is. */
  approval?: boolean;
  /** The report sink stores reports as this user (default nobody); it needs --state-dir. */
  reportUser?: string;
  /** dnsmasq's lease file: an unlisted node may report only for the MAC its address was leased to. */
  dhcpLeases?: string;
  /** The addresses the node and report keys work from (sshd `from=`); default the cluster subnet; '' for any. */
  keyFrom?: string;
  /** 'firmware': also the Pi 4/5 EEPROM bootloader's TFTP set (builder/master/firmware.ts); default 'uboot'. */
  firstStage?: 'uboot' | 'firmware';
  /** The TFTP prefix the nodes' EEPROMs use: serial (TFTP_PREFIX=0, the default) or mac (TFTP_PREFIX=2). */
  tftpPrefix?: TftpPrefixMode;
  /** With tftpPrefix serial: lines '<hostname or MAC> <serial>'. */
  serialsFile?: string;
}

export interface StageResult {
  /** The first stage staged now, as announced to the nodes. */
  firstStage: Announcement;
  nodes: NodeEntry[];
  /** Files written, in order. */
  written: string[];
  /** Where the nodes' boot reports land (created 0755). */
  reportsDir: string;
  keyLines: string[];
  /** Lines appended to `authorizedKeys` (those already there are not). */
  keysAdded: string[];
  /** Older lines of stage's own node key line (other --sync-slots) replaced in `authorizedKeys`. */
  keysReplaced: string[];
  /** Per node, the identity files created this time (relative to nodes/<host>/files); [] when it had them all. */
  identity: Array<{ hostname: string; created: string[] }>;
  /** The sync-slot script and slots folder, and the limits written into the script, when --sync-slots > 0. */
  syncSlot: {
    script: string;
    slotsDir: string;
    slots: number;
    leaseSeconds: number;
    stallSeconds: number;
    perAddress: number;
  } | null;
  /** Approval mode after this stage. */
  approvalMode: boolean;
  /** With --first-stage firmware: the set's id and the prefix each node asks under. */
  firmware?: { id: string; prefixes: Array<{ hostname: string; prefix: string }> };
  warnings: string[];
}

/** Every problem found before writing; nothing was written. */
export class StageError extends Error {
  constructor(readonly problems: string[]) {
    super(
      `${problems.length} problem${problems.length === 1 ? '' : 's'}, nothing written:\n  - ${problems.join('\n  - ')}`,
    );
  }
}

function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    return buf.subarray(0, readSync(fd, buf, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}

// The nearest existing ancestor must be a writable directory, so a permission problem shows before the first write.
function writableProblem(path: string, what: string): string | null {
  let dir = dirname(path);
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  try {
    if (!statSync(dir).isDirectory()) return `${what} ${path}: ${dir} is not a directory`;
    accessSync(dir, constants.W_OK);
  } catch {
    return `${what} ${path}: cannot write in ${dir} (run builder stage as root, or choose another path)`;
  }
  const st = statSync(path, { throwIfNoEntry: false });
  if (st && !st.isFile()) return `${what} ${path} exists and is not a regular file: move it away`;
  return null;
}

// Why: the one command that turns a node list into a working master; all checks first (the list, the options, the
// files, the keys, write access), so a mistake leaves the running configuration untouched.
/** A gzip'd kernel (some boards ship one) becomes the raw Image nodes cache and load from their disk. */
export function rawKernel(data: Uint8Array): Uint8Array {
  return data[0] === 0x1f && data[1] === 0x8b ? new Uint8Array(gunzipSync(data)) : new Uint8Array(data);
}

/** The announcement of a first stage: its id and, per file, size, CRC-32 and sha256. */
export function announce(
  kernel: Uint8Array,
  kernelGz: Uint8Array,
  initramfs: Uint8Array,
  bootargs: string,
  tries: number,
): Announcement {
  const k = stageFile(kernel);
  const r = stageFile(initramfs);
  return { id: stageId(k.sha256, r.sha256), kernel: k, kernelGz: stageFile(kernelGz), initramfs: r, bootargs, tries };
}

/**
 * Older stages kept nodes.list and reports/ in the master root, where the node key (public: it is in the initramfs)
 * reads them. Moved once into the state dir: reports/ renamed when the state dir has none yet, nodes.list removed
 * (stage has just written it there). Across file systems, or with reports/ in both places, the admin is told.
 */
export function moveOutOfPublicTree(masterRoot: string, stateDir: string): { written: string[]; warnings: string[] } {
  const written: string[] = [];
  const warnings: string[] = [];
  const oldList = join(masterRoot, NODES_LIST);
  if (lstatSync(oldList, { throwIfNoEntry: false })?.isFile()) {
    rmSync(oldList);
    written.push(oldList);
    warnings.push(`removed ${oldList}: the node list now lives in ${stateDir}, out of the node key's reach`);
  }
  const oldReports = join(masterRoot, REPORT_DIR);
  if (lstatSync(oldReports, { throwIfNoEntry: false })?.isDirectory()) {
    const now = join(stateDir, REPORT_DIR);
    let moved = false;
    if (!existsSync(now)) {
      mkdirSync(stateDir, { recursive: true, mode: 0o755 });
      try {
        renameSync(oldReports, now);
        moved = true;
      } catch {
        // another file system: left to the admin
      }
    }
    if (moved) {
      written.push(now);
      warnings.push(`moved ${oldReports} to ${now}, out of the node key's reach`);
    } else
      warnings.push(
        `${oldReports} is left from an older stage (the node key can read it); the reports now land in ${now}: delete the old folder`,
      );
  }
  return { written, warnings };
}

export function stage(o: StageOptions): StageResult {
  const problems: string[] = [];
  const warnings: string[] = [];
  const masterRoot = resolve(o.masterRoot);
  const stateDir = resolve(o.stateDir);
  const tftp = join(masterRoot, TFTP_DIR);
  if (stateDir === masterRoot || stateDir.startsWith(`${masterRoot}/`))
    problems.push(
      `--state-dir ${stateDir} is inside the master root: the node key (in the initramfs, which anyone on the LAN can TFTP) reads all of ${masterRoot}, and the state dir holds the node list, the reports and the private per-node files; use a directory outside it (default ${DEFAULT_STATE_DIR})`,
    );

  let text = '';
  let unreadable = false;
  try {
    text = readFileSync(o.nodesFile, 'utf8');
  } catch (e) {
    problems.push(`cannot read the node list ${o.nodesFile}: ${(e as Error).message}`);
    unreadable = true;
  }
  const parsed = parseNodeList(text);
  problems.push(...parsed.errors.map((e) => `${o.nodesFile} ${e}`));
  const plan: StagePlan = {
    nodes: parsed.nodes,
    nodesFile: o.nodesFile,
    masterIp: o.masterIp,
    subnet: o.subnet,
    domain: o.domain,
    lease: o.lease,
    tftpRoot: tftp,
    ...(o.range !== undefined ? { range: o.range } : {}),
    ...(o.tftpFromMirrors ? { tftpFromMirrors: true } : {}),
    ...(o.interface !== undefined ? { interface: o.interface } : {}),
    ...(o.router !== undefined ? { router: o.router } : {}),
  };
  // a node list that did not read at all already said so; "no nodes" on top would only repeat it
  problems.push(...validateStage(plan).filter((e) => !(unreadable && e.startsWith('no nodes'))));

  const kst = statSync(o.kernel, { throwIfNoEntry: false });
  if (!kst)
    problems.push(
      `kernel ${o.kernel} does not exist: give --kernel the node kernel, e.g. /data/slaves/rootfs/boot/vmlinuz-<version>`,
    );
  else if (!kst.isFile()) problems.push(`kernel ${o.kernel} is not a regular file`);
  else if (kst.size === 0) problems.push(`kernel ${o.kernel} is empty`);

  const ist = statSync(o.initramfs, { throwIfNoEntry: false });
  if (!ist)
    problems.push(
      `initramfs ${o.initramfs} does not exist: run \`builder pack\` first and give its initramfs.igz.uimg`,
    );
  else if (!ist.isFile()) problems.push(`initramfs ${o.initramfs} is not a regular file`);
  else {
    try {
      const h = readUImageHeader(readHead(o.initramfs, 64));
      if (h.type !== 3)
        problems.push(
          `initramfs ${o.initramfs} is a U-Boot image of type ${h.type}, not a ramdisk: give the initramfs.igz.uimg from \`builder pack\``,
        );
      else if (h.size + 64 !== ist.size)
        problems.push(
          `initramfs ${o.initramfs} is ${ist.size} bytes but its header says ${h.size + 64}: truncated or damaged copy; run \`builder pack\` again`,
        );
      else if (h.size > 64e6)
        warnings.push(`initramfs is over 64 MB: Raspberry Pi HTTP boot truncates ramdisks this large`);
    } catch (e) {
      problems.push(
        `initramfs ${o.initramfs} is not a U-Boot image (${(e as Error).message}): give the initramfs.igz.uimg that \`builder pack\` writes, not initramfs.igz`,
      );
    }
  }

  const argsProblem = bootargsProblem(o.bootargs);
  if (argsProblem) problems.push(`--bootargs: ${argsProblem}`);
  const tries = o.tries ?? DEFAULT_TRIES;
  if (!Number.isInteger(tries) || tries < 1 || tries > 20)
    problems.push(`--first-stage-tries ${tries} must be a whole number from 1 to 20`);
  const slots = o.syncSlots ?? 0;
  if (!Number.isInteger(slots) || slots < 0 || slots > 1000) {
    problems.push(
      `--sync-slots ${slots} must be a whole number from 0 (no limit) to 1000: the number of nodes that may sync their root at once`,
    );
  }
  const limits = {
    leaseSeconds: o.syncLease ?? DEFAULT_SYNC_LEASE,
    stallSeconds: o.syncStall ?? DEFAULT_SYNC_STALL,
    perAddress: o.syncPerAddress ?? DEFAULT_SYNC_PER_ADDRESS,
  };
  if (slots > 0) problems.push(...syncSlotProblems(stateDir, limits));

  const identity = o.identity ?? false;
  if (identity) {
    if (!existsSync(SSH_KEYGEN))
      problems.push(
        `${SSH_KEYGEN} is missing, needed for the nodes' SSH host keys: install openssh-client, or use --no-identity`,
      );
    const nodesDir = join(masterRoot, NODES_DIR);
    const nst = statSync(nodesDir, { throwIfNoEntry: false });
    if (nst && !nst.isDirectory()) problems.push(`${nodesDir} exists and is not a directory: move it away`);
    for (const n of parsed.nodes) {
      const st = statSync(join(nodesDir, n.hostname), { throwIfNoEntry: false });
      if (st && !st.isDirectory())
        problems.push(`${join(nodesDir, n.hostname)} exists and is not a directory: move it away`);
    }
  }
  const ast = statSync(join(masterRoot, APPROVAL_REQUIRED), { throwIfNoEntry: false });
  if (o.approval !== undefined && ast && !ast.isFile())
    problems.push(`${join(masterRoot, APPROVAL_REQUIRED)} exists and is not a regular file: move it away`);

  const keyLines: string[] = [];
  if (o.keysDir !== undefined) {
    const a = accessKeyLines({
      keysDir: o.keysDir,
      masterRoot,
      stateDir,
      slots,
      ...(o.rrsync !== undefined ? { rrsync: o.rrsync } : {}),
      ...(o.reportUser !== undefined ? { reportUser: o.reportUser } : {}),
      ...(o.dhcpLeases !== undefined ? { dhcpLeases: resolve(o.dhcpLeases) } : {}),
      maxReports: 2 * parsed.nodes.length + SPARE_REPORT_FILES,
      from: o.keyFrom ?? o.subnet,
    });
    keyLines.push(...a.lines);
    problems.push(...a.problems);
  } else {
    warnings.push(
      'no --keys: no authorized_keys lines; nodes cannot read the master or send reports until `builder keys` lines are installed',
    );
  }

  const targets: Array<[string, string]> = [
    [join(tftp, KERNEL), 'TFTP file'],
    [join(tftp, KERNEL_GZ), 'TFTP file'],
    [join(tftp, INITRAMFS), 'TFTP file'],
    [join(tftp, BOOT_SCRIPT), 'TFTP file'],
    [join(tftp, ANNOUNCEMENT_FILE), 'TFTP file'],
    [join(stateDir, NODES_LIST), 'node list'],
    [join(stateDir, REPORT_DIR, 'x'), 'reports folder'],
    [o.dnsmasqConf, 'dnsmasq configuration'],
    ...(o.authorizedKeys !== undefined ? [[o.authorizedKeys, 'authorized_keys'] as [string, string]] : []),
    ...(identity ? [[join(masterRoot, NODES_DIR, 'x'), 'node identity folder'] as [string, string]] : []),
    ...(slots > 0 ? [[join(stateDir, 'sync-slot'), 'sync-slot script'] as [string, string]] : []),
  ];
  for (const [p, what] of targets) {
    const w = writableProblem(p, what);
    if (w) problems.push(w);
  }
  const rst = statSync(join(stateDir, REPORT_DIR), { throwIfNoEntry: false });
  if (rst && !rst.isDirectory())
    problems.push(`${join(stateDir, REPORT_DIR)} exists and is not a directory: move it away`);
  problems.push(...pxeProblems(parsed.nodes, o.amd64, o.ipxeDir));

  // the firmware first stage: checked in full here, written after the U-Boot files
  let fw: { set: FirmwareSet; prefixes: Array<{ hostname: string; prefix: string }> } | null = null;
  if (o.firstStage === 'firmware' && !problems.length) {
    const bootfsDir = join(masterRoot, BOOTFS_DIR);
    const missing = bootfsDirProblem(bootfsDir);
    let serials = new Map<string, string>();
    if (o.serialsFile !== undefined) {
      try {
        const s = parseSerials(readFileSync(o.serialsFile, 'utf8'));
        problems.push(...s.errors.map((e) => `${o.serialsFile} ${e}`));
        serials = s.serials;
      } catch (e) {
        problems.push(`cannot read the serials file ${o.serialsFile}: ${(e as Error).message}`);
      }
    }
    const pre = nodePrefixes(parsed.nodes, o.tftpPrefix ?? 'serial', serials);
    problems.push(...pre.problems);
    if (missing) problems.push(missing);
    else {
      const text = (n: string) => {
        try {
          return readFileSync(join(bootfsDir, n), 'utf8');
        } catch {
          return null;
        }
      };
      const r = firmwareSet({
        bootfs: readBootfs(bootfsDir),
        bootfsConfig: text('config.txt'),
        bootfsAutoboot: text('autoboot.txt'),
        kernel: rawKernel(readFileSync(o.kernel)),
        initramfs: new Uint8Array(readFileSync(o.initramfs)),
        bootargs: o.bootargs,
      });
      if (r.ok) {
        warnings.push(...r.warnings);
        fw = { set: r.set, prefixes: pre.prefixes };
      } else problems.push(...r.problems);
    }
  }

  if (problems.length) throw new StageError(problems);

  // ---- every check passed: write
  const written: string[] = [];
  const put = (path: string, data: string | Uint8Array) => {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    writeAtomic(path, data);
    written.push(path);
  };
  // the first stage as one unit: the raw kernel (what nodes cache), the same gzip'd (what they TFTP), the
  // initramfs, and the announcement naming all three (its own file, and baked into the network script)
  const kernel = rawKernel(readFileSync(o.kernel));
  const initramfs = new Uint8Array(readFileSync(o.initramfs));
  const kernelGz = new Uint8Array(gzipSync(kernel, { level: 9 }));
  const announcement = announce(kernel, kernelGz, initramfs, o.bootargs, o.tries ?? DEFAULT_TRIES);
  put(join(tftp, KERNEL), kernel);
  put(join(tftp, KERNEL_GZ), kernelGz);
  put(join(tftp, INITRAMFS), initramfs);
  put(
    join(tftp, BOOT_SCRIPT),
    scriptImage(renderNetScript(announcement), { arch: o.arch, name: 'clusterboot boot script', time: o.time ?? 0 }),
  );
  put(join(tftp, ANNOUNCEMENT_FILE), renderAnnouncement(announcement));
  put(join(stateDir, NODES_LIST), renderNodesList(parsed.nodes, o.nodesFile));
  const moved = moveOutOfPublicTree(masterRoot, stateDir);
  warnings.push(...moved.warnings);
  written.push(...moved.written);
  const reports = join(stateDir, REPORT_DIR);
  mkdirSync(reports, { recursive: true, mode: 0o755 });
  chmodSync(reports, 0o755);
  if (o.amd64 && parsed.nodes.some((n) => n.arch === 'amd64'))
    for (const [name, data] of pxeFiles(o.amd64, o.ipxeDir)) put(join(tftp, name), data);
  // the Pi EEPROM bootloader takes an offer only with PXE option 43 "Raspberry Pi Boot" (its PXE_OPTION43)
  const piPxe = fw
    ? '\n# Raspberry Pi 4/5 EEPROM network boot (--first-stage firmware)\npxe-service=0,"Raspberry Pi Boot"\n'
    : '';
  put(o.dnsmasqConf, renderDnsmasq(plan) + piPxe);
  if (fw) written.push(...writeFirmwareStage(tftp, fw.set, fw.prefixes));

  const identities = identity
    ? parsed.nodes.map((n) => ({ hostname: n.hostname, created: ensureIdentity(masterRoot, n.hostname).created }))
    : [];
  let syncSlot: StageResult['syncSlot'] = null;
  if (slots > 0) {
    syncSlot = { ...installSyncSlot(stateDir, limits), slots, ...limits };
    written.push(syncSlot.script);
  }
  if (o.approval !== undefined) setApprovalMode(masterRoot, o.approval);
  if (o.keysDir !== undefined) {
    const sink = installReportSink(stateDir, o.reportUser ?? DEFAULT_REPORT_USER, parsed.nodes);
    written.push(sink.script, sink.peers);
  }

  let keysAdded: string[] = [];
  let keysReplaced: string[] = [];
  if (o.authorizedKeys !== undefined && keyLines.length) {
    const w = writeAuthorizedKeys(o.authorizedKeys, keyLines, masterRoot);
    warnings.push(...w.warnings);
    written.push(...w.written);
    keysAdded = w.added;
    keysReplaced = w.replaced;
  }
  return {
    firstStage: announcement,
    nodes: parsed.nodes,
    written,
    reportsDir: reports,
    keyLines,
    keysAdded,
    keysReplaced,
    identity: identities,
    syncSlot,
    approvalMode: approvalModeOn(masterRoot),
    ...(fw ? { firmware: { id: fw.set.announcement.id, prefixes: fw.prefixes } } : {}),
    warnings,
  };
}

// `builder mirror`: this machine keeps a copy of a primary master's public tree (its master root: templates,
// snapshots, stamps, manifests, the table, the flags, the first stage), pulled with rsync, and serves it to nodes
// like the primary does. It never publishes: it serves only what the primary published, and a node checks that
// against the signed manifest, so a mirror needs no trust (#19).
//
// Why three passes: a node must never see a mirror halfway between two publishes. A node reads the stamps first
// and then the snapshot they name; so the snapshots come first (pass 1, nothing deleted), the small files that
// commit a publish (stamps and manifests, the table, the approval switch and approvals, the per-node flags, the
// first-stage announcement) next, in one rsync with --delay-updates (pass 2: renamed into place together at the
// end), and only then what the primary dropped is deleted (pass 3), never a snapshot the mirror's stamps still
// name. A mirror stopped at any point serves the old publish or the new one, whole.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ANNOUNCEMENT_FILE } from '../../agent/contract/firststage.ts';
import { fileListPath, snapshotPath, SNAPSHOT_DIR } from '../../agent/contract/manifest.ts';
import { STAMP_NAMES, type StampName } from '../../agent/contract/stamp.ts';
import {
  APPROVAL_REQUIRED,
  APPROVED_DIR,
  BOOT_SCRIPT,
  NODES_DIR,
  NODES_LIST,
  PARTITION_TABLE,
  REPORT_DIR,
  STAMP_DIR,
  TFTP_DIR,
} from '../../agent/contract/tree.ts';
import { checkCommandPaths, DEFAULT_RRSYNC, keyLine } from '../sshkeys.ts';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { accessKeyLines, writeAuthorizedKeys } from './access.ts';
import { parseIPv4, parseNodeList, renderNodesList } from './nodelist.ts';
import { DEFAULT_REPORT_USER, installReportSink, SPARE_REPORT_FILES } from './reportsink.ts';
import { installSyncSlot } from './syncslot.ts';
import { MIRROR_STATE, MIRRORS_DIR, readStampId, type MirrorStateFile } from './status.ts';

const RSYNC = '/usr/bin/rsync';

/** A folder as rsync's source names its content: `host:` as it is, anything else with a trailing slash. */
const rsyncDir = (source: string) => (source.endsWith('/') || source.endsWith(':') ? source : `${source}/`);

/**
 * A read-only rrsync line for one address: `restrict,from="<ip>",command="rrsync -ro <dir>"`, tagged
 * `clusterboot-<tag>@<ip>`. What the mirror key (on the primary) and the gather key (on a mirror) get.
 */
function readOnlyFromLine(fn: string, pub: string, dir: string, ip: string, tag: string, rrsync: string): string {
  if (parseIPv4(ip) === null) throw new Error(`${fn}: ${ip} is not an IPv4 address`);
  checkCommandPaths(fn, [
    ['dir', dir],
    ['rrsync', rrsync],
  ]);
  return keyLine(
    `restrict,from="${ip}",command="${rrsync} -ro ${dir}"`,
    `${pub.trim().split(/\s+/).slice(0, 2).join(' ')} clusterboot-${tag}@${ip}`,
    fn,
  );
}

/** The files that commit a publish, as rsync filter rules anchored at the master root. */
export const COMMIT_RULES: readonly string[] = [
  `/${STAMP_DIR}/***`,
  `/${PARTITION_TABLE}`,
  `/${APPROVAL_REQUIRED}`,
  `/${APPROVED_DIR}/***`,
  `/${NODES_DIR}/***`,
  `/${TFTP_DIR}/`,
  `/${TFTP_DIR}/${ANNOUNCEMENT_FILE}`,
  // the network script names the first stage's sizes and CRCs: it changes with the announcement
  `/${TFTP_DIR}/${BOOT_SCRIPT}`,
];

export interface MirrorPass {
  name: 'content' | 'commit' | 'cleanup';
  /** rsync's arguments, source and destination last. */
  args: string[];
}

/**
 * The three rsync passes. `source` is the primary's master root as rsync names it (`host:` through the mirror key's
 * rrsync, or a local directory); `keep` the snapshot ids the mirror's stamps name now (pass 3 never deletes them).
 */
export function mirrorPasses(
  source: string,
  dest: string,
  o: { rsh?: string; keep?: ReadonlyArray<{ name: StampName; id: string }> } = {},
): MirrorPass[] {
  const src = rsyncDir(source);
  const dst = dest.endsWith('/') ? dest : `${dest}/`;
  const common = [
    ...(o.rsh ? ['-e', o.rsh] : []),
    '-aHAX',
    '--numeric-ids',
    '--timeout=120',
    // the primary's working copies are not served: rsync's own temporary names, publish's half-made snapshots
    '--exclude=.~tmp~/',
    '--exclude=.*.tmp*',
  ];
  const notCommit = COMMIT_RULES.filter((r) => r !== `/${TFTP_DIR}/`).map(
    (r) => `--exclude=${r.replace(/\*\*\*$/, '')}`,
  );
  const keep = (o.keep ?? []).flatMap((k) => [
    `--exclude=/${snapshotPath(k.name, k.id)}/`,
    `--exclude=/${fileListPath(k.name, k.id)}`,
  ]);
  return [
    { name: 'content', args: [...common, ...notCommit, src, dst] },
    {
      name: 'commit',
      args: [
        ...common,
        '--delete',
        '--delay-updates',
        // by content: a stamp published again within the same second has the same size and mtime
        '--checksum',
        ...COMMIT_RULES.map((r) => `--include=${r}`),
        '--exclude=*',
        src,
        dst,
      ],
    },
    { name: 'cleanup', args: [...common, '--delete', ...notCommit, ...keep, src, dst] },
  ];
}

/** The snapshots the tree's stamps name (rootfs and bootfs). */
export function namedSnapshots(root: string): Array<{ name: StampName; id: string }> {
  return STAMP_NAMES.flatMap((name) => {
    const id = readStampId(root, name);
    return id === null ? [] : [{ name, id }];
  });
}

/** A publish the mirror has, or lacks, against the primary: by stamp. */
export interface MirrorState {
  name: StampName;
  primary: string | null;
  mirror: string | null;
  /** The mirror's stamp names a snapshot it has (or names none). */
  whole: boolean;
}

/** Per template: the primary's and the mirror's stamp ids, and whether the mirror's snapshot is all there. */
export function compareMirror(primaryRoot: string, mirrorRoot: string): MirrorState[] {
  return STAMP_NAMES.map((name) => {
    const m = readStampId(mirrorRoot, name);
    const snap = m === null ? null : join(mirrorRoot, snapshotPath(name, m));
    const whole = snap === null || !existsSync(join(mirrorRoot, SNAPSHOT_DIR, name)) || existsSync(snap);
    return { name, primary: readStampId(primaryRoot, name), mirror: m, whole };
  });
}

/** One line for `builder mirror --check`, and whether the mirror is current. */
export function mirrorVerdict(states: readonly MirrorState[]): { current: boolean; text: string } {
  const parts = states.map((s) =>
    !s.whole
      ? `${s.name} ${s.mirror}: its snapshot is missing`
      : s.primary === s.mirror
        ? `${s.name} ${s.mirror ?? 'none'} (current)`
        : `${s.name} ${s.mirror ?? 'none'}, the primary has ${s.primary ?? 'none'} (behind)`,
  );
  return { current: states.every((s) => s.whole && s.primary === s.mirror), text: parts.join('; ') };
}

/** The primary's authorized_keys line for a mirror: read-only rsync of the master root, from the mirror only. */
export function mirrorKeysLine(pub: string, masterRoot: string, mirrorIp: string, rrsync = DEFAULT_RRSYNC): string {
  return readOnlyFromLine('mirrorKeysLine', pub, masterRoot, mirrorIp, 'mirror', rrsync);
}

export interface MirrorRun {
  passes: Array<{ name: MirrorPass['name']; status: number; seconds: number }>;
  states: MirrorState[];
}

/**
 * The effect: the three passes in order (rsync's exit 24, files that vanished on the primary meanwhile, is no
 * failure), then the mirror's stamps against the primary's. A failed pass stops the run: what the mirror serves is
 * still one whole publish (see above), and the next run (the timer's) goes on from there.
 */
export function runMirror(o: { source: string; dest: string; rsh?: string }): MirrorRun {
  mkdirSync(o.dest, { recursive: true });
  const passes: MirrorRun['passes'] = [];
  for (const name of ['content', 'commit', 'cleanup'] as const) {
    const pass = mirrorPasses(o.source, o.dest, {
      ...(o.rsh ? { rsh: o.rsh } : {}),
      keep: namedSnapshots(o.dest),
    }).find((p) => p.name === name) as MirrorPass;
    const t0 = performance.now();
    const r = spawnSync(RSYNC, pass.args, { encoding: 'utf8', maxBuffer: 64 << 20 });
    const status = r.status ?? -1;
    passes.push({ name, status, seconds: (performance.now() - t0) / 1000 });
    if (status !== 0 && status !== 24)
      throw new Error(
        `mirror: the ${name} pass failed (rsync exit ${status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`,
      );
  }
  return { passes, states: checkMirror(o) };
}

/**
 * After a pull (done or failed): what this mirror serves now, into <state-dir>/reports/mirror.state, where the
 * primary's `builder gather` takes it with the reports and `builder status` says whether the mirror is behind.
 * Only on a mirror that serves (its reports folder exists): nothing else gathers. Returns the file, or null.
 */
export function writeMirrorState(
  stateDir: string,
  o: { mirrorRoot: string; error?: string; now?: Date },
): string | null {
  const dir = join(stateDir, REPORT_DIR);
  if (!existsSync(dir)) return null;
  const state: MirrorStateFile = {
    stamps: Object.fromEntries(namedSnapshots(o.mirrorRoot).map((s) => [s.name, s.id])),
    pulled: (o.now ?? new Date()).toISOString(),
    ...(o.error !== undefined ? { error: o.error.slice(0, 500) } : {}),
  };
  const file = join(dir, MIRROR_STATE);
  writeAtomic(file, `${JSON.stringify(state)}\n`, 0o644);
  return file;
}

/** `builder mirror --check`, `builder doctor --mirror-of`, and the end of a pull: the primary's stamps fetched into a
 * temporary folder and compared with the mirror's. Throws when the primary cannot be read. */
export function checkMirror(o: { source: string; dest: string; rsh?: string }): MirrorState[] {
  const tmp = mkdtempSync(join(tmpdir(), 'clusterboot-mirror-'));
  try {
    const src = rsyncDir(o.source);
    const r = spawnSync(
      RSYNC,
      [
        ...(o.rsh ? ['-e', o.rsh] : []),
        '-rt',
        '--timeout=60',
        '--include=/stamps/',
        '--include=/stamps/*.stamp',
        '--exclude=*',
        src,
        `${tmp}/`,
      ],
      { encoding: 'utf8' },
    );
    // a primary that does not answer is not a primary with no stamps: say so rather than "behind"
    if (r.status !== 0 && r.status !== 24)
      throw new Error(
        `cannot read the primary's stamps (rsync exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-2).join(' | ')}`,
      );
    return compareMirror(tmp, o.dest);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** ssh for rsync's -e: the mirror key, the primary's host key pinned, never a password. */
export function mirrorRsh(key: string, knownHosts: string, port = 22, bind?: string): string {
  if (bind !== undefined && parseIPv4(bind) === null)
    throw new Error(`mirrorRsh: --bind ${bind} is not an IPv4 address`);
  checkCommandPaths('mirrorRsh', [
    ['key', key],
    ['knownHosts', knownHosts],
  ]);
  return [
    '/usr/bin/ssh',
    `-i ${key}`,
    `-p ${port}`,
    ...(bind ? [`-b ${bind}`] : []),
    '-o IdentitiesOnly=yes',
    '-o BatchMode=yes',
    '-o StrictHostKeyChecking=yes',
    `-o UserKnownHostsFile=${knownHosts}`,
    '-o GlobalKnownHostsFile=/dev/null',
    '-o ConnectTimeout=10',
    '-o Ciphers=chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr',
  ].join(' ');
}

/** What a timer keeps doing: the mirror's pull (on a mirror), the gathering of the mirrors' reports (on the primary). */
export const TIMERS = {
  mirror: {
    service: "clusterboot mirror: pull the primary master's published tree",
    timer: 'clusterboot mirror: pull the primary every minute',
  },
  gather: {
    service: "clusterboot gather: pull the mirrors' reports and pull state",
    timer: "clusterboot gather: pull the mirrors' reports every minute",
  },
} as const;

/**
 * The systemd service and timer (`builder mirror --timer`, `builder gather --timer`): the command every minute,
 * one run at a time (a oneshot service), at low priority; the unit is clusterboot-<kind>.
 */
export function timerUnits(kind: keyof typeof TIMERS, command: string): { service: string; timer: string } {
  // systemd reads $, %, ; and quotes in ExecStart: a path with them would run something else
  if (!/^[A-Za-z0-9_./:@=,+ -]+$/.test(command))
    throw new Error(
      `timerUnits: '${command.replace(/[^\x20-\x7e]/g, '?')}' has characters systemd would read as its own (only letters, digits and _./:@=,+- in paths and addresses)`,
    );
  const t = TIMERS[kind];
  return {
    service: `# written by \`builder ${kind} --timer\`
[Unit]
Description=${t.service}
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=${command}
Nice=10
IOSchedulingClass=idle
`,
    timer: `# written by \`builder ${kind} --timer\`
[Unit]
Description=${t.timer}

[Timer]
OnBootSec=30s
OnUnitInactiveSec=60s
AccuracySec=5s

[Install]
WantedBy=timers.target
`,
  };
}

/**
 * `builder mirror --serve`: this machine lets nodes read it as they read the primary: the same node key line
 * (read-only rrsync of the mirror's tree, behind its own sync slots), the same report key into its own report sink
 * (its peers from the node list), from the cluster's subnet. The keys are the primary's public halves (`builder
 * keys` made them there: copy /etc/clusterboot/*.pub); the node list is the primary's.
 */
export function serveMirror(o: {
  keysDir: string;
  masterRoot: string;
  stateDir: string;
  authorizedKeys: string;
  nodesFile: string;
  subnet: string;
  slots: number;
  reportUser?: string;
  /** The primary's gather key and address: it may pull this mirror's reports. */
  gather?: { pub: string; primaryIp: string };
}): { written: string[]; warnings: string[]; lines: string[] } {
  const parsed = parseNodeList(readFileSync(o.nodesFile, 'utf8'));
  if (parsed.errors.length) throw new Error(`${o.nodesFile}: ${parsed.errors.join('; ')}`);
  const a = accessKeyLines({
    keysDir: o.keysDir,
    masterRoot: o.masterRoot,
    stateDir: o.stateDir,
    slots: o.slots,
    ...(o.reportUser !== undefined ? { reportUser: o.reportUser } : {}),
    maxReports: 2 * parsed.nodes.length + SPARE_REPORT_FILES,
    from: o.subnet,
  });
  if (a.problems.length) throw new Error(a.problems.join('; '));
  if (o.gather) a.lines.push(gatherKeysLine(o.gather.pub, o.stateDir, o.gather.primaryIp));
  const written: string[] = [];
  mkdirSync(o.masterRoot, { recursive: true });
  if (o.slots > 0) written.push(installSyncSlot(o.stateDir).script);
  const sink = installReportSink(o.stateDir, o.reportUser ?? DEFAULT_REPORT_USER, parsed.nodes);
  written.push(sink.script, sink.peers);
  writeAtomic(join(o.stateDir, NODES_LIST), renderNodesList(parsed.nodes, o.nodesFile), 0o644);
  written.push(join(o.stateDir, NODES_LIST));
  const w = writeAuthorizedKeys(o.authorizedKeys, a.lines, o.masterRoot);
  return { written: [...written, ...w.written], warnings: w.warnings, lines: a.lines };
}

/**
 * `builder mirror --serve --tftp IP`: a dnsmasq that serves the mirror's tftp/ folder and nothing else (no DHCP,
 * no DNS: the primary's dnsmasq answers DHCP and names this mirror as next-server for its nodes with
 * `builder stage --tftp-from-mirrors`), on the mirror's cluster address only.
 */
export function mirrorTftpConf(masterRoot: string, ip: string): string {
  if (parseIPv4(ip) === null) throw new Error(`mirrorTftpConf: --tftp ${ip} is not an IPv4 address`);
  const root = join(masterRoot, TFTP_DIR);
  if (!/^\/[A-Za-z0-9._+\/-]*$/.test(root) || root.split('/').includes('..'))
    throw new Error(`mirrorTftpConf: ${root} must be an absolute path of [A-Za-z0-9._+/-] without '..'`);
  return [
    '# clusterboot mirror: TFTP only (no DHCP, no DNS); generated by `builder mirror --serve --tftp`. Do not edit.',
    'port=0',
    `listen-address=${ip}`,
    'bind-interfaces',
    'enable-tftp',
    `tftp-root=${root}`,
    '',
  ].join('\n');
}

/**
 * The mirror's authorized_keys line for the primary's gather key: read-only rsync of the mirror's reports, from
 * the primary's address only. Reports are pulled, never pushed: nothing on a mirror can write on the primary.
 */
export function gatherKeysLine(pub: string, stateDir: string, primaryIp: string, rrsync = DEFAULT_RRSYNC): string {
  return readOnlyFromLine('gatherKeysLine', pub, join(stateDir, REPORT_DIR), primaryIp, 'gather', rrsync);
}

/**
 * `builder gather`: each mirror's reports into <state-dir>/mirrors/<address>/reports/, where `builder status`
 * reads them beside this master's own: report files only (*.json, and its pull state; no links, 64 KiB at most each), the folder
 * made to match (--delete). `source` is the mirror as rsync names it (`host:`, or a local folder).
 */
export function gatherReports(o: { mirror: string; source: string; stateDir: string; rsh?: string }): {
  status: number;
  dir: string;
  message: string;
} {
  if (!/^[0-9A-Za-z.:-]{1,64}$/.test(o.mirror)) throw new Error(`gather: ${o.mirror} is not a host name or address`);
  const dir = join(o.stateDir, MIRRORS_DIR, o.mirror, REPORT_DIR);
  mkdirSync(dir, { recursive: true });
  const src = rsyncDir(o.source);
  const r = spawnSync(
    RSYNC,
    [
      ...(o.rsh ? ['-e', o.rsh] : []),
      '-rt',
      '--no-links',
      '--max-size=64K',
      '--delete',
      '--timeout=60',
      '--include=/*.json',
      `--include=/${MIRROR_STATE}`,
      '--exclude=*',
      src,
      `${dir}/`,
    ],
    { encoding: 'utf8' },
  );
  const status = r.status ?? -1;
  return { status, dir, message: status === 0 ? '' : (r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ') };
}

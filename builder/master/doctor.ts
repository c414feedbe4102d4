// `builder doctor`: a running master checked end to end, one line per check with its remedy. The nodes need
// dnsmasq to answer TFTP with the announced first stage, sshd to let the node key read (and only read) the master
// tree, valid stamps, and an initramfs their firmware can load; the admin needs to hear which of these is broken
// and what to do about it before a reboot of the fleet tells them.
// Pure part first: each check's verdict from facts (a key line, a file size, a stamp's text, a process's output).
// Then the effects: `runDoctor` gathers the facts (the tree, authorized_keys, a TFTP client, ssh and rsync through
// the node key, rsync's version, file modes, free space) and hands them to the verdicts.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import {
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { isIPv6 } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { ANNOUNCEMENT_FILE, KERNEL_GZ, parseAnnouncement, type Announcement } from '../../agent/contract/firststage.ts';
import { HOST_ALIAS } from '../../agent/contract/initramfs.ts';
import { readSmallFile } from '../../agent/contract/smallread.ts';
import {
  parseStamp,
  sigPath,
  STAMP_NAMES,
  stampPath,
  verifyStamp,
  type StampName,
} from '../../agent/contract/stamp.ts';
import {
  BOOT_SCRIPT,
  BOOTFS_DIR,
  FILES_DIR,
  NODES_DIR,
  INITRAMFS,
  NODES_LIST,
  PARTITION_TABLE,
  REPORT_DIR,
  ROOTFS_DIR,
  STAMP_DIR,
  TFTP_DIR,
} from '../../agent/contract/tree.ts';
import { readUImageHeader } from '../../agent/contract/uimage.ts';
import { knownHostsLine, oneLine, parseKeyLine, parsePubKey, type ParsedKeyLine } from '../sshkeys.ts';
import { keyBlob } from './authkeys.ts';
import { parseNodeCommand, parseReportCommand, trimSlash, type NodeCommand } from './keylines.ts';
import { PYTHON } from './reportsink.ts';
import { parseEnrolLine, PRIVATE_DIR } from './enrol.ts';
import { checkMirror, mirrorVerdict, type MirrorState } from './mirror.ts';
import { MIRROR_STATE, parseMirrorState } from './status.ts';

export const DEFAULT_KEYS_DIR = '/etc/clusterboot';
export const DEFAULT_AUTHORIZED_KEYS = '/root/.ssh/authorized_keys';
export const DEFAULT_DNSMASQ_CONF = '/etc/dnsmasq.d/clusterboot.conf';
export const DEFAULT_MASTER_HOST_KEY = '/etc/ssh/ssh_host_ed25519_key.pub';

export type Level = 'ok' | 'warn' | 'fail';

/** One line of the doctor's output. */
export interface Check {
  name: string;
  level: Level;
  detail: string;
  /** What to do about it; set for warn and fail. */
  remedy?: string;
}

type Verdict = Omit<Check, 'name'>;

const ok = (detail: string): Verdict => ({ level: 'ok', detail });
const warn = (detail: string, remedy: string): Verdict => ({ level: 'warn', detail, remedy });
const fail = (detail: string, remedy: string): Verdict => ({ level: 'fail', detail, remedy });
const named = (name: string, v: Verdict): Check => ({ name, ...v });

/** The line of an ssh or rsync run's stderr that says why: rrsync's or sync-slot's own, else the last one. */
const why = (s: string) =>
  oneLine(
    s
      .split('\n')
      .find((l) =>
        /rrsync|clusterboot:|not allowed|Permission denied|Host key verification failed|^ssh: |Connection (refused|closed|timed out)/i.test(
          l,
        ),
      ) ?? lastLine(s),
  );

const lastLine = (s: string) =>
  oneLine(
    s
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .pop() ?? '',
  );

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
const octal = (m: number) => (m & 0o7777).toString(8).padStart(4, '0');

// ---------------------------------------------------------------------------------------------------------------
// the initramfs and the firmware's TFTP ceiling

/**
 * The largest file the Raspberry Pi firmware's TFTP client loads whole: 65535 × 1024 − 1 bytes.
 *
 * The Pi firmware's TFTP (the EEPROM bootloader and start4.elf) silently truncates files over 64 MiB: it asks
 * for at most 1024-byte blocks (TFTP_MAX_BLOCKSIZE) and does not roll its 16-bit block number over, so it gets
 * at most 65535 blocks; "0x3fffc00 equates to 65535 x 1024" (raspberrypi/rpi-eeprom#375, and #720 for the missing
 * rollover). A TFTP transfer ends with the first block shorter than the block size, so a file of exactly
 * 65535 × 1024 bytes would need a 65536th, empty, block: the rule implemented here is size < 65535 × 1024.
 * U-Boot, which loads the first stage in this project, rolls over and is not bound by it; the ceiling keeps the
 * initramfs loadable by the firmware's own network boot too, and design.md's "keep the initramfs well under 64 MB".
 */
export const TFTP_CEILING = 65535 * 1024 - 1;

export function checkInitramfsSize(bytes: number | null): Verdict {
  if (bytes === null)
    return fail(
      `no ${TFTP_DIR}/${INITRAMFS}`,
      'run `builder pack`, then `builder stage --initramfs <its initramfs.igz.uimg>`',
    );
  const limit = `the Pi firmware's TFTP ceiling of 65535 blocks of 1 KiB (${TFTP_CEILING + 1} bytes, 64 MiB less 1 KiB)`;
  if (bytes > TFTP_CEILING)
    return fail(
      `${bytes} bytes (${mib(bytes)}) is over ${limit}: the firmware's TFTP silently truncates it`,
      'make the initramfs smaller (fewer --modules or --add files, `builder pack --compress zstd` or xz), then `builder stage` it again',
    );
  return ok(`${bytes} bytes (${mib(bytes)}), ${mib(TFTP_CEILING + 1 - bytes)} under ${limit}`);
}

// ---------------------------------------------------------------------------------------------------------------
// authorized_keys lines

/** Options that only take rights away (restrict already implies the no-* ones). */
const NARROWING = new Set([
  'restrict',
  'no-pty',
  'no-port-forwarding',
  'no-agent-forwarding',
  'no-x11-forwarding',
  'no-user-rc',
  'expiry-time',
  'verify-required',
]);

/** The checks every forced-command line shares: restrict, nothing that widens it, one command, from=. */
function lineOptions(p: ParsedKeyLine): {
  fails: string[];
  warns: string[];
  command: string | null;
  from: string | null;
} {
  const fails: string[] = [];
  const warns: string[] = [];
  const names = p.options.map((o) => o.name.toLowerCase());
  if (!names.includes('restrict'))
    fails.push('no `restrict`: sshd gives the key port and agent forwarding, a pty and ~/.ssh/rc unless each is named');
  for (const o of p.options) {
    const n = o.name.toLowerCase();
    if (n === 'command' || n === 'from' || NARROWING.has(n)) continue;
    fails.push(`\`${o.name}${o.value === null ? '' : '=…'}\` gives the key more than its command`);
  }
  const commands = p.options.filter((o) => o.name.toLowerCase() === 'command');
  const froms = p.options.filter((o) => o.name.toLowerCase() === 'from');
  if (commands.length === 0) fails.push('no forced command: the key gets a shell');
  else if (commands.length > 1) fails.push('more than one command=');
  if (froms.length === 0)
    warns.push("no from=: the key works from any address, not just the cluster's (`builder stage --key-from`)");
  return {
    fails,
    warns,
    command: commands.length === 1 ? (commands[0]?.value ?? null) : null,
    from: froms[0]?.value ?? null,
  };
}

// Why: the node key is in the initramfs anyone on the LAN can TFTP, so its line is all that keeps them from
// writing the master's tree: exactly `builder stage`'s, restrict + read-only rrsync of the master root.
/** Whether one authorized_keys line gives its key exactly read-only rrsync of the master root, behind restrict. */
export function checkKeyLine(line: string, masterRoot: string): Verdict & { command?: NodeCommand } {
  const remedy = `replace the line with the one \`builder stage --keys <dir> --authorized-keys <file>\` writes (restrict,from="<subnet>",command="… rrsync -ro ${trimSlash(masterRoot)}"): delete it, then run builder stage again`;
  const p = parseKeyLine(line);
  if (!p) return fail(`not an authorized_keys line: ${oneLine(line, 80)}`, remedy);
  const o = lineOptions(p);
  let cmd: NodeCommand | undefined;
  if (o.command !== null) {
    const c = parseNodeCommand(o.command, masterRoot);
    if (c.ok) cmd = c.cmd;
    else o.fails.push(c.why);
  }
  if (o.fails.length) return fail(o.fails.join('; '), remedy);
  const what = `restrict${o.from !== null ? `,from="${o.from}"` : ''}, rrsync -ro ${cmd?.root}${cmd?.syncSlot ? ` behind sync-slot (${cmd.syncSlot.slots} slots)` : ''}`;
  const v = o.warns.length ? warn(`${what}; ${o.warns.join('; ')}`, remedy) : ok(what);
  return cmd ? { ...v, command: cmd } : v;
}

// Why: the report key is in the same public initramfs; its line must run the report sink (or, on an older stage,
// the write-only rrsync of reports/) and nothing else.
/** Whether one authorized_keys line gives the report key only the report sink (or the old write-only reports/). */
export function checkReportKeyLine(line: string, masterRoot: string): Verdict & { sink?: string } {
  const publicReports = `${trimSlash(masterRoot)}/${REPORT_DIR}`;
  const remedy = `replace the line with the one \`builder stage --keys <dir> --state-dir <dir> --authorized-keys <file>\` writes (restrict,command="${PYTHON} -I <state-dir>/report-sink <state-dir>/${REPORT_DIR} …"): delete it, then run builder stage again`;
  const p = parseKeyLine(line);
  if (!p) return fail(`not an authorized_keys line: ${oneLine(line, 80)}`, remedy);
  const o = lineOptions(p);
  let sink: string | undefined;
  let reports = publicReports;
  let old = false;
  if (o.command !== null) {
    const c = parseReportCommand(o.command, masterRoot);
    if (c === null)
      o.fails.push(`the command \`${oneLine(o.command, 120)}\` is not the report sink of \`builder stage\``);
    else if (c.kind === 'sink') {
      sink = c.sink;
      reports = c.reports;
      if (c.publicReports)
        o.warns.push(
          `the reports land in ${reports}, inside the master root, which the node key (anyone with the initramfs) reads: run \`builder stage\` (it moves them into the state dir)`,
        );
    } else old = true;
  }
  if (o.fails.length) return fail(o.fails.join('; '), remedy);
  if (old)
    o.warns.push(
      'the older write-only rrsync of reports/: anyone with the initramfs can write any file there (stage with --state-dir installs the report sink)',
    );
  const what = `restrict${o.from !== null ? `,from="${o.from}"` : ''}, ${old ? `rrsync -wo ${reports}` : `report sink into ${reports}`}`;
  const v = o.warns.length ? warn(`${what}; ${o.warns.join('; ')}`, remedy) : ok(what);
  return sink ? { ...v, sink } : v;
}

/** Every line of one key in an authorized_keys text: 1-based line numbers and the lines. */
export function linesOfKey(text: string, blob: string): Array<{ n: number; line: string }> {
  return text
    .split('\n')
    .map((line, i) => ({ n: i + 1, line: line.trim() }))
    .filter((l) => l.line !== '' && !l.line.startsWith('#') && keyBlob(l.line) === blob);
}

// Why every line of the key and not only the first: sshd goes on to the next line of a key whose from= does not
// match the client, so a widened second line is a way in too.
/** The verdict over all lines of one key: the worst line wins; none at all fails. */
export function checkKeyLines<T extends Verdict>(
  text: string | null,
  blob: string | null,
  file: string,
  what: string,
  check: (line: string) => T,
  missingRemedy: string,
): T | Verdict {
  if (blob === null) return fail(`no ${what} public key to look for`, missingRemedy);
  if (text === null) return fail(`cannot read ${file}`, missingRemedy);
  const lines = linesOfKey(text, blob);
  if (lines.length === 0) return fail(`${file} has no line for the ${what}: sshd refuses it`, missingRemedy);
  const verdicts = lines.map((l) => ({ ...l, v: check(l.line) }));
  const worst = verdicts.find((x) => x.v.level === 'fail') ?? verdicts.find((x) => x.v.level === 'warn') ?? verdicts[0];
  if (!worst) return fail(`${file} has no line for the ${what}`, missingRemedy);
  const where = `${file} line ${worst.n}`;
  const more = lines.length > 1 ? ` (${lines.length} lines for this key: ${lines.map((l) => l.n).join(', ')})` : '';
  return {
    ...worst.v,
    detail: `${where}: ${worst.v.detail}${more}`,
    remedy: worst.v.remedy?.replace('delete it', `delete line ${worst.n} of ${file}`),
  };
}

/** A program or folder a key's forced command needs. */
export interface CommandFile {
  path: string;
  what: string;
  kind: 'program' | 'script' | 'directory';
  stat: { isFile: boolean; isDirectory: boolean; mode: number } | null;
  remedy: string;
}

/** Whether the forced commands' programs, scripts and folders are there (a missing one turns every node away). */
export function checkCommandFiles(files: readonly CommandFile[]): Verdict {
  const bad: string[] = [];
  const remedies: string[] = [];
  for (const f of files) {
    const s = f.stat;
    const problem =
      s === null
        ? 'is missing'
        : f.kind === 'directory'
          ? s.isDirectory
            ? null
            : 'is not a directory'
          : !s.isFile
            ? 'is not a regular file'
            : f.kind === 'program' && (s.mode & 0o111) === 0
              ? 'is not executable'
              : null;
    if (problem) {
      bad.push(`${f.what} ${f.path} ${problem}`);
      if (!remedies.includes(f.remedy)) remedies.push(f.remedy);
    }
  }
  if (files.length === 0) return fail('no forced command to check', 'see the key line checks');
  if (bad.length) return fail(bad.join('; '), remedies.join('; '));
  return ok(files.map((f) => f.path).join(', '));
}

// ---------------------------------------------------------------------------------------------------------------
// stamps

// Why: a node syncs a template only on a valid stamp; a missing or broken one leaves every node on its old root.
/** A stamp's verdict from its text (null: missing) as `builder publish` wrote it, and its signature if any. */
export function checkStamp(
  name: StampName,
  text: string | null,
  o: { unreadable?: string; sig?: string | null; publicKeyPem?: string | null; masterRoot?: string } = {},
): Verdict {
  const root = o.masterRoot ? ` --master-root ${o.masterRoot}` : '';
  const publish = `run \`builder publish ${name}${root}\`${o.publicKeyPem ? ' (with --sign <keys>/stamp_ed25519.pem if the initramfs was packed with --sign)' : ''}`;
  if (o.unreadable !== undefined)
    return fail(
      `${stampPath(name)} ${o.unreadable}: nodes never fetch it (rsync --no-links --max-size=64K)`,
      `${publish}: it writes a regular file`,
    );
  if (text === null)
    return fail(`${stampPath(name)} is missing: nodes keep the ${name} they have and never sync a new one`, publish);
  const p = parseStamp(text);
  if (!p.ok) return fail(`${stampPath(name)} is invalid: ${p.error}; nodes refuse it`, publish);
  if (p.stamp.name !== name) return fail(`${stampPath(name)} names '${p.stamp.name}'; nodes refuse it`, publish);
  const what = `${p.stamp.id} (seq ${p.stamp.seq}, ${p.stamp.created})`;
  const sig = (o.sig ?? '').trim();
  if (sig === '') return ok(`${what}, unsigned (nodes packed with \`builder pack --sign\` refuse it)`);
  if (!o.publicKeyPem) return ok(`${what}, signed (no stamp_ed25519.pub.pem in the keys folder to verify it with)`);
  const v = verifyStamp(text, sig, o.publicKeyPem);
  if (!v.ok)
    return fail(
      `${sigPath(name)}: ${v.error} (stamp_ed25519.pub.pem of the keys folder): nodes packed with it refuse the stamp`,
      `run \`builder publish ${name}${root} --sign <keys>/stamp_ed25519.pem\``,
    );
  return ok(`${what}, signed and verified`);
}

// ---------------------------------------------------------------------------------------------------------------
// rsync, key modes, free space, the tree, dnsmasq

/** rsync's version from `rsync --version`'s first line: 3.5.0 or later (the rrsync path-escape fix), 3.1 at least. */
export function checkRsyncVersion(output: string | null): Verdict {
  const upgrade =
    'upgrade rsync on the master to 3.5.0 or later (Debian: `apt install rsync` from a release or backports that has it)';
  if (output === null)
    return fail('rsync is not installed: nodes cannot sync', 'apt install rsync (it brings /usr/bin/rrsync)');
  const m = /rsync\s+version\s+v?(\d+)\.(\d+)\.(\d+)/.exec(output);
  if (!m) return fail(`cannot read rsync's version from \`${oneLine(output, 60)}\``, upgrade);
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const v = `${a}.${b}.${c}`;
  const n = a * 1e6 + b * 1e3 + c;
  if (n < 3_001_000)
    return fail(`rsync ${v} is older than 3.1: the nodes' rsync and rrsync need 3.1 or later`, upgrade);
  if (n < 3_005_000)
    return warn(`rsync ${v}: an rrsync path escape (a read outside the master root) is fixed only in 3.5.0`, upgrade);
  return ok(`rsync ${v}`);
}

/** A key file, or a folder holding one, and its mode (null: missing). */
export interface ModeFact {
  path: string;
  kind: 'private key' | 'authorized_keys' | 'directory';
  mode: number | null;
  /** Missing is a failure (the node key, authorized_keys); else it is skipped. */
  required: boolean;
  /** What to do when it is missing (default: `builder keys`, or `builder stage` for authorized_keys). */
  fix?: string;
}

// Why: ssh refuses a private key others can read, sshd (StrictModes) ignores an authorized_keys others can write,
// and whoever can write either file or its folder can give a key more rights.
export function checkKeyModes(facts: readonly ModeFact[]): Verdict {
  const bad: string[] = [];
  const fixes: string[] = [];
  const seen: string[] = [];
  for (const f of facts) {
    if (f.mode === null) {
      if (f.required) {
        bad.push(`${f.path} is missing`);
        fixes.push(
          f.fix ??
            (f.kind === 'authorized_keys' ? 'run `builder stage --authorized-keys <file>`' : 'run `builder keys`'),
        );
      }
      continue;
    }
    seen.push(`${f.kind === 'directory' ? f.path : basename(f.path)} ${octal(f.mode)}`);
    if (f.kind === 'private key' && f.mode & 0o077) {
      bad.push(`${f.path} is ${octal(f.mode)}: others can read it (ssh refuses such a key)`);
      fixes.push(`chmod 600 ${f.path}`);
    } else if (f.kind !== 'private key' && f.mode & 0o022) {
      bad.push(`${f.path} is ${octal(f.mode)}: others can write it (sshd's StrictModes then ignores authorized_keys)`);
      fixes.push(`chmod go-w ${f.path}`);
    }
  }
  if (bad.length) return fail(bad.join('; '), [...new Set(fixes)].join('; '));
  return ok(seen.join(', '));
}

export interface SpaceFacts {
  root: string;
  /** Bytes free for root on the master root's filesystem (statfs bavail × bsize). */
  freeBytes: number;
  /** What rootfs/ takes on disk (hard links once). */
  rootfsBytes: number;
  /** What tftp/ takes: `builder stage` writes each file beside the old one, then renames it. */
  stageBytes: number;
  /** The state dir (sync-slot's slot files) when it is on another filesystem. */
  state?: { dir: string; freeBytes: number; freeInodes: number };
}

/** At least this much must be free on the master root's filesystem (reports, stamps, the next stage). */
export const MIN_FREE = 64 * 1048576;

// Why: a full disk stops `builder publish` and `builder stage` (their atomic writes need room for the new copy),
// the nodes' boot reports, and the sync-slot limiter (it creates its slot files); a template update prepared beside
// the current one needs up to its size again.
export function checkFreeSpace(f: SpaceFacts): Verdict {
  const need = Math.max(MIN_FREE, f.stageBytes);
  const free = `${mib(f.freeBytes)} free on ${f.root}'s filesystem`;
  if (f.state && (f.state.freeBytes < 1048576 || f.state.freeInodes < 64))
    return fail(
      `${f.state.dir} is full (${mib(f.state.freeBytes)}, ${f.state.freeInodes} inodes free): sync-slot cannot create its slot files and lets every root sync through`,
      `free space on ${f.state.dir}'s filesystem`,
    );
  if (f.freeBytes < need)
    return fail(
      `${free}, less than ${mib(need)}: \`builder stage\`, \`builder publish\` and the boot reports cannot write`,
      `free space on ${f.root}'s filesystem`,
    );
  if (f.freeBytes < f.rootfsBytes)
    return warn(
      `${free}, less than rootfs/ takes (${mib(f.rootfsBytes)}): no room to prepare a new template beside it`,
      `free at least ${mib(f.rootfsBytes - f.freeBytes)} on ${f.root}'s filesystem before updating the template`,
    );
  return ok(`${free}; rootfs/ takes ${mib(f.rootfsBytes)}, tftp/ ${mib(f.stageBytes)}`);
}

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other' | 'missing';

// ---------------------------------------------------------------------------------------------------------------
// what the node key reads is public (#14 item 2)

/**
 * The master root is public: the node key that reads it is in the initramfs anyone on the LAN can TFTP. So the
 * private per-node tree must lie outside it, and a private key in nodes/<host>/files/ (an older `builder stage
 * --identity` made host keys there) is readable by anyone on the LAN.
 */
export function checkPrivateFiles(f: {
  root: string;
  stateDir: string;
  /** Files under nodes/<host>/files/ that hold a private key (relative to the root). */
  publicSecrets: readonly string[];
  /** Hosts with an enrolment line in authorized_keys. */
  enrolled: readonly string[];
  /** nodes.list or reports/ still in the master root (an older stage put them there). */
  leftovers?: readonly string[];
}): Verdict {
  const priv = join(f.stateDir, PRIVATE_DIR);
  const under = (a: string, b: string) => a === b || a.startsWith(`${trimSlash(b)}/`);
  if (under(priv, f.root))
    return fail(
      `the private per-node files (${priv}) are inside the master root: the node key, which anyone on the LAN can take from the initramfs, reads them`,
      'use a --state-dir outside the master root (default /var/lib/clusterboot) and move private/ there',
    );
  if (f.leftovers?.length)
    return warn(
      `${f.leftovers.join(' and ')} in the master root, which the node key (anyone with the initramfs) reads: the node list and the reports now live in ${f.stateDir}`,
      'run `builder stage` (it moves them out), or delete them',
    );
  if (f.publicSecrets.length)
    return warn(
      `private keys in the public tree, readable by anyone on the LAN with the node key: ${f.publicSecrets.slice(0, 4).join(', ')}${f.publicSecrets.length > 4 ? ` and ${f.publicSecrets.length - 4} more` : ''}`,
      `delete the host keys (each node makes its own; then \`builder known-hosts --accept <host>\`), or move secrets to ${priv}/<host>/files/ and \`builder enrol <host>\``,
    );
  return ok(
    `no private key in the public tree; ${f.enrolled.length} node(s) enrolled for private files (${priv}/<host>/files/)`,
  );
}

/** nodes.list and reports/ left in the master root by an older stage (they now live in the state dir). */
export function publicLeftovers(root: string): string[] {
  return [NODES_LIST, REPORT_DIR].filter((rel) => lst(join(root, rel)) !== undefined);
}

/** Files under <root>/nodes/<host>/files/ that hold a private key: by name or by their first bytes (bounded walk). */
export function publicSecrets(root: string, max = 20_000): string[] {
  const found: string[] = [];
  const nodes = join(root, NODES_DIR);
  let seen = 0;
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      if (++seen > max) return;
      const p = join(dir, n);
      const s = lst(p);
      if (s?.isDirectory()) walk(p);
      else if (s?.isFile()) {
        const head = s.size <= 1 << 20 ? (smallText(p, 256).text ?? '') : '';
        if (/^ssh_host_[a-z0-9]+_key$/.test(n) || /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(head))
          found.push(p.slice(root.length + 1));
      }
    }
  };
  for (const host of (() => {
    try {
      return readdirSync(nodes).sort();
    } catch {
      return [];
    }
  })())
    walk(join(nodes, host, FILES_DIR));
  return found;
}

/** What the nodes read from the master tree, and whether it is there in the form they fetch it. */
export function checkTree(root: string, e: Record<string, EntryKind>): Verdict {
  const fails: string[] = [];
  const warns: string[] = [];
  const want = (rel: string, kind: EntryKind, why: string, soft = false) => {
    const got = e[rel] ?? 'missing';
    if (got === kind || (rel.endsWith('sbin/init') && got === 'symlink')) return;
    (soft ? warns : fails).push(`${rel} ${got === 'missing' ? 'is missing' : `is a ${got}, not a ${kind}`} (${why})`);
  };
  want(PARTITION_TABLE, 'file', 'nodes fetch the table without links');
  want(BOOTFS_DIR, 'directory', 'the boot firmware template');
  want(ROOTFS_DIR, 'directory', 'the root template');
  want(`${ROOTFS_DIR}/sbin/init`, 'file', 'a template without /sbin/init is fatal on every node');
  want(STAMP_DIR, 'directory', '`builder publish` writes the stamps there');
  want(TFTP_DIR, 'directory', "dnsmasq's tftp-root");
  want(NODES_LIST, 'file', "in the state dir: `builder status`'s fleet", true);
  want(REPORT_DIR, 'directory', 'in the state dir: where boot reports land', true);
  const remedy = `lay out ${root} as README's 'A real master' shows, then run \`builder stage\` and \`builder publish rootfs\` / \`bootfs\``;
  if (fails.length) return fail(fails.join('; '), remedy);
  if (warns.length) return warn(warns.join('; '), 'run `builder stage` (it writes nodes.list and reports/)');
  return ok(
    `${root}: ${PARTITION_TABLE}, ${BOOTFS_DIR}/, ${ROOTFS_DIR}/ (with sbin/init), ${STAMP_DIR}/, ${TFTP_DIR}/`,
  );
}

/** The master's address from a dnsmasq configuration of `builder stage` (dhcp-option=66), or null. */
export function masterIpFromConf(text: string | null): string | null {
  const m = /^dhcp-option=66,(\S+)\s*$/m.exec(text ?? '');
  return m ? (m[1] as string) : null;
}

// Why: the configuration `builder stage` wrote is what the nodes' DHCP and TFTP depend on; a running dnsmasq with
// another one (or none) explains a TFTP failure before anyone reads dnsmasq's log.
export function checkDnsmasq(f: {
  conf: string;
  text: string | null;
  tftpDir: string;
  masterIp: string | null;
  pids: readonly number[];
}): Verdict {
  const restage = `run \`builder stage\` again (it writes ${f.conf}), then \`systemctl restart dnsmasq\``;
  if (f.pids.length === 0)
    return fail(
      'no dnsmasq process runs (in this network namespace): nodes get no DHCP lease and no TFTP',
      'systemctl restart dnsmasq (and systemctl enable dnsmasq)',
    );
  const pids = `dnsmasq runs (pid ${f.pids.slice(0, 4).join(', ')})`;
  if (f.text === null)
    return warn(
      `${pids}; no ${f.conf} to check its configuration against`,
      `pass --dnsmasq-conf <the file builder stage wrote>, or ${restage}`,
    );
  const lines = f.text.split('\n').map((l) => l.trim());
  const value = (key: string) => lines.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1) ?? null;
  const bad: string[] = [];
  if (!lines.includes('enable-tftp') && value('enable-tftp') === null) bad.push('no enable-tftp');
  const root = value('tftp-root')?.split(',')[0] ?? null;
  if (root === null) bad.push('no tftp-root');
  else if (trimSlash(root) !== trimSlash(f.tftpDir)) bad.push(`tftp-root=${root}, not ${f.tftpDir}`);
  const opt66 = masterIpFromConf(f.text);
  if (opt66 === null) bad.push('no dhcp-option=66 (the agent finds the master by it)');
  else if (f.masterIp !== null && opt66 !== f.masterIp) bad.push(`dhcp-option=66,${opt66}, not ${f.masterIp}`);
  if (value('dhcp-boot')?.split(',')[0] !== BOOT_SCRIPT) bad.push(`no dhcp-boot=${BOOT_SCRIPT}`);
  if (bad.length) return fail(`${pids}; ${f.conf}: ${bad.join('; ')}`, restage);
  return ok(`${pids}; ${f.conf}: tftp-root=${root}, dhcp-option=66,${opt66}`);
}

/** The announcement and the TFTP files on the master's disk: the sizes U-Boot will compare. */
export function checkAnnouncement(
  text: string | null,
  sizes: Record<string, number | null>,
): Verdict & { announcement?: Announcement } {
  const restage = 'run `builder stage` again: it writes the first stage and its announcement together';
  if (text === null) return fail(`no ${TFTP_DIR}/${ANNOUNCEMENT_FILE}`, restage);
  const p = parseAnnouncement(text);
  if (!p.ok) return fail(`${TFTP_DIR}/${ANNOUNCEMENT_FILE} is invalid: ${p.error}`, restage);
  const a = p.announcement;
  const bad: string[] = [];
  for (const [file, want] of [
    [KERNEL_GZ, a.kernelGz.size],
    [INITRAMFS, a.initramfs.size],
  ] as const) {
    const got = sizes[file] ?? null;
    if (got === null) bad.push(`${TFTP_DIR}/${file} is missing`);
    else if (got !== want) bad.push(`${TFTP_DIR}/${file} is ${got} bytes, the announcement says ${want}`);
  }
  if (bad.length)
    return {
      ...fail(`first stage ${a.id}: ${bad.join('; ')}: U-Boot on the nodes refuses it`, restage),
      announcement: a,
    };
  return { ...ok(`first stage ${a.id}, tries ${a.tries}`), announcement: a };
}

// ---------------------------------------------------------------------------------------------------------------
// TFTP

export type TftpResult =
  | { ok: true; bytes: number; crc: number; sha256: string; ms: number; blksize: number; data: Buffer | null }
  | { ok: false; kind: 'timeout' | 'server' | 'protocol' | 'socket'; message: string; bytes: number };

/** What a TFTP file should be: its size and sha256 (and, for the boot script, what its text must hold). */
export interface TftpWant {
  size: number;
  sha256: string;
  crc?: number;
  /** Where the expectation comes from, for the message: `the announcement`, `the file on disk`. */
  from: string;
}

/** The boot script as dnsmasq served it: a U-Boot script image that announces `id`. */
export function bootScriptProblem(data: Buffer, id: string | null): string | null {
  try {
    // a copy: readUImageHeader zeroes the header CRC of what it is given when that is a Buffer (Buffer#slice is a view)
    const h = readUImageHeader(Uint8Array.from(data.subarray(0, 64)));
    if (h.type !== 6) return `a U-Boot image of type ${h.type}, not a script`;
    if (h.size + 64 !== data.length) return `its header says ${h.size + 64} bytes`;
    if (crc32(data.subarray(64)) !== h.dcrc) return 'its data CRC does not match its header';
    if (id !== null && !data.includes(Buffer.from(`first stage ${id}`)))
      return `it does not announce first stage ${id}`;
    return null;
  } catch (e) {
    return `not a U-Boot image (${(e as Error).message})`;
  }
}

/** One TFTP file's verdict: dnsmasq answered, and the bytes are the ones the nodes' checks expect. */
export function checkTftp(
  file: string,
  r: TftpResult,
  want: TftpWant | null,
  o: { ip: string; conf: string; tftpDir: string; problem?: string | null },
): Verdict {
  const restart = `start dnsmasq (\`systemctl restart dnsmasq\`): it must serve TFTP on ${o.ip} (enable-tftp and tftp-root=${o.tftpDir} in ${o.conf}, interface=), with no firewall dropping UDP 69`;
  if (!r.ok) {
    if (r.kind === 'timeout') return fail(`dnsmasq does not answer: ${r.message}`, restart);
    if (r.kind === 'server')
      return fail(
        `dnsmasq answered with an error: ${r.message}`,
        `run \`builder stage\` (it writes ${o.tftpDir}/${file}); check tftp-root=${o.tftpDir} in ${o.conf} and that dnsmasq may read it`,
      );
    return fail(`${r.kind} error after ${r.bytes} bytes: ${r.message}`, restart);
  }
  const rate = r.ms > 0 && r.bytes > 1e6 ? `, ${(r.bytes / 1e3 / r.ms).toFixed(1)} MB/s` : '';
  const got = `${r.bytes} bytes from ${o.ip} in ${(r.ms / 1000).toFixed(2)} s (blksize ${r.blksize}${rate})`;
  const restage = `run \`builder stage\` again so ${o.tftpDir} and its announcement agree (was a file copied into tftp/ by hand?)`;
  if (want && (r.bytes !== want.size || r.sha256 !== want.sha256 || (want.crc !== undefined && r.crc !== want.crc)))
    return fail(
      `${got}, sha256 ${r.sha256.slice(0, 12)}…, but ${want.from} says ${want.size} bytes, sha256 ${want.sha256.slice(0, 12)}…: U-Boot on the nodes refuses it`,
      restage,
    );
  if (o.problem) return fail(`${got}, but ${o.problem}`, restage);
  return ok(`${got}${want ? `, as ${want.from} says` : ''}`);
}

const TFTP_ERRORS = [
  'not defined',
  'file not found',
  'access violation',
  'disk full',
  'illegal operation',
  'unknown transfer ID',
  'file exists',
  'no such user',
  'option refused',
];

/**
 * Read one file by TFTP (RFC 1350 with the blksize and tsize options, RFC 2347/2348), the way the nodes' U-Boot
 * does (blocksize 1468, 1 s timeout, 3 retries). Nothing is written; only `keep` bytes are held in memory, the
 * rest goes through CRC-32 and sha256.
 */
export function tftpGet(
  host: string,
  file: string,
  o: { port?: number; blksize?: number; timeoutMs?: number; retries?: number; keep?: number } = {},
): Promise<TftpResult> {
  const port = o.port ?? 69;
  const wantBlk = o.blksize ?? 1468;
  const timeoutMs = o.timeoutMs ?? 1000;
  const retries = o.retries ?? 3;
  const keep = o.keep ?? 0;
  return new Promise((done) => {
    const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    const hash = createHash('sha256');
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let blksize = 512;
    let expect = 1;
    let bytes = 0;
    let crc = 0;
    let tid: number | null = null;
    let last: { msg: Buffer; port: number } | null = null;
    let tries = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let finished = false;
    const t0 = performance.now();
    const finish = (r: TftpResult) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      done(r);
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (++tries > retries || !last) {
          const secs = ((timeoutMs * (retries + 1)) / 1000).toFixed(0);
          finish({
            ok: false,
            kind: 'timeout',
            message: `no TFTP answer from ${host}:${port} for ${file} in ${secs} s${bytes ? ` (after ${bytes} bytes)` : ''}`,
            bytes,
          });
          return;
        }
        sock.send(last.msg, last.port, host);
        arm();
      }, timeoutMs);
    };
    const send = (msg: Buffer, to: number) => {
      last = { msg, port: to };
      sock.send(msg, to, host);
      arm();
    };
    const ack = (block: number, to: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt16BE(4, 0);
      b.writeUInt16BE(block & 0xffff, 2);
      send(b, to);
    };
    sock.on('error', (e) => finish({ ok: false, kind: 'socket', message: e.message, bytes }));
    sock.on('message', (msg, rinfo) => {
      if (finished || msg.length < 4) return;
      if (tid === null) tid = rinfo.port;
      else if (rinfo.port !== tid) return; // another transfer's packet (RFC 1350: not ours)
      const op = msg.readUInt16BE(0);
      if (op === 5) {
        const code = msg.readUInt16BE(2);
        const text = oneLine(msg.subarray(4).toString('latin1').replace(/\0.*$/s, ''), 120);
        finish({
          ok: false,
          kind: 'server',
          message: `${text || TFTP_ERRORS[code] || 'error'} (TFTP error ${code})`,
          bytes,
        });
        return;
      }
      if (op === 6 && expect === 1) {
        const f = msg.subarray(2).toString('latin1').split('\0');
        for (let i = 0; i + 1 < f.length; i += 2)
          if ((f[i] ?? '').toLowerCase() === 'blksize') blksize = Number(f[i + 1]) || 512;
        if (blksize < 8 || blksize > wantBlk) {
          finish({ ok: false, kind: 'protocol', message: `the server chose blksize ${blksize}`, bytes });
          return;
        }
        tries = 0;
        ack(0, rinfo.port);
        return;
      }
      if (op !== 3) {
        finish({ ok: false, kind: 'protocol', message: `unexpected TFTP opcode ${op}`, bytes });
        return;
      }
      const block = msg.readUInt16BE(2);
      const data = msg.subarray(4);
      if (block === (expect & 0xffff)) {
        if (data.length > blksize) {
          finish({
            ok: false,
            kind: 'protocol',
            message: `block ${expect} has ${data.length} bytes (blksize ${blksize})`,
            bytes,
          });
          return;
        }
        bytes += data.length;
        crc = crc32(data, crc);
        hash.update(data);
        if (keptBytes < keep) {
          const piece = data.subarray(0, keep - keptBytes);
          kept.push(Buffer.from(piece));
          keptBytes += piece.length;
        }
        tries = 0;
        expect++;
        if (data.length < blksize) {
          // the last ACK once, without waiting: the server's retransmission of the last block (our ACK lost) ends anyway
          const b = Buffer.alloc(4);
          b.writeUInt16BE(4, 0);
          b.writeUInt16BE(block, 2);
          sock.send(b, rinfo.port, host, () =>
            finish({
              ok: true,
              bytes,
              crc,
              sha256: hash.digest('hex'),
              ms: performance.now() - t0,
              blksize,
              data: keep ? Buffer.concat(kept) : null,
            }),
          );
          clearTimeout(timer);
          return;
        }
        ack(block, rinfo.port);
      } else if (block === ((expect - 1) & 0xffff)) ack(block, rinfo.port); // a duplicate: our ACK was lost
    });
    const opts = ['octet', 'blksize', String(wantBlk), 'tsize', '0'];
    const rrq = Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${file}\0${opts.join('\0')}\0`, 'latin1')]);
    sock.bind(0, () => send(rrq, port));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// ssh and rsync through the node key

export interface ProcResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Why an ssh or rsync-over-ssh run failed, for the admin; null when the output says nothing about ssh. */
export function sshProblem(stderr: string, o: { ip: string; port: number; hostKey: string }): Verdict | null {
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|No .* host key is known/i.test(stderr))
    return fail(
      `the master's sshd at ${o.ip} serves another host key than ${o.hostKey}: nodes pinned to it stop with a fatal error`,
      `give --master-host-key the key sshd serves, and run \`builder pack --master-host-key <it>\` and \`builder stage\` so the nodes pin it`,
    );
  if (/Permission denied|Too many authentication failures/i.test(stderr))
    return fail(
      `sshd at ${o.ip} refused the node key: ${why(stderr)}`,
      "run `builder stage --keys <dir> --authorized-keys <root's authorized_keys>`, and check AuthorizedKeysFile and PermitRootLogin prohibit-password in sshd_config",
    );
  if (
    /Connection refused|Connection timed out|No route to host|Network is unreachable|Could not resolve|Connection closed|kex_exchange/i.test(
      stderr,
    )
  )
    return fail(
      `no SSH on ${o.ip}:${o.port}: ${why(stderr)}`,
      `start sshd (\`systemctl restart ssh\`) and check it listens on ${o.ip}:${o.port}`,
    );
  return null;
}

/** The node key lists stamps/ through sshd: it is accepted and can read the master tree. */
export function checkSshRead(
  r: ProcResult,
  o: { ip: string; port: number; hostKey: string; pinned: boolean },
): Verdict {
  if (r.status === 0) {
    const names = r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(4).join(' '))
      .filter((n) => n && n !== '.');
    const what = `the node key lists ${STAMP_DIR}/ through sshd at ${o.ip}:${o.port} (${names.join(', ') || 'empty'})`;
    return o.pinned
      ? ok(`${what}, host key pinned`)
      : warn(
          `${what}; the host key was not checked (cannot read ${o.hostKey})`,
          'pass --master-host-key <the key the initramfs pins>',
        );
  }
  const s = sshProblem(r.stderr, o);
  if (s) return s;
  if (/write-only|does not run rsync|not allowed/i.test(r.stderr))
    return fail(
      `sshd accepted the node key, but its command refused the read: ${why(r.stderr)}`,
      'the node key line must be `rrsync -ro <master root>`: see the node key line check',
    );
  return fail(
    `rsync --list-only ${STAMP_DIR}/ through the node key failed (exit ${r.status}): ${why(r.stderr)}`,
    "see the node key line check, and sshd's log (journalctl -u ssh)",
  );
}

/** An rsync upload through the node key must be refused, and nothing must land in the tree. */
export function checkSshWrite(
  r: ProcResult,
  o: { ip: string; port: number; hostKey: string; landed: boolean; probe: string },
): Verdict {
  if (o.landed || r.status === 0)
    return fail(
      `an rsync upload through the node key was accepted${o.landed ? ` (it wrote ${o.probe}; removed again)` : ''}: anyone with the initramfs can write the master tree`,
      'give the node key its read-only line again: see the node key line check',
    );
  if (/sending to read-only server is not allowed/.test(r.stderr))
    return ok('an rsync upload is refused: rrsync -ro says "sending to read-only server is not allowed"');
  if (sshProblem(r.stderr, o)) return warn(`not checked: no SSH session (${why(r.stderr)})`, 'see the ssh read check');
  return ok(`an rsync upload is refused (exit ${r.status}): ${why(r.stderr)}`);
}

/** A command other than rsync through the node key must not run. */
export function checkSshShell(r: ProcResult, token: string, o: { ip: string; port: number; hostKey: string }): Verdict {
  if (r.stdout.includes(token))
    return fail(
      'a shell command ran through the node key: anyone with the initramfs has a shell on the master',
      'give the node key its read-only line again (restrict, command="… rrsync -ro …"): see the node key line check',
    );
  if (r.status === 255 && sshProblem(r.stderr, o))
    return warn(`not checked: no SSH session (${why(r.stderr)})`, 'see the ssh read check');
  return ok(`a shell command is refused (exit ${r.status}): ${why(r.stderr) || 'no output'}`);
}

// ---------------------------------------------------------------------------------------------------------------
// effects

/**
 * `builder doctor --mirror-of PRIMARY` on a mirror: does it serve what the primary published? From the stamp
 * comparison (or why the primary could not be read) and the state its last pull left (reports/mirror.state).
 */
export function checkMirrorServes(
  compared: { states: readonly MirrorState[] } | { error: string },
  stateText: string | null,
  primary: string,
): Verdict {
  const f = stateText === null ? null : parseMirrorState(stateText);
  let last = stateText !== null && f === null ? '; its pull state is unreadable' : '';
  if (f?.pulled !== undefined) last = `; last pull ${oneLine(f.pulled).slice(0, 40)}`;
  if (f?.error !== undefined) last += ` failed: ${oneLine(f.error).slice(0, 300)}`;
  const pull = `run \`builder mirror --primary ${primary}\` and check its timer (\`systemctl status clusterboot-mirror.timer\`)`;
  if ('error' in compared)
    return warn(
      `cannot compare with the primary ${primary}: ${compared.error}${last}`,
      `check that the primary is up and lets this mirror's key read (\`builder mirror --allow <this mirror> --key ...\` there)`,
    );
  const v = mirrorVerdict(compared.states);
  if (compared.states.some((x) => !x.whole)) return fail(`${v.text}${last}`, pull);
  if (!v.current) return warn(`behind the primary ${primary}: ${v.text}${last}`, pull);
  return ok(`serves what the primary ${primary} published: ${v.text}${last}`);
}

export interface DoctorOptions {
  masterRoot: string;
  /** The master's address on the cluster LAN; default dhcp-option=66 of the dnsmasq configuration. */
  masterIp?: string;
  keysDir: string;
  authorizedKeys: string;
  stateDir: string;
  dnsmasqConf: string;
  /** The host key the initramfs pins (what `builder pack --master-host-key` took). */
  masterHostKey: string;
  masterUser?: string;
  masterPort?: number;
  tftpPort?: number;
  tftpTimeoutMs?: number;
  /** On a mirror: its primary, as rsync names it (`ip:` with `rsh`, or a local master root), and its address. */
  mirrorOf?: { primary: string; source: string; rsh?: string };
}

export interface DoctorReport {
  checks: Check[];
  ok: number;
  warn: number;
  fail: number;
}

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<ProcResult> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string }) | null;
      const status = e ? (typeof e.code === 'number' ? e.code : -1) : 0;
      res({
        status,
        stdout: String(stdout),
        stderr: `${String(stderr)}${e && typeof e.code !== 'number' ? e.message : ''}`,
      });
    });
  });
}

const kindOf = (st: Stats | undefined): EntryKind =>
  !st ? 'missing' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';

const lst = (p: string) => {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
};
const st = (p: string) => {
  try {
    return statSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
};

function smallText(path: string, max: number): { text: string | null; unreadable?: string } {
  const r = readSmallFile(path, max);
  if (r.kind === 'read') return { text: r.data.toString('utf8') };
  if (r.kind === 'gone') return { text: null };
  if (r.kind === 'not a file') return { text: null, unreadable: `is ${r.what}` };
  if (r.kind === 'too large') return { text: null, unreadable: `is ${r.size} bytes (over ${max})` };
  return { text: null, unreadable: `cannot be read (${r.message})` };
}

/** What a tree takes on disk, like `du -sx`: hard links once, not crossing into other filesystems. */
export function diskUsage(dir: string): number {
  const top = lst(dir);
  if (!top?.isDirectory()) return 0;
  const seen = new Set<string>();
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop() as string;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      const p = join(d, n);
      const s = lst(p);
      if (!s || s.dev !== top.dev) continue;
      if (s.nlink > 1 && !s.isDirectory()) {
        const id = `${s.ino}`;
        if (seen.has(id)) continue;
        seen.add(id);
      }
      total += s.blocks * 512;
      if (s.isDirectory()) stack.push(p);
    }
  }
  return total;
}

/** dnsmasq processes in this network namespace (by /proc/<pid>/comm): one in another namespace serves other addresses. */
function dnsmasqPids(): number[] {
  const out: number[] = [];
  const ns = (pid: string) => {
    try {
      return readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      return null;
    }
  };
  const mine = ns('self');
  let names: string[] = [];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      if (readFileSync(`/proc/${n}/comm`, 'utf8').trim() !== 'dnsmasq') continue;
    } catch {
      continue; // gone
    }
    const theirs = ns(n);
    if (mine === null || theirs === null || theirs === mine) out.push(Number(n));
  }
  return out;
}

/** The blob of an OpenSSH public key file, or null. */
function pubBlob(path: string): string | null {
  try {
    return parsePubKey(readFileSync(path, 'utf8'), path).blob;
  } catch {
    return null;
  }
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

// Why: every fact the verdicts need, gathered once; TFTP and the ssh probes run side by side (both wait on the net).
export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const root = resolve(o.masterRoot);
  const tftpDir = join(root, TFTP_DIR);
  const keys = resolve(o.keysDir);
  const authFile = resolve(o.authorizedKeys);
  const stateDir = resolve(o.stateDir);
  const port = o.masterPort ?? 22;
  const user = o.masterUser ?? 'root';
  const checks: Check[] = [];
  const add = (name: string, v: Verdict) =>
    checks.push(named(name, { level: v.level, detail: v.detail, ...(v.remedy ? { remedy: v.remedy } : {}) }));

  // the tree
  const entries: Record<string, EntryKind> = {};
  for (const rel of [PARTITION_TABLE, BOOTFS_DIR, ROOTFS_DIR, `${ROOTFS_DIR}/sbin/init`, STAMP_DIR, TFTP_DIR])
    entries[rel] = kindOf(lst(join(root, rel)));
  // the node list and the reports: in the state dir, out of the node key's reach
  for (const rel of [NODES_LIST, REPORT_DIR]) entries[rel] = kindOf(lst(join(stateDir, rel)));
  add('tree', checkTree(root, entries));
  const authText = smallText(authFile, 1 << 20).text ?? '';
  add(
    'private files',
    checkPrivateFiles({
      root,
      stateDir,
      publicSecrets: publicSecrets(root),
      leftovers: publicLeftovers(root),
      enrolled: authText
        .split('\n')
        .map((l) => parseEnrolLine(l.trim(), stateDir)?.host)
        .filter((h): h is string => h !== undefined),
    }),
  );

  // the first stage as announced, and dnsmasq
  const ann = smallText(join(tftpDir, ANNOUNCEMENT_FILE), 4096);
  const sizeOf = (f: string) => {
    const s = lst(join(tftpDir, f));
    return s?.isFile() ? s.size : null;
  };
  const annV = checkAnnouncement(ann.text, { [KERNEL_GZ]: sizeOf(KERNEL_GZ), [INITRAMFS]: sizeOf(INITRAMFS) });
  add('first stage', annV);
  const a = annV.announcement ?? null;
  const conf = smallText(o.dnsmasqConf, 1 << 20);
  const ip = o.masterIp ?? masterIpFromConf(conf.text);
  add('dnsmasq', checkDnsmasq({ conf: o.dnsmasqConf, text: conf.text, tftpDir, masterIp: ip, pids: dnsmasqPids() }));

  // the keys and their lines
  const nodeBlob = pubBlob(join(keys, 'node_ed25519.pub'));
  const reportBlob = pubBlob(join(keys, 'report_ed25519.pub'));
  const auth = smallText(authFile, 1 << 20);
  const stageFix = `run \`builder keys --dir ${keys}\` and \`builder stage --keys ${keys} --authorized-keys ${authFile}\``;
  const nodeV = checkKeyLines(auth.text, nodeBlob, authFile, 'node key', (l) => checkKeyLine(l, root), stageFix);
  const reportV = checkKeyLines(
    auth.text,
    reportBlob,
    authFile,
    'report key',
    (l) => checkReportKeyLine(l, root),
    stageFix,
  );

  const tmp = mkdtempSync(join(tmpdir(), 'cb-doctor-'));
  try {
    let pinned = false;
    const knownHosts = join(tmp, 'known_hosts');
    try {
      writeFileSync(knownHosts, `${knownHostsLine(readFileSync(o.masterHostKey, 'utf8'))}\n`);
      pinned = true;
    } catch {
      writeFileSync(knownHosts, '');
    }
    const sshArgs = ['-F', '/dev/null', '-i', join(keys, 'node_ed25519'), '-p', String(port), '-l', user];
    for (const opt of [
      'IdentitiesOnly=yes',
      `UserKnownHostsFile=${knownHosts}`,
      'GlobalKnownHostsFile=/dev/null',
      `HostKeyAlias=${HOST_ALIAS}`,
      `StrictHostKeyChecking=${pinned ? 'yes' : 'no'}`,
      'BatchMode=yes',
      'ConnectTimeout=5',
      'ControlPath=none',
      'LogLevel=ERROR',
    ])
      sshArgs.push('-o', opt);
    const rsyncE = ['ssh', ...sshArgs].map(q).join(' ');
    const rsyncBin = st('/usr/bin/rsync') ? '/usr/bin/rsync' : 'rsync';
    const probeName = `.clusterboot-doctor-probe-${process.pid}`;
    const probe = join(root, probeName);
    const sshFacts =
      ip === null
        ? null
        : (async () => {
            const host = ip as string;
            const remote = (p: string) => `${host.includes(':') ? `[${host}]` : host}:${p}`;
            const read = await run(rsyncBin, ['--list-only', '-e', rsyncE, remote(`${STAMP_DIR}/`)]);
            writeFileSync(join(tmp, 'probe'), 'clusterboot doctor: this file must never reach the master\n');
            const existed = Boolean(lst(probe));
            const write = await run(rsyncBin, ['-e', rsyncE, join(tmp, 'probe'), remote(probeName)]);
            const landed = !existed && Boolean(lst(probe));
            if (landed) rmSync(probe, { force: true });
            const token = `clusterboot-doctor-${process.pid}-${Date.now()}`;
            const shell = await run('ssh', [...sshArgs, '-n', '-T', host, `echo ${token}`]);
            return { read, write, landed, shell, token };
          })();

    const tftpFacts =
      ip === null
        ? null
        : (async () => {
            const t = { port: o.tftpPort ?? 69, timeoutMs: o.tftpTimeoutMs ?? 1000 };
            const script = await tftpGet(ip, BOOT_SCRIPT, { ...t, keep: 1 << 20 });
            if (!script.ok && script.kind === 'timeout') return { script, files: null };
            const files: Array<[string, TftpResult]> = [];
            for (const f of [KERNEL_GZ, INITRAMFS]) files.push([f, await tftpGet(ip, f, t)]);
            return { script, files };
          })();

    const [tf, sf] = await Promise.all([tftpFacts, sshFacts]);
    const tftpOpts = { ip: ip ?? '?', conf: o.dnsmasqConf, tftpDir };
    if (ip === null || tf === null) {
      const v = fail(
        `no master address: ${o.dnsmasqConf} has no dhcp-option=66`,
        "pass --master-ip <the master's address on the cluster LAN>",
      );
      for (const f of [BOOT_SCRIPT, KERNEL_GZ, INITRAMFS]) add(`tftp ${f}`, v);
    } else {
      let scriptWant: TftpWant | null = null;
      try {
        const disk = readFileSync(join(tftpDir, BOOT_SCRIPT));
        scriptWant = {
          size: disk.length,
          sha256: createHash('sha256').update(disk).digest('hex'),
          from: `${TFTP_DIR}/${BOOT_SCRIPT} on disk`,
        };
      } catch {
        /* the server's answer says what is missing */
      }
      const problem = tf.script.ok && tf.script.data ? bootScriptProblem(tf.script.data, a?.id ?? null) : null;
      add(`tftp ${BOOT_SCRIPT}`, checkTftp(BOOT_SCRIPT, tf.script, scriptWant, { ...tftpOpts, problem }));
      for (const [f, which] of [
        [KERNEL_GZ, a?.kernelGz],
        [INITRAMFS, a?.initramfs],
      ] as const) {
        const r = tf.files?.find(([n]) => n === f)?.[1];
        if (!r)
          add(
            `tftp ${f}`,
            fail(
              `not tried: dnsmasq did not answer for ${BOOT_SCRIPT}`,
              `start dnsmasq (\`systemctl restart dnsmasq\`)`,
            ),
          );
        else
          add(
            `tftp ${f}`,
            checkTftp(
              f,
              r,
              which ? { size: which.size, sha256: which.sha256, crc: which.crc, from: ANNOUNCEMENT_FILE } : null,
              tftpOpts,
            ),
          );
      }
    }
    add('initramfs size', checkInitramfsSize(sizeOf(INITRAMFS)));

    add('node key line', nodeV);
    add('report key line', reportV);
    const files: CommandFile[] = [];
    const cmd = (nodeV as { command?: NodeCommand }).command;
    const fstat = (p: string) => {
      const s = st(p);
      return s ? { isFile: s.isFile(), isDirectory: s.isDirectory(), mode: s.mode } : null;
    };
    if (cmd) {
      files.push({
        path: cmd.rrsync,
        what: 'rrsync',
        kind: 'program',
        stat: fstat(cmd.rrsync),
        remedy: 'apt install rsync (Debian ships /usr/bin/rrsync with it)',
      });
      if (cmd.syncSlot) {
        const fix = `run \`builder stage --state-dir ${dirname(cmd.syncSlot.script)}\` again (it installs sync-slot and its slots folder)`;
        files.push({
          path: cmd.syncSlot.script,
          what: 'sync-slot',
          kind: 'program',
          stat: fstat(cmd.syncSlot.script),
          remedy: fix,
        });
        files.push({
          path: cmd.syncSlot.slotsDir,
          what: 'slots folder',
          kind: 'directory',
          stat: fstat(cmd.syncSlot.slotsDir),
          remedy: fix,
        });
      }
    }
    const sink = (reportV as { sink?: string }).sink;
    if (sink) {
      files.push({
        path: PYTHON,
        what: 'python3',
        kind: 'program',
        stat: fstat(PYTHON),
        remedy: 'apt install python3',
      });
      files.push({
        path: sink,
        what: 'report sink',
        kind: 'script',
        stat: fstat(sink),
        remedy: `run \`builder stage --state-dir ${dirname(sink)}\` again (it installs the report sink)`,
      });
    }
    add(
      'key commands',
      cmd || sink
        ? checkCommandFiles(files)
        : fail('no valid key line to take the commands from', 'see the key line checks'),
    );

    const hostOpts = { ip: ip ?? '?', port, hostKey: o.masterHostKey };
    if (!sf) {
      const v = fail('no master address to connect to', "pass --master-ip <the master's address on the cluster LAN>");
      for (const n of ['ssh read', 'ssh write', 'ssh shell']) add(n, v);
    } else {
      add('ssh read', checkSshRead(sf.read, { ...hostOpts, pinned }));
      add('ssh write', checkSshWrite(sf.write, { ...hostOpts, landed: sf.landed, probe }));
      add('ssh shell', checkSshShell(sf.shell, sf.token, hostOpts));
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  // stamps
  const pubPem = (() => {
    try {
      return readFileSync(join(keys, 'stamp_ed25519.pub.pem'), 'utf8');
    } catch {
      return null;
    }
  })();
  for (const name of STAMP_NAMES) {
    const s = smallText(join(root, stampPath(name)), 64 * 1024);
    const sig = smallText(join(root, sigPath(name)), 64 * 1024);
    add(
      `stamp ${name}`,
      checkStamp(name, s.text, {
        ...(s.unreadable !== undefined ? { unreadable: s.unreadable } : {}),
        sig: sig.text,
        publicKeyPem: pubPem,
        masterRoot: root,
      }),
    );
  }

  // rsync, modes, space
  const rv = await run(st('/usr/bin/rsync') ? '/usr/bin/rsync' : 'rsync', ['--version'], 10_000);
  add('rsync', checkRsyncVersion(rv.status === 0 ? (rv.stdout.split('\n')[0] ?? '') : null));

  const mode = (p: string) => st(p)?.mode ?? null;
  add(
    'key modes',
    checkKeyModes([
      { path: keys, kind: 'directory', mode: mode(keys), required: true, fix: `run \`builder keys --dir ${keys}\`` },
      {
        path: join(keys, 'node_ed25519'),
        kind: 'private key',
        mode: mode(join(keys, 'node_ed25519')),
        required: true,
        fix: `run \`builder keys --dir ${keys}\``,
      },
      {
        path: join(keys, 'report_ed25519'),
        kind: 'private key',
        mode: mode(join(keys, 'report_ed25519')),
        required: false,
      },
      {
        path: join(keys, 'stamp_ed25519.pem'),
        kind: 'private key',
        mode: mode(join(keys, 'stamp_ed25519.pem')),
        required: false,
      },
      { path: authFile, kind: 'authorized_keys', mode: mode(authFile), required: true, fix: stageFix },
      { path: dirname(authFile), kind: 'directory', mode: mode(dirname(authFile)), required: true, fix: stageFix },
    ]),
  );

  if (o.mirrorOf) {
    const m = o.mirrorOf;
    let compared: { states: MirrorState[] } | { error: string };
    try {
      compared = { states: checkMirror({ source: m.source, dest: root, ...(m.rsh ? { rsh: m.rsh } : {}) }) };
    } catch (e) {
      compared = { error: (e as Error).message };
    }
    add(
      'mirror',
      checkMirrorServes(compared, smallText(join(stateDir, REPORT_DIR, MIRROR_STATE), 64 * 1024).text, m.primary),
    );
  }

  try {
    const fs = statfsSync(root);
    const space: SpaceFacts = {
      root,
      freeBytes: fs.bavail * fs.bsize,
      rootfsBytes: diskUsage(join(root, ROOTFS_DIR)),
      stageBytes: diskUsage(tftpDir),
    };
    const sd = st(stateDir);
    const rd = st(root);
    if (sd && rd && sd.dev !== rd.dev) {
      const s = statfsSync(stateDir);
      space.state = { dir: stateDir, freeBytes: s.bavail * s.bsize, freeInodes: s.ffree };
    }
    add('free space', checkFreeSpace(space));
  } catch (e) {
    add('free space', fail(`cannot statfs ${root}: ${(e as Error).message}`, `check that ${root} exists`));
  }

  return {
    checks,
    ok: checks.filter((c) => c.level === 'ok').length,
    warn: checks.filter((c) => c.level === 'warn').length,
    fail: checks.filter((c) => c.level === 'fail').length,
  };
}

/** One line per check (`ok   name: detail`, `FAIL name: detail; remedy: …`, `warn …`) and a summary line. */
export function renderDoctor(r: DoctorReport): string {
  const tag: Record<Level, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };
  const lines = r.checks.map(
    (c) => `${tag[c.level]} ${c.name}: ${c.detail}${c.level !== 'ok' && c.remedy ? `; remedy: ${c.remedy}` : ''}`,
  );
  const n = r.checks.length;
  lines.push(
    `doctor: ${n} check${n === 1 ? '' : 's'}: ${r.ok} ok, ${r.warn} warning${r.warn === 1 ? '' : 's'}, ${r.fail} failed${r.fail ? '' : ': the master is ready for its nodes'}`,
  );
  return `${lines.join('\n')}\n`;
}

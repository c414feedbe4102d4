// `builder status`: the fleet as the master sees it, from its own files only: nodes.list (written by `builder
// stage`), reports/<mac>.json (pushed by each node at the end of a boot) and stamps/rootfs.stamp.
// "Last boot" is a report file's mtime, i.e. the master's clock when the report arrived, never a time a node sent
// (a Pi without an RTC boots in 1970). Reports are untrusted input: a bad one gives a row saying why, never a throw.
// Approval mode (approve.ts): a node waiting for a table change to be approved shows WAITING, the lines that change,
// and the command that approves it.
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPORT_SCHEMA, reportName, type BootReport } from '../../agent/contract/report.ts';
import { REPORT_DIR, APPROVAL_REQUIRED, NODES_LIST } from '../../agent/contract/tree.ts';
import { parseStamp, STAMP_NAMES, stampPath, type StampName } from '../../agent/contract/stamp.ts';
import { readSmallFile } from '../../agent/contract/smallread.ts';
import { ENROL_KEY_LINE, HOST_KEY_LINE } from '../../agent/contract/report.ts';
import {
  readApprovals,
  readTableHash,
  approvalState,
  escapeName,
  listNames,
  type ApprovalFor,
  type DirName,
} from './approve.ts';
import { normalizeMac, parseNodeList, type NodeEntry } from './nodelist.ts';

export type RowResult = 'ok' | 'ALARM' | 'reboot' | 'WAITING' | 'FATAL' | 'never booted' | 'unreadable report';

/** A table change in approval mode, from the node's last report and the master's approval file. */
export interface RowApproval {
  /** pending: the node has not repartitioned; approved: it applied an approved table on that boot. */
  state: 'pending' | 'approved';
  /** sha256 of the table the node was offered (the master's partitions.sfdisk when it booted). */
  tableSha256: string;
  /** The master's approved/<host> holds tableSha256: the change applies at the node's next boot. */
  approved: boolean;
  meanwhile: string;
  /** The table lines that differ: '- ' the disk's now, '+ ' the master's; at most 8 lines. */
  diff: string[];
}

export interface StatusRow {
  /** The listed hostname, else the report's; null when neither says. */
  hostname: string | null;
  mac: string;
  /** The listed IP, else the one the report says the node had. */
  ip: string | null;
  /** In nodes.list (false: a report from a MAC that is not). */
  listed: boolean;
  /** Report file, relative to the master root; null: no report. */
  report: string | null;
  /** When the report arrived (the file's mtime, master's clock), ISO; null: no report. */
  lastBoot: string | null;
  lastBootMs: number | null;
  /** Seconds between the report's arrival and `now`. */
  ageSeconds: number | null;
  result: RowResult;
  /** `current`, `behind (have X, master Y)`, `ahead (have X, master Y)` or `unknown`. */
  root: string;
  overlay: string | null;
  /** Sum of the phases' seconds. */
  totalSeconds: number | null;
  /** Compact phase timings: `master 1.2 disk 0.3 root 4.1!` (`!`: the phase failed). */
  phases: string;
  /** The same phases one by one, for the timeline of `builder status --html`; absent without a readable report. */
  phaseTimes?: Array<{ name: string; seconds: number; failed: boolean }>;
  notes: string[];
  /** Present when the last report carries a table change in approval mode. */
  approval?: RowApproval;
  /** The public host keys the node's last report carries (`type base64`); absent without them. */
  hostKeys?: string[];
  /** The public enrolment key the node's last report carries (`ssh-ed25519 base64`), for `builder enrol`. */
  enrolKey?: string;
  /** The master that served the node's last boot (escaped); absent in older reports or an offline boot. */
  master?: string;
  /** The last report came with the node's own enrolment key (the sink says so): proof of the sender, not a claim. */
  enrolled?: boolean;
}

export interface ReportFile {
  /** Name inside reports/, raw (statusRows escapes it wherever it is shown). */
  file: string;
  text: string;
  mtimeMs: number;
  /** Set when the file could not be read (too large, permissions): the row says this instead of parsing text. */
  error?: string;
}

export interface MasterStamp {
  /** The master's current rootfs stamp id; null when it has none or it does not parse. */
  id: string | null;
  /** Why id is null. */
  problem: string | null;
}

/** The master's rootfs stamp from its file text (null: no file). */
export function masterStamp(text: string | null): MasterStamp {
  if (text === null) return { id: null, problem: 'no rootfs stamp: run `builder publish rootfs`' };
  const p = parseStamp(text);
  if (!p.ok) return { id: null, problem: `rootfs stamp is invalid (${p.error}): run \`builder publish rootfs\`` };
  return { id: p.stamp.id, problem: null };
}

const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;
const cut = (t: string, max: number) => (t.length > max ? `${t.slice(0, max - 1)}…` : t);

// Display text from a node: no control characters (a report must not drive the terminal), bounded length.
function clean(s: string, max = 160): string {
  return cut(s.replace(CONTROL, '?'), max);
}

// A file name from reports/ with visible escapes (\x1b), so the operator can tell which file to remove.
const shownName = (s: string, max: number) => cut(escapeName(s), max);

const Y2000 = Date.parse('2000-01-01T00:00:00Z');
/** A report file time later than the master's clock by more than this is not an arrival time. */
const FUTURE_SLACK_MS = 86_400_000;

/** ISO text of a time; null when Date cannot show it (NaN, beyond ±8.64e15 ms). */
function safeIso(ms: number): string | null {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : null;
}

// Why: only a time the master's clock could have given is an arrival time; a forged 2099 mtime must not win or throw.
const plausibleTime = (ms: number, now: number) => Number.isFinite(ms) && ms >= Y2000 && ms <= now + FUTURE_SLACK_MS;

type Parsed = { ok: true; report: BootReport } | { ok: false; error: string };

// Why: only the fields status shows are checked, each for its type, so an agent that adds fields still reads.
export function parseReport(text: string): Parsed {
  const fail = (error: string): Parsed => ({ ok: false, error });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return fail(`not JSON (${clean((e as Error).message, 80)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('not a JSON object');
  const r = v as Record<string, unknown>;
  if (r.schema !== REPORT_SCHEMA) {
    return fail(
      `schema ${clean(JSON.stringify(r.schema) ?? 'missing', 20)}, this builder reads ${REPORT_SCHEMA}: update the builder or the agent so they match`,
    );
  }
  const str = (k: string) => typeof r[k] === 'string';
  const strOrNull = (o: Record<string, unknown>, k: string) => typeof o[k] === 'string' || o[k] === null;
  if (!str('mac') || normalizeMac(r.mac as string) === null) return fail('mac is missing or not a MAC');
  if (!['ok', 'reboot', 'fatal', 'waiting'].includes(r.result as string)) {
    return fail(`result ${clean(JSON.stringify(r.result) ?? 'missing', 20)} is not ok, reboot, fatal or waiting`);
  }
  for (const k of ['hostname', 'ip', 'overlay'])
    if (!strOrNull(r, k)) return fail(`${k} is missing or not a string or null`);
  if (!['dhcp', 'cmdline', null].includes(r.hostnameFrom as string | null))
    return fail('hostnameFrom is not dhcp, cmdline or null');
  for (const k of ['reason', 'remedy']) if (r[k] !== undefined && !str(k)) return fail(`${k} is not a string`);
  if (!Array.isArray(r.phases)) return fail('phases is not an array');
  for (const p of r.phases as unknown[]) {
    const q = p as Record<string, unknown> | null;
    if (
      typeof q !== 'object' ||
      q === null ||
      typeof q.name !== 'string' ||
      typeof q.seconds !== 'number' ||
      !Number.isFinite(q.seconds) ||
      q.seconds < 0
    ) {
      return fail('a phase is not { name, seconds >= 0 }');
    }
  }
  const st = r.stamps as Record<string, unknown> | null;
  if (
    typeof st !== 'object' ||
    st === null ||
    !strOrNull(st, 'rootBefore') ||
    !strOrNull(st, 'rootAfter') ||
    !strOrNull(st, 'masterRoot')
  ) {
    return fail('stamps is not { rootBefore, rootAfter, masterRoot } of strings or null');
  }
  if (!Array.isArray(r.errors) || (r.errors as unknown[]).some((e) => typeof e !== 'string'))
    return fail('errors is not an array of strings');
  if (
    r.alarms !== undefined &&
    (!Array.isArray(r.alarms) || (r.alarms as unknown[]).some((e) => typeof e !== 'string'))
  )
    return fail('alarms is not an array of strings');
  if (
    r.hostKeys !== undefined &&
    (!Array.isArray(r.hostKeys) ||
      (r.hostKeys as unknown[]).some((k) => typeof k !== 'string' || !HOST_KEY_LINE.test(k)))
  )
    return fail('hostKeys is not an array of "type base64" public keys');
  if (r.enrolKey !== undefined && (typeof r.enrolKey !== 'string' || !ENROL_KEY_LINE.test(r.enrolKey)))
    return fail('enrolKey is not an "ssh-ed25519 base64" public key');
  if (r.master !== undefined && (typeof r.master !== 'string' || r.master.length > 255))
    return fail('master is not a host name or address');
  if (
    r.failover !== undefined &&
    (!Array.isArray(r.failover) || (r.failover as unknown[]).some((e) => typeof e !== 'string'))
  )
    return fail('failover is not an array of strings');
  if (r.approval !== undefined) {
    const a = r.approval as Record<string, unknown> | null;
    if (
      typeof a !== 'object' ||
      a === null ||
      Array.isArray(a) ||
      !['pending', 'approved'].includes(a.state as string) ||
      typeof a.tableSha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(a.tableSha256) ||
      !strOrNull(a, 'current') ||
      typeof a.wanted !== 'string' ||
      !['booting the current root', 'waiting'].includes(a.meanwhile as string)
    ) {
      return fail(
        'approval is not { state: pending|approved, tableSha256: sha256 hex, current: string|null, wanted: string, meanwhile }',
      );
    }
  }
  return { ok: true, report: v as BootReport };
}

const seqOf = (id: string) => Number(/^(\d+)-/.exec(id)?.[1] ?? NaN);

function rootState(have: string | null, master: string | null): string {
  if (have === null || master === null) return 'unknown';
  if (have === master) return 'current';
  const ahead = seqOf(have) > seqOf(master);
  return `${ahead ? 'ahead' : 'behind'} (have ${clean(have, 40)}, master ${master})`;
}

const UNKNOWN_MAC = 'unknown MAC: not in nodes.list, so no fixed lease';

/** At most this many diff lines per table change. */
export const MAX_DIFF_LINES = 8;

// Why: an operator approves a repartition, which wipes the disk: show what changes, not two whole tables. Lines are
// compared as sets (sfdisk -d has one line per partition): '- ' lines only the disk has, '+ ' lines only the master's
// table has, in their tables' order; blank lines ignored; beyond `max` lines the last one counts the rest.
export function tableDiff(current: string | null, wanted: string, max = MAX_DIFF_LINES): string[] {
  const lines = (t: string | null) =>
    (t ?? '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
  const cur = lines(current);
  const want = lines(wanted);
  const minus = cur.filter((l) => !want.includes(l)).map((l) => `- ${clean(l, 100)}`);
  const plus = want.filter((l) => !cur.includes(l)).map((l) => `+ ${clean(l, 100)}`);
  const all = [...(current === null ? ['- (no partition table on the disk)'] : []), ...minus, ...plus];
  return all.length > max ? [...all.slice(0, max - 1), `… ${all.length - max + 1} more differing lines`] : all;
}

// Why: one row per node the master knows, in list order, then the reports from MACs it does not know; everything
// the table and --json show is decided here, from the files' contents and the clock passed in.
export function statusRows(input: {
  nodes: NodeEntry[];
  reports: ReportFile[];
  /** Text of stamps/rootfs.stamp; null: no file. */
  masterStamp: string | null;
  now: number;
  /** The master's approvals: lower-cased host name -> approved table hash (approved/<host>). */
  approvals?: ReadonlyMap<string, string>;
}): StatusRow[] {
  const master = masterStamp(input.masterStamp);
  // newest report per MAC; the MAC is the report's own, else the file name's (for unreadable ones)
  type Got = { file: ReportFile; parsed: Parsed; mac: string | null };
  const byMac = new Map<string, Got[]>();
  const orphans: Got[] = [];
  // newest plausible time first; implausible times rank last, so a forged future mtime never masks a real report
  const rank = (f: ReportFile) => (plausibleTime(f.mtimeMs, input.now) ? f.mtimeMs : -Infinity);
  const order = (a: ReportFile, b: ReportFile) => {
    const ra = rank(a);
    const rb = rank(b);
    return ra !== rb ? (rb > ra ? 1 : -1) : a.file < b.file ? -1 : a.file > b.file ? 1 : 0;
  };
  for (const f of [...input.reports].sort(order)) {
    const parsed: Parsed = f.error !== undefined ? { ok: false, error: clean(f.error, 200) } : parseReport(f.text);
    const fromName = normalizeMac(f.file.replace(/\.json$/, '').replace(/-/g, ':'));
    const mac = parsed.ok ? (normalizeMac(parsed.report.mac) as string) : fromName;
    const got: Got = { file: f, parsed, mac };
    if (mac === null) orphans.push(got);
    else byMac.set(mac, [...(byMac.get(mac) ?? []), got]);
  }

  const row = (mac: string, listed: NodeEntry | null, got: Got[] | undefined): StatusRow => {
    const notes: string[] = [];
    const base = {
      hostname: listed?.hostname ?? null,
      mac,
      ip: listed?.ip ?? null,
      listed: listed !== null,
      report: null,
      lastBoot: null,
      lastBootMs: null,
      ageSeconds: null,
      root: 'unknown',
      overlay: null,
      totalSeconds: null,
      phases: '',
    };
    if (!listed) notes.push(UNKNOWN_MAC);
    const newest = got?.[0];
    if (!newest)
      return {
        ...base,
        result: 'never booted',
        notes: [...notes, 'no report yet: the node has not finished a boot since reports were set up'],
      };
    const f = newest.file;
    if ((got?.length ?? 0) > 1)
      notes.push(
        `${(got?.length ?? 0) - 1} older report file(s) for this MAC ignored: ${got
          ?.slice(1)
          .map((g) => shownName(g.file.file, 60))
          .join(', ')}`,
      );
    const report = `${REPORT_DIR}/${shownName(f.file, 80)}`;
    const plausible = plausibleTime(f.mtimeMs, input.now);
    const when = plausible
      ? {
          report,
          lastBoot: new Date(f.mtimeMs).toISOString(),
          lastBootMs: f.mtimeMs,
          ageSeconds: Math.max(0, Math.round((input.now - f.mtimeMs) / 1000)),
        }
      : { report, lastBoot: null, lastBootMs: null, ageSeconds: null };
    if (!plausible && f.mtimeMs < Y2000) {
      notes.push(
        "report file time is before 2000: it carries the node's clock (pushed with rsync -t or -a?), not its arrival time",
      );
    } else if (!plausible) {
      const t = safeIso(f.mtimeMs) ?? (Number.isFinite(f.mtimeMs) ? `${f.mtimeMs} ms after 1970` : 'unknown');
      notes.push(
        `report file time is not plausible (${t}, later than the master's clock): it carries no arrival time, so this report ranks below any with one`,
      );
    }
    if (!newest.parsed.ok) {
      return {
        ...base,
        ...when,
        result: 'unreadable report',
        notes: [...notes, `unreadable report ${when.report}: ${newest.parsed.error}`],
      };
    }
    const r = newest.parsed.report;
    if (f.file !== reportName(r.mac)) notes.push(`report file ${when.report} names MAC ${r.mac.toLowerCase()}`);
    if (r.result !== 'ok' && r.reason !== undefined) notes.push(`${r.result}: ${clean(r.reason)}`);
    else if (r.result !== 'ok') notes.push(`${r.result} without a reason`);
    if (r.result === 'fatal' && r.remedy !== undefined) notes.push(`remedy: ${clean(r.remedy)}`);
    if (r.hostnameFrom === null) notes.push('no fixed lease: DHCP gave no host name (and no hostname= was set)');
    if (listed && r.hostname !== null && r.hostname.toLowerCase() !== listed.hostname.toLowerCase()) {
      notes.push(`booted as ${clean(r.hostname, 63)}, nodes.list says ${listed.hostname}`);
    }
    if (listed && r.ip !== null && r.ip !== listed.ip)
      notes.push(`booted with IP ${clean(r.ip, 40)}, nodes.list says ${listed.ip}`);
    for (const a of r.alarms ?? []) notes.push(`ALARM: ${clean(a)}`);
    if (r.failover?.length)
      notes.push(`served by ${clean(r.master ?? '?', 63)} after failing over from ${clean(r.failover.join('; '))}`);
    if (r.errors.length)
      notes.push(
        `${r.errors.length} error${r.errors.length === 1 ? '' : 's'} in the report, first: ${clean(r.errors[0] as string)}`,
      );
    const total = r.phases.reduce((s, p) => s + p.seconds, 0);
    const hostname = listed?.hostname ?? (r.hostname !== null ? clean(r.hostname, 63) : null);
    let approval: RowApproval | undefined;
    if (r.approval) {
      const a = r.approval;
      const file = hostname !== null ? input.approvals?.get(hostname.toLowerCase()) : undefined;
      approval = {
        state: a.state,
        tableSha256: a.tableSha256,
        approved: file === a.tableSha256,
        meanwhile: a.meanwhile,
        diff: a.state === 'pending' ? tableDiff(a.current, a.wanted) : [],
      };
      if (a.state === 'approved') notes.push('approved table change applied this boot');
      else if (approval.approved) notes.push('table change approved, applies at the next boot');
      else if (hostname !== null && /^[A-Za-z0-9-]+$/.test(hostname))
        notes.push(`table change waiting for approval: builder approve ${hostname}`);
      else
        notes.push(
          'table change waiting for approval, but the node has no host name to approve: give it a fixed lease in the node list and run builder stage',
        );
    }
    return {
      ...base,
      ...when,
      hostname,
      ip: listed?.ip ?? (r.ip !== null ? clean(r.ip, 40) : null),
      result:
        r.result === 'fatal'
          ? 'FATAL'
          : r.result === 'waiting'
            ? 'WAITING'
            : r.result === 'ok' && r.alarms?.length
              ? 'ALARM'
              : r.result,
      root: rootState(r.stamps.rootAfter, master.id),
      overlay: r.overlay !== null ? clean(r.overlay, 30) : null,
      totalSeconds: Math.round(total * 10) / 10,
      phases: r.phases.map((p) => `${clean(p.name, 20)} ${p.seconds.toFixed(1)}${p.failed ? '!' : ''}`).join(' '),
      phaseTimes: r.phases.map((p) => ({ name: clean(p.name, 20), seconds: p.seconds, failed: p.failed === true })),
      notes,
      ...(r.hostKeys?.length ? { hostKeys: r.hostKeys } : {}),
      ...(r.enrolKey !== undefined ? { enrolKey: r.enrolKey } : {}),
      ...(r.master !== undefined ? { master: clean(r.master, 63) } : {}),
      ...(r.enrolled === true ? { enrolled: true } : {}),
      ...(approval ? { approval } : {}),
    };
  };

  const rows: StatusRow[] = [];
  const listedMacs = new Set<string>();
  for (const n of input.nodes) {
    const mac = normalizeMac(n.mac) ?? n.mac.toLowerCase();
    listedMacs.add(mac);
    rows.push(row(mac, n, byMac.get(mac)));
  }
  for (const [mac, got] of [...byMac].sort((a, b) => a[0].localeCompare(b[0]))) {
    if (!listedMacs.has(mac)) rows.push(row(mac, null, got));
  }
  for (const o of orphans) {
    const r = row('?', null, [o]);
    r.notes = r.notes.filter((x) => x !== UNKNOWN_MAC);
    r.notes.unshift(
      `report file ${REPORT_DIR}/${shownName(o.file.file, 80)} is not named after a MAC (expected like ${reportName('b8:27:eb:cb:63:18')})`,
    );
    rows.push(r);
  }
  return rows;
}

// Why: a last pass over every printed cell, so a row built elsewhere (or a field added later) cannot drive the terminal.
const printable = (s: string) => s.replace(CONTROL, '?');

/** `42s`, `5m`, `3h`, `2d`. */
export function formatAge(seconds: number): string {
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)}m`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

// Why: one screen an operator reads at a glance: aligned columns, the reasons under the table, a summary line.
export function renderStatusTable(
  rows: StatusRow[],
  now: number,
  master: MasterStamp = { id: null, problem: null },
  mirrors: readonly MirrorRow[] = [],
): string {
  const head = ['NODE', 'MAC', 'IP', 'LAST-BOOT', 'RESULT', 'ROOT', 'OVERLAY', 'TIME', 'PHASES'];
  const lastBoot = (r: StatusRow) => {
    const iso = r.lastBootMs === null ? null : safeIso(r.lastBootMs);
    if (iso === null || r.lastBootMs === null) return r.report === null ? '-' : 'time unknown';
    return `${iso.slice(0, 16).replace('T', ' ')}Z (${formatAge(Math.max(0, Math.round((now - r.lastBootMs) / 1000)))} ago)`;
  };
  const cells = rows.map((r) =>
    [
      r.hostname ?? '?',
      r.mac,
      r.ip ?? '-',
      lastBoot(r),
      r.result,
      r.root,
      r.overlay ?? '-',
      r.totalSeconds === null ? '-' : `${r.totalSeconds.toFixed(1)}s`,
      r.phases || '-',
    ].map(printable),
  );
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (c: string[]) =>
    c
      .map((s, i) => (i === c.length - 1 ? s : s.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const out = [line(head), ...cells.map(line)];
  // a pending table change's differing lines go under its notes, indented
  const notes = rows.flatMap((r) => [
    ...r.notes.map((n) => printable(`  ${r.hostname ?? r.mac}: ${n}`)),
    ...(r.approval?.state === 'pending' && !r.approval.approved
      ? r.approval.diff.map((d) => printable(`      ${d}`))
      : []),
  ]);
  if (notes.length) out.push('', 'notes:', ...notes);
  if (mirrors.length) out.push('', 'mirrors:', ...mirrors.map((m) => printable(`  ${m.mirror}: ${m.text}`)));
  const mirrorsBehind = mirrors.filter((m) => m.state !== 'current').length;

  const order: RowResult[] = ['ok', 'ALARM', 'reboot', 'WAITING', 'FATAL', 'never booted', 'unreadable report'];
  const counts = order.map((k) => [k, rows.filter((r) => r.result === k).length] as const).filter(([, c]) => c > 0);
  const unknown = rows.filter((r) => !r.listed).length;
  const behind = rows.filter((r) => r.root.startsWith('behind')).length;
  const pending = rows.filter((r) => r.approval?.state === 'pending' && !r.approval.approved).length;
  const approvedNext = rows.filter((r) => r.approval?.state === 'pending' && r.approval.approved).length;
  const parts = [
    `${rows.length} node${rows.length === 1 ? '' : 's'}: ${counts.map(([k, c]) => `${c} ${k}`).join(', ') || 'none listed and no reports'}`,
    ...(unknown ? [`${unknown} not in nodes.list`] : []),
    ...(behind ? [`${behind} behind the master's rootfs`] : []),
    ...(pending ? [`${pending} table change${pending === 1 ? '' : 's'} pending approval`] : []),
    ...(approvedNext ? [`${approvedNext} approved, applying at the next boot`] : []),
    ...(mirrorsBehind
      ? [`${mirrorsBehind} mirror${mirrorsBehind === 1 ? '' : 's'} behind or unknown (see mirrors:)`]
      : []),
    master.id !== null ? `master rootfs stamp ${master.id}` : `master: ${master.problem ?? 'no rootfs stamp'}`,
  ];
  out.push('', parts.join('; '));
  return `${out.join('\n')}\n`;
}

export interface Status {
  masterStamp: MasterStamp;
  rows: StatusRow[];
  /** Approval mode: on or off, the master's table hash (null: no partitions.sfdisk), the approvals by host. */
  approval: { required: boolean; tableSha256: string | null; approved: Record<string, string> };
  /** The mirrors `builder gather` pulled from, each against this master's stamps. */
  mirrors: MirrorRow[];
  /** Problems with the master's own files (nodes.list lines that do not parse, unreadable folders). */
  warnings: string[];
}

/** Reports larger than this are refused unread (a report is a few kB). */
export const MAX_REPORT = 64 * 1024;
/** Skipped files named one by one in the warnings; the rest are counted. */
const MAX_SKIP_WARNINGS = 20;

/**
 * Where the fleet's own files are: the master root (public: the stamps, the approvals) and the state dir (the node
 * list and the reports, kept out of the node key's reach).
 */
export interface FleetPaths {
  masterRoot: string;
  stateDir: string;
}

/** Where `builder gather` puts a mirror's reports: <state-dir>/mirrors/<address>/reports. */
export const MIRRORS_DIR = 'mirrors';

/**
 * What a mirror's last pull left beside its reports (<state-dir>/reports/mirror.state, JSON), so that `builder
 * gather` brings it to the primary with them: the stamp ids it serves, when it pulled (its clock), and the error of
 * a pull that failed (it then still serves the last whole publish).
 */
export const MIRROR_STATE = 'mirror.state';

export interface MirrorStateFile {
  stamps: Partial<Record<StampName, string | null>>;
  /** ISO time of the pull, the mirror's clock */
  pulled: string;
  error?: string;
}

export interface MirrorRow {
  mirror: string;
  /** current: serves the primary's stamps; behind: another publish; unknown: no readable state gathered */
  state: 'current' | 'behind' | 'unknown';
  pulled: string | null;
  /** one line for the operator: what it serves against the primary, the last pull's error */
  text: string;
}

/**
 * A mirror against the primary, from the state `builder gather` brought (null: none). Pure. Behind is judged by
 * stamp ids against the primary's current stamps, never by clocks.
 */
export function mirrorRow(
  mirror: string,
  stateText: string | null,
  primary: Record<StampName, string | null>,
): MirrorRow {
  const unknown = (why: string): MirrorRow => ({ mirror, state: 'unknown', pulled: null, text: why });
  if (stateText === null)
    return unknown('no pull state gathered: run `builder mirror` there (its timer) and `builder gather` here');
  const f = parseMirrorState(stateText);
  const stamps = f?.stamps;
  if (!stamps) return unknown(`${MIRROR_STATE} is not the state \`builder mirror\` writes: pull there again`);
  const pulled = f.pulled !== undefined ? clean(f.pulled, 40) : null;
  const served = (n: StampName) => {
    const v = stamps[n];
    return typeof v === 'string' ? clean(v, 80) : null;
  };
  const behind = STAMP_NAMES.filter((n) => served(n) !== primary[n]);
  const error = f.error !== undefined ? `; its last pull failed: ${clean(f.error)}` : '';
  const at = pulled ? ` (pulled ${pulled})` : '';
  if (behind.length === 0)
    return {
      mirror,
      state: 'current',
      pulled,
      text: `current: ${STAMP_NAMES.map((n) => `${n} ${served(n) ?? 'none'}`).join(', ')}${at}${error}`,
    };
  return {
    mirror,
    state: 'behind',
    pulled,
    text: `behind: ${behind.map((n) => `${n} ${served(n) ?? 'none'}, the primary has ${primary[n] ?? 'none'}`).join('; ')}${at}${error}`,
  };
}

/** The stamp id a master root's stamp names (null: none, or not a stamp); bounded read. */
export function readStampId(root: string, name: StampName): string | null {
  const r = readSmallFile(join(root, stampPath(name)), 64 * 1024);
  const p = r.kind === 'read' ? parseStamp(r.data.toString('utf8')) : null;
  return p?.ok ? p.stamp.id : null;
}

/**
 * A mirror.state's fields (null: not JSON at all). Fields of the wrong type, or of JSON that is no object, are
 * dropped; whether it is whole (it names its stamps) is the caller's question. `builder status` and `builder
 * doctor --mirror-of` read it.
 */
export function parseMirrorState(text: string): Partial<MirrorStateFile> | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  return {
    ...(typeof o.stamps === 'object' && o.stamps !== null ? { stamps: o.stamps as MirrorStateFile['stamps'] } : {}),
    ...(typeof o.pulled === 'string' ? { pulled: o.pulled } : {}),
    ...(typeof o.error === 'string' ? { error: o.error } : {}),
  };
}

/** The mirrors `builder gather` pulled from: name -> their folder (real directories only: a link is not followed). */
function gatheredMirrors(stateDir: string): Array<{ name: string; dir: string }> {
  const base = join(stateDir, MIRRORS_DIR);
  let names: string[] = [];
  try {
    names = readdirSync(base).sort();
  } catch {
    return [];
  }
  return names
    .filter((n) => /^[0-9A-Za-z.:-]{1,64}$/.test(n))
    .map((name) => ({ name, dir: join(base, name, REPORT_DIR) }))
    .filter((m) => lstatSync(m.dir, { throwIfNoEntry: false })?.isDirectory() === true);
}

/** The report folders gathered from mirrors. */
export function mirrorReportDirs(stateDir: string): string[] {
  return gatheredMirrors(stateDir).map((m) => m.dir);
}

// Why: the I/O half of `builder status`: every file is optional, so a fresh master shows what it has.
export function readStatus(paths: FleetPaths, now = Date.now()): Status {
  const { masterRoot, stateDir } = paths;
  const warnings: string[] = [];
  let nodes: NodeEntry[] = [];
  const listFile = join(stateDir, NODES_LIST);
  try {
    const p = parseNodeList(readFileSync(listFile, 'utf8'));
    nodes = p.nodes;
    warnings.push(...p.errors.map((e) => `${listFile} ${e}`));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      warnings.push(`no ${listFile}: run \`builder stage\` to list the nodes; showing reports only`);
    else warnings.push(`cannot read ${listFile}: ${(e as Error).message}`);
  }
  const reports: ReportFile[] = [];
  const skipped: string[] = [];
  // this master's reports, and those `builder gather` pulled from its mirrors (the newest per MAC wins)
  for (const dir of [join(stateDir, REPORT_DIR), ...mirrorReportDirs(stateDir)]) {
    let names: DirName[] = [];
    try {
      names = listNames(dir).filter((n) => n.name.endsWith('.json') && !n.name.startsWith('.'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        warnings.push(`cannot read ${escapeName(dir)}: ${escapeName((e as Error).message)}`);
    }
    for (const { name: file, path } of names) {
      const r = readSmallFile(path, MAX_REPORT);
      if (r.kind === 'gone') continue; // removed since readdir
      if (r.kind === 'not a file')
        skipped.push(
          `${escapeName(join(dir, file))} is ${r.what}, not a regular file: skipped, not read (a report is a regular file; remove it)`,
        );
      else if (r.kind === 'too large')
        reports.push({
          file,
          text: '',
          mtimeMs: r.mtimeMs,
          error: `larger than 64 KiB (${r.size} bytes): refused unread, a boot report is a few kB`,
        });
      else if (r.kind === 'failed')
        reports.push({ file, text: '', mtimeMs: r.mtimeMs ?? NaN, error: `cannot read it: ${escapeName(r.message)}` });
      else reports.push({ file, text: r.data.toString('utf8'), mtimeMs: r.mtimeMs });
    }
  }
  warnings.push(...skipped.slice(0, MAX_SKIP_WARNINGS));
  if (skipped.length > MAX_SKIP_WARNINGS)
    warnings.push(
      `… and ${skipped.length - MAX_SKIP_WARNINGS} more files in ${escapeName(join(stateDir, REPORT_DIR))} (or a mirror's) that are not regular files skipped`,
    );
  let stampText: string | null = null;
  try {
    stampText = readFileSync(join(masterRoot, stampPath('rootfs')), 'latin1');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      warnings.push(`cannot read the rootfs stamp: ${(e as Error).message}`);
  }
  const primaryStamps = Object.fromEntries(STAMP_NAMES.map((n) => [n, readStampId(masterRoot, n)])) as Record<
    StampName,
    string | null
  >;
  const mirrors = gatheredMirrors(stateDir).map((m) => {
    const r = readSmallFile(join(m.dir, MIRROR_STATE), 64 * 1024);
    return mirrorRow(m.name, r.kind === 'read' ? r.data.toString('utf8') : null, primaryStamps);
  });
  const a = readApprovals(masterRoot);
  warnings.push(...a.warnings);
  let tableSha256: string | null = null;
  try {
    tableSha256 = readTableHash(masterRoot);
  } catch (e) {
    warnings.push(`cannot read the partition table: ${(e as Error).message}`);
  }
  return {
    masterStamp: masterStamp(stampText),
    rows: statusRows({ nodes, reports, masterStamp: stampText, now, approvals: a.approvals }),
    approval: {
      required: existsSync(join(masterRoot, APPROVAL_REQUIRED)),
      tableSha256,
      approved: Object.fromEntries(a.approvals),
    },
    mirrors,
    warnings,
  };
}

export interface ApprovalListRow {
  node: string;
  /** What its last report says: a table change pending approval, applied, or nothing. */
  report: 'pending' | 'applied' | '-';
  /** Its approval file against the master's current table. */
  approval: ApprovalFor;
}

// Why: `builder approve --list`: the nodes that wait (from their reports) and where every node stands for the
// master's current table, from the same files `builder status` reads.
export function approvalList(s: Status): { rows: ApprovalListRow[]; text: string } {
  const current = s.approval.tableSha256;
  const rows: ApprovalListRow[] = s.rows
    .filter((r) => r.hostname !== null || r.approval !== undefined)
    .map((r) => {
      const name = r.hostname ?? r.mac;
      const file = r.hostname !== null ? (s.approval.approved[r.hostname.toLowerCase()] ?? null) : null;
      return {
        node: name,
        report: r.approval?.state === 'pending' ? 'pending' : r.approval?.state === 'approved' ? 'applied' : '-',
        approval: current === null ? 'not approved' : approvalState(file === null ? null : `${file}\n`, current),
      };
    });
  const head = ['NODE', 'REPORT', 'CURRENT TABLE'];
  const cells = rows.map((r) =>
    [
      r.node,
      r.report === 'pending' ? 'pending approval' : r.report === 'applied' ? 'applied this boot' : '-',
      r.approval,
    ].map(printable),
  );
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const pending = rows.filter((r) => r.report === 'pending' && r.approval !== 'approved').map((r) => printable(r.node));
  const out = [
    `approval mode ${s.approval.required ? 'on' : 'off'}; table ${current ?? 'none (no partitions.sfdisk)'}`,
    '',
    line(head),
    ...cells.map(line),
    '',
    pending.length
      ? `${pending.length} waiting for approval: builder approve ${pending.join(' ')}`
      : 'nothing waits for approval',
  ];
  return { rows, text: `${out.join('\n')}\n` };
}

// The live fleet view (`builder watch`, scripts/cluster on a terminal): one row per node, from the master's boot
// reports (status.ts reads them) and the console lines the nodes send to its syslog. Pure: the rows, the terminal
// frame and the lines printed without a terminal are decided here; watch.ts polls the files and writes.
// Syslog lines are untrusted (any host on the LAN can send a datagram): every shown string goes through
// escapeName, and a line that does not parse is skipped.
import { escapeName } from './approve.ts';
import { formatAge, type StatusRow } from './status.ts';

/** The agent's phases in boot order (agent/sequence.ts PHASE_NAMES; a unit test holds the two equal). */
export const BOOT_PHASES: readonly string[] = [
  'early',
  'modules',
  'network',
  'master',
  'disk',
  'partitions',
  'bootfs',
  'root',
  'firststage',
  'overlay',
  'identity',
  'handoff',
];

export type LiveState = 'booting' | 'up' | 'rebooting' | 'failed' | 'waiting' | 'idle' | 'off' | 'never booted';

/** What one node's console lines on the syslog say about its current boot. */
export interface NodeLive {
  host: string;
  /** Boots seen in the syslog (a `[1/N early] start` or the node's uptime going back starts one). */
  boots: number;
  phase: string | null;
  n: number | null;
  of: number | null;
  /** The last percent a message of the current phase carried. */
  percent: number | null;
  message: string;
  state: LiveState;
  /** Node uptime of the last line, seconds. */
  uptime: number;
}

/** One parsed console line from the syslog. */
export interface SyslogLine {
  host: string;
  uptime: number;
  phase: string;
  n: number | null;
  of: number | null;
  text: string;
}

const MAX_FIELD = 300;

// The agent's RFC 5424 line `<29>1 - node1 clusterboot - - - 12.34s [8/12 root] text` (plans/syslog.ts), and the
// same message as a local syslogd files it (`Nov 25 12:00:00 node1 clusterboot 12.34s ...`).
const LINE =
  /(?:^|\s)(\S{1,255}) clusterboot:?(?: - - -)? (\d{1,9}(?:\.\d{1,6})?)s \[(?:(\d{1,3})\/(\d{1,3}) )?([^\]\s]{1,40})\] ?(.*)$/;

/** A syslog line from the agent, or null (another program's line, or not the agent's shape). */
export function parseSyslogLine(line: string): SyslogLine | null {
  const m = LINE.exec(line.length > 4096 ? line.slice(0, 4096) : line);
  if (!m) return null;
  const host = m[1] as string;
  if (host === '-') return null; // no host name: no node to put it on
  const n = m[3] === undefined ? null : Number(m[3]);
  const of = m[4] === undefined ? null : Number(m[4]);
  return {
    host,
    uptime: Number(m[2]),
    phase: m[5] as string,
    n: n !== null && of !== null && n >= 1 && n <= of ? n : null,
    of: n !== null && of !== null && n >= 1 && n <= of ? of : null,
    text: (m[6] as string).slice(0, MAX_FIELD),
  };
}

const PERCENT = /\((\d{1,3})%\)\s*$/;
// The agent's last syslog line of a boot (it closes the socket before switch_root): how that boot ended.
const REPORT_SENT = /^boot report sent to \S+ \((ok|reboot|fatal|waiting)\b/;
const SENT_STATE: Record<string, LiveState> = { ok: 'up', reboot: 'rebooting', fatal: 'failed', waiting: 'waiting' };

/** A node's live state after one more of its lines. Pure: returns a new object. */
export function foldLine(prev: NodeLive | undefined, l: SyslogLine): NodeLive {
  const fresh: NodeLive = {
    host: l.host,
    boots: (prev?.boots ?? 0) + 1,
    phase: null,
    n: null,
    of: null,
    percent: null,
    message: '',
    state: 'booting',
    uptime: l.uptime,
  };
  // a new boot: the agent's first line, the first phase starting after phases of an earlier boot (its first line
  // lost), or the node's clock going back
  const newBoot =
    !prev ||
    /^clusterboot agent \S+ starting/.test(l.text) ||
    (l.n === 1 && l.text === 'start' && prev.n !== null) ||
    l.uptime + 1 < prev.uptime;
  const v: NodeLive = newBoot ? fresh : { ...prev, uptime: l.uptime };
  if (l.n !== null && (v.phase !== l.phase || v.n !== l.n)) {
    v.phase = l.phase;
    v.n = l.n;
    v.of = l.of;
    v.percent = null;
  } else if (v.phase === null) v.phase = l.phase;
  const t = l.text;
  if (t === 'start') v.message = '';
  else v.message = t;
  const pct = PERCENT.exec(t);
  if (pct) v.percent = Math.min(100, Number(pct[1]));
  if (/^done in /.test(t) && v.phase === l.phase) v.percent = 100;
  if (/^(FATAL|FAILED): /.test(t)) v.state = 'failed';
  else if (/^rebooting/.test(t)) v.state = 'rebooting';
  else if (/^switch_root /.test(t)) v.state = 'up';
  else if (REPORT_SENT.test(t)) v.state = SENT_STATE[REPORT_SENT.exec(t)?.[1] as string] ?? v.state;
  else if (/waiting for approval|waits? for `?builder approve/.test(t)) v.state = 'waiting';
  else if (v.state !== 'failed' && v.state !== 'rebooting' && v.state !== 'up') v.state = 'booting';
  return v;
}

/** Fold syslog text (whole lines) into the per-host states. Keys are lower-case host names. */
export function foldSyslog(live: ReadonlyMap<string, NodeLive>, text: string): Map<string, NodeLive> {
  const out = new Map(live);
  for (const raw of text.split('\n')) {
    const l = parseSyslogLine(raw);
    if (!l) continue;
    const key = l.host.toLowerCase();
    out.set(key, foldLine(out.get(key), l));
  }
  return out;
}

/** What the virtual cluster (test/rig/cluster.ts NodeView) knows of a node from its console, as a NodeLive. */
export function liveFromView(v: {
  hostname: string;
  boots: number;
  phase: string;
  step: string;
  detail: string;
  state: 'booting' | 'up' | 'rebooting' | 'failed' | 'off';
}): NodeLive {
  const m = /^(\d+)\/(\d+)$/.exec(v.step);
  // the rig's `off` after the template's init ran: the boot went all the way
  const pct = v.state === 'off' && v.phase === 'handoff' ? ['', '100'] : PERCENT.exec(v.detail);
  return {
    host: v.hostname,
    boots: v.boots,
    phase: v.phase === '-' ? null : v.phase,
    n: m ? Number(m[1]) : null,
    of: m ? Number(m[2]) : null,
    percent: pct ? Math.min(100, Number(pct[1])) : null,
    message: v.detail,
    state: v.state,
    uptime: 0,
  };
}

/** One row of the live view. Strings are raw here; the renderers escape them. */
export interface FleetRow {
  node: string;
  state: LiveState;
  /** Boots seen on the syslog (or the console) since the watch started; null: none seen. */
  boots: number | null;
  phase: string | null;
  n: number | null;
  of: number | null;
  /** Share of the boot done, 0..1, from the phase number and the phase's percent; null: not known. */
  progress: number | null;
  message: string;
  /** The last report: result and arrival (age is shown by the terminal view, not by the line mode). */
  last: string;
  lastAgeSeconds: number | null;
}

const REPORT_STATE: Record<StatusRow['result'], LiveState> = {
  ok: 'up',
  ALARM: 'up',
  reboot: 'rebooting',
  WAITING: 'waiting',
  FATAL: 'failed',
  'never booted': 'never booted',
  'unreadable report': 'idle',
};

function progressOf(n: number | null, of: number | null, percent: number | null, state: LiveState): number | null {
  if (state === 'up') return 1;
  if (n === null || of === null || of < 1) return null;
  return Math.min(1, Math.max(0, (n - 1 + (percent ?? 0) / 100) / of));
}

// Why: the syslog says what a node does now, the report how its last boot ended; a node with no syslog lines
// shows its report (after a watcher restart, or without a syslog), one with no report its lines alone.
export function fleetRows(rows: readonly StatusRow[], live: ReadonlyMap<string, NodeLive>): FleetRow[] {
  const used = new Set<string>();
  const out: FleetRow[] = rows.map((r) => {
    const name = r.hostname ?? r.mac;
    const key = name.toLowerCase();
    const l = live.get(key);
    if (l) used.add(key);
    const last = r.report === null ? '-' : r.result;
    if (l)
      return {
        node: name,
        state: l.state,
        boots: l.boots,
        phase: l.phase,
        n: l.n,
        of: l.of,
        progress: progressOf(l.n, l.of, l.percent, l.state),
        message: l.message,
        last,
        lastAgeSeconds: r.ageSeconds,
      };
    const state = REPORT_STATE[r.result];
    const lastPhase = r.phaseTimes?.at(-1);
    const at = lastPhase ? BOOT_PHASES.indexOf(lastPhase.name) : -1;
    return {
      node: name,
      state,
      boots: null,
      phase: lastPhase?.name ?? null,
      n: at >= 0 ? at + 1 : null,
      of: at >= 0 ? BOOT_PHASES.length : null,
      progress: state === 'up' ? 1 : null,
      message:
        r.notes[0] ??
        (r.report === null
          ? 'no report and no syslog lines yet'
          : `last boot ${r.result} in ${r.totalSeconds?.toFixed(1) ?? '?'} s (its report)`),
      last,
      lastAgeSeconds: r.ageSeconds,
    };
  });
  for (const [key, l] of [...live].sort((a, b) => a[0].localeCompare(b[0]))) {
    if (used.has(key)) continue;
    out.push({
      node: l.host,
      state: l.state,
      boots: l.boots,
      phase: l.phase,
      n: l.n,
      of: l.of,
      progress: progressOf(l.n, l.of, l.percent, l.state),
      message: l.message,
      last: 'not in nodes.list',
      lastAgeSeconds: null,
    });
  }
  return out;
}

// ---- rendering -------------------------------------------------------------------------------------------------

/** Display width of one character on a terminal (0 for combining marks, 2 for wide ones). */
function charWidth(c: string): number {
  return typeof Bun !== 'undefined' ? Bun.stringWidth(c) : 1;
}

/** Cut text to at most `width` terminal columns, with `…` when cut. */
export function fitWidth(s: string, width: number): string {
  if (width <= 0) return '';
  let w = 0;
  let out = '';
  const chars = [...s];
  const total = chars.reduce((a, c) => a + charWidth(c), 0);
  if (total <= width) return s;
  for (const c of chars) {
    const cw = charWidth(c);
    if (w + cw > width - 1) break;
    out += c;
    w += cw;
  }
  return `${out}…`;
}

const shown = (s: string, max = MAX_FIELD) => escapeName(s).slice(0, max);

const phaseCell = (r: FleetRow) =>
  r.phase === null ? '-' : r.n !== null && r.of !== null ? `${r.n}/${r.of} ${shown(r.phase, 20)}` : shown(r.phase, 20);

const BAR = 10;
/** `#####.....  50%`, or blanks when the share is not known. */
export function progressCell(p: number | null): string {
  if (p === null) return ''.padEnd(BAR + 5);
  const full = Math.round(p * BAR);
  return `${'#'.repeat(full)}${'.'.repeat(BAR - full)} ${`${Math.floor(p * 100)}%`.padStart(4)}`;
}

const lastCell = (r: FleetRow, withAge: boolean) =>
  withAge && r.lastAgeSeconds !== null ? `${shown(r.last, 30)} ${formatAge(r.lastAgeSeconds)} ago` : shown(r.last, 30);

const HEAD = ['NODE', 'STATE', 'BOOT', 'PHASE', 'PROGRESS', 'LAST REPORT', 'MESSAGE'];
const MIN = [6, 12, 4, 15, BAR + 5, 11, 0];

const COLOR: Partial<Record<LiveState, string>> = {
  up: '\x1b[32m',
  failed: '\x1b[31m',
  rebooting: '\x1b[33m',
  waiting: '\x1b[33m',
  booting: '\x1b[36m',
};

/**
 * The terminal frame: a header, one line per node, a summary; each line at most `columns - 1` wide so it never
 * wraps (a wrapped line would break the cursor-up redraw). `color` adds ANSI colours to the state only.
 */
export function renderFrame(rows: readonly FleetRow[], o: { columns: number; color?: boolean; title?: string }) {
  const cells = rows.map((r) => [
    shown(r.node, 40),
    r.state,
    r.boots === null ? '-' : String(r.boots),
    phaseCell(r),
    progressCell(r.progress),
    lastCell(r, true),
    shown(r.message),
  ]);
  const widths = HEAD.map((h, i) =>
    Math.max(h.length, MIN[i] ?? 0, ...cells.map((c) => (i === HEAD.length - 1 ? 0 : (c[i] as string).length))),
  );
  const max = Math.max(10, o.columns - 1);
  const line = (c: string[], colorState: boolean) => {
    const plain = c
      .map((s, i) => (i === c.length - 1 ? s : s.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
    const fitted = fitWidth(plain, max);
    const state = c[1] as string;
    const color = COLOR[state as LiveState];
    const at = (widths[0] as number) + 2;
    // colour the state cell only when it survived the cut whole
    if (!colorState || !color || fitted.slice(at, at + state.length) !== state) return fitted;
    return `${fitted.slice(0, at)}${color}${state}\x1b[0m${fitted.slice(at + state.length)}`;
  };
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
  const summary = `${rows.length} node${rows.length === 1 ? '' : 's'}: ${
    [...counts].map(([k, n]) => `${n} ${k}`).join(', ') || 'none listed, no reports, no syslog lines'
  }${o.title ? ` — ${o.title}` : ''}`;
  return [line(HEAD, false), ...cells.map((c) => line(c, o.color === true)), fitWidth(escapeName(summary), max)];
}

/**
 * The escape sequence that draws `frame` over the previous one (`prevLines` tall, 0 at first): cursor up, then
 * each line cleared and rewritten in place; lines left over from a taller frame are cleared.
 */
export function redraw(frame: readonly string[], prevLines: number): string {
  const up = prevLines > 0 ? `\x1b[${prevLines}A` : '';
  return `${up}${frame.map((l) => `\r\x1b[2K${l}\n`).join('')}${prevLines > frame.length ? '\x1b[J' : ''}`;
}

/** The line mode's text for a row: what it shows without the report's age (which changes every second). */
export function rowLine(r: FleetRow): string {
  const prog = r.progress === null ? '' : ` ${Math.floor(r.progress * 100)}%`;
  const msg = r.message ? ` ${shown(r.message)}` : '';
  return `${shown(r.node, 40)}: ${r.state} [${phaseCell(r)}]${prog}${msg} (last report: ${lastCell(r, false)})`;
}

/**
 * Line mode (no terminal): the lines for rows that changed since `seen` (node -> its last printed line), and the
 * updated map. Nothing when nothing changed.
 */
export function changedLines(
  rows: readonly FleetRow[],
  seen: ReadonlyMap<string, string>,
): { lines: string[]; seen: Map<string, string> } {
  const next = new Map(seen);
  const lines: string[] = [];
  for (const r of rows) {
    const l = rowLine(r);
    if (seen.get(r.node) !== l) lines.push(l);
    next.set(r.node, l);
  }
  return { lines, seen: next };
}

// Root slots on the local disk's root partition, RAUC/OSTree style. Pure: no I/O. The agent lists the
// partition (mounted at /run/clusterboot/rootdisk), hands the facts here, and executes the plan's actions.
import { decideStamp, parseStamp } from '../contract/stamp.ts';

// Layout (all paths below are relative to the root partition's mount point, and so are the describe() texts):
//   slots/<id>/            a root tree; <id> is the master's stamp id ([0-9A-Za-z._-], at most 64 characters)
//   slots/<id>.json        its record, written only after the tree is complete and synced to disk
//   current -> slots/<id>  the slot to boot, flipped atomically (symlink to a temp name, then rename)
//   previous -> slots/<id> what current pointed to before the last flip, kept for rollback
// A slot without a valid complete record whose id matches its directory is partial (an interrupted sync);
// partial slots are deleted, never repaired. Before one is deleted, though, its finished files serve the next
// sync as an extra --link-dest: the plan moves it to `salvage/` (outside slots/, so never bootable), the sync
// hard-links every file there that rsync's quick check (size and mtime) finds unchanged, and the salvage is
// removed after the flip. A cut at 90 % of a cold sync then does not send that 90 % again.
//   salvage/             the last interrupted slot's tree, while a sync uses it (and after a cut during that sync)
//
// Crash safety of a plan: every prefix of its actions leaves `current` pointing at a complete slot whenever it
// did before. A new slot only becomes complete when its record is written (after the rsync); the links are
// flipped only after that; and a slot is deleted only when no link points at it, record first, so an
// interrupted delete leaves a partial slot that the next boot removes.
//
// rsync output, as checked against rsync 3.5.0 (protocol 32) on a temp tree:
// - --info=progress2 redraws one status line with '\r' (no '\n' until the very end), so a reader must split on
//   '\r' as well as '\n'. A line is: right-aligned bytes so far with ',' thousands separators ("3,120,003"),
//   a percent of the *total file size* (which the symlink bytes count in, so a run can end at 99%), the rate
//   ("0.00kB/s", "388.37MB/s"), an ETA or elapsed time ("0:00:00"), and, except on the very first redraw, a
//   "(xfr#N, to-chk=R/T)" tail; while the file list is still being built (incremental recursion, trees with
//   more than about a thousand files) the tail reads "ir-chk=R/T". Some redraws carry trailing spaces. When the
//   ETA is out of range rsync prints "??:??:??" in the time column.
// - With -h / -hh the numbers are rounded with K/M/G suffixes ("3.05M"; -hh uses powers of 1024 with the same
//   letters, so the text alone cannot tell which); with a locale whose decimal point is ',' rsync groups
//   thousands with '.'.
// - --stats prints, in this order: "Number of files: 17 (reg: 13, dir: 3, link: 1)" (just "Number of files: 0"
//   when empty), "Number of created files", "Number of deleted files", "Number of regular files transferred",
//   "Total file size: N bytes", "Total transferred file size: N bytes", "Literal data: N bytes",
//   "Matched data: N bytes", "File list size", two "File list ... time: 0.001 seconds" lines, "Total bytes
//   sent: N" and "Total bytes received: N" (these two without "bytes"), then the "sent ... received ..." and
//   "total size is ... speedup is ..." summary. A local copy is --whole-file (Matched data: 0); with
//   --no-whole-file or over the network an updated file shows up as matched data. Hard-linked --link-dest
//   files count in "Number of files" but not in "created" or "transferred". The stats are printed even when
//   rsync fails with code 23 (partial transfer), so a parsed stats block does not mean success.

/** A slot's record file, slots/<id>.json; only complete records make a slot bootable. */
export interface SlotRecord {
  id: string;
  seq: number;
  complete: boolean;
  files?: number;
  bytes?: number;
}

/** What the agent reads off the root partition, raw, for readSlotState. */
export interface SlotFacts {
  /** Names found under slots/ (directories only). */
  dirs: string[];
  /** File name (e.g. "17-x.json") -> raw text, for every *.json under slots/. */
  records: Record<string, string>;
  /** readlink of `current` (e.g. "slots/17-x"), null if missing. */
  current: string | null;
  /** readlink of `previous`, null if missing. */
  previous: string | null;
}

/** The partition's slots classified: what can boot, what must go, and what looked wrong. */
export interface SlotState {
  /** Complete slots, sorted by seq then id. */
  complete: SlotRecord[];
  /** Ids of partial slots (and of records left without a directory): to be deleted. */
  partial: string[];
  /** The partial ones that have a directory (an interrupted sync's tree, which can be salvaged). */
  partialDirs?: string[];
  current: SlotRecord | null;
  previous: SlotRecord | null;
  /** One line per oddity found (bad record, dangling link, foreign name). */
  problems: string[];
}

/** One step of a root plan; describe() renders it as the shell command it stands for (logs, dry runs). */
export type SlotAction =
  | { kind: 'delete-partial'; id: string; describe(): string }
  | { kind: 'salvage'; id: string; describe(): string }
  | { kind: 'sync'; id: string; seq: number; linkDest: string | null; salvage: boolean; describe(): string }
  | { kind: 'write-record'; record: SlotRecord; describe(): string }
  | { kind: 'flip'; link: 'current' | 'previous'; to: string; describe(): string }
  | { kind: 'delete-old'; id: string; describe(): string }
  | { kind: 'drop-salvage'; describe(): string };

/** What to boot and what to do to the partition first; stale = the slot may no longer be the master's. */
export interface RootPlan {
  /** 'slots/<id>' to boot, null = nothing bootable. */
  use: string | null;
  actions: SlotAction[];
  /** Booting a slot the master may have replaced (master down, stamp refused, rollback). */
  stale: boolean;
  message: string;
}

/** The master's verdict on the local root, as worked out by the stamp check. */
export interface RootDecision {
  /** 'offline' = master unreachable; 'refuse' = the master's stamp was rejected (unsigned, bad, downgrade). */
  action: 'sync' | 'keep' | 'refuse' | 'offline';
  masterStamp?: { id: string; seq: number };
}

/** Input of planRoot. */
export interface RootInput {
  state: SlotState;
  decision: RootDecision;
  /** Kernel parameter: boot the previous slot. */
  rollback: boolean;
  /** Recovery: no link-dest, copy everything afresh (partials are still deleted first). */
  forceFull?: boolean;
  /** `salvage/` exists: a sync that used an interrupted slot's files was itself cut. */
  salvage?: boolean;
}

/** Where an interrupted slot's tree waits to serve the next sync as --link-dest, relative to the partition. */
export const SALVAGE = 'salvage';

/** The rsync options the sync action stands for, shared with whoever runs it so logs match what ran. */
export const SYNC_RSYNC_OPTIONS: readonly string[] = [
  '-aHAX',
  '--numeric-ids',
  '--delete',
  '--stats',
  '--info=progress2',
];

const MAX_ID = 64;
const ID_RE = /^[0-9A-Za-z._-]+$/;

/** Whether a name can be a slot id (and so a path component that needs no quoting). */
export function isSlotId(s: string): boolean {
  return s.length > 0 && s.length <= MAX_ID && ID_RE.test(s) && s !== '.' && s !== '..';
}

/** The record file text for a slot, so the writer and readSlotState agree on the format. */
export function renderRecord(r: SlotRecord): string {
  const o: Record<string, unknown> = { id: r.id, seq: r.seq, complete: r.complete };
  if (r.files !== undefined) o.files = r.files;
  if (r.bytes !== undefined) o.bytes = r.bytes;
  return JSON.stringify(o);
}

// Shell quoting for describe(): bare when safe, single quotes otherwise.
function q(s: string): string {
  if (s !== '' && /^[A-Za-z0-9._\/:=@%+,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const slotPath = (id: string): string => `slots/${id}`;

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

type RecordCheck =
  { ok: true; record: SlotRecord } | { ok: false; why: string | null /* null: an ordinary incomplete slot */ };

function checkRecord(dirId: string, text: string): RecordCheck {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, why: 'record does not parse as JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, why: 'record is not a JSON object' };
  const o = v as Record<string, unknown>;
  if (o.id !== dirId) return { ok: false, why: `record id ${JSON.stringify(o.id)} does not match its directory` };
  if (!isCount(o.seq)) return { ok: false, why: 'record has no valid seq' };
  if (o.files !== undefined && !isCount(o.files)) return { ok: false, why: 'record has an invalid files count' };
  if (o.bytes !== undefined && !isCount(o.bytes)) return { ok: false, why: 'record has an invalid bytes count' };
  if (o.complete !== true) return { ok: false, why: o.complete === false ? null : 'record has no complete flag' };
  const record: SlotRecord = { id: dirId, seq: o.seq, complete: true };
  if (o.files !== undefined) record.files = o.files as number;
  if (o.bytes !== undefined) record.bytes = o.bytes as number;
  return { ok: true, record };
}

// "slots/<id>", "./slots/<id>", "slots/<id>/" -> id; anything else -> null.
function linkTarget(link: string): string | null {
  const m = /^(?:\.\/)?slots\/([^/]+)\/?$/.exec(link);
  return m && m[1] !== undefined && isSlotId(m[1]) ? m[1] : null;
}

/** Classify the partition's slots from raw facts; never throws, every oddity becomes a problem line. */
export function readSlotState(f: SlotFacts): SlotState {
  const problems: string[] = [];
  const complete: SlotRecord[] = [];
  const partial: string[] = [];
  const dirs = new Set<string>();
  for (const d of f.dirs ?? []) {
    if (isSlotId(d)) dirs.add(d);
    else problems.push(`slots/${d}: not a valid slot name, left alone`);
  }
  const records = new Map<string, string>();
  for (const [name, text] of Object.entries(f.records ?? {})) {
    const id = name.endsWith('.json') ? name.slice(0, -5) : '';
    if (!isSlotId(id)) {
      problems.push(`slots/${name}: not a valid record name, left alone`);
      continue;
    }
    if (!dirs.has(id)) {
      problems.push(`slots/${name}: record without a slot directory, will be removed`);
      partial.push(id);
      continue;
    }
    records.set(id, typeof text === 'string' ? text : '');
  }
  for (const id of dirs) {
    const text = records.get(id);
    if (text === undefined) {
      partial.push(id);
      continue;
    }
    const c = checkRecord(id, text);
    if (c.ok) complete.push(c.record);
    else {
      if (c.why !== null) problems.push(`slots/${id}.json: ${c.why}; the slot is treated as partial`);
      partial.push(id);
    }
  }
  complete.sort((a, b) => a.seq - b.seq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  partial.sort();
  const byId = new Map(complete.map((r) => [r.id, r]));
  const partialSet = new Set(partial);
  const resolve = (name: 'current' | 'previous', link: string | null): SlotRecord | null => {
    if (link === null || link === undefined) return null;
    const id = linkTarget(link);
    if (id === null) {
      problems.push(`${name} -> ${link}: not a link to a slot, ignored`);
      return null;
    }
    const r = byId.get(id);
    if (r) return r;
    problems.push(
      partialSet.has(id)
        ? `${name} -> slots/${id}: that slot is partial (interrupted sync), ignored`
        : `${name} -> slots/${id}: no such slot, ignored`,
    );
    return null;
  };
  const current = resolve('current', f.current);
  const previous = resolve('previous', f.previous);
  const partialDirs = partial.filter((id) => dirs.has(id));
  return { complete, partial, partialDirs, current, previous, problems };
}

function deletePartial(id: string): SlotAction {
  return { kind: 'delete-partial', id, describe: () => `rm -rf ${q(slotPath(id))} ${q(`${slotPath(id)}.json`)}` };
}

function deleteOld(id: string): SlotAction {
  // Record first: an interrupted delete leaves a partial slot, which the next boot removes.
  return { kind: 'delete-old', id, describe: () => `rm -f ${q(`${slotPath(id)}.json`)} && rm -rf ${q(slotPath(id))}` };
}

function salvageAction(id: string): SlotAction {
  return {
    kind: 'salvage',
    id,
    describe: () =>
      `rm -rf ${SALVAGE} && mv ${q(slotPath(id))} ${SALVAGE} && rm -f ${q(`${slotPath(id)}.json`)}  # its finished files serve the sync, then go`,
  };
}

const dropSalvage: SlotAction = { kind: 'drop-salvage', describe: () => `rm -rf ${SALVAGE}` };

function syncAction(id: string, seq: number, linkDest: string | null, salvage = false): SlotAction {
  return {
    kind: 'sync',
    id,
    seq,
    linkDest,
    salvage,
    describe: () => {
      const ld = [
        ...(linkDest === null ? [] : [`--link-dest=../${linkDest.replace(/^slots\//, '')}`]),
        ...(salvage ? [`--link-dest=../../${SALVAGE}`] : []),
      ];
      return ['rsync', ...SYNC_RSYNC_OPTIONS, ...ld, 'master:rootfs/', `${slotPath(id)}/`].map(q).join(' ');
    },
  };
}

function writeRecord(record: SlotRecord): SlotAction {
  const file = `${slotPath(record.id)}.json`;
  return {
    kind: 'write-record',
    record,
    describe: () =>
      `sync -f ${q(slotPath(record.id))} && printf '%s\\n' ${q(renderRecord(record))} > ${q(`${file}.tmp`)}` +
      ` && sync ${q(`${file}.tmp`)} && mv -T ${q(`${file}.tmp`)} ${q(file)}`,
  };
}

function flip(link: 'current' | 'previous', to: string): SlotAction {
  const tmp = `.${link}.new`;
  return { kind: 'flip', link, to, describe: () => `ln -sfn ${q(to)} ${q(tmp)} && mv -T ${q(tmp)} ${link}` };
}

// The master's id, or `<id>.rN` when that name is taken by a complete slot (never rsync into a fallback).
function freshId(base: string, taken: Set<string>): string {
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) {
    const suffix = `.r${n}`;
    const id = base.slice(0, MAX_ID - suffix.length) + suffix;
    if (!taken.has(id)) return id;
  }
}

function describeSlot(r: SlotRecord): string {
  return `slots/${r.id} (seq ${r.seq})`;
}

function withProblems(message: string, problems: string[]): string {
  return [message, ...problems].join('\n');
}

/** Decide which slot to boot and what to do to the partition first, from the slot state and the master's verdict. */
export function planRoot(input: RootInput): RootPlan {
  const { decision, rollback } = input;
  const forceFull = input.forceFull === true;
  const state = input.state;
  const problems = [...state.problems];
  const completeIds = new Set(state.complete.map((r) => r.id));
  // Only trust links that name a complete slot in this state (readSlotState guarantees it; be defensive).
  const current = state.current && completeIds.has(state.current.id) ? state.current : null;
  const previous = state.previous && completeIds.has(state.previous.id) ? state.previous : null;
  const linked = new Set([current?.id, previous?.id].filter((x): x is string => x !== undefined));
  const partials = [...new Set(state.partial)].filter((id) => isSlotId(id) && !completeIds.has(id) && !linked.has(id));
  const actions: SlotAction[] = partials.map(deletePartial);
  // any plan that does not sync ends by removing a salvage left by a cut (a syncing plan uses it first)
  const done = (use: SlotRecord | null, stale: boolean, message: string): RootPlan => ({
    use: use ? slotPath(use.id) : null,
    actions: input.salvage ? [...actions, dropSalvage] : actions,
    stale,
    message: withProblems(message, problems),
  });

  // Boot what is already there: current, else previous, else nothing.
  const fallback = (why: string, remedy: string): RootPlan => {
    if (current) return done(current, true, `${why}: booting ${describeSlot(current)}, which may be stale`);
    if (previous) {
      return done(
        previous,
        true,
        `${why} and there is no current slot: booting the previous one, ${describeSlot(previous)}, which may be stale`,
      );
    }
    return done(
      null,
      true,
      `${why} and the local disk holds no complete root slot: this node cannot boot until the master answers. ${remedy}`,
    );
  };

  if (rollback) {
    if (previous) {
      return done(
        previous,
        true,
        `rollback requested: booting the previous slot ${describeSlot(previous)}; current stays ${current ? `slots/${current.id}` : '(none)'}, no sync`,
      );
    }
    problems.unshift('rollback requested but there is no complete previous slot: falling back to current');
    if (current) {
      return done(
        current,
        decision.action !== 'keep',
        `booting current ${describeSlot(current)} without syncing (rollback asked for the previous slot, which is missing)`,
      );
    }
    // Nothing to roll back to and nothing current: follow the master's verdict below, which may sync.
  }

  const stamp = decision.masterStamp;
  const stampOk = stamp !== undefined && isSlotId(stamp.id) && isCount(stamp.seq);
  const wantSync = decision.action === 'sync' || (decision.action === 'keep' && current === null);

  if (decision.action === 'keep' && current) {
    for (const r of state.complete) if (r.id !== current.id && r.id !== previous?.id) actions.push(deleteOld(r.id));
    return done(current, false, `root is up to date: booting ${describeSlot(current)}`);
  }

  if (wantSync) {
    if (!stamp || !stampOk) {
      problems.unshift(
        stamp
          ? `master stamp ${JSON.stringify(stamp.id)} / seq ${stamp.seq} is not a valid slot id and seq`
          : 'no master stamp to sync to',
      );
      return fallback(
        'cannot sync: no valid master stamp',
        'Remedy: check that the master publishes a valid signed stamp (its id must match [0-9A-Za-z._-]{1,64}).',
      );
    }
    const id = freshId(stamp.id, completeIds);
    const linkDest = !forceFull && current ? slotPath(current.id) : null;
    // the interrupted slot to salvage: the one this sync retries, else the last; a newer cut replaces an older salvage
    const trees = partials.filter((p) => state.partialDirs?.includes(p));
    const cand = forceFull ? undefined : (trees.find((p) => p === id || p === stamp.id) ?? trees[trees.length - 1]);
    if (cand !== undefined) actions[partials.indexOf(cand)] = salvageAction(cand);
    const salvage = cand !== undefined || (!forceFull && input.salvage === true);
    actions.push(syncAction(id, stamp.seq, linkDest, salvage));
    actions.push(writeRecord({ id, seq: stamp.seq, complete: true }));
    if (current) actions.push(flip('previous', slotPath(current.id)));
    actions.push(flip('current', slotPath(id)));
    const keepPrev = current ? current.id : previous?.id;
    for (const r of state.complete) if (r.id !== id && r.id !== keepPrev) actions.push(deleteOld(r.id));
    if (salvage || input.salvage) actions.push(dropSalvage);
    const how =
      (linkDest ? `against ${linkDest} (--link-dest)` : forceFull ? 'as a full copy (forced)' : 'as a full copy') +
      (cand !== undefined
        ? `, reusing the finished files of the interrupted slots/${cand}`
        : salvage
          ? ', reusing the finished files of an interrupted sync (salvage/)'
          : '');
    const renamed = id !== stamp.id ? ` (as ${id}: ${stamp.id} is already a complete local slot)` : '';
    return {
      use: slotPath(id),
      actions,
      stale: false,
      message: withProblems(
        `syncing master stamp ${stamp.id} (seq ${stamp.seq}) into slots/${id}${renamed} ${how}, then booting it`,
        problems,
      ),
    };
  }

  if (decision.action === 'refuse') {
    const what = stamp
      ? `the master's stamp ${stamp.id} (seq ${stamp.seq}) was refused`
      : "the master's stamp was refused";
    return fallback(
      what,
      'Remedy: publish a valid signed stamp on the master (check its signature, key and seq), or boot with a known-good local slot.',
    );
  }
  // offline
  return fallback(
    'the master is unreachable',
    'Remedy: check the network and that the master runs and serves the root (masterip=, transport=), then reboot.',
  );
}

// rsync numbers: "3,120,003", "3.120.003" (locales with a decimal comma), or, with -h, "3.05M" / "44.76K".
function parseCount(s: string, allowSuffix: boolean): number | null {
  if (/^\d+$/.test(s)) return Number(s);
  if (/^\d{1,3}(,\d{3})+$/.test(s) || /^\d{1,3}(\.\d{3})+$/.test(s)) return Number(s.replace(/[,.]/g, ''));
  if (!allowSuffix) return null;
  const m = /^(\d+(?:[.,]\d+)?)([KMGTP])$/.exec(s);
  if (!m || m[1] === undefined || m[2] === undefined) return null;
  return Math.round(Number(m[1].replace(',', '.')) * 1000 ** ('KMGTP'.indexOf(m[2]) + 1));
}

const PROGRESS2_RE =
  /^\s*(\S+)\s+(\d{1,3})%\s+(\S+\/s)\s+([\d?]+:[\d?]{2}:[\d?]{2})(?:\s+\(xfr#\d+,\s*(?:to|ir)-chk=\d+\/\d+\))?\s*$/;

/** One rsync --info=progress2 status line -> bytes, percent, rate, for the console; null for anything else. */
export function parseProgress2(line: string): { bytes: number; percent: number; rate: string } | null {
  // A raw chunk holds several '\r'-separated redraws: the last non-blank one is the newest.
  const parts = line.split(/[\r\n]/).filter((p) => p.trim() !== '');
  const last = parts[parts.length - 1];
  if (last === undefined) return null;
  const m = PROGRESS2_RE.exec(last);
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined) return null;
  // -h values ("3.05M") are approximate, which is good enough for a progress display.
  const bytes = parseCount(m[1], true);
  const percent = Number(m[2]);
  if (bytes === null || percent > 100) return null;
  return { bytes, percent, rate: m[3] };
}

/** What the boot report keeps from rsync --stats. */
export interface RsyncStats {
  files: number;
  regularTransferred: number;
  totalSize: number;
  literalData: number;
  matchedData: number;
  bytesSent: number;
  bytesReceived: number;
}

const STATS_LINES: [keyof RsyncStats, RegExp][] = [
  ['files', /^Number of files: (\S+)(?: \(.*\))?$/],
  ['regularTransferred', /^Number of regular files transferred: (\S+)$/],
  ['totalSize', /^Total file size: (\S+) bytes$/],
  ['literalData', /^Literal data: (\S+) bytes$/],
  ['matchedData', /^Matched data: (\S+) bytes$/],
  ['bytesSent', /^Total bytes sent: (\S+)$/],
  ['bytesReceived', /^Total bytes received: (\S+)$/],
];

/** rsync --stats output (any surrounding text allowed) -> the numbers for the boot report; null if incomplete. */
export function parseRsyncStats(text: string): RsyncStats | null {
  // Exact numbers only: -h output ("3.05M") is rounded and ambiguous (-h: 1000s, -hh: 1024s), so it gives null.
  const found: Partial<RsyncStats> = {};
  for (const raw of text.split(/[\r\n]+/)) {
    const line = raw.trim();
    for (const [key, re] of STATS_LINES) {
      const m = re.exec(line);
      if (!m || m[1] === undefined) continue;
      const n = parseCount(m[1], false);
      if (n === null) return null;
      found[key] = n;
    }
  }
  for (const [key] of STATS_LINES) if (found[key] === undefined) return null;
  return found as RsyncStats;
}

/**
 * Seconds to wait before asking for a sync slot again: doubling from 5 s to at most 30 s, times a
 * jitter in [0.5, 1.5) so that nodes rebooted together do not come back together. (Asking is cheap:
 * one rsync over the node's open SSH connection, no new handshake.)
 */
export function syncSlotDelay(attempt: number, random: number): number {
  const base = Math.min(30, 5 * 2 ** Math.max(0, Math.min(attempt, 10)));
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), 0.999999) : 0.5;
  return Math.round(base * (0.5 + r) * 10) / 10;
}

/** What rootDecision needs: whether the master answered, its rootfs stamp file, the packed key, the current slot. */
export interface RootStampFacts {
  online: boolean;
  /** The master's stamps/rootfs.stamp text and signature (null: none). */
  master: { text: string; sig: string | null } | null;
  publicKeyPem: string | null;
  current: SlotRecord | null;
  /** The recovery button was held: copy again in full even when the stamp is current. */
  recovery: boolean;
}

/** The master's rootfs stamp against the current slot: the decision planRoot takes, a full copy or not, and a warning. */
export function rootDecision(f: RootStampFacts): {
  decision: RootDecision;
  forceFull: boolean;
  warning: string | null;
} {
  if (!f.online) return { decision: { action: 'offline' }, forceFull: false, warning: null };
  const local = f.current ? { name: 'rootfs' as const, seq: f.current.seq, id: f.current.id, created: '' } : null;
  const sd = decideStamp({
    name: 'rootfs',
    masterText: f.master?.text ?? null,
    masterSig: f.master?.sig ?? null,
    publicKeyPem: f.publicKeyPem,
    local,
    localComplete: f.current !== null,
  });
  const parsed = f.master ? parseStamp(f.master.text) : null;
  const masterStamp = parsed?.ok ? { id: parsed.stamp.id, seq: parsed.stamp.seq } : undefined;
  if (sd.action === 'refuse')
    return { decision: { action: 'refuse' }, forceFull: false, warning: `${sd.reason} (${sd.remedy})` };
  if (sd.action === 'keep' && f.recovery && masterStamp)
    return { decision: { action: 'sync', masterStamp }, forceFull: true, warning: null };
  if (sd.action === 'keep')
    return { decision: { action: 'keep', ...(masterStamp ? { masterStamp } : {}) }, forceFull: false, warning: null };
  if (masterStamp) return { decision: { action: 'sync', masterStamp }, forceFull: false, warning: null };
  return { decision: { action: 'offline' }, forceFull: false, warning: null };
}

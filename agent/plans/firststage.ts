// The commit point of the first stage: once a boot reached the master and finished its root phase, the
// kernel and initramfs it runs become the cached ones (and the local script that boots them is written).
import {
  cachedFrom,
  IPV4,
  type Announcement,
  type CacheRecord,
  type FirstStageReport,
  type StageSource,
} from '../contract/firststage.ts';

// Pure: the phase reads the disk and the command line, this decides, the phase carries it out.

export type { FirstStageReport };

/** What U-Boot said on the command line about the first stage this boot runs. */
export interface BootedStage {
  id?: string;
  from?: StageSource;
  try?: number;
  /** With from=rollback: the new first stage that was abandoned after its tries. */
  failed?: string;
}

export interface FirstStageFacts {
  online: boolean;
  /** The master's announcement, parsed (null: none, or it did not parse: see announcementError). */
  announcement: Announcement | null;
  announcementError?: string;
  booted: BootedStage;
  record: CacheRecord;
  /** U-Boot's tries file on p1 exists. */
  triesPresent: boolean;
  /** p1 holds exactly the local script this agent writes. */
  localScriptCurrent: boolean;
  /** Free bytes on the root partition, and how many to leave for the next root sync. */
  freeBytes: number;
  reserveBytes: number;
}

export type FirstStageAction = 'cache' | 'write-local-script' | 'clear-tries';

export interface FirstStagePlan {
  actions: FirstStageAction[];
  /** The record to write after 'cache' (cur: the booted one; prev: the old cur). */
  record: CacheRecord;
  /** Cache directories to keep (everything else under the cache folder is removed after the record is written). */
  keep: string[];
  /** Cache directories removed before the fetch, to make room: the damaged copy being replaced, or the old prev. */
  dropFirst: string[];
  warnings: string[];
  message: string;
  report: FirstStageReport;
}

/**
 * The primary the local script falls back to when the TFTP server DHCP names (a mirror) does not answer: the last
 * of the masters when there are several. Offline (no lease, no list) the script keeps the one it has, so an
 * offline boot never rewrites p1 for it.
 */
export function localScriptPrimary(f: {
  online: boolean;
  masters: readonly string[];
  kept: string | null;
}): string | null {
  if (!f.online) return f.kept;
  const last = f.masters.length > 1 ? (f.masters.at(-1) ?? null) : null;
  // U-Boot's TFTP takes an address: a primary given by name (master=name on the command line) gets no fallback
  return last !== null && IPV4.test(last) ? last : null;
}

export function planFirstStage(f: FirstStageFacts): FirstStagePlan {
  const a = f.announcement;
  const b = f.booted;
  const warnings: string[] = [];
  const report: FirstStageReport = {
    booted: b.id ?? null,
    from: b.from ?? null,
    announced: a?.id ?? null,
    cached: f.record.cur?.id ?? null,
    ...(b.failed ? { failed: b.failed } : {}),
  };
  const keepAll = [f.record.cur?.id, f.record.prev?.id].filter((x): x is string => Boolean(x));
  const none = (message: string): FirstStagePlan => ({
    actions: [],
    record: f.record,
    keep: keepAll,
    dropFirst: [],
    warnings,
    message,
    report,
  });
  if (b.from === 'rollback' && b.failed) {
    warnings.push(
      `first stage ${b.failed} failed ${a?.tries ?? 'its'} times in a row and was abandoned: this boot runs the cached ${b.id ?? '?'}; ` +
        'fix the image on the master and run `builder stage` (a newer first stage is tried again)',
    );
  }
  if (!f.online)
    return none(`master offline: the cache stays as it is (${f.record.cur ? `cur ${f.record.cur.id}` : 'empty'})`);
  if (!a) {
    if (f.announcementError)
      warnings.push(
        `the master's first-stage announcement is unusable: ${f.announcementError}; run \`builder stage\` on the master`,
      );
    return none('the master announces no first stage (staged by an older `builder stage`?): nothing is cached');
  }
  if (!b.id)
    return none("this boot was not loaded by clusterboot's boot scripts (no clusterboot.fs=): nothing is cached");
  if (b.id !== a.id) {
    return none(
      b.from === 'rollback'
        ? `running the cached ${b.id}; the master's ${a.id} stays abandoned until another is announced`
        : `this boot runs first stage ${b.id}, the master now announces ${a.id}: the next boot takes it`,
    );
  }
  const actions: FirstStageAction[] = [];
  const fresh = f.record.cur?.id !== a.id || b.from === 'refetch';
  let record = f.record;
  let keep = keepAll;
  let message = `first stage ${a.id} is the cached one (loaded from ${b.from ?? '?'})`;
  let dropFirst: string[] = [];
  if (fresh) {
    const need = a.kernel.size + a.initramfs.size;
    const prev = f.record.cur && f.record.cur.id !== a.id ? f.record.cur : f.record.prev;
    // what goes away makes room first: the copy being fetched again, or the prev the new one pushes out
    const gone = [f.record.cur, f.record.prev].filter(
      (x): x is NonNullable<typeof x> => x !== null && (x.id === a.id || x.id !== prev?.id),
    );
    const reclaim = gone.reduce((n, x) => n + x.kernel.size + x.initramfs.size, 0);
    if (need > f.freeBytes + reclaim - f.reserveBytes) {
      warnings.push(
        `the first-stage cache does not fit: it needs ${(need / 1e6).toFixed(0)} MB on the root partition, ` +
          `${(Math.max(0, f.freeBytes + reclaim - f.reserveBytes) / 1e6).toFixed(0)} MB are free beyond the root's reserve; the node keeps loading it by TFTP (enlarge p2)`,
      );
      return {
        actions: f.triesPresent ? ['clear-tries'] : [],
        record,
        keep,
        dropFirst,
        warnings,
        message: 'cache does not fit',
        report,
      };
    }
    actions.push('cache');
    dropFirst = gone.map((x) => x.id);
    record = { cur: cachedFrom(a), prev };
    keep = [a.id, ...(prev ? [prev.id] : [])];
    message =
      b.from === 'refetch'
        ? `first stage ${a.id} cached again (the disk's copy was damaged)`
        : `first stage ${a.id} booted well: cached${prev ? `, ${prev.id} kept as the previous one` : ''}`;
    report.cached = a.id;
  }
  if (f.triesPresent) actions.push('clear-tries');
  if (!f.localScriptCurrent) actions.push('write-local-script');
  return { actions, record, keep, dropFirst, warnings, message, report };
}

// The first-stage commit point: what a boot that reached the master caches, keeps and warns about.
import { describe, expect, test } from 'bun:test';
import { type Announcement, cachedFrom, stageFile, stageId } from '../../../../agent/contract/firststage.ts';
import { type FirstStageFacts, localScriptPrimary, planFirstStage } from '../../../../agent/plans/firststage.ts';

const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 13 + seed * 7 + 1) & 0xff);

function announcement(seed: number): Announcement {
  const kernel = stageFile(bytes(3000 + seed, seed));
  const initramfs = stageFile(bytes(2000 + seed, seed + 1));
  return {
    id: stageId(kernel.sha256, initramfs.sha256),
    kernel,
    kernelGz: stageFile(bytes(1000 + seed, seed + 2)),
    initramfs,
    bootargs: `console=ttyAMA0 panic=10 aufs=disk seed=${seed}`,
    tries: 3,
  };
}

const NEW = announcement(1);
const OLD = announcement(2);
const OLDER = announcement(3);

const facts = (over: Partial<FirstStageFacts> = {}): FirstStageFacts => ({
  online: true,
  announcement: NEW,
  booted: { id: NEW.id, from: 'tftp', try: 1 },
  record: { cur: null, prev: null },
  triesPresent: false,
  localScriptCurrent: false,
  freeBytes: 1e9,
  reserveBytes: 1e8,
  ...over,
});

describe('planFirstStage: nothing to commit', () => {
  test('offline: no actions, the record stays', () => {
    const record = { cur: cachedFrom(OLD), prev: null };
    const p = planFirstStage(facts({ online: false, record, booted: { id: OLD.id, from: 'offline' } }));
    expect(p.actions).toEqual([]);
    expect(p.record).toBe(record);
    expect(p.keep).toEqual([OLD.id]);
    expect(p.message).toContain('offline');
    expect(p.report).toEqual({ booted: OLD.id, from: 'offline', announced: NEW.id, cached: OLD.id });
  });
  test('online without an announcement: no actions, no warning', () => {
    const p = planFirstStage(facts({ announcement: null }));
    expect(p.actions).toEqual([]);
    expect(p.warnings).toEqual([]);
    expect(p.report.announced).toBeNull();
  });
  test('an unusable announcement is named in a warning', () => {
    const p = planFirstStage(facts({ announcement: null, announcementError: 'cb_tries is not 1..20' }));
    expect(p.actions).toEqual([]);
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings[0]).toContain('cb_tries is not 1..20');
  });
  test('not booted by the clusterboot scripts: no actions', () => {
    const p = planFirstStage(facts({ booted: {}, triesPresent: true }));
    expect(p.actions).toEqual([]);
    expect(p.message).toContain('clusterboot.fs=');
    expect(p.report).toEqual({ booted: null, from: null, announced: NEW.id, cached: null });
  });
  test('booted another first stage than announced: the next boot takes it', () => {
    const record = { cur: cachedFrom(OLD), prev: null };
    const p = planFirstStage(facts({ booted: { id: OLD.id, from: 'cache' }, record }));
    expect(p.actions).toEqual([]);
    expect(p.message).toContain('next boot takes it');
    expect(p.report.cached).toBe(OLD.id);
  });
  test('rollback: the abandoned first stage is warned about, the cache and the tries stay', () => {
    const record = { cur: cachedFrom(OLD), prev: cachedFrom(OLDER) };
    const p = planFirstStage(
      facts({
        booted: { id: OLD.id, from: 'rollback', failed: NEW.id },
        record,
        triesPresent: true,
        localScriptCurrent: true,
      }),
    );
    expect(p.actions).toEqual([]);
    expect(p.record).toBe(record);
    expect(p.keep).toEqual([OLD.id, OLDER.id]);
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings[0]).toContain(`first stage ${NEW.id} failed`);
    expect(p.warnings[0]).toContain(`cached ${OLD.id}`);
    expect(p.report).toEqual({ booted: OLD.id, from: 'rollback', announced: NEW.id, cached: OLD.id, failed: NEW.id });
  });
});

describe('planFirstStage: caching', () => {
  test('fresh: the booted stage becomes cur and the local script is written', () => {
    const p = planFirstStage(facts());
    expect(p.actions).toEqual(['cache', 'write-local-script']);
    expect(p.record).toEqual({ cur: cachedFrom(NEW), prev: null });
    expect(p.keep).toEqual([NEW.id]);
    expect(p.warnings).toEqual([]);
    expect(p.report).toEqual({ booted: NEW.id, from: 'tftp', announced: NEW.id, cached: NEW.id });
  });
  test('fresh with a tries file: it is cleared too', () => {
    const p = planFirstStage(facts({ triesPresent: true }));
    expect(p.actions).toEqual(['cache', 'clear-tries', 'write-local-script']);
  });
  test('fresh with the local script already there: only the cache', () => {
    expect(planFirstStage(facts({ localScriptCurrent: true })).actions).toEqual(['cache']);
  });
  test('a second stage: the old cur becomes prev, the one before is dropped', () => {
    const record = { cur: cachedFrom(OLD), prev: cachedFrom(OLDER) };
    const p = planFirstStage(facts({ record, localScriptCurrent: true }));
    expect(p.actions).toEqual(['cache']);
    expect(p.record).toEqual({ cur: cachedFrom(NEW), prev: cachedFrom(OLD) });
    expect(p.keep).toEqual([NEW.id, OLD.id]);
    expect(p.message).toContain(`${OLD.id} kept as the previous one`);
    expect(p.report.cached).toBe(NEW.id);
  });
  test('warm: booted from the cache it already holds: nothing to do', () => {
    const record = { cur: cachedFrom(NEW), prev: cachedFrom(OLD) };
    const p = planFirstStage(facts({ booted: { id: NEW.id, from: 'cache' }, record, localScriptCurrent: true }));
    expect(p.actions).toEqual([]);
    expect(p.record).toBe(record);
    expect(p.keep).toEqual([NEW.id, OLD.id]);
    expect(p.report.cached).toBe(NEW.id);
  });
  test('warm without the local script: only the script is written', () => {
    const record = { cur: cachedFrom(NEW), prev: null };
    const p = planFirstStage(facts({ booted: { id: NEW.id, from: 'cache' }, record }));
    expect(p.actions).toEqual(['write-local-script']);
    expect(p.record).toBe(record);
  });
  test('refetch: cached again, prev stays (not the same id twice)', () => {
    const record = { cur: cachedFrom(NEW), prev: cachedFrom(OLD) };
    const p = planFirstStage(facts({ booted: { id: NEW.id, from: 'refetch' }, record, localScriptCurrent: true }));
    expect(p.actions).toEqual(['cache']);
    expect(p.record).toEqual({ cur: cachedFrom(NEW), prev: cachedFrom(OLD) });
    expect(p.keep).toEqual([NEW.id, OLD.id]);
    expect(p.message).toContain('cached again');
  });
  test('refetch without a prev: prev stays empty', () => {
    const record = { cur: cachedFrom(NEW), prev: null };
    const p = planFirstStage(facts({ booted: { id: NEW.id, from: 'refetch' }, record }));
    expect(p.actions).toEqual(['cache', 'write-local-script']);
    expect(p.record).toEqual({ cur: cachedFrom(NEW), prev: null });
    expect(p.keep).toEqual([NEW.id]);
  });
});

describe('planFirstStage: the cache does not fit', () => {
  const need = NEW.kernel.size + NEW.initramfs.size;
  const tight = { freeBytes: need + 999, reserveBytes: 1000 };
  test('no cache, a warning, the record and keep unchanged', () => {
    const record = { cur: cachedFrom(OLD), prev: null };
    const p = planFirstStage(facts({ ...tight, record }));
    expect(p.actions).toEqual([]);
    expect(p.record).toBe(record);
    expect(p.keep).toEqual([OLD.id]);
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings[0]).toContain('does not fit');
    expect(p.report.cached).toBe(OLD.id);
  });
  test('the tries file is still cleared: the boot reached the commit point', () => {
    expect(planFirstStage(facts({ ...tight, triesPresent: true })).actions).toEqual(['clear-tries']);
  });
  test('exactly enough room beyond the reserve: it is cached', () => {
    const p = planFirstStage(facts({ freeBytes: need + 1000, reserveBytes: 1000 }));
    expect(p.actions).toEqual(['cache', 'write-local-script']);
  });
});

describe('planFirstStage: room made by what goes away', () => {
  const size = (a: Announcement) => a.kernel.size + a.initramfs.size;
  test('a refetch counts the damaged copy it replaces, and removes it before the fetch', () => {
    const record = { cur: cachedFrom(NEW), prev: cachedFrom(OLD) };
    const tight = { freeBytes: 1000 + 10, reserveBytes: 1000 };
    const p = planFirstStage(facts({ record, booted: { id: NEW.id, from: 'refetch' }, ...tight }));
    expect(p.actions).toEqual(['cache', 'write-local-script']);
    expect(p.dropFirst).toEqual([NEW.id]);
    expect(p.record.prev?.id).toBe(OLD.id);
    expect(size(NEW)).toBeGreaterThan(10);
  });
  test('a new first stage pushes out the old prev, counted and removed first; the old cur stays as prev', () => {
    const record = { cur: cachedFrom(OLD), prev: cachedFrom(OLDER) };
    const p = planFirstStage(facts({ record, freeBytes: 1000 + size(NEW) - size(OLDER), reserveBytes: 1000 }));
    expect(p.actions).toEqual(['cache', 'write-local-script']);
    expect(p.dropFirst).toEqual([OLDER.id]);
    expect(p.keep).toEqual([NEW.id, OLD.id]);
  });
  test('nothing goes away and no room: not cached, nothing removed', () => {
    const record = { cur: null, prev: null };
    const p = planFirstStage(facts({ record, freeBytes: 1000 + size(NEW) - 1, reserveBytes: 1000 }));
    expect(p.actions).toEqual([]);
    expect(p.dropFirst).toEqual([]);
  });
});

// #19: the local script's fallback: the primary, the last of several masters; offline, the one the script has
describe('localScriptPrimary', () => {
  test('several masters: the last (the primary); one master: none', () => {
    expect(localScriptPrimary({ online: true, masters: ['10.77.0.2', '10.77.0.1'], kept: null })).toBe('10.77.0.1');
    expect(localScriptPrimary({ online: true, masters: ['10.77.0.1'], kept: '10.77.0.1' })).toBeNull();
    expect(localScriptPrimary({ online: true, masters: [], kept: null })).toBeNull();
    // a primary named, not addressed (master=name): U-Boot's TFTP cannot use it, so no fallback (and no throw)
    expect(localScriptPrimary({ online: true, masters: ['mirror1', 'primary.lan'], kept: null })).toBeNull();
  });
  test('offline: the script keeps the fallback it has (no p1 write for it)', () => {
    expect(localScriptPrimary({ online: false, masters: [], kept: '10.77.0.1' })).toBe('10.77.0.1');
    expect(localScriptPrimary({ online: false, masters: ['10.77.0.2', '10.77.0.1'], kept: null })).toBeNull();
  });
});

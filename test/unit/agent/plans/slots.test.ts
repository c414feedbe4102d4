import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, sign } from 'node:crypto';
import {
  isSlotId,
  parseProgress2,
  parseRsyncStats,
  planRoot,
  readSlotState,
  renderRecord,
  rootDecision,
} from '../../../../agent/plans/slots.ts';
import type {
  RootDecision,
  RootPlan,
  SlotAction,
  SlotFacts,
  SlotRecord,
  SlotState,
} from '../../../../agent/plans/slots.ts';
import { newStamp, renderStamp } from '../../../../agent/contract/stamp.ts';
import { rng } from '../../../fixtures/rng.ts';
import { FULL_COPY, LINK_DEST, MISSING_SOURCE } from '../../../fixtures/rsync.ts';

const rec = (id: string, seq: number, extra: Partial<SlotRecord> = {}): string =>
  renderRecord({ id, seq, complete: true, ...extra });
const plain = (actions: SlotAction[]) => actions.map((a) => ({ ...a, describe: a.describe() }));
const shape = (p: RootPlan): unknown => ({ use: p.use, stale: p.stale, actions: plain(p.actions) });

// A typical disk: 15 (previous), 17 (current), a leftover 12, and an interrupted 18.
const FACTS: SlotFacts = {
  dirs: ['12-a', '15-b', '17-c', '18-d'],
  records: {
    '12-a.json': rec('12-a', 12),
    '15-b.json': JSON.stringify({
      id: '15-b',
      seq: 15,
      complete: true,
      files: 10,
      bytes: 100,
      finishedStamp: '2026-01-01',
    }),
    '17-c.json': rec('17-c', 17),
  },
  current: 'slots/17-c',
  previous: 'slots/15-b',
};

describe('readSlotState', () => {
  test('classifies complete and partial slots and resolves the links', () => {
    const s = readSlotState(FACTS);
    expect(s).toEqual({
      complete: [
        { id: '12-a', seq: 12, complete: true },
        { id: '15-b', seq: 15, complete: true, files: 10, bytes: 100 },
        { id: '17-c', seq: 17, complete: true },
      ],
      partial: ['18-d'],
      partialDirs: ['18-d'],
      current: { id: '17-c', seq: 17, complete: true },
      previous: { id: '15-b', seq: 15, complete: true, files: 10, bytes: 100 },
      problems: [],
    });
  });

  test('bad records make their slot partial, with a problem line', () => {
    const s = readSlotState({
      dirs: ['1-a', '2-b', '3-c', '4-d', '5-e', '6-f'],
      records: {
        '1-a.json': '{"id":"1-a","seq":1,"comp',
        '2-b.json': JSON.stringify({ id: '2-x', seq: 2, complete: true }),
        '3-c.json': JSON.stringify({ id: '3-c', seq: 3, complete: false }),
        '4-d.json': JSON.stringify({ id: '4-d', seq: -1, complete: true }),
        '5-e.json': '[1,2]',
        '6-f.json': JSON.stringify({ id: '6-f', seq: 6, complete: true, files: 'many' }),
      },
      current: null,
      previous: null,
    });
    expect(s.complete).toEqual([]);
    expect(s.partial).toEqual(['1-a', '2-b', '3-c', '4-d', '5-e', '6-f']);
    // complete:false is an ordinary interrupted sync: no problem line for it.
    expect(s.problems).toEqual([
      'slots/1-a.json: record does not parse as JSON; the slot is treated as partial',
      'slots/2-b.json: record id "2-x" does not match its directory; the slot is treated as partial',
      'slots/4-d.json: record has no valid seq; the slot is treated as partial',
      'slots/5-e.json: record is not a JSON object; the slot is treated as partial',
      'slots/6-f.json: record has an invalid files count; the slot is treated as partial',
    ]);
  });

  test('links to partial or missing slots are dropped with a problem; odd names are reported', () => {
    const s = readSlotState({
      dirs: ['17-c', '18-d', 'lost+found', 'has space'],
      records: {
        '17-c.json': rec('17-c', 17),
        '9-z.json': rec('9-z', 9),
        'notes.txt.json': '{}',
        'bad name.json': '{}',
      },
      current: 'slots/18-d',
      previous: '/elsewhere/17-c',
    });
    expect(s.current).toBeNull();
    expect(s.previous).toBeNull();
    expect(s.complete.map((r) => r.id)).toEqual(['17-c']);
    expect(s.partial).toEqual(['18-d', '9-z', 'notes.txt']);
    expect(s.problems).toEqual([
      'slots/lost+found: not a valid slot name, left alone',
      'slots/has space: not a valid slot name, left alone',
      'slots/9-z.json: record without a slot directory, will be removed',
      'slots/notes.txt.json: record without a slot directory, will be removed',
      'slots/bad name.json: not a valid record name, left alone',
      'current -> slots/18-d: that slot is partial (interrupted sync), ignored',
      'previous -> /elsewhere/17-c: not a link to a slot, ignored',
    ]);
    expect(readSlotState({ dirs: [], records: {}, current: 'slots/5-x', previous: null }).problems).toEqual([
      'current -> slots/5-x: no such slot, ignored',
    ]);
  });

  test('accepts ./slots/<id> and a trailing slash; never throws on junk', () => {
    const s = readSlotState({
      dirs: ['1-a'],
      records: { '1-a.json': rec('1-a', 1) },
      current: './slots/1-a/',
      previous: 'slots/1-a',
    });
    expect(s.current?.id).toBe('1-a');
    expect(s.previous?.id).toBe('1-a');
    const junk = {
      dirs: ['..', '.', '', 'x'.repeat(65)],
      records: { '.json': 'null', '..json': '', 'x.json': '"' },
      current: '',
      previous: 'slots/..',
    };
    expect(() => readSlotState(junk)).not.toThrow();
    expect(readSlotState(junk).complete).toEqual([]);
  });

  test('slot ids', () => {
    expect(isSlotId('17-20261125T110000Z')).toBe(true);
    expect(isSlotId('17-x.r2')).toBe(true);
    expect(isSlotId('a'.repeat(64))).toBe(true);
    for (const bad of ['', '.', '..', 'a/b', 'a b', 'a'.repeat(65), 'ä']) expect(isSlotId(bad)).toBe(false);
  });
});

describe('planRoot', () => {
  const state = readSlotState(FACTS);
  const sync = (id: string, seq: number): RootDecision => ({ action: 'sync', masterStamp: { id, seq } });

  test('sync: salvage the partial, rsync with link-dest, record, flip previous then current, delete the rest', () => {
    const p = planRoot({ state, decision: sync('19-e', 19), rollback: false });
    expect(shape(p)).toEqual({
      use: 'slots/19-e',
      stale: false,
      actions: [
        {
          kind: 'salvage',
          id: '18-d',
          describe:
            'rm -rf salvage && mv slots/18-d salvage && rm -f slots/18-d.json  # its finished files serve the sync, then go',
        },
        {
          kind: 'sync',
          id: '19-e',
          seq: 19,
          linkDest: 'slots/17-c',
          salvage: true,
          describe:
            'rsync -aHAX --numeric-ids --delete --stats --info=progress2 --link-dest=../17-c --link-dest=../../salvage master:rootfs/ slots/19-e/',
        },
        {
          kind: 'write-record',
          record: { id: '19-e', seq: 19, complete: true },
          describe:
            `sync -f slots/19-e && printf '%s\\n' '{"id":"19-e","seq":19,"complete":true}' > slots/19-e.json.tmp` +
            ' && sync slots/19-e.json.tmp && mv -T slots/19-e.json.tmp slots/19-e.json',
        },
        {
          kind: 'flip',
          link: 'previous',
          to: 'slots/17-c',
          describe: 'ln -sfn slots/17-c .previous.new && mv -T .previous.new previous',
        },
        {
          kind: 'flip',
          link: 'current',
          to: 'slots/19-e',
          describe: 'ln -sfn slots/19-e .current.new && mv -T .current.new current',
        },
        { kind: 'delete-old', id: '12-a', describe: 'rm -f slots/12-a.json && rm -rf slots/12-a' },
        { kind: 'delete-old', id: '15-b', describe: 'rm -f slots/15-b.json && rm -rf slots/15-b' },
        { kind: 'drop-salvage', describe: 'rm -rf salvage' },
      ],
    });
    expect(p.message).toBe(
      'syncing master stamp 19-e (seq 19) into slots/19-e against slots/17-c (--link-dest), reusing the finished files of the interrupted slots/18-d, then booting it',
    );
  });

  test('forceFull: no link-dest, partials still deleted first', () => {
    const p = planRoot({ state, decision: sync('19-e', 19), rollback: false, forceFull: true });
    expect(p.actions[0]?.kind).toBe('delete-partial');
    const s = p.actions.find((a) => a.kind === 'sync');
    expect(s && s.kind === 'sync' && s.linkDest).toBeNull();
    expect(s?.describe()).toBe(
      'rsync -aHAX --numeric-ids --delete --stats --info=progress2 master:rootfs/ slots/19-e/',
    );
    expect(p.message).toContain('full copy (forced)');
  });

  test('first sync on an empty disk: full copy, no previous flip', () => {
    const p = planRoot({
      state: readSlotState({ dirs: [], records: {}, current: null, previous: null }),
      decision: sync('1-a', 1),
      rollback: false,
    });
    expect(p.use).toBe('slots/1-a');
    expect(p.actions.map((a) => a.kind)).toEqual(['sync', 'write-record', 'flip']);
    expect(p.actions[0]?.describe()).toBe(
      'rsync -aHAX --numeric-ids --delete --stats --info=progress2 master:rootfs/ slots/1-a/',
    );
  });

  test('re-sync of the current stamp goes to a fresh .rN id, never into the fallback', () => {
    const s = readSlotState({
      dirs: ['17-c', '17-c.r2', '16-b'],
      records: {
        '17-c.json': rec('17-c', 17),
        '17-c.r2.json': '{"id":"17-c.r2","seq":17,"complete":false}',
        '16-b.json': rec('16-b', 16),
      },
      current: 'slots/17-c',
      previous: 'slots/16-b',
    });
    const p = planRoot({ state: s, decision: sync('17-c', 17), rollback: false });
    expect(p.use).toBe('slots/17-c.r2');
    expect(p.actions.map((a) => `${a.kind} ${a.describe()}`)).toEqual([
      'salvage rm -rf salvage && mv slots/17-c.r2 salvage && rm -f slots/17-c.r2.json  # its finished files serve the sync, then go',
      'sync rsync -aHAX --numeric-ids --delete --stats --info=progress2 --link-dest=../17-c --link-dest=../../salvage master:rootfs/ slots/17-c.r2/',
      `write-record sync -f slots/17-c.r2 && printf '%s\\n' '{"id":"17-c.r2","seq":17,"complete":true}' > slots/17-c.r2.json.tmp && sync slots/17-c.r2.json.tmp && mv -T slots/17-c.r2.json.tmp slots/17-c.r2.json`,
      'flip ln -sfn slots/17-c .previous.new && mv -T .previous.new previous',
      'flip ln -sfn slots/17-c.r2 .current.new && mv -T .current.new current',
      'delete-old rm -f slots/16-b.json && rm -rf slots/16-b',
      'drop-salvage rm -rf salvage',
    ]);
    expect(p.message).toContain('as 17-c.r2: 17-c is already a complete local slot');
    // Taken .r2 (complete) -> .r3; a 64-character id is shortened to stay a valid id.
    const s2 = readSlotState({
      dirs: ['17-c', '17-c.r2'],
      records: { '17-c.json': rec('17-c', 17), '17-c.r2.json': rec('17-c.r2', 17) },
      current: 'slots/17-c.r2',
      previous: 'slots/17-c',
    });
    expect(planRoot({ state: s2, decision: sync('17-c', 17), rollback: false }).use).toBe('slots/17-c.r3');
    const long = 'L'.repeat(64);
    const s3 = readSlotState({
      dirs: [long],
      records: { [`${long}.json`]: rec(long, 3) },
      current: `slots/${long}`,
      previous: null,
    });
    const p3 = planRoot({ state: s3, decision: sync(long, 3), rollback: false });
    expect(p3.use).toBe(`slots/${'L'.repeat(61)}.r2`);
  });

  test('keep: boot current, clear partials and unreferenced slots', () => {
    const p = planRoot({ state, decision: { action: 'keep', masterStamp: { id: '17-c', seq: 17 } }, rollback: false });
    expect(shape(p)).toEqual({
      use: 'slots/17-c',
      stale: false,
      actions: [
        { kind: 'delete-partial', id: '18-d', describe: 'rm -rf slots/18-d slots/18-d.json' },
        { kind: 'delete-old', id: '12-a', describe: 'rm -f slots/12-a.json && rm -rf slots/12-a' },
      ],
    });
    expect(p.message).toBe('root is up to date: booting slots/17-c (seq 17)');
  });

  test('keep without a current slot is a sync when the stamp is known', () => {
    const s = readSlotState({ ...FACTS, current: null });
    const p = planRoot({
      state: s,
      decision: { action: 'keep', masterStamp: { id: '17-c', seq: 17 } },
      rollback: false,
    });
    expect(p.use).toBe('slots/17-c.r2');
    expect(p.actions.map((a) => a.kind)).toEqual([
      'salvage',
      'sync',
      'write-record',
      'flip',
      'delete-old',
      'delete-old',
      'drop-salvage',
    ]);
    // previous (15-b) is kept: there was no current to replace it with.
    expect(p.actions.filter((a) => a.kind === 'delete-old').map((a) => (a.kind === 'delete-old' ? a.id : ''))).toEqual([
      '12-a',
      '17-c',
    ]);
    const sy = p.actions[1];
    expect(sy?.kind === 'sync' && sy.linkDest).toBeNull();
  });

  test('offline / refuse: boot current, stale, only partials deleted', () => {
    const off = planRoot({ state, decision: { action: 'offline' }, rollback: false });
    expect(shape(off)).toEqual({
      use: 'slots/17-c',
      stale: true,
      actions: [{ kind: 'delete-partial', id: '18-d', describe: 'rm -rf slots/18-d slots/18-d.json' }],
    });
    expect(off.message).toBe('the master is unreachable: booting slots/17-c (seq 17), which may be stale');
    const ref = planRoot({
      state,
      decision: { action: 'refuse', masterStamp: { id: '20-x', seq: 20 } },
      rollback: false,
    });
    expect(ref.use).toBe('slots/17-c');
    expect(ref.stale).toBe(true);
    expect(ref.message).toBe(
      "the master's stamp 20-x (seq 20) was refused: booting slots/17-c (seq 17), which may be stale",
    );
  });

  test('offline with nothing local: unbootable, with a remedy; with only previous: boot previous', () => {
    const empty = readSlotState({ dirs: ['3-x'], records: {}, current: null, previous: null });
    const p = planRoot({ state: empty, decision: { action: 'offline' }, rollback: false });
    expect(p.use).toBeNull();
    expect(p.actions.map((a) => a.describe())).toEqual(['rm -rf slots/3-x slots/3-x.json']);
    expect(p.message).toContain('cannot boot until the master answers');
    expect(p.message).toContain('Remedy:');
    const r = planRoot({ state: empty, decision: { action: 'refuse' }, rollback: false });
    expect(r.use).toBeNull();
    expect(r.message).toContain('Remedy: publish a valid signed stamp');
    const onlyPrev = readSlotState({ ...FACTS, current: 'slots/18-d' });
    const q = planRoot({ state: onlyPrev, decision: { action: 'offline' }, rollback: false });
    expect(q.use).toBe('slots/15-b');
    expect(q.stale).toBe(true);
    expect(q.message).toBe(
      'the master is unreachable and there is no current slot: booting the previous one, slots/15-b (seq 15), which may be stale\n' +
        'current -> slots/18-d: that slot is partial (interrupted sync), ignored',
    );
  });

  test('rollback boots previous without syncing; without previous falls back to current', () => {
    const p = planRoot({ state, decision: sync('19-e', 19), rollback: true });
    expect(shape(p)).toEqual({
      use: 'slots/15-b',
      stale: true,
      actions: [{ kind: 'delete-partial', id: '18-d', describe: 'rm -rf slots/18-d slots/18-d.json' }],
    });
    expect(p.message).toBe(
      'rollback requested: booting the previous slot slots/15-b (seq 15); current stays slots/17-c, no sync',
    );
    const noPrev = readSlotState({ ...FACTS, previous: null });
    const q = planRoot({ state: noPrev, decision: { action: 'keep' }, rollback: true });
    expect(q.use).toBe('slots/17-c');
    expect(q.stale).toBe(false);
    expect(q.actions.map((a) => a.kind)).toEqual(['delete-partial']);
    expect(q.message).toBe(
      'booting current slots/17-c (seq 17) without syncing (rollback asked for the previous slot, which is missing)\n' +
        'rollback requested but there is no complete previous slot: falling back to current',
    );
    // Nothing at all to roll back to: the master's verdict still applies.
    const none = readSlotState({ dirs: [], records: {}, current: null, previous: null });
    expect(planRoot({ state: none, decision: sync('1-a', 1), rollback: true }).use).toBe('slots/1-a');
  });

  test('a sync without a usable stamp falls back to what is there', () => {
    const p = planRoot({ state, decision: { action: 'sync' }, rollback: false });
    expect(p.use).toBe('slots/17-c');
    expect(p.stale).toBe(true);
    expect(p.actions.map((a) => a.kind)).toEqual(['delete-partial']);
    expect(p.message).toContain('no master stamp to sync to');
    const bad = planRoot({ state, decision: sync('../etc', 3), rollback: false });
    expect(bad.actions.some((a) => a.kind === 'sync')).toBe(false);
    expect(bad.message).toContain('is not a valid slot id');
  });

  test('state problems are appended to the message', () => {
    const s = readSlotState({ ...FACTS, dirs: [...FACTS.dirs, 'lost+found'] });
    const p = planRoot({ state: s, decision: { action: 'keep' }, rollback: false });
    expect(p.message.split('\n')).toEqual([
      'root is up to date: booting slots/17-c (seq 17)',
      'slots/lost+found: not a valid slot name, left alone',
    ]);
  });

  test('describe() output is valid shell', () => {
    const p = planRoot({ state, decision: sync('19-e', 19), rollback: false });
    const script = p.actions.map((a) => a.describe()).join('\n');
    const r = spawnSync('sh', ['-n'], { input: script });
    expect(r.status).toBe(0);
  });
});

// ---- seeded property test: random disks, verdicts and flags; every plan replayed on a model of the disk ----

interface Disk {
  dirs: Set<string>;
  records: Map<string, string>;
  current: string | null;
  previous: string | null;
  salvage?: boolean;
}

const toFacts = (d: Disk): SlotFacts => ({
  dirs: [...d.dirs],
  records: Object.fromEntries([...d.records].map(([id, t]) => [`${id}.json`, t])),
  current: d.current,
  previous: d.previous,
});

function apply(d: Disk, a: SlotAction): void {
  switch (a.kind) {
    case 'delete-partial':
    case 'delete-old':
      d.records.delete(a.id);
      d.dirs.delete(a.id);
      break;
    case 'salvage':
      if (!d.dirs.has(a.id)) throw new Error(`salvage of ${a.id}, which is not there`);
      d.records.delete(a.id);
      d.dirs.delete(a.id);
      d.salvage = true;
      break;
    case 'drop-salvage':
      d.salvage = false;
      break;
    case 'sync':
      d.dirs.add(a.id);
      break;
    case 'write-record':
      d.records.set(a.record.id, renderRecord(a.record));
      break;
    case 'flip':
      d[a.link] = a.to;
      break;
  }
}

function randomCase(rnd: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const pool = ['1-a', '2-b', '3-c', '4-d', '5-e', '3-c.r2', '6-f'];
  const disk: Disk = { dirs: new Set(), records: new Map(), current: null, previous: null };
  for (const id of pool) {
    if (rnd() < 0.5) continue;
    const seq = Number(id.split('-')[0]);
    const kind = rnd();
    if (kind < 0.15)
      disk.records.set(id, rec(id, seq)); // orphan record, no directory
    else {
      disk.dirs.add(id);
      if (kind < 0.6) disk.records.set(id, rec(id, seq));
      else if (kind < 0.68) disk.records.set(id, JSON.stringify({ id, seq, complete: false }));
      else if (kind < 0.74) disk.records.set(id, '{"id":');
      else if (kind < 0.8) disk.records.set(id, rec(pick(pool), seq));
      // else: no record at all
    }
  }
  if (rnd() < 0.1) disk.dirs.add('lost+found');
  const link = (): string | null => {
    const r = rnd();
    if (r < 0.2) return null;
    if (r < 0.25) return '/abs/path';
    return `slots/${pick(pool)}`;
  };
  disk.current = link();
  disk.previous = link();
  const action = pick(['sync', 'keep', 'refuse', 'offline'] as const);
  const stampR = rnd();
  const masterStamp =
    stampR < 0.1
      ? undefined
      : stampR < 0.13
        ? { id: 'bad/id', seq: 1 }
        : { id: pick([...pool, '7-g', '8-h']), seq: Math.floor(rnd() * 10) };
  const decision: RootDecision = masterStamp ? { action, masterStamp } : { action };
  return { disk, decision, rollback: rnd() < 0.2, forceFull: rnd() < 0.2, salvage: rnd() < 0.3 };
}

describe('planRoot properties (3000 seeded cases)', () => {
  test('invariants hold, and every crash point leaves a bootable current', () => {
    const rnd = rng(0xc1b007);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) {
      const c = randomCase(rnd);
      const state: SlotState = readSlotState(toFacts(c.disk));
      const plan = planRoot({
        state,
        decision: c.decision,
        rollback: c.rollback,
        forceFull: c.forceFull,
        salvage: c.salvage,
      });
      const ctx = `case ${i}: ${JSON.stringify({ facts: toFacts(c.disk), decision: c.decision, rollback: c.rollback, forceFull: c.forceFull })}`;
      const completeIds = new Set(state.complete.map((r) => r.id));
      const synced = plan.actions.flatMap((a) => (a.kind === 'sync' ? [a.id] : []));
      const outcome =
        plan.use === null
          ? 'none'
          : synced.length
            ? synced[0] !== c.decision.masterStamp?.id
              ? 'sync-renamed'
              : 'sync'
            : plan.use === (state.previous && `slots/${state.previous.id}`) && c.rollback
              ? 'rollback'
              : 'local';
      counts[outcome] = (counts[outcome] ?? 0) + 1;

      // use is a complete slot, the slot being synced, or null.
      if (plan.use !== null) {
        const id = plan.use.replace(/^slots\//, '');
        if (!completeIds.has(id) && !synced.includes(id))
          throw new Error(`use ${plan.use} is neither complete nor synced; ${ctx}`);
      }
      expect(synced.length).toBeLessThanOrEqual(1);
      for (const id of synced) if (completeIds.has(id)) throw new Error(`sync into complete slot ${id}; ${ctx}`);
      // Partials first; the message is never empty; every describe() is non-empty one-line shell.
      const early = (k: string) => k === 'delete-partial' || k === 'salvage';
      const firstOther = plan.actions.findIndex((a) => !early(a.kind) && a.kind !== 'drop-salvage');
      if (firstOther >= 0 && plan.actions.slice(firstOther).some((a) => early(a.kind)))
        throw new Error(`partial deleted late; ${ctx}`);
      // salvage: at most one, of a partial (never a complete or linked slot), only for a sync, which uses it;
      // whatever the plan, no salvage is left at its end
      const salvaged = plan.actions.flatMap((a) => (a.kind === 'salvage' ? [a.id] : []));
      expect(salvaged.length).toBeLessThanOrEqual(1);
      for (const id of salvaged) {
        if (!state.partial.includes(id) || completeIds.has(id)) throw new Error(`salvages non-partial ${id}; ${ctx}`);
        if (!synced.length) throw new Error(`salvage without a sync; ${ctx}`);
      }
      const syncA = plan.actions.find((a) => a.kind === 'sync');
      if (syncA?.kind === 'sync' && syncA.salvage !== (salvaged.length > 0 || (c.salvage && !c.forceFull)))
        throw new Error(`sync.salvage does not match what is there; ${ctx}`);
      if ((salvaged.length || c.salvage) && plan.actions.at(-1)?.kind !== 'drop-salvage')
        throw new Error(`salvage left at the end; ${ctx}`);
      expect(plan.message.length).toBeGreaterThan(0);
      for (const a of plan.actions) {
        const d = a.describe();
        if (d.trim() === '' || d.includes('\n')) throw new Error(`bad describe ${JSON.stringify(d)}; ${ctx}`);
      }

      // Replay on the model disk, checking the link invariants before each delete and bootability at each step.
      const disk: Disk = {
        dirs: new Set(c.disk.dirs),
        records: new Map(c.disk.records),
        current: c.disk.current,
        previous: c.disk.previous,
        salvage: c.salvage,
      };
      const hadCurrent = state.current !== null;
      const useId = plan.use?.replace(/^slots\//, '');
      for (const [k, a] of plan.actions.entries()) {
        if (a.kind === 'delete-partial' || a.kind === 'delete-old') {
          // The booted slot is never deleted; a partial left under the name being synced is cleared before the sync.
          const beforeItsSync = plan.actions.slice(k + 1).some((b) => b.kind === 'sync' && b.id === a.id);
          if (a.id === useId && !(a.kind === 'delete-partial' && beforeItsSync))
            throw new Error(`deletes use ${a.id}; ${ctx}`);
          if (disk.current === `slots/${a.id}` || disk.previous === `slots/${a.id}`) {
            // Only allowed if that link is already dangling (it pointed at a partial slot).
            const live = readSlotState(toFacts(disk));
            if (live.current?.id === a.id || live.previous?.id === a.id)
              throw new Error(`deletes linked slot ${a.id} at action ${k}; ${ctx}`);
          }
        }
        if (a.kind === 'flip') {
          const target = a.to.replace(/^slots\//, '');
          if (!readSlotState(toFacts(disk)).complete.some((r) => r.id === target))
            throw new Error(`flip to incomplete ${a.to}; ${ctx}`);
        }
        apply(disk, a);
        const after = readSlotState(toFacts(disk));
        if (hadCurrent && after.current === null) throw new Error(`crash after action ${k} leaves no current; ${ctx}`);
      }
      // After the whole plan: the booted slot is complete on disk, and a sync left current -> it.
      const end = readSlotState(toFacts(disk));
      if (useId !== undefined && !end.complete.some((r) => r.id === useId))
        throw new Error(`use not complete at the end; ${ctx}`);
      if (synced.length && end.current?.id !== synced[0])
        throw new Error(`current not flipped to the synced slot; ${ctx}`);
      if (disk.salvage) throw new Error(`salvage still there after the plan; ${ctx}`);
      expect(end.partial.filter((id) => state.partial.includes(id))).toEqual([]);
    }
    // The generator reaches every kind of outcome.
    expect(Object.keys(counts).sort()).toEqual(['local', 'none', 'rollback', 'sync', 'sync-renamed']);
    for (const n of Object.values(counts)) expect(n).toBeGreaterThan(30);
  });
});

// ---- rsync output: captures of rsync 3.5.0 (test/fixtures/rsync.ts), plus a live run of the host's rsync ----

// Progress redraws as the console reader sees them: split on '\r' and '\n'.
const redraws = (text: string): string[] => text.split(/[\r\n]/).filter((l) => l.trim() !== '');
const progressPart = (text: string): string => text.slice(0, text.indexOf('Number of files:'));

describe('parseProgress2', () => {
  test('every redraw of a real run parses, including the first one without the xfr# tail', () => {
    const lines = redraws(progressPart(FULL_COPY));
    expect(lines.length).toBe(17);
    const parsed = lines.map(parseProgress2);
    expect(parsed[0]).toEqual({ bytes: 32768, percent: 1, rate: '0.00kB/s' });
    expect(parsed[3]).toEqual({ bytes: 440000, percent: 14, rate: '388.37MB/s' });
    expect(parsed[16]).toEqual({ bytes: 3120003, percent: 99, rate: '490.70MB/s' }); // the symlink's 2 bytes keep it at 99%
    for (const p of parsed) expect(p).not.toBeNull();
    expect(
      redraws(progressPart(LINK_DEST))
        .map(parseProgress2)
        .map((p) => p?.bytes),
    ).toEqual([0, 700, 205000, 205004, 205004, 205004]);
  });

  test('a raw chunk with several redraws gives the newest', () => {
    expect(
      parseProgress2(
        '\r     40,000   1%    6.90MB/s    0:00:00 (xfr#1, to-chk=14/17)\r    440,000  14%  388.37MB/s    0:00:00 (xfr#2, to-chk=13/17)',
      ),
    ).toEqual({
      bytes: 440000,
      percent: 14,
      rate: '388.37MB/s',
    });
  });

  test('ir-chk, -h units, dotted thousands, unknown ETA', () => {
    expect(parseProgress2('              9   0%    4.88kB/s    0:00:00 (xfr#2, ir-chk=1079/1122)')).toEqual({
      bytes: 9,
      percent: 0,
      rate: '4.88kB/s',
    });
    expect(parseProgress2('      3,013,500 100%   23.95MB/s    0:00:00 (xfr#2401, to-chk=0/2442)')).toEqual({
      bytes: 3013500,
      percent: 100,
      rate: '23.95MB/s',
    });
    expect(parseProgress2('          3.05M  99%  718.17MB/s    0:00:00 (xfr#12, to-chk=1/17)')).toEqual({
      bytes: 3050000,
      percent: 99,
      rate: '718.17MB/s',
    });
    expect(parseProgress2('         32.77K   1%    0.00kB/s    0:00:00  ')).toEqual({
      bytes: 32770,
      percent: 1,
      rate: '0.00kB/s',
    });
    expect(parseProgress2('      3.120.003  99%   90.70MB/s    0:00:00 (xfr#13, to-chk=0/17)')?.bytes).toBe(3120003);
    expect(parseProgress2('  1,234,567,890  42%   11.20MB/s   12:34:56')).toEqual({
      bytes: 1234567890,
      percent: 42,
      rate: '11.20MB/s',
    });
    expect(parseProgress2('         32,768   0%    0.00kB/s  ??:??:??')?.bytes).toBe(32768);
  });

  test('anything else is null', () => {
    for (const l of [
      '',
      '\r',
      'Number of files: 17 (reg: 13, dir: 3, link: 1)',
      'sent 19 bytes  received 12 bytes  62.00 bytes/sec',
      'etc/passwd',
      '1,2,3 12% 1MB/s 0:00:00',
      '   100  101%  1kB/s  0:00:00',
      'rsync: [sender] change_dir "/x" failed',
    ]) {
      expect(parseProgress2(l)).toBeNull();
    }
  });
});

describe('parseRsyncStats', () => {
  test('real outputs', () => {
    expect(parseRsyncStats(FULL_COPY)).toEqual({
      files: 17,
      regularTransferred: 13,
      totalSize: 3120005,
      literalData: 3120003,
      matchedData: 0,
      bytesSent: 3121628,
      bytesReceived: 274,
    });
    expect(parseRsyncStats(LINK_DEST)).toEqual({
      files: 17,
      regularTransferred: 2,
      totalSize: 3045009,
      literalData: 5504,
      matchedData: 199500,
      bytesSent: 7069,
      bytesReceived: 1786,
    });
    expect(parseRsyncStats(MISSING_SOURCE)).toEqual({
      files: 0,
      regularTransferred: 0,
      totalSize: 0,
      literalData: 0,
      matchedData: 0,
      bytesSent: 19,
      bytesReceived: 12,
    });
  });

  test('incomplete or -h output is null', () => {
    expect(parseRsyncStats('')).toBeNull();
    expect(parseRsyncStats(FULL_COPY.replace('Total bytes received: 274\n', ''))).toBeNull();
    expect(parseRsyncStats(FULL_COPY.replace('Total bytes sent: 3,121,628', 'Total bytes sent: 3.05M'))).toBeNull();
  });
});

describe('live rsync (host /usr/bin/rsync)', () => {
  const RSYNC = '/usr/bin/rsync';
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'slots-rsync-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.skipIf(!existsSync(RSYNC))('full copy then --link-dest update, parsed from real output', () => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'etc', 'sub'), { recursive: true });
    let size = 0;
    for (let i = 1; i <= 8; i++) {
      const n = i * 30_000;
      writeFileSync(join(src, 'etc', `f${i}`), Buffer.alloc(n, i));
      size += n;
    }
    writeFileSync(join(src, 'etc', 'sub', 'small'), 'hi\n');
    size += 3;
    symlinkSync('f1', join(src, 'etc', 'link')); // a symlink's size is its target's length
    size += 2;
    const run = (args: string[]): string => {
      const r = spawnSync(RSYNC, [...args], { encoding: 'utf8' });
      expect(r.status).toBe(0);
      return r.stdout + r.stderr;
    };
    const slots = join(dir, 'slots');
    mkdirSync(slots);
    const first = run(['-aH', '--stats', '--info=progress2', `${src}/`, `${slots}/1/`]);
    const s1 = parseRsyncStats(first);
    expect(s1).not.toBeNull();
    expect(s1?.files).toBe(9 + 3 + 1); // 9 regular, 3 dirs (., etc, etc/sub), 1 link
    expect(s1?.regularTransferred).toBe(9);
    expect(s1?.totalSize).toBe(size);
    expect(s1?.literalData).toBe(size - 2);
    expect(s1?.matchedData).toBe(0);
    const prog = redraws(progressPart(first)).map(parseProgress2);
    expect(prog.length).toBeGreaterThan(0);
    for (const p of prog) expect(p).not.toBeNull();
    expect(prog[prog.length - 1]?.bytes).toBe(size - 2);

    appendFileSync(join(src, 'etc', 'f5'), Buffer.alloc(1000, 7));
    const second = run([
      '-aH',
      '--delete',
      '--no-whole-file',
      '--stats',
      '--info=progress2',
      '--link-dest=../1',
      `${src}/`,
      `${slots}/2/`,
    ]);
    const s2 = parseRsyncStats(second);
    expect(s2?.files).toBe(13);
    expect(s2?.regularTransferred).toBe(1);
    expect(s2?.totalSize).toBe(size + 1000);
    expect((s2?.matchedData ?? 0) + (s2?.literalData ?? 0)).toBe(5 * 30_000 + 1000);
    expect(s2?.matchedData).toBeGreaterThan(0);
    for (const p of redraws(progressPart(second)).map(parseProgress2)) expect(p).not.toBeNull();
  });
});

describe('rootDecision', () => {
  const S17 = newStamp('rootfs', 17, new Date('2026-11-25T11:00:00.000Z'));
  const S18 = newStamp('rootfs', 18, new Date('2026-11-26T00:00:00.000Z'));
  const CURRENT: SlotRecord = { id: S17.id, seq: 17, complete: true };
  const ED = generateKeyPairSync('ed25519');
  const PUB = ED.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const signed = (text: string) => ({ text, sig: sign(null, Buffer.from(text), ED.privateKey).toString('base64') });
  const unsigned = (text: string) => ({ text, sig: null });
  const base = { online: true, publicKeyPem: null, current: CURRENT, recovery: false };

  test('no master: offline, whatever is on the disk', () => {
    expect(rootDecision({ ...base, online: false, master: null })).toEqual({
      decision: { action: 'offline' },
      forceFull: false,
      warning: null,
    });
  });

  test('the master stamp is the current slot: keep it, naming the stamp', () => {
    expect(rootDecision({ ...base, master: unsigned(renderStamp(S17)) })).toEqual({
      decision: { action: 'keep', masterStamp: { id: S17.id, seq: 17 } },
      forceFull: false,
      warning: null,
    });
  });

  test('a newer stamp: sync it', () => {
    expect(rootDecision({ ...base, master: unsigned(renderStamp(S18)) })).toEqual({
      decision: { action: 'sync', masterStamp: { id: S18.id, seq: 18 } },
      forceFull: false,
      warning: null,
    });
  });

  test('recovery with a current stamp: sync it again in full', () => {
    expect(rootDecision({ ...base, recovery: true, master: unsigned(renderStamp(S17)) })).toEqual({
      decision: { action: 'sync', masterStamp: { id: S17.id, seq: 17 } },
      forceFull: true,
      warning: null,
    });
  });

  test('a packed key: a signed newer stamp syncs, an unsigned one is refused with a warning', () => {
    expect(rootDecision({ ...base, publicKeyPem: PUB, master: signed(renderStamp(S18)) }).decision).toEqual({
      action: 'sync',
      masterStamp: { id: S18.id, seq: 18 },
    });
    const v = rootDecision({ ...base, publicKeyPem: PUB, master: unsigned(renderStamp(S18)) });
    expect(v.decision).toEqual({ action: 'refuse' });
    expect(v.forceFull).toBe(false);
    expect(v.warning).toContain('unsigned stamp');
  });

  test('a garbage stamp: refuse, saying it is invalid', () => {
    const v = rootDecision({ ...base, master: unsigned('clusterboot-stamp 1\nname rootfs\nseq x\n') });
    expect(v.decision).toEqual({ action: 'refuse' });
    expect(v.forceFull).toBe(false);
    expect(v.warning).toContain('invalid');
  });
});

// Property 5: planRoot never deletes or syncs over the slot that boots (runner.ts: seeds, replay).
import { describe } from 'bun:test';
import { isSlotId, planRoot, readSlotState, renderRecord } from '../../../agent/plans/slots.ts';
import type { RootDecision, SlotFacts, SlotState } from '../../../agent/plans/slots.ts';
import { ID_POOL } from '../../fixtures/tables.ts';
import { must, propertyRunner, type Rng } from './runner.ts';

const property = propertyRunner(import.meta.path);

function seqOf(id: string): number {
  return Number(id.split('-')[0]);
}

function genSlotFacts(r: Rng): SlotFacts {
  const dirs: string[] = [];
  const records: Record<string, string> = {};
  for (const id of ID_POOL) {
    if (r.chance(0.45)) continue;
    const kind = r.next();
    if (kind < 0.1) {
      records[`${id}.json`] = renderRecord({ id, seq: seqOf(id), complete: true }); // orphan record
      continue;
    }
    dirs.push(id);
    if (kind < 0.6)
      records[`${id}.json`] = renderRecord({
        id,
        seq: seqOf(id),
        complete: true,
        ...(r.chance(0.3) ? { files: r.int(1000), bytes: r.int(1e9) } : {}),
      });
    else if (kind < 0.68) records[`${id}.json`] = JSON.stringify({ id, seq: seqOf(id), complete: false });
    else if (kind < 0.74)
      records[`${id}.json`] = r.pick([
        '{"id":',
        '',
        'null',
        '[]',
        '{"id":"x","seq":1,"complete":true}',
        `{"id":"${id}","seq":-1,"complete":true}`,
        `{"id":"${id}","seq":1,"complete":"yes"}`,
      ]);
    else if (kind < 0.8) records[`${id}.json`] = renderRecord({ id: r.pick(ID_POOL), seq: seqOf(id), complete: true });
  }
  if (r.chance(0.1))
    dirs.push(r.pick(['lost+found', '..', '.', 'has space', 'a/b', '', 'x'.repeat(70), '\u00e9t\u00e9', '-']));
  if (r.chance(0.1)) records[r.pick(['notes.txt', '.json', '../x.json', 'a b.json', `${'y'.repeat(80)}.json`])] = '{}';
  const link = (): string | null => {
    const k = r.next();
    if (k < 0.2) return null;
    if (k < 0.27) return r.pick(['/abs/path', 'slots/', 'slots/../etc', '', 'slots/has space', 'current', 'slots/a/b']);
    return `${r.pick(['slots/', './slots/'])}${r.pick(ID_POOL)}${r.chance(0.1) ? '/' : ''}`;
  };
  return { dirs: r.shuffle(dirs), records, current: link(), previous: link() };
}

function genDecision(r: Rng): RootDecision {
  const action = r.pick(['sync', 'keep', 'refuse', 'offline'] as const);
  const s = r.next();
  if (s < 0.1) return { action };
  if (s < 0.14)
    return {
      action,
      masterStamp: { id: r.pick(['bad/id', '', '..', 'x'.repeat(65)]), seq: r.pick([1, -1, 1.5, Number.NaN]) },
    };
  const id = r.pick([...ID_POOL, '7-g', '8-h', '19-20261201T000000Z']);
  return { action, masterStamp: { id, seq: seqOf(id) } };
}

/** A SlotState not necessarily produced by readSlotState: links to slots that are not complete, partials that are also complete. */
function genRawState(r: Rng): SlotState {
  const rec = (id: string) => ({ id, seq: seqOf(id), complete: true });
  const complete = ID_POOL.filter(() => r.chance(0.4)).map(rec);
  const partial = ID_POOL.filter(() => r.chance(0.2));
  const pickLink = () => (r.chance(0.3) ? null : rec(r.pick(ID_POOL)));
  return { complete, partial, current: pickLink(), previous: pickLink(), problems: r.chance(0.1) ? ['odd'] : [] };
}

describe('property 5: planRoot', () => {
  property(
    'readSlotState never throws on garbage and only resolves links to complete slots',
    (r) => {
      if (r.chance(0.7)) return genSlotFacts(r);
      const junk = () => r.string('abc./-_ \u0000\u00e9{}":,[]0123456789', 30);
      const records: Record<string, string> = {};
      for (let n = r.int(6); n > 0; n--) records[`${junk()}${r.chance(0.6) ? '.json' : ''}`] = junk();
      return {
        dirs: Array.from({ length: r.int(8) }, junk),
        records,
        current: r.chance(0.5) ? junk() : null,
        previous: r.chance(0.5) ? junk() : null,
      };
    },
    (facts) => {
      const s = readSlotState(facts);
      const dirs = new Set(facts.dirs);
      const ids = new Set(s.complete.map((x) => x.id));
      for (const c of s.complete)
        must(dirs.has(c.id) && isSlotId(c.id) && c.complete === true, `complete ${c.id} is a valid slot directory`);
      for (const p of s.partial) must(!ids.has(p) && isSlotId(p), `partial ${p} is a valid id and not complete`);
      if (s.current) must(ids.has(s.current.id), 'current resolves only to a complete slot');
      if (s.previous) must(ids.has(s.previous.id), 'previous resolves only to a complete slot');
    },
  );

  property(
    'planRoot: no sync unless asked, never deletes or overwrites current, rollback uses previous only when complete',
    (r) => {
      const raw = r.chance(0.25);
      const facts = raw ? null : genSlotFacts(r);
      const state = facts ? readSlotState(facts) : genRawState(r);
      return { facts, state, decision: genDecision(r), rollback: r.chance(0.25), forceFull: r.chance(0.2) };
    },
    ({ state, decision, rollback, forceFull }) => {
      const plan = planRoot({ state, decision, rollback, forceFull });
      const completeIds = new Set(state.complete.map((x) => x.id));
      const current = state.current && completeIds.has(state.current.id) ? state.current : null;
      const previous = state.previous && completeIds.has(state.previous.id) ? state.previous : null;
      const syncs = plan.actions.filter((a) => a.kind === 'sync');
      const deleted = plan.actions.flatMap((a) =>
        a.kind === 'delete-old' || a.kind === 'delete-partial' ? [a.id] : [],
      );

      // No sync unless the master said sync, or said keep while there is no complete current slot to keep.
      if (syncs.length > 0) {
        must(
          decision.action === 'sync' || (decision.action === 'keep' && current === null),
          `a sync only for decision sync (or keep without a current slot); decision ${decision.action}`,
        );
        must(!(rollback && (previous || current)), 'rollback with a local slot to boot never syncs');
        must(syncs.length === 1, 'at most one sync');
      }
      if (decision.action === 'refuse' || decision.action === 'offline') {
        must(syncs.length === 0, `no sync when the master is ${decision.action}`);
        must(
          plan.actions.every((a) => a.kind === 'delete-partial'),
          `when the master is ${decision.action}, only interrupted (partial) slots are deleted`,
        );
      }
      // The slot current points to is never deleted, never synced into, never the target of a record rewrite.
      if (current) {
        must(!deleted.includes(current.id), `never deletes the current slot ${current.id}`);
        must(!syncs.some((a) => a.id === current.id), 'never rsyncs into the current slot');
        must(
          !plan.actions.some((a) => a.kind === 'write-record' && a.record.id === current.id),
          "never rewrites the current slot's record",
        );
      }
      for (const a of syncs) must(!completeIds.has(a.id), `never rsyncs into a complete slot (${a.id})`);
      for (const id of deleted)
        must(
          !plan.use || plan.use !== `slots/${id}` || syncs.some((a) => a.id === id),
          'never deletes the slot it boots',
        );
      for (const a of plan.actions)
        if (a.kind === 'delete-partial') must(!completeIds.has(a.id), `delete-partial ${a.id} is not a complete slot`);
      // What is booted: a complete slot, or the one this plan syncs.
      if (plan.use !== null) {
        const id = plan.use.replace(/^slots\//, '');
        must(
          completeIds.has(id) || syncs.some((a) => a.id === id),
          `boots a complete slot or the synced one (${plan.use})`,
        );
      }
      // Rollback: previous only when complete; with a complete previous, that is what boots, untouched.
      if (rollback) {
        if (state.previous && plan.use === `slots/${state.previous.id}` && syncs.length === 0)
          must(completeIds.has(state.previous.id), 'rollback boots previous only when it is complete');
        if (previous) {
          must(plan.use === `slots/${previous.id}`, 'rollback with a complete previous boots it');
          must(
            plan.actions.every((a) => a.kind === 'delete-partial'),
            'rollback changes nothing but partial slots',
          );
        }
        if (!previous && current)
          must(
            plan.use === `slots/${current.id}` && syncs.length === 0,
            'rollback without a complete previous boots current, no sync',
          );
      }
      // A flip only ever points a link at a complete slot, or at the synced one after its record is written.
      plan.actions.forEach((a, k) => {
        if (a.kind !== 'flip') return;
        const id = a.to.replace(/^slots\//, '');
        const recorded = plan.actions.slice(0, k).some((b) => b.kind === 'write-record' && b.record.id === id);
        must(completeIds.has(id) || recorded, `flip ${a.link} -> ${a.to} only to a complete slot`);
      });
    },
    {
      classify: ({ state, decision, rollback, forceFull }) => {
        const p = planRoot({ state, decision, rollback, forceFull });
        const out = [p.actions.some((a) => a.kind === 'sync') ? 'sync' : p.use === null ? 'none' : 'boot-local'];
        if (rollback && state.previous) out.push('rollback-with-previous');
        if (p.actions.some((a) => a.kind === 'delete-old')) out.push('delete-old');
        return out;
      },
      cover: { sync: 300, 'boot-local': 300, none: 50, 'rollback-with-previous': 100, 'delete-old': 100 },
    },
  );
});

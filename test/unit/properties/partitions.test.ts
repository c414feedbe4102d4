// Property 1: planPartitions only ever writes a safe table that differs from the disk's (runner.ts: seeds, replay).
import { describe, test } from 'bun:test';
import {
  DEFAULT_ROLES,
  parseSfdiskDump,
  planPartitions,
  validateTable,
  type PartitionPlan,
  type Role,
  type TableSpec,
} from '../../../agent/plans/sfdisk.ts';
import { DOS_NOT_A_FILESYSTEM, ZERO_GUID } from '../../fixtures/tables.ts';
import {
  caseSeed,
  cleanModel,
  damage,
  genModelTable,
  genType,
  must,
  propertyRunner,
  randomBytesText,
  randomGuid,
  renderModel,
  Rng,
  RUNS,
  SEED,
  TIMEOUT_MS,
  type MTable,
} from './runner.ts';

const property = propertyRunner(import.meta.path);

const GUID_RE = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/;

const GiB512 = 2097152; // 1 GiB in 512-byte sectors

function genDiskSectors(r: Rng): number {
  if (r.chance(0.06))
    return r.pick([
      0,
      -1,
      -8388608,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      1.5,
      7626752.5,
      2 ** 53 + 2,
      Number.MAX_SAFE_INTEGER,
    ]);
  return r.pick([
    8388608,
    7626752,
    15523840,
    62333952,
    1000000,
    65536,
    8192,
    4 * GiB512 * 1024,
    2 ** 32 + 2048,
    r.between(1, 70000000),
  ]);
}

/** A structural change of the table: what the master's admin might edit. Returns the edited copy. */
function mutateModel(r: Rng, t: MTable): MTable {
  const c: MTable = structuredClone(t);
  for (let k = r.between(1, 3); k > 0; k--) {
    const p = c.parts.length > 0 ? r.pick(c.parts) : undefined;
    switch (r.int(9)) {
      case 0:
        if (p) p.size += r.between(1, 100000);
        break;
      case 1:
        if (p) p.size = Math.max(1, p.size - r.between(1, 100000));
        break;
      case 2:
        if (p) p.start += r.pick([1, 2048, -1]);
        break;
      case 3:
        if (p) p.type = genType(r, c.label);
        break;
      case 4:
        if (p) p.bootable = !p.bootable;
        break;
      case 5:
        if (p) c.parts.splice(c.parts.indexOf(p), 1);
        break;
      case 6: {
        const last = c.parts.reduce((m, x) => Math.max(m, x.start + x.size), 2048);
        c.parts.push({
          index: c.parts.reduce((m, x) => Math.max(m, x.index), 0) + 1,
          start: last,
          size: r.between(1, 500000),
          type: genType(r, c.label),
          bootable: false,
        });
        break;
      }
      case 7:
        if (p) {
          p.uuid = randomGuid(r);
          p.name = 'renamed';
        }
        break; // ids and names: not a change
      default:
        c.labelId = c.label === 'dos' ? `0x${r.hex(8)}` : randomGuid(r); // not a change either
    }
  }
  return c;
}

/** Which spellings can carry this model without changing its meaning. */
function stylesFor(t: MTable): Array<'new' | 'old' | 'positional' | 'unnamed'> {
  const styles: Array<'new' | 'old' | 'positional' | 'unnamed'> = ['new'];
  const sorted = [...t.parts].sort((a, b) => a.index - b.index);
  const contiguous = sorted.every((p, i) => p.index === i + 1);
  const uniqueIdx = new Set(t.parts.map((p) => p.index)).size === t.parts.length;
  if (
    t.label === 'dos' &&
    t.sectorSize === 512 &&
    uniqueIdx &&
    t.parts.every((p) => p.index >= 1 && p.index <= 4) &&
    t.parts.every((p) => p.size > 0)
  )
    styles.push('old');
  if (contiguous) styles.push('unnamed');
  if (contiguous && t.label === 'dos' && t.sectorSize === 512 && !t.labelId) styles.push('positional');
  return styles;
}

// ---- independent oracle: what a safe table is, and how two tables differ ----

function gptEntrySectors(ss: number): number {
  return Math.ceil((128 * 128) / ss);
}

/** Why the table is unsafe for this disk (null: safe). Written from sfdisk/MBR/GPT facts, not from sfdisk.ts. */
function unsafeBecause(t: TableSpec, disk: number, opts: { filesystemTypes: boolean }): string | null {
  const ss = t.sectorSize;
  if (![512, 1024, 2048, 4096, 8192, 16384, 32768, 65536].includes(ss)) return `sector size ${ss}`;
  if (!Number.isSafeInteger(disk) || disk <= 0) return `disk size ${disk}`;
  if (t.partitions.length === 0) return 'no partitions';
  if (new Set(t.partitions.map((p) => p.index)).size !== t.partitions.length) return 'duplicate index';
  const entries = gptEntrySectors(ss);
  const minFirst = 2 + entries;
  const first = t.label === 'dos' ? 1 : (t.firstLba ?? (disk * ss > 4 * 1024 * 1024 ? (1024 * 1024) / ss : minFirst));
  if (t.label === 'gpt' && t.firstLba !== undefined && t.firstLba < minFirst)
    return `first-lba ${t.firstLba} inside the GPT header`;
  // dos: the whole disk; gpt: up to the backup entries and header at the end.
  const endLimit = t.label === 'dos' ? disk : disk - 1 - entries;
  for (const p of t.partitions) {
    if (!Number.isSafeInteger(p.index) || p.index < 1 || p.index > (t.label === 'dos' ? 4 : 128))
      return `index ${p.index}`;
    if (!Number.isSafeInteger(p.start) || !Number.isSafeInteger(p.size) || p.size <= 0) return `p${p.index} start/size`;
    if (p.start < first) return `p${p.index} starts at ${p.start} < ${first}`;
    if (p.start + p.size > endLimit) return `p${p.index} ends past ${endLimit}`;
    if (t.label === 'dos') {
      if (p.start + p.size > 0xffffffff) return `p${p.index} beyond the 32-bit MBR`;
      if (!/^[1-9a-f][0-9a-f]?$/.test(p.type)) return `p${p.index} dos type ${p.type}`;
      if (opts.filesystemTypes && DOS_NOT_A_FILESYSTEM.has(p.type))
        return `p${p.index} dos type ${p.type} holds no filesystem`;
    } else {
      if (!GUID_RE.test(p.type)) return `p${p.index} gpt type ${p.type}`;
      if (opts.filesystemTypes && p.type === ZERO_GUID) return `p${p.index} gpt type is the unused-entry GUID`;
    }
  }
  for (const a of t.partitions) {
    for (const b of t.partitions) {
      if (a !== b && a.start < b.start + b.size && b.start < a.start + a.size)
        return `p${a.index} and p${b.index} overlap`;
    }
  }
  return null;
}

type Triple = { start: number; size: number; type: string; bootable: boolean };
function byIndex(t: { partitions: Array<{ index: number } & Triple> } | MTable): Map<number, Triple> {
  const parts = 'parts' in t ? t.parts : t.partitions;
  return new Map(parts.map((p) => [p.index, { start: p.start, size: p.size, type: p.type, bootable: p.bootable }]));
}

/** Partitions whose contents a rewrite would lose: new, moved, resized, retyped (or every one on a label change). */
function movedIndices(wanted: TableSpec | MTable, current: TableSpec | MTable | null): Set<number> {
  const w = byIndex(wanted);
  if (current === null || current.label !== wanted.label) return new Set(w.keys());
  const c = byIndex(current);
  return new Set(
    [...w]
      .filter(([i, a]) => {
        const b = c.get(i);
        return b === undefined || a.start !== b.start || a.size !== b.size || a.type !== b.type;
      })
      .map(([i]) => i),
  );
}

function sameTable(a: TableSpec | MTable, b: TableSpec | MTable): boolean {
  if (a.label !== b.label) return false;
  const x = byIndex(a);
  const y = byIndex(b);
  if (x.size !== y.size) return false;
  for (const [i, p] of x) {
    const q = y.get(i);
    if (!q || q.start !== p.start || q.size !== p.size || q.type !== p.type || q.bootable !== p.bootable) return false;
  }
  return true;
}

function toSpec(t: MTable): TableSpec {
  const spec: TableSpec = {
    label: t.label,
    unit: 'sectors',
    sectorSize: t.sectorSize,
    partitions: t.parts.map((p) => ({
      index: p.index,
      start: p.start,
      size: p.size,
      type: p.type,
      bootable: p.bootable,
    })),
  };
  if (t.firstLba !== undefined) spec.firstLba = t.firstLba;
  return spec;
}

function genRoles(r: Rng): Role[] | undefined {
  if (r.chance(0.7)) return undefined;
  return r.pick<Role[]>([
    DEFAULT_ROLES,
    [{ index: 4, role: 'data', fs: 'ext4' }],
    [
      { index: 2, role: 'root', fs: 'ext4' },
      { index: 7, role: 'data', fs: 'ext4' },
    ],
    [],
  ]);
}

/** Every check that must hold for any plan, whatever the input. Returns the outcome label. */
function checkPlanSafety(
  wantedText: string | null,
  currentText: string | null,
  disk: number,
  roles: Role[] | undefined,
  plan: PartitionPlan,
): string {
  must(
    ['keep', 'refuse', 'repartition'].includes(plan.action),
    `an action among keep/refuse/repartition (got ${String(plan.action)})`,
  );
  must(typeof plan.reason === 'string' && plan.reason.length > 0, 'a reason');
  if (plan.action === 'refuse') must(plan.remedy.length > 0, 'a refusal carries a remedy');
  if (wantedText === null) must(plan.action === 'refuse', 'no table from the master: refuse');
  const cur = currentText === null ? null : parseSfdiskDump(currentText);
  if (currentText !== null && (currentText.trim() === '' || (cur !== null && !cur.ok)))
    must(plan.action === 'refuse', 'an unreadable current table: refuse (never wipe on doubt)');

  if (plan.action === 'keep') {
    const w = parseSfdiskDump(wantedText ?? '');
    must(w.ok, 'keep only for a wanted table that parses');
    must(cur !== null && cur.ok, 'keep only when the disk has a readable table');
    must(
      sameTable(w.table, cur.table),
      'keep only when wanted and current are the same partitions (start, size, type, bootable)',
    );
    return 'keep';
  }
  if (plan.action !== 'repartition') return 'refuse';

  // A repartition writes the disk: the wanted table must parse, be safe for this disk, and differ.
  const w = parseSfdiskDump(wantedText ?? '');
  must(w.ok, 'repartition only for a wanted table that parses');
  const why = unsafeBecause(w.table, disk, { filesystemTypes: true });
  must(why === null, `repartition only for a table that fits the disk without overlap and with sane types (${why})`);
  must(validateTable(w.table, disk).length === 0, 'validateTable agrees the table is fine');
  must(currentText === null || (cur !== null && cur.ok), 'repartition only over a blank disk or a readable table');
  const current = cur !== null && cur.ok ? cur.table : null;
  if (current !== null) {
    must(current.sectorSize === w.table.sectorSize, 'same sector size as the disk');
    must(!sameTable(w.table, current), 'repartition only when the tables differ');
  }
  // What gets written is exactly what the master asked for.
  must(
    plan.table.label === w.table.label && plan.table.sectorSize === w.table.sectorSize,
    'the written table has the wanted label and sector size',
  );
  must(sameTable(plan.table, w.table), 'the written table has exactly the wanted partitions');
  // Formatting: exactly the roles whose partition is new, moved, resized or retyped.
  const moved = movedIndices(w.table, current);
  const rs = roles ?? DEFAULT_ROLES;
  for (const f of plan.format) {
    must(
      rs.some((x) => x.index === f.index && x.role === f.role && x.fs === f.fs),
      `format p${f.index} is one of the roles`,
    );
    must(moved.has(f.index), `format p${f.index} only if its start/size/type changed or it is new`);
  }
  for (const x of rs)
    if (moved.has(x.index))
      must(
        plan.format.some((f) => f.index === x.index),
        `p${x.index} moved and has a role: it is formatted`,
      );
  const wantedIdx = w.table.partitions.map((p) => p.index);
  must(
    JSON.stringify(plan.keep) === JSON.stringify(wantedIdx.filter((i) => !moved.has(i)).sort((a, b) => a - b)),
    `keep lists the unmoved partitions (${plan.keep})`,
  );
  return plan.format.length === 0 ? 'repartition-no-format' : 'repartition';
}

describe('property 1: planPartitions', () => {
  const DEVS = ['/dev/mmcblk0', '/dev/sda', '/dev/nvme0n1', '/dev/vda'];

  property(
    'planPartitions never throws and only writes a safe, different table',
    (r) => {
      const disk = genDiskSectors(r);
      const dev = r.pick(DEVS);
      const model = genModelTable(r, disk);
      const kind = r.int(10);
      let wantedText: string | null;
      if (kind === 0) wantedText = randomBytesText(r);
      else if (kind === 1)
        wantedText = r.chance(0.3)
          ? null
          : r.pick(['', ' \n', '# only a comment\n', 'label: dos\n', 'unit: sectors\n\n']);
      else {
        wantedText = renderModel(r, model, dev, r.pick(stylesFor(model)));
        if (r.chance(0.45)) wantedText = damage(r, wantedText);
      }
      const ck = r.int(10);
      let currentText: string | null;
      if (ck === 0) currentText = null;
      else if (ck === 1) currentText = randomBytesText(r);
      else if (ck === 2) currentText = r.pick(['', '   \n', 'garbage here\n', 'unit: bytes\n']);
      else {
        const cm = ck <= 5 ? model : ck <= 8 ? mutateModel(r, model) : genModelTable(r, disk);
        currentText = renderModel(r, cm, dev, r.pick(stylesFor(cm)));
        if (r.chance(0.15)) currentText = damage(r, currentText);
      }
      return { wantedText, currentText, disk, roles: genRoles(r) };
    },
    ({ wantedText, currentText, disk, roles }) => {
      let plan: PartitionPlan | undefined;
      try {
        plan = planPartitions(
          roles
            ? { wantedText, currentText, diskSectors: disk, roles }
            : { wantedText, currentText, diskSectors: disk },
        );
      } catch (e) {
        throw new Error(`violated: planPartitions threw ${(e as Error).message}`);
      }
      checkPlanSafety(wantedText, currentText, disk, roles, plan);
    },
    {
      classify: ({ wantedText, currentText, disk, roles }) =>
        checkPlanSafety(
          wantedText,
          currentText,
          disk,
          roles,
          planPartitions(
            roles
              ? { wantedText, currentText, diskSectors: disk, roles }
              : { wantedText, currentText, diskSectors: disk },
          ),
        ),
      cover: { keep: 40, refuse: 400, repartition: 100, 'repartition-no-format': 5 },
    },
  );

  property(
    'the same partitions in any dialect, order or spacing: keep (or refuse when unsafe), never a rewrite',
    (r) => {
      const disk = genDiskSectors(r);
      const model = genModelTable(r, disk, { clean: true });
      const dev = r.pick(DEVS);
      const styles = stylesFor(model);
      // The disk's dump usually comes in today's dialect; the master's file in any.
      const currentStyle = r.chance(0.8) ? 'new' : r.pick(styles);
      // ids, names and uuids are not part of the comparison: change them on the disk side.
      const disked: MTable = structuredClone(model);
      if (r.chance(0.5)) disked.labelId = disked.label === 'dos' ? `0x${r.hex(8)}` : randomGuid(r);
      for (const p of disked.parts) if (disked.label === 'gpt' && r.chance(0.5)) p.uuid = randomGuid(r);
      const same = r.chance(0.25);
      const wantedText = renderModel(r, model, dev, r.pick(styles));
      const currentText = same ? wantedText : renderModel(r, disked, r.pick(DEVS), currentStyle);
      return { model, disk, wantedText, currentText };
    },
    ({ model, disk, wantedText, currentText }) => {
      const plan = planPartitions({ wantedText, currentText, diskSectors: disk });
      must(plan.action !== 'repartition', `the same table never repartitions (got: ${plan.reason})`);
      const safe = unsafeBecause(toSpec(model), disk, { filesystemTypes: true }) === null;
      if (safe)
        must(plan.action === 'keep', `a safe table equal to the disk's: keep (got ${plan.action}: ${plan.reason})`);
      else must(plan.action === 'refuse', "an unsafe table equal to the disk's: refuse");
    },
    {
      classify: ({ model, disk }) =>
        unsafeBecause(toSpec(model), disk, { filesystemTypes: true }) === null ? 'safe' : 'unsafe',
      cover: { safe: 600, unsafe: 100 },
    },
  );

  property(
    'formatting lists exactly the partitions whose start, size or type changed',
    (r) => {
      const disk = r.pick([8388608, 15523840, 62333952]);
      let model = genModelTable(r, disk, { clean: true });
      // keep the wanted table safe, so the plan is about the difference only
      for (let tries = 0; unsafeBecause(toSpec(model), disk, { filesystemTypes: true }) !== null && tries < 20; tries++)
        model = genModelTable(r, disk, { clean: true });
      const current = r.chance(0.1)
        ? null
        : cleanModel({
            ...(r.chance(0.1) ? genModelTable(r, disk) : mutateModel(r, model)),
            sectorSize: model.sectorSize,
          });
      const dev = r.pick(DEVS);
      return {
        model,
        current,
        disk,
        roles: genRoles(r),
        wantedText: renderModel(r, model, dev, r.pick(stylesFor(model))),
        currentText: current === null ? null : renderModel(r, current, dev, r.pick(stylesFor(current))),
      };
    },
    ({ model, current, disk, roles, wantedText, currentText }) => {
      const plan = planPartitions(
        roles ? { wantedText, currentText, diskSectors: disk, roles } : { wantedText, currentText, diskSectors: disk },
      );
      if (unsafeBecause(toSpec(model), disk, { filesystemTypes: true }) !== null) {
        must(plan.action === 'refuse', 'an unsafe wanted table is refused');
        return;
      }
      const cur = current === null ? null : parseSfdiskDump(currentText ?? '');
      if (cur !== null && !cur.ok) {
        must(plan.action === 'refuse', 'an unreadable current table is refused');
        return;
      }
      if (current !== null && sameTable(model, current)) {
        must(plan.action === 'keep', 'no change: keep');
        return;
      }
      must(plan.action === 'repartition', `a safe, different table is written (got ${plan.action}: ${plan.reason})`);
      // from the generator's model, not from the parser
      const moved = movedIndices(model, current);
      const expected = (roles ?? DEFAULT_ROLES).filter(
        (x) => moved.has(x.index) && model.parts.some((p) => p.index === x.index),
      );
      must(
        JSON.stringify(plan.format) === JSON.stringify(expected),
        `format ${JSON.stringify(plan.format.map((f) => f.index))} = moved roles ${JSON.stringify(expected.map((f) => f.index))}`,
      );
    },
    {
      classify: ({ model, current }) =>
        current === null
          ? 'blank'
          : sameTable(model, current)
            ? 'same'
            : movedIndices(model, current).size === 0
              ? 'bootable-only'
              : 'moved',
      cover: { blank: 50, same: 50, 'bootable-only': 10, moved: 400 },
    },
  );

  // Found by this file and fixed in validateTable: the types that hold no filesystem (dos extended 5, f,
  // 85, also reached by the shortcuts E, Ex, extended, X; and the gpt all-zero "unused entry" GUID) used
  // to pass, so a node rewrote its disk and then failed to format p1..p4.
  test(
    `a rewrite never writes a partition type that holds no filesystem (dos 0/5/f/85, gpt zero GUID) [seed ${SEED}]`,
    () => {
      for (let i = 0; i < RUNS; i++) {
        const r = new Rng(caseSeed('no-filesystem types', i));
        const disk = 8388608;
        const model = genModelTable(r, disk);
        const p = model.parts[0];
        if (!p) continue;
        p.type = model.label === 'dos' ? r.pick(['5', 'f', '85']) : ZERO_GUID;
        const wantedText = renderModel(r, model, '/dev/mmcblk0', 'new');
        const plan = planPartitions({ wantedText, currentText: null, diskSectors: disk });
        if (plan.action !== 'repartition') continue;
        const why = unsafeBecause(plan.table, disk, { filesystemTypes: true });
        if (why !== null) {
          const msg = `case ${i} (PROPERTY_SEED=${SEED}): planPartitions writes a table with ${why}:\n${wantedText}`;
          if (process.env.PROPERTY_VERBOSE) console.error(msg);
          throw new Error(msg);
        }
      }
    },
    TIMEOUT_MS(RUNS),
  );
});

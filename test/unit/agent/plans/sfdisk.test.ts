import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_ROLES,
  alignTable,
  compareTables,
  parseSfdiskDump,
  partName,
  planPartitions,
  renderDump,
  tableEndSector,
  validateTable,
} from '../../../../agent/plans/sfdisk.ts';
import type { PartitionSpec, TableSpec } from '../../../../agent/plans/sfdisk.ts';

const SEED = `# partition table of /dev/mmcblk0
unit: sectors

/dev/mmcblk0p1 : start=       16, size=    97712, Id= b
/dev/mmcblk0p2 : start=    97728, size=  2000000, Id=83
/dev/mmcblk0p3 : start=  2097728, size=  2000000, Id=83
/dev/mmcblk0p4 : start=  4097728, size=  3529024, Id=83
`;

const SEED_MODERN = `label: dos
label-id: 0xa86ba406
device: /dev/mmcblk0
unit: sectors
sector-size: 512

/dev/mmcblk0p1 : start=          16, size=       97712, type=b
/dev/mmcblk0p2 : start=       97728, size=     2000000, type=83
/dev/mmcblk0p3 : start=     2097728, size=     2000000, type=83
/dev/mmcblk0p4 : start=     4097728, size=     3529024, type=83
`;

const GPT = `label: gpt
label-id: C9580D96-89A9-CC4E-85D1-3F242F37FDA9
device: g.img
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

g.img1 : start=        2048, size=       32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=4F6BD6BD-458E-0A4B-A086-1BAA16DC9267
g.img2 : start=       34816, size=       16384, type=0fc63daf-8483-4772-8e79-3d69d8477de4, uuid=9D176BA3-FE0B-0842-AF4F-72E45E4C053B, attrs="LegacyBIOSBootable"
g.img3 : start=       51200, size=        8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=3DFCCE6F-49DE-6E46-8EBC-71E4261B94DC, name="my root, v2"
`;

const FOUR_GB = 8388608; // sectors of 512 bytes
const SEED_SECTORS = 7626752; // the seed table's end: a 3.9 GB card

function table(text: string): TableSpec {
  const r = parseSfdiskDump(text);
  if (!r.ok) throw new Error(r.error);
  return r.table;
}

function dos(parts: [number, number, number, string?, boolean?][]): TableSpec {
  return {
    label: 'dos',
    unit: 'sectors',
    sectorSize: 512,
    partitions: parts.map(([index, start, size, type, bootable]) => ({
      index,
      start,
      size,
      type: type ?? '83',
      bootable: bootable ?? false,
    })),
  };
}

describe('parseSfdiskDump', () => {
  test("the seed's old-dialect dump", () => {
    const t = table(SEED);
    expect(t.label).toBe('dos');
    expect(t.sectorSize).toBe(512);
    expect(t.partitions).toEqual([
      { index: 1, start: 16, size: 97712, type: 'b', bootable: false },
      { index: 2, start: 97728, size: 2000000, type: '83', bootable: false },
      { index: 3, start: 2097728, size: 2000000, type: '83', bootable: false },
      { index: 4, start: 4097728, size: 3529024, type: '83', bootable: false },
    ]);
  });

  test('seed and modern dumps of the same geometry compare equal', () => {
    const modern = table(SEED_MODERN);
    expect(modern.labelId).toBe('0xa86ba406');
    expect(compareTables(table(SEED), modern)).toEqual({ same: true });
    expect(compareTables(modern, table(SEED))).toEqual({ same: true });
  });

  test('old dialect: unused slots, bootable, no unit line, odd spacing, comments', () => {
    const t = table(`# partition table of /dev/sda
/dev/sda1 : start=       63, size=  1012032, Id=83, bootable

   # a comment
/dev/sda2 : start=        0, size=        0, Id= 0
/dev/sda3:start=1012095,size=2000,Id=0c
/dev/sda4 : start=        0, size=        0, Id= 0
`);
    expect(t.partitions).toEqual([
      { index: 1, start: 63, size: 1012032, type: '83', bootable: true },
      { index: 3, start: 1012095, size: 2000, type: 'c', bootable: false },
    ]);
  });

  test('modern dos dump with bootable and type=c', () => {
    const t = table(`label: dos
label-id: 0x12955467
device: /tmp/x.img
unit: sectors
sector-size: 512

/tmp/x.img1 : start=        2048, size=       32768, type=c, bootable
/tmp/x.img2 : start=       34816, size=       96256, type=83
`);
    expect(t.partitions.map((p) => [p.index, p.type, p.bootable])).toEqual([
      [1, 'c', true],
      [2, '83', false],
    ]);
  });

  test('gpt dump: GUIDs uppercased, uuid, quoted name with a comma, attrs bootable, lba headers', () => {
    const t = table(GPT);
    expect(t.label).toBe('gpt');
    expect(t.labelId).toBe('C9580D96-89A9-CC4E-85D1-3F242F37FDA9');
    expect(t.firstLba).toBe(2048);
    expect(t.lastLba).toBe(131038);
    expect(t.partitions[1]).toEqual({
      index: 2,
      start: 34816,
      size: 16384,
      type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      bootable: true,
      uuid: '9D176BA3-FE0B-0842-AF4F-72E45E4C053B',
    });
    expect(t.partitions[2]?.name).toBe('my root, v2');
  });

  test('label inferred as gpt from GUID types; shortcuts as sfdisk reads them', () => {
    expect(table('start=2048, size=100, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n').label).toBe('gpt');
    const t = table(
      'label: dos\nstart=2048, size=1, type=L\nstart=4096, size=1, type=E\nstart=8192, size=1, type=0x0C\nstart=9000, size=1\n',
    );
    expect(t.partitions.map((p) => p.type)).toEqual(['83', '5', 'c', '83']);
    expect(t.partitions.map((p) => p.index)).toEqual([1, 2, 3, 4]); // unnamed lines: by position
    expect(table('label: gpt\nstart=2048, size=1, type=U\n').partitions[0]?.type).toBe(
      'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
    );
  });

  test('positional lines', () => {
    expect(table('2048 100 83 *\n4096,100,c\n').partitions).toEqual([
      { index: 1, start: 2048, size: 100, type: '83', bootable: true },
      { index: 2, start: 4096, size: 100, type: 'c', bootable: false },
    ]);
  });

  test('an empty dos label parses to no partitions', () => {
    expect(
      table('label: dos\nlabel-id: 0xef3fa389\ndevice: b.img\nunit: sectors\nsector-size: 512\n').partitions,
    ).toEqual([]);
  });

  test('malformed dumps: line number, what, remedy', () => {
    const cases: [string, RegExp][] = [
      ['unit: cylinders\n', /^line 1: unit "cylinders" is not supported; use unit: sectors/],
      ['label: sun\n', /^line 1: label "sun" is not supported/],
      ['\n/dev/sda1 : start=2048, size=16M\n', /^line 2: size=16M: .*suffixes.*sfdisk -d/],
      ['/dev/sda1 : size=100\n', /^line 1: no start=/],
      ['/dev/sda1 : start=2048\n', /^line 1: no size=/],
      ['/dev/sda1 : start=2048, size=+\n', /^line 1: size=\+: /],
      ['/dev/sda1 : start=010, size=5\n', /octal/],
      ['/dev/sda1 : start=2048, size=5, type=zz\n', /^line 1: type "zz" is not an MBR type/],
      ['label: gpt\n/dev/sda1 : start=2048, size=5, type=83\n', /^line 2: type "83" is not a GPT type/],
      ['/dev/sda1 : start=2048, size=5, colour=red\n', /^line 1: unknown field "colour="/],
      ['/dev/sda1 : start=2048, size=5\nunit: sectors\n', /^line 2: header "unit" after partition lines/],
      ['flavour: salty\n', /^line 1: unknown header "flavour"/],
      ['/dev/sda : start=2048, size=5\n', /^line 1: cannot tell the partition number/],
      ['label: dos\nlabel-id: banana\n', /^line 2: label-id "banana"/],
      ['/dev/sda1 : start=0, size=5\n', /^line 1: start=0 would overwrite/],
      ['hello world\n', /^line 1: start=hello: not a number/],
    ];
    for (const [text, re] of cases) {
      const r = parseSfdiskDump(text);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatch(re);
    }
  });
});

describe('partName', () => {
  test('p between a trailing digit and the number', () => {
    expect(partName('/dev/mmcblk0', 1)).toBe('/dev/mmcblk0p1');
    expect(partName('/dev/nvme0n1', 2)).toBe('/dev/nvme0n1p2');
    expect(partName('/dev/loop0', 3)).toBe('/dev/loop0p3');
    expect(partName('/dev/vda', 1)).toBe('/dev/vda1');
    expect(partName('/dev/sda', 4)).toBe('/dev/sda4');
  });
});

describe('validateTable', () => {
  test('the seed table fits a 4 GB card', () => {
    expect(validateTable(table(SEED), FOUR_GB)).toEqual([]);
    expect(validateTable(table(SEED), SEED_SECTORS)).toEqual([]);
    expect(tableEndSector(table(SEED))).toBe(SEED_SECTORS);
  });

  test('too big for the disk', () => {
    expect(validateTable(table(SEED), SEED_SECTORS - 1)).toEqual([
      'table ends at 3.90 GB, disk is 3.90 GB: partition 4 ends at sector 7626751, last usable sector is 7626750',
    ]);
    expect(validateTable(table(SEED), 4000000)[0]).toStartWith(
      'table ends at 3.90 GB, disk is 2.05 GB: partitions 3, 4 end at',
    );
  });

  test('overlap names both partitions and their ranges', () => {
    expect(
      validateTable(
        dos([
          [1, 2048, 1000],
          [2, 2500, 1000],
        ]),
        FOUR_GB,
      ),
    ).toEqual(['partitions 1 (sectors 2048-3047) and 2 (sectors 2500-3499) overlap']);
  });

  test('size, start, count, duplicates, empty', () => {
    expect(validateTable(dos([[1, 2048, 0]]), FOUR_GB)).toEqual([
      'partition 1: size 0 must be a positive whole number of sectors',
    ]);
    expect(validateTable(dos([[1, 0, 10]]), FOUR_GB)).toEqual([
      'partition 1: starts at sector 0, before sector 1 (sector 0 holds the MBR)',
    ]);
    expect(validateTable(dos([]), FOUR_GB)).toEqual(['the table has no partitions']);
    expect(
      validateTable(
        dos([
          [1, 2048, 10],
          [1, 4096, 10],
        ]),
        FOUR_GB,
      ),
    ).toEqual(['partition index 1 appears more than once']);
    const five = validateTable(
      dos([
        [1, 10, 1],
        [2, 20, 1],
        [3, 30, 1],
        [4, 40, 1],
        [5, 50, 1],
      ]),
      FOUR_GB,
    );
    expect(five).toContain('dos table has 5 partitions; at most 4 primary partitions fit (use label: gpt for more)');
    expect(five.some((p) => p.startsWith('partition 5: dos partitions above 4'))).toBe(true);
    expect(validateTable(dos([[1, 1, 1]]), FOUR_GB)).toEqual([]); // sfdisk accepts start=1
  });

  test('gpt: first usable sector and the backup header at the end', () => {
    const t = table(GPT);
    expect(validateTable(t, 131072)).toEqual([]);
    const p = t.partitions[2] as PartitionSpec;
    p.size = 131072 - 34 - p.start + 2; // ends on sector 131039, the first of the backup area
    expect(validateTable(t, 131072)[0]).toMatch(
      /last usable sector is 131038 \(the last 33 sectors hold the backup GPT\)$/,
    );
    const low = table('label: gpt\nstart=34, size=100\n');
    expect(validateTable(low, 131072)).toEqual([
      'partition 1: starts at sector 34, before the first usable sector 2048; sfdisk starts usable space at 2048 on a new GPT unless the table says first-lba: 34',
    ]);
    expect(validateTable(table('label: gpt\nfirst-lba: 34\nstart=34, size=100\n'), 131072)).toEqual([]);
    expect(validateTable(low, 8192)).toEqual([]); // disks up to 4 MiB start at 34
  });
});

describe('compareTables', () => {
  const base = dos([
    [1, 2048, 100, 'c', true],
    [2, 4096, 100],
    [3, 8192, 100],
  ]);
  test('no current table: everything changed', () => {
    expect(compareTables(base, null)).toEqual({ same: false, changed: [1, 2, 3], removed: [], bootableOnly: [] });
  });
  test('changed, added, removed, bootable-only', () => {
    const cur = dos([
      [1, 2048, 100, 'c', false],
      [2, 4096, 99],
      [4, 9000, 10],
    ]);
    expect(compareTables(base, cur)).toEqual({ same: false, changed: [2, 3], removed: [4], bootableOnly: [1] });
  });
  test('ids, names and uuids are ignored', () => {
    const a = table(GPT);
    const b = structuredClone(a);
    b.labelId = '00000000-0000-0000-0000-000000000000';
    for (const p of b.partitions) {
      delete p.uuid;
      p.name = 'other';
    }
    expect(compareTables(a, b)).toEqual({ same: true });
  });
  test('a label change changes everything', () => {
    const g: TableSpec = { ...base, label: 'gpt' };
    expect(compareTables(g, base)).toMatchObject({ same: false, changed: [1, 2, 3] });
  });
});

describe('alignTable and renderDump', () => {
  test('alignTable keeps explicit sectors (sfdisk does) and sorts by index', () => {
    const t = dos([
      [2, 97728, 2000000],
      [1, 16, 97712, 'b'],
    ]);
    const a = alignTable(t, 2048);
    expect(a.partitions.map((p) => [p.index, p.start, p.size])).toEqual([
      [1, 16, 97712],
      [2, 97728, 2000000],
    ]);
    expect(t.partitions[0]?.index).toBe(2); // input untouched
  });

  test('renderDump writes the modern dialect', () => {
    const t = table(SEED);
    t.partitions[0]!.bootable = true;
    expect(renderDump(t, '/dev/mmcblk0')).toBe(`label: dos
device: /dev/mmcblk0
unit: sectors
sector-size: 512

/dev/mmcblk0p1 : start=16, size=97712, type=b, bootable
/dev/mmcblk0p2 : start=97728, size=2000000, type=83
/dev/mmcblk0p3 : start=2097728, size=2000000, type=83
/dev/mmcblk0p4 : start=4097728, size=3529024, type=83
`);
  });

  test('renderDump parses back to the same table', () => {
    for (const t of [table(SEED), table(SEED_MODERN), table(GPT)]) {
      const back = table(renderDump(t, '/dev/nvme0n1'));
      expect(compareTables(t, back)).toEqual({ same: true });
      expect(back.partitions.map((p) => [p.name, p.uuid])).toEqual(
        t.partitions.map((p) => (t.label === 'gpt' ? [p.name, p.uuid] : [undefined, undefined])),
      );
    }
  });
});

describe('planPartitions', () => {
  const seed4 = (size: number): string => SEED.replace('size=  3529024', `size=${size}`);

  test('master sent nothing: refuse', () => {
    expect(planPartitions({ wantedText: null, currentText: SEED, diskSectors: FOUR_GB })).toMatchObject({
      action: 'refuse',
      reason: 'master sent no table',
    });
  });

  test('blank disk: write everything, format every role', () => {
    const plan = planPartitions({ wantedText: SEED, currentText: null, diskSectors: FOUR_GB });
    expect(plan.action).toBe('repartition');
    if (plan.action !== 'repartition') return;
    expect(plan.format).toEqual(DEFAULT_ROLES);
    expect(plan.keep).toEqual([]);
    expect(plan.table.partitions).toHaveLength(4);
    expect(plan.reason).toBe('the disk has no partition table');
  });

  test('same table (old vs new dialect): keep', () => {
    expect(planPartitions({ wantedText: SEED, currentText: SEED_MODERN, diskSectors: FOUR_GB })).toEqual({
      action: 'keep',
      reason: 'the disk already has the wanted table',
    });
  });

  test('p4 grows: repartition, format only p4', () => {
    const plan = planPartitions({ wantedText: seed4(4000000), currentText: SEED_MODERN, diskSectors: FOUR_GB });
    expect(plan).toMatchObject({
      action: 'repartition',
      format: [{ index: 4, role: 'data', fs: 'ext4' }],
      keep: [1, 2, 3],
      reason: 'changed: p4',
    });
  });

  test('bootable flag only: repartition, format nothing', () => {
    const wanted = SEED.replace('Id= b', 'Id= b, bootable');
    const plan = planPartitions({ wantedText: wanted, currentText: SEED, diskSectors: FOUR_GB });
    expect(plan).toMatchObject({
      action: 'repartition',
      format: [],
      keep: [1, 2, 3, 4],
      reason: 'bootable flag only: p1',
    });
  });

  test('table too big for the disk: refuse', () => {
    const plan = planPartitions({ wantedText: seed4(9000000), currentText: SEED, diskSectors: FOUR_GB });
    expect(plan.action).toBe('refuse');
    if (plan.action === 'refuse')
      expect(plan.reason).toContain(
        'table ends at 6.71 GB, disk is 4.29 GB: partition 4 ends at sector 13097727, last usable sector is 8388607',
      );
  });

  test('malformed wanted table: refuse', () => {
    const plan = planPartitions({
      wantedText: '/dev/mmcblk0p1 : start=16, size=1G\n',
      currentText: null,
      diskSectors: FOUR_GB,
    });
    expect(plan.action).toBe('refuse');
    if (plan.action === 'refuse') expect(plan.reason).toStartWith("the master's table is malformed: line 1: size=1G");
  });

  test('overlapping wanted table: refuse', () => {
    const plan = planPartitions({
      wantedText: SEED.replace('start=  2097728', 'start=  2000000'),
      currentText: null,
      diskSectors: FOUR_GB,
    });
    expect(plan.action).toBe('refuse');
    if (plan.action === 'refuse')
      expect(plan.reason).toContain('partitions 2 (sectors 97728-2097727) and 3 (sectors 2000000-3999999) overlap');
  });

  test('current table unreadable: refuse, never wipe on doubt', () => {
    for (const currentText of ['garbage here\n', '', 'unit: bytes\n']) {
      const plan = planPartitions({ wantedText: SEED, currentText, diskSectors: FOUR_GB });
      expect(plan.action).toBe('refuse');
      if (plan.action === 'refuse') expect(plan.remedy.length).toBeGreaterThan(0);
    }
  });

  test('different sector sizes: refuse', () => {
    const cur = SEED_MODERN.replace('sector-size: 512', 'sector-size: 4096');
    expect(planPartitions({ wantedText: SEED, currentText: cur, diskSectors: FOUR_GB }).action).toBe('refuse');
  });

  test('custom roles', () => {
    const plan = planPartitions({
      wantedText: seed4(4000000),
      currentText: null,
      diskSectors: FOUR_GB,
      roles: [{ index: 4, role: 'data', fs: 'ext4' }],
    });
    expect(plan).toMatchObject({ action: 'repartition', format: [{ index: 4 }], keep: [] });
  });

  test('property: 3000 random and malformed tables keep the invariants', () => {
    let seed = 0x9e3779b9;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const randomTable = (): TableSpec => {
      const gpt = rand(4) === 0;
      const n = rand(6);
      const parts: PartitionSpec[] = [];
      let at = gpt ? 2048 : 1 + rand(4096);
      for (let i = 1; i <= n; i++) {
        const size = 1 + rand(3000000);
        parts.push({
          index: rand(10) === 0 ? 1 + rand(6) : i,
          start: rand(8) === 0 ? Math.max(1, at - rand(5000)) : at,
          size,
          type: gpt
            ? ['0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'][rand(2)]!
            : ['83', 'b', 'c'][rand(3)]!,
          bootable: rand(3) === 0,
        });
        at += size + rand(3) * 2048;
      }
      return { label: gpt ? 'gpt' : 'dos', unit: 'sectors', sectorSize: 512, partitions: parts };
    };
    const mutate = (t: TableSpec): TableSpec => {
      const c = structuredClone(t);
      const p = c.partitions[rand(Math.max(1, c.partitions.length))];
      if (p === undefined) return c;
      const what = rand(4);
      if (what === 0) p.size += 1 + rand(1000);
      else if (what === 1) p.bootable = !p.bootable;
      else if (what === 2) p.type = c.label === 'gpt' ? 'A19D880F-05FC-4D3B-A006-743F0F84911E' : 'fd';
      else c.partitions.splice(c.partitions.indexOf(p), 1);
      return c;
    };
    const garble = (s: string): string => {
      const chars = [...s];
      for (let k = rand(4); k > 0; k--)
        chars.splice(rand(chars.length + 1), rand(3), ['=', ',', ':', 'M', '"', '\n', 'x', '0'][rand(8)]!);
      return chars.join('');
    };
    const counts: Record<string, number> = { keep: 0, refuse: 0, repartition: 0 };
    for (let i = 0; i < 3000; i++) {
      const wantedT = randomTable();
      const pick = rand(4);
      const curT =
        pick === 0 ? null : pick === 1 ? structuredClone(wantedT) : pick === 2 ? mutate(wantedT) : randomTable();
      const dev = ['/dev/mmcblk0', '/dev/sda', '/dev/nvme0n1'][rand(3)]!;
      let wantedText: string | null = rand(50) === 0 ? null : renderDump(wantedT, dev);
      let currentText: string | null = curT === null ? null : renderDump(curT, dev);
      if (wantedText !== null && rand(5) === 0) wantedText = garble(wantedText);
      if (currentText !== null && rand(8) === 0) currentText = garble(currentText);
      const diskSectors = [FOUR_GB, 2 * FOUR_GB, 1000000, 0][rand(4)]!;

      const plan = planPartitions({ wantedText, currentText, diskSectors });
      counts[plan.action] = (counts[plan.action] ?? 0) + 1;
      if (wantedText === null) expect(plan).toMatchObject({ action: 'refuse', reason: 'master sent no table' });
      const cur = currentText === null ? null : parseSfdiskDump(currentText);
      if (cur !== null && !cur.ok) expect(plan.action).toBe('refuse');
      if (plan.action !== 'repartition') continue;

      const w = parseSfdiskDump(wantedText ?? '');
      expect(w.ok).toBe(true);
      if (!w.ok) continue;
      expect(validateTable(w.table, diskSectors)).toEqual([]);
      const diff = compareTables(w.table, cur !== null && cur.ok ? cur.table : null);
      expect(diff.same).toBe(false);
      if (diff.same) continue;
      const changed = new Set(diff.changed);
      for (const r of plan.format) expect(changed.has(r.index)).toBe(true);
      for (const k of plan.keep) expect(changed.has(k)).toBe(false);
      if (diff.changed.length === 0) expect(plan.format).toEqual([]);
      expect(compareTables(plan.table, w.table)).toEqual({ same: true });
    }
    // the generator reaches every outcome
    expect(counts.keep).toBeGreaterThan(20);
    expect(counts.refuse).toBeGreaterThan(100);
    expect(counts.repartition).toBeGreaterThan(100);
  });

  test('parseSfdiskDump never throws on random bytes', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      let s = '';
      for (let j = rand(200); j > 0; j--)
        s +=
          rand(3) === 0
            ? ['start=', 'size=', 'type=', ': ', ', ', '\n', 'label: gpt\n', '"'][rand(8)]
            : String.fromCharCode(rand(128));
      const r = parseSfdiskDump(s);
      expect(typeof r.ok).toBe('boolean');
      if (r.ok) validateTable(r.table, FOUR_GB);
    }
  });
});

// Against the real sfdisk on image files (sfdisk works on plain files, no root needed).
const SFDISK = ['/sbin/sfdisk', '/usr/sbin/sfdisk'].find((p) => existsSync(p));
const dir = mkdtempSync(join(tmpdir(), 'sfdisk-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sfdisk(args: string[], input?: string): { code: number; out: string; err: string } {
  const r = Bun.spawnSync([SFDISK ?? 'sfdisk', ...args], {
    stdin: input === undefined ? 'ignore' : Buffer.from(input),
    env: { ...process.env, LC_ALL: 'C' },
  });
  return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
}

function image(name: string, bytes: number): string {
  const path = join(dir, name);
  writeFileSync(path, '');
  truncateSync(path, bytes);
  return path;
}

describe.skipIf(SFDISK === undefined)('real sfdisk', () => {
  test('real `sfdisk -d` output parses (dos)', () => {
    const img = image('x.img', 64 * 1024 * 1024);
    expect(sfdisk([img], 'label: dos\n,16M,c,*\n,,83\n').code).toBe(0);
    const dump = sfdisk(['-d', img]);
    expect(dump.code).toBe(0);
    const t = table(dump.out);
    expect(t.partitions).toEqual([
      { index: 1, start: 2048, size: 32768, type: 'c', bootable: true },
      { index: 2, start: 34816, size: 96256, type: '83', bootable: false },
    ]);
    expect(validateTable(t, 131072)).toEqual([]);
  });

  test('real `sfdisk -d` output parses (gpt)', () => {
    const img = image('g.img', 64 * 1024 * 1024);
    expect(sfdisk([img], 'label: gpt\n,16M,U\n,8M,L\nsize=4M, name="my root"\n').code).toBe(0);
    const t = table(sfdisk(['-d', img]).out);
    expect(t.label).toBe('gpt');
    expect(t.lastLba).toBe(131072 - 34);
    expect(t.partitions.map((p) => p.name ?? null)).toEqual([null, null, 'my root']);
    expect(validateTable(t, 131072)).toEqual([]);
  });

  test('the seed table (start=16) written to a 4 GiB sparse file dumps back unchanged', () => {
    const img = image('seed.img', 4 * 1024 * 1024 * 1024);
    const wanted = alignTable(table(SEED));
    expect(sfdisk([img], renderDump(wanted, img)).code).toBe(0);
    const back = table(sfdisk(['-d', img]).out);
    expect(compareTables(wanted, back)).toEqual({ same: true });
    expect(back.partitions[0]?.start).toBe(16);
    expect(
      planPartitions({ wantedText: SEED, currentText: sfdisk(['-d', img]).out, diskSectors: FOUR_GB }).action,
    ).toBe('keep');
  });

  test('renderDump round-trips through sfdisk: dos with bootable, gpt with names and attrs', () => {
    const cases: TableSpec[] = [
      dos([
        [1, 63, 1001, 'b', true],
        [3, 2049, 777, 'c'],
        [4, 4096, 1000, '83', true],
      ]),
      table(GPT),
      table('label: gpt\nfirst-lba: 34\nstart=34, size=100, type=L\n'),
    ];
    cases.forEach((t, i) => {
      const img = image(`rt${i}.img`, 64 * 1024 * 1024);
      const w = sfdisk([img], renderDump(t, img));
      expect(w.err).toBe('');
      expect(w.code).toBe(0);
      const back = table(sfdisk(['-d', img]).out);
      expect(compareTables(t, back)).toEqual({ same: true });
      expect(back.partitions.map((p) => p.name)).toEqual(t.partitions.map((p) => p.name));
    });
  });

  test('what validateTable refuses, sfdisk refuses too', () => {
    const cases: TableSpec[] = [
      dos([[1, 2048, 131072 - 2048 + 1]]), // one sector past the end
      table('label: gpt\nstart=2048, size=128992\n'), // into the backup GPT
      table('label: gpt\nstart=34, size=100\n'), // below the default first-lba
      dos([
        [1, 2048, 1000],
        [2, 2500, 1000],
      ]), // overlap
    ];
    cases.forEach((t, i) => {
      expect(validateTable(t, 131072)).not.toEqual([]);
      const img = image(`bad${i}.img`, 64 * 1024 * 1024);
      expect(sfdisk([img], renderDump(t, img)).code).not.toBe(0);
    });
    const edge = dos([[1, 2048, 131072 - 2048]]); // exactly to the last sector: both accept
    expect(validateTable(edge, 131072)).toEqual([]);
    expect(sfdisk([image('edge.img', 64 * 1024 * 1024)], renderDump(edge, 'edge.img')).code).toBe(0);
  });
});

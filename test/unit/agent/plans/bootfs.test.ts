// The p1 update plan: its order, its journal, the roll forward, and the fsck decision; then, on a model of FAT
// (names without case, rename over a name keeps that name's entry), every cut point of random updates.
import { describe, expect, test } from 'bun:test';
import {
  applyPlan,
  bootRank,
  bootUpdatePlan,
  fsckFindings,
  fsckNext,
  isBootCritical,
  key,
  ownedByFirstStage,
  parseJournal,
  parseListing,
  renderJournal,
  resumePlan,
  setProblems,
  stagedSet,
  stagingNeed,
  type BootAction,
  type BootSet,
  type Entry,
  type FsckRun,
  type P1State,
} from '../../../../agent/plans/bootfs.ts';
import { newStamp, renderStamp } from '../../../../agent/contract/stamp.ts';
import { rng } from '../../../fixtures/rng.ts';

const sha = (s: string) => new Bun.CryptoHasher('sha256').update(s).digest('hex');
const STAMP_A = renderStamp(newStamp('bootfs', 1, new Date('2024-01-01T00:00:00Z')));
const STAMP_B = renderStamp(newStamp('bootfs', 2, new Date('2024-02-01T00:00:00Z')));

// ---- a model of p1: what the plan's actions do on FAT ----

type Node = { kind: 'dir' } | { kind: 'file'; content: string };
interface Model {
  live: Map<string, Node>;
  staged: Map<string, Node>;
  journal: BootSet | null;
  stamp: string | null;
}

const find = (m: Map<string, Node>, p: string): string | undefined => [...m.keys()].find((k) => key(k) === key(p));
const parentOf = (p: string) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : null);

function clone(m: Model): Model {
  return { live: new Map(m.live), staged: new Map(m.staged), journal: m.journal, stamp: m.stamp };
}

function needParent(m: Map<string, Node>, p: string): void {
  const parent = parentOf(p);
  if (parent === null) return;
  const k = find(m, parent);
  if (k === undefined || m.get(k)?.kind !== 'dir') throw new Error(`no directory ${parent} for ${p}`);
}

/** One action on the model; throws where the real call would fail (no parent, rmdir of a non-empty dir, ...). */
function step(m: Model, a: BootAction, set: BootSet): void {
  switch (a.kind) {
    case 'journal':
      m.journal = set;
      return;
    case 'mkdir': {
      if (find(m.live, a.path) !== undefined) throw new Error(`mkdir ${a.path}: exists`);
      needParent(m.live, a.path);
      m.live.set(a.path, { kind: 'dir' });
      return;
    }
    case 'switch': {
      const s = find(m.staged, a.path);
      const node = s === undefined ? undefined : m.staged.get(s);
      if (s === undefined || node?.kind !== 'file') throw new Error(`switch ${a.path}: not staged`);
      const t = find(m.live, a.path);
      if (t !== undefined) {
        if (m.live.get(t)?.kind !== 'file') throw new Error(`switch ${a.path}: a directory is there`);
        m.live.set(t, node); // vfat: the target's entry is rewritten, its name stays
      } else {
        needParent(m.live, a.path);
        m.live.set(a.path, node);
      }
      m.staged.delete(s);
      return;
    }
    case 'delete': {
      const t = find(m.live, a.path);
      if (t !== undefined && m.live.get(t)?.kind !== 'file') throw new Error(`rm ${a.path}: a directory`);
      if (t !== undefined) m.live.delete(t);
      return;
    }
    case 'rmdir': {
      const t = find(m.live, a.path);
      if (t === undefined || m.live.get(t)?.kind !== 'dir') throw new Error(`rmdir ${a.path}: no directory`);
      if ([...m.live.keys()].some((k) => key(k).startsWith(`${key(t)}/`)))
        throw new Error(`rmdir ${a.path}: not empty`);
      m.live.delete(t);
      return;
    }
    case 'stamp':
      m.stamp = set.stamp;
      return;
    case 'clean':
      m.staged.clear();
      return;
    case 'finish':
      m.journal = null;
      return;
  }
}

function treeOf(m: Map<string, Node>): Map<string, Entry> {
  const t = new Map<string, Entry>();
  for (const [p, n] of m)
    t.set(p, n.kind === 'dir' ? n : { kind: 'file', size: n.content.length, sha256: sha(n.content) });
  return t;
}
const stateOf = (m: Model): P1State => ({ live: treeOf(m.live), staged: treeOf(m.staged) });

/** The live files outside the first stage's, by FAT name -> content. */
function view(m: Model): Map<string, string> {
  const v = new Map<string, string>();
  for (const [p, n] of m.live) if (n.kind === 'file' && !ownedByFirstStage(p)) v.set(key(p), n.content);
  return v;
}
const liveDirs = (m: Model) =>
  new Set([...m.live].filter(([p, n]) => n.kind === 'dir' && !ownedByFirstStage(p)).map(([p]) => key(p)));

type Files = Map<string, string>; // path -> content
const sameView = (v: Map<string, string>, f: Files) =>
  v.size === f.size && [...f].every(([p, c]) => v.get(key(p)) === c);

function setOf(files: Files, dirs: string[], stamp: string): BootSet {
  return {
    stamp,
    dirs,
    files: [...files].map(([path, c]) => ({ path, size: c.length, sha256: sha(c) })),
  };
}

function dirsOf(files: Files, extra: string[] = []): string[] {
  const d = new Set<string>(extra);
  for (const p of files.keys()) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) d.add(parts.slice(0, i).join('/'));
  }
  return [...d];
}

const FIRST_STAGE: [string, Node][] = [
  ['boot.scr.uimg', { kind: 'file', content: 'local script' }],
  ['clusterboot.marker', { kind: 'file', content: 'marker' }],
  ['clusterboot.tries', { kind: 'file', content: 'cb_try_n=1' }],
];

/** p1 holding set A, then the staging rsync for B: what differs from the live file (--checksum --compare-dest). */
function stagedModel(a: Files, aDirs: string[], b: Files, junk = false): Model {
  const live = new Map<string, Node>([...FIRST_STAGE]);
  for (const d of aDirs) live.set(d, { kind: 'dir' });
  for (const [p, c] of a) live.set(p, { kind: 'file', content: c });
  const staged = new Map<string, Node>();
  for (const [p, c] of b) {
    const l = find(live, p);
    const ln = l === undefined ? undefined : live.get(l);
    if (ln?.kind === 'file' && ln.content === c) continue;
    for (const d of dirsOf(new Map([[p, c]]))) if (find(staged, d) === undefined) staged.set(d, { kind: 'dir' });
    staged.set(p, { kind: 'file', content: c });
  }
  if (junk) staged.set('.u-boot.bin.Xa81fq', { kind: 'file', content: 'half a file' });
  return { live, staged, journal: null, stamp: STAMP_A };
}

function runAll(m: Model, actions: readonly BootAction[], set: BootSet, upto = actions.length): Model {
  const x = clone(m);
  for (const a of actions.slice(0, upto)) step(x, a, set);
  return x;
}

/** The next boot: the journal's roll forward, to the end. */
function resumeToEnd(m: Model): Model {
  if (!m.journal) return m;
  const p = resumePlan(m.journal, stateOf(m));
  if (!p.ok) throw new Error(`resume: missing ${p.missing.join(', ')}`);
  return runAll(m, p.actions, m.journal);
}

function expectFinal(m: Model, b: Files, bDirs: string[]): void {
  expect(sameView(view(m), b)).toBe(true);
  expect(liveDirs(m)).toEqual(new Set(bDirs.map(key)));
  expect(m.staged.size).toBe(0);
  expect(m.journal).toBeNull();
  expect(m.stamp).toBe(STAMP_B);
  for (const [p, n] of FIRST_STAGE) expect(m.live.get(p)).toEqual(n);
}

// ---- the names ----

describe('names on p1', () => {
  test('the boot-critical files rank last, config.txt the very last; files in directories are never critical', () => {
    expect(bootRank('config.txt')).toBe(4);
    expect(bootRank('CONFIG.TXT')).toBe(4);
    expect(bootRank('cmdline.txt')).toBe(3);
    for (const p of ['u-boot.bin', 'u-boot-rpi4.bin', 'kernel8.img', 'kernel_2712.img', 'armstub8-gic.bin'])
      expect(bootRank(p)).toBe(2);
    for (const p of ['bootcode.bin', 'start4.elf', 'start.elf', 'fixup4.dat', 'fixup_cd.dat'])
      expect(bootRank(p)).toBe(1);
    for (const p of ['bcm2711-rpi-4-b.dtb', 'overlays/vc4-kms-v3d.dtbo', 'sub/config.txt', 'issue.txt', 'u-boot.txt'])
      expect(isBootCritical(p)).toBe(false);
  });

  test("the first stage's files are never part of a set", () => {
    for (const p of [
      'boot.scr.uimg',
      'BOOT.SCR.UIMG',
      'clusterboot.marker',
      'clusterboot.tries',
      'clusterboot.bootfs.journal',
      '.cb-new',
      '.cb-new/u-boot.bin',
      'clusterboot.x/y',
    ])
      expect(ownedByFirstStage(p)).toBe(true);
    for (const p of ['config.txt', 'overlays/boot.scr.uimg', 'sub/clusterboot.marker', 'cb-new'])
      expect(ownedByFirstStage(p)).toBe(false);
  });

  test('a set FAT cannot hold is refused with the reason', () => {
    expect(setProblems([{ path: 'config.txt' }, { path: 'overlays/a.dtbo' }], ['overlays'])).toEqual([]);
    expect(setProblems([{ path: 'Config.txt' }, { path: 'config.txt' }], [])).toEqual([
      'Config.txt and config.txt are the same name on FAT',
    ]);
    expect(setProblems([{ path: 'a/../b' }], [])[0]).toContain('not a usable name');
    expect(setProblems([{ path: 'x\\#012y' }], [])[0]).toContain('not a usable name');
    expect(setProblems([{ path: 'boot.scr.uimg' }], [])).toEqual([
      'boot.scr.uimg is a name the first stage keeps on p1',
    ]);
    expect(setProblems([{ path: 'a' }, { path: 'a/b' }], [])).toContain('a is a file and a directory of a/b');
  });

  test("rsync's --list-only output (checked against rsync 3.5.0, with and without --no-h)", () => {
    const plain = [
      'drwxr-xr-x        4096 2026/12/02 04:19:41 .',
      '-rw-r--r--           3 2026/12/02 04:19:41 config.txt',
      'lrwxrwxrwx          10 2026/12/02 04:19:41 link',
      '-rw-r--r--       12345 2026/12/02 04:19:41 u-boot.bin',
      'drwxr-xr-x        4096 2026/12/02 04:19:41 empty',
      'drwxr-xr-x        4096 2026/12/02 04:19:41 overlays',
      '-rw-r--r--           2 2026/12/02 04:19:41 overlays/a b.dtbo',
      '',
    ].join('\n');
    expect(parseListing(plain)).toEqual({
      ok: true,
      files: [
        { path: 'config.txt', size: 3 },
        { path: 'u-boot.bin', size: 12345 },
        { path: 'overlays/a b.dtbo', size: 2 },
      ],
      dirs: ['empty', 'overlays'],
      skipped: ['link'],
    });
    const grouped = parseListing('-rw-r--r--         12,345 2026/12/02 04:19:41 u-boot.bin\n');
    expect(grouped.ok && grouped.files).toEqual([{ path: 'u-boot.bin', size: 12345 }]);
    expect(parseListing('rsync: change_dir failed\n').ok).toBe(false);
  });
});

// ---- the journal ----

describe('the journal', () => {
  const set = setOf(
    new Map([
      ['config.txt', 'k=1'],
      ['overlays/a.dtbo', 'dt'],
    ]),
    ['overlays'],
    STAMP_B,
  );
  test('round-trips', () => {
    expect(parseJournal(renderJournal(set))).toEqual({ ok: true, set });
  });
  test('a torn, foreign or tampered journal is refused, never followed', () => {
    const text = renderJournal(set);
    expect(parseJournal(text.slice(0, text.length - 20)).ok).toBe(false);
    expect(parseJournal('').ok).toBe(false);
    expect(parseJournal('clusterboot-bootfs-journal 2\n{}').ok).toBe(false);
    const bad = (o: unknown) => parseJournal(`clusterboot-bootfs-journal 1\n${JSON.stringify(o)}\n`);
    const file = set.files[0];
    expect(bad({ ...set, stamp: 'nope' }).ok).toBe(false);
    expect(bad({ ...set, files: [{ ...file, path: '../../etc/passwd' }] }).ok).toBe(false);
    expect(bad({ ...set, files: [{ ...file, path: '/config.txt' }] }).ok).toBe(false);
    expect(bad({ ...set, files: [{ ...file, path: 'clusterboot.marker' }] }).ok).toBe(false);
    expect(bad({ ...set, files: [{ ...file, sha256: 'x' }] }).ok).toBe(false);
    expect(bad({ ...set, files: [{ ...file, size: -1 }] }).ok).toBe(false);
    expect(bad({ ...set, dirs: [7] }).ok).toBe(false);
  });
});

// ---- a concrete update ----

describe('the update plan', () => {
  const A: Files = new Map([
    ['config.txt', 'kernel=u-boot.bin\n'],
    ['u-boot.bin', 'uboot-1'],
    ['start4.elf', 'start-1'],
    ['fixup4.dat', 'fixup-1'],
    ['bcm2711-rpi-4-b.dtb', 'dtb'],
    ['overlays/a.dtbo', 'a-1'],
    ['old.txt', 'old'],
    ['olddir/x', 'x'],
  ]);
  const B: Files = new Map([
    ['config.txt', 'kernel=u-boot.bin\n# 2\n'],
    ['u-boot.bin', 'uboot-2'],
    ['start4.elf', 'start-2'],
    ['fixup4.dat', 'fixup-2'],
    ['bcm2711-rpi-4-b.dtb', 'dtb'],
    ['overlays/a.dtbo', 'a-2'],
    ['overlays/b.dtbo', 'b'],
    ['newdir/sub/y', 'y'],
  ]);
  const aDirs = dirsOf(A);
  const bDirs = dirsOf(B);
  const setB = setOf(B, bDirs, STAMP_B);

  test('stages, journals, switches the rest before the boot-critical files, config.txt last, then deletes', () => {
    const m = stagedModel(A, aDirs, B, true);
    const p = bootUpdatePlan(setB, stateOf(m));
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    expect(p.actions.map((a) => a.describe())).toEqual([
      'cat > clusterboot.bootfs.journal  # the new set, 8 files (temp + fsync + rename): the commit point',
      'mkdir newdir',
      'mkdir newdir/sub',
      'mv -f .cb-new/newdir/sub/y newdir/sub/y',
      'mv -f .cb-new/overlays/a.dtbo overlays/a.dtbo',
      'mv -f .cb-new/overlays/b.dtbo overlays/b.dtbo',
      'mv -f .cb-new/start4.elf start4.elf',
      'mv -f .cb-new/fixup4.dat fixup4.dat',
      'mv -f .cb-new/u-boot.bin u-boot.bin',
      'mv -f .cb-new/config.txt config.txt',
      'rm -f old.txt',
      'rm -f olddir/x',
      'rmdir olddir',
      'cat > clusterboot.bootfs.stamp  # bootfs 2-20240201T000000Z (temp + fsync + rename)',
      'rm -rf .cb-new',
      'rm -f clusterboot.bootfs.journal  # the update is complete',
    ]);
    expect([p.switches, p.deletes]).toEqual([7, 3]);
    expectFinal(runAll(m, p.actions, setB), B, bDirs);
  });

  test('only the stamp moved: nothing to switch', () => {
    const m = stagedModel(B, bDirs, B);
    const p = bootUpdatePlan(setB, stateOf(m));
    expect(p.ok && p.actions.map((a) => a.kind)).toEqual(['journal', 'stamp', 'clean', 'finish']);
  });

  test('a new set whose file stands where a directory was (and the reverse) still lands', () => {
    const a: Files = new Map([
      ['overlays/x.dtbo', '1'],
      ['extra', 'f'],
    ]);
    const b: Files = new Map([
      ['overlays', 'now a file'],
      ['extra/inside', 'now a dir'],
    ]);
    const m = stagedModel(a, dirsOf(a), b);
    const set = setOf(b, dirsOf(b), STAMP_B);
    const p = bootUpdatePlan(set, stateOf(m));
    expect(p.ok).toBe(true);
    if (p.ok) expectFinal(runAll(m, p.actions, set), b, dirsOf(b));
  });

  test('the names FAT folds: a live CONFIG.TXT is replaced, not deleted beside a new config.txt', () => {
    const a: Files = new Map([
      ['CONFIG.TXT', 'old'],
      ['Overlays/A.dtbo', 'a'],
    ]);
    const b: Files = new Map([
      ['config.txt', 'new'],
      ['overlays/a.dtbo', 'a2'],
    ]);
    const m = stagedModel(a, ['Overlays'], b);
    const set = setOf(b, ['overlays'], STAMP_B);
    const p = bootUpdatePlan(set, stateOf(m));
    expect(p.ok && p.actions.filter((x) => x.kind === 'delete' || x.kind === 'rmdir' || x.kind === 'mkdir')).toEqual(
      [],
    );
    if (p.ok) expectFinal(runAll(m, p.actions, set), b, ['overlays']);
  });

  test('a staged file that is not whole is missing: the update does not start', () => {
    const m = stagedModel(A, aDirs, B);
    m.staged.set('u-boot.bin', { kind: 'file', content: 'uboot' }); // cut short
    const p = bootUpdatePlan(setB, stateOf(m));
    expect(p).toEqual({ ok: false, missing: ['u-boot.bin'] });
  });

  test('stagedSet: hashes from the staging, or from the live file rsync found equal; a wrong size is missing', () => {
    const m = stagedModel(A, aDirs, B);
    const listing = { files: [...B].map(([path, c]) => ({ path, size: c.length })), dirs: bDirs };
    expect(stagedSet(STAMP_B, listing, stateOf(m))).toEqual({ ok: true, set: setB });
    const short = stateOf(m);
    (short.staged as Map<string, Entry>).set('overlays/b.dtbo', { kind: 'file', size: 0, sha256: sha('') });
    expect(stagedSet(STAMP_B, listing, short)).toEqual({ ok: false, missing: ['overlays/b.dtbo'] });
    const gone = stateOf(stagedModel(A, aDirs, new Map()));
    const s = stagedSet(STAMP_B, listing, gone);
    expect(s.ok).toBe(false);
  });

  test('the room the staging needs: whole clusters of the files that surely changed', () => {
    const live = new Map<string, Entry>([
      ['config.txt', { kind: 'file', size: 10 }],
      ['u-boot.bin', { kind: 'file', size: 5000 }],
      ['overlays', { kind: 'dir' }],
    ]);
    const files = [
      { path: 'CONFIG.TXT', size: 10 }, // same size: rsync decides
      { path: 'u-boot.bin', size: 6000 }, // 3 clusters of 2048
      { path: 'overlays/a.dtbo', size: 1 }, // 1 cluster
      { path: 'overlays', size: 3 }, // a file where a directory is: 1 cluster
    ];
    expect(stagingNeed(files, live, 2048)).toBe(5 * 2048);
  });

  test('resume: what is in place stays, what the staging holds is switched, what is neither is missing', () => {
    const m = stagedModel(A, aDirs, B);
    const p = bootUpdatePlan(setB, stateOf(m));
    if (!p.ok) throw new Error('no plan');
    const cut = runAll(m, p.actions, setB, 5); // the journal, two mkdirs, two switches
    const r = resumePlan(setB, stateOf(cut));
    expect(r.ok && r.actions.filter((a) => a.kind === 'switch').map((a) => (a as { path: string }).path)).toEqual([
      'overlays/b.dtbo',
      'start4.elf',
      'fixup4.dat',
      'u-boot.bin',
      'config.txt',
    ]);
    cut.staged.delete('u-boot.bin');
    expect(resumePlan(setB, stateOf(cut))).toEqual({ ok: false, missing: ['u-boot.bin'] });
  });
});

// ---- fsck.fat ----

describe('fsck.fat before writing p1', () => {
  const r = (flag: '-n' | '-a', code: number | null, output = ''): FsckRun => ({ flag, code, output });
  const DIRTY =
    'fsck.fat 4.2 (2021-01-31)\nDirty bit is set. Fs was not properly unmounted and some data may be corrupt.\n Automatically removing dirty bit.\n\nLeaving filesystem unchanged.\n/dev/vda1: 9 files, 20/16343 clusters\n';
  test('clean goes on; findings are repaired and checked again', () => {
    expect(fsckNext([])).toEqual({ run: '-n' });
    expect(fsckNext([r('-n', 0)])).toEqual({ verdict: 'clean' });
    expect(fsckNext([r('-n', 1, DIRTY)])).toEqual({ run: '-a' });
    expect(fsckNext([r('-n', 1, DIRTY), r('-a', 1)])).toEqual({ run: '-n' });
    expect(fsckNext([r('-n', 1, DIRTY), r('-a', 1), r('-n', 0)])).toEqual({
      verdict: 'repaired',
      findings:
        'Dirty bit is set. Fs was not properly unmounted and some data may be corrupt. | Automatically removing dirty bit.',
    });
  });
  test('still not clean after -a (or no fsck at all) is unrepairable, with what fsck said', () => {
    expect(
      fsckNext([
        r('-n', 1, 'Logical sector size is zero.'),
        r('-a', 1, 'Logical sector size is zero.'),
        r('-n', 1, 'Logical sector size is zero.'),
      ]),
    ).toEqual({ verdict: 'unrepairable', findings: 'Logical sector size is zero.' });
    expect(
      fsckNext([r('-n', null, 'spawn ENOENT'), r('-a', null, 'spawn ENOENT'), r('-n', null, 'spawn ENOENT')]),
    ).toEqual({
      verdict: 'unrepairable',
      findings: 'spawn ENOENT',
    });
    expect(fsckNext([r('-n', 2), r('-a', 2), r('-n', 2)])).toEqual({
      verdict: 'unrepairable',
      findings: 'fsck.fat -n still exits 2 after fsck.fat -a',
    });
  });
  test('findings leave out the banner and the summary', () => {
    expect(fsckFindings('fsck.fat 4.2 (2021-01-31)\n/dev/vda1: 3 files, 5/100 clusters\n')).toBe('');
    expect(
      fsckFindings(
        'fsck.fat 4.2 (2021-01-31)\nReclaimed 43 unused clusters (88064 bytes).\nCannot initialize conversion from codepage 850 to ANSI_X3.4-1968: Invalid argument\nUsing internal CP850 conversion table\n',
      ),
    ).toBe('Reclaimed 43 unused clusters (88064 bytes).');
  });
});

// ---- every cut point ----

const POOL = [
  'config.txt',
  'cmdline.txt',
  'u-boot.bin',
  'kernel8.img',
  'start4.elf',
  'fixup4.dat',
  'start.elf',
  'fixup.dat',
  'bootcode.bin',
  'armstub8.bin',
  'bcm2711-rpi-4-b.dtb',
  'issue.txt',
  'overlays/a.dtbo',
  'overlays/b.dtbo',
  'overlays/sub/c.dtbo',
  'docs/readme',
  'docs/more/notes',
];

/** Two random sets over the pool (config.txt and u-boot.bin in both, as on every card), sometimes recased. */
function randomPair(r: () => number): { a: Files; b: Files; aDirs: string[]; bDirs: string[] } {
  const a: Files = new Map();
  const b: Files = new Map();
  for (const p of POOL) {
    const always = p === 'config.txt' || p === 'u-boot.bin';
    const inA = always || r() < 0.6;
    const inB = always || r() < 0.6;
    if (inA) a.set(p, `A:${p}:${Math.floor(r() * 3)}`);
    if (inB) {
      const same = inA && r() < 0.4;
      const bp = r() < 0.1 ? p.toUpperCase() : p;
      b.set(bp, same ? (a.get(p) as string) : `B:${p}:${Math.floor(r() * 3)}`);
    }
  }
  const aDirs = dirsOf(a, r() < 0.3 ? ['emptydir-a'] : []);
  const bDirs = dirsOf(b, r() < 0.3 ? ['emptydir-b'] : []);
  return { a, b, aDirs, bDirs };
}

function contentOf(f: Files, p: string): string | undefined {
  for (const [k, c] of f) if (key(k) === key(p)) return c;
  return undefined;
}

describe('every cut point of an update (property, seeded)', () => {
  test('p1 holds the old set, the new set, or a journal the next boot completes; nothing torn, nothing critical missing', () => {
    let cuts = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const { a, b, aDirs, bDirs } = randomPair(r);
      const set = setOf(b, bDirs, STAMP_B);
      const m0 = stagedModel(a, aDirs, b, r() < 0.5);
      const p = bootUpdatePlan(set, stateOf(m0));
      if (!p.ok) throw new Error(`seed ${seed}: no plan (${p.missing.join(', ')})`);
      const critA = [...a.keys()].filter(isBootCritical);
      const critB = [...b.keys()].filter(isBootCritical);
      for (let k = 0; k <= p.actions.length; k++) {
        cuts++;
        const m = runAll(m0, p.actions, set, k);
        const v = view(m);
        const where = `seed ${seed}, cut after ${k} of ${p.actions.length}`;
        // every file whole: its old version or its new one
        for (const [fk, c] of v) {
          if (c !== contentOf(a, fk) && c !== contentOf(b, fk)) throw new Error(`${where}: ${fk} is torn or foreign`);
        }
        // everything of one set or the other is there: so are the boot-critical files
        const hasAll = (f: Files) => [...f.keys()].every((x) => v.has(key(x)));
        if (!hasAll(a) && !hasAll(b)) throw new Error(`${where}: neither set is complete`);
        if (!critA.every((x) => v.has(key(x))) && !critB.every((x) => v.has(key(x))))
          throw new Error(`${where}: a boot-critical file is missing`);
        if (!v.has('config.txt') || !v.has('u-boot.bin')) throw new Error(`${where}: config.txt or U-Boot missing`);
        // the boot-critical files switch last, config.txt the very last: once one of them shows its new
        // version, everything else of the new set is in place (and once config.txt does, all of it)
        const isNew = (x: string) => v.get(key(x)) === contentOf(b, x) && contentOf(a, x) !== contentOf(b, x);
        const inPlace = (x: string) => v.get(key(x)) === contentOf(b, x);
        const bNames = [...b.keys()];
        if (critB.some(isNew) && !bNames.filter((x) => !isBootCritical(x)).every(inPlace))
          throw new Error(`${where}: a boot-critical file switched before the rest`);
        if (isNew('config.txt') && !bNames.every(inPlace))
          throw new Error(`${where}: config.txt switched before the rest`);
        // without a journal p1 is exactly one set; with one, the next boot completes it
        if (m.journal === null) {
          if (!(sameView(v, a) && k === 0) && !(sameView(v, b) && k === p.actions.length))
            throw new Error(`${where}: a mix without a journal`);
        }
        const next = resumeToEnd(m);
        if (k > 0) expectFinal(next, b, bDirs);
        for (const [fp, n] of FIRST_STAGE) expect(m.live.get(fp)).toEqual(n);
      }
    }
    expect(cuts).toBeGreaterThan(3000);
  });

  test('a cut during the resume itself: the boot after it resumes again and lands on the new set', () => {
    for (let seed = 1; seed <= 120; seed++) {
      const r = rng(1000 + seed);
      const { a, b, aDirs, bDirs } = randomPair(r);
      const set = setOf(b, bDirs, STAMP_B);
      const m0 = stagedModel(a, aDirs, b);
      const p = bootUpdatePlan(set, stateOf(m0));
      if (!p.ok) throw new Error('no plan');
      const k = 1 + Math.floor(r() * (p.actions.length - 1));
      const cut = runAll(m0, p.actions, set, k);
      const rp = resumePlan(set, stateOf(cut));
      if (!rp.ok) throw new Error('no resume');
      for (let j = 0; j <= rp.actions.length; j++) expectFinal(resumeToEnd(runAll(cut, rp.actions, set, j)), b, bDirs);
    }
  });

  test("FAT's torn renames, as fsck.fat -a leaves them, still resume to the new set", () => {
    // a cut inside one rename: the live name already rewritten with the staged entry not yet removed
    // (cross-linked: fsck truncates one of the two), or a new name's entry created but still empty
    for (let seed = 1; seed <= 120; seed++) {
      const r = rng(2000 + seed);
      const { a, b, aDirs, bDirs } = randomPair(r);
      const set = setOf(b, bDirs, STAMP_B);
      const m0 = stagedModel(a, aDirs, b);
      const p = bootUpdatePlan(set, stateOf(m0));
      if (!p.ok) throw new Error('no plan');
      p.actions.forEach((act, k) => {
        if (act.kind !== 'switch') return;
        const before = runAll(m0, p.actions, set, k);
        const after = runAll(m0, p.actions, set, k + 1);
        const sk = find(before.staged, act.path) as string;
        const staged = before.staged.get(sk) as Node;
        const lk = find(after.live, act.path) as string;
        const variants: Model[] = [];
        // cross-linked, fsck truncated the staged entry
        const x1 = clone(after);
        x1.staged.set(sk, { kind: 'file', content: '' });
        variants.push(x1);
        // cross-linked, fsck truncated the live entry
        const x2 = clone(after);
        x2.staged.set(sk, staged);
        x2.live.set(lk, { kind: 'file', content: '' });
        variants.push(x2);
        // a new name: its entry written empty, the staged one still whole
        if (find(before.live, act.path) === undefined) {
          const x3 = clone(before);
          x3.live.set(act.path, { kind: 'file', content: '' });
          variants.push(x3);
        }
        for (const x of variants) expectFinal(resumeToEnd(x), b, bDirs);
      });
    }
  });

  test('applyPlan is idempotent: on the new set it only writes the stamp and cleans up', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const { b, bDirs } = randomPair(rng(3000 + seed));
      const set = setOf(b, bDirs, STAMP_B);
      const m = stagedModel(b, bDirs, new Map());
      const p = applyPlan(set, stateOf(m));
      expect(p.ok && p.actions.map((x) => x.kind)).toEqual(['stamp', 'clean', 'finish']);
    }
  });
});

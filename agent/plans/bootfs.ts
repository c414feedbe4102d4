// The boot partition p1 (FAT: the Pi firmware, config.txt, U-Boot) follows the master's bootfs/ without a
// power cut ever leaving a card that cannot reach U-Boot. Pure: the bootfs phase reads p1, hands the facts
// here, and executes the actions in order; every path below is relative to p1's mount point.
//
// Why it is crash-safe (README, "How p1 updates are crash-safe", says the same for the admin):
//
// 1. Nothing the firmware reads is written in place. The new set is rsynced into /.cb-new/ on p1 beside the
//    old one (--checksum --compare-dest against the live files: only what differs travels), synced, sized
//    against the master's listing and hashed. A cut while staging leaves every live file as it was; the next
//    update drops the staging and starts again.
// 2. The commit point is the journal, written atomically (temp, fsync, rename) before the first live change:
//    the new set's names, sizes and sha256 and its stamp. From then on the staged files are complete and
//    checked, so the update is finished without the master (roll forward): a boot that finds a journal
//    finishes it first thing in the bootfs phase, after fsck.fat, master or no master.
// 3. Each file switches with one rename from the staging over the live name. vfat renames over an existing
//    name by rewriting that name's directory entry in place (new start cluster and size): the name never
//    disappears, and a cut leaves the old file or the new one, whole. p1 is mounted dirsync, so each rename
//    is on the card before the next starts.
// 4. The order: new directories; the files the firmware does not read first (overlays, device trees,
//    anything else); then the boot-critical ones in one burst: the firmware (bootcode.bin, each start*.elf
//    with its fixup*.dat right after it), the loaders (armstub*.bin, u-boot*.bin, kernel*.img), cmdline.txt,
//    and config.txt last of all; only then what the new set no longer has is deleted (critical names last),
//    so the old config.txt never names a deleted file; then the stamp, the staging dropped, and the journal
//    removed, the last step of all.
//    Hence, at every cut point: all of the old set's files are present (until the first deletion) or all of
//    the new set's (from the last switch on), each byte-equal to its version in one set or the other; so the
//    boot-critical files are never missing; and whenever p1 holds neither set exactly, the journal is there
//    and the next boot completes it. Between the cut and that boot, the firmware boots the old chain
//    (config.txt and U-Boot old, maybe some new overlays or device trees) or, inside the critical burst (a
//    few synchronous renames: milliseconds), a mix of old and new boot-critical files. FAT cannot switch two
//    names at once, so no order of renames closes that window; the Pi's tryboot A/B would, and it needs the
//    master's bootfs/ laid out for it.
// 5. FAT has no journal of its own: a cut inside one rename can leave two entries on the same clusters (the
//    live name switched, the staged one not yet removed), a new name's entry still empty, or clusters no
//    entry owns. fsck.fat -a repairs that before anything is written (of two cross-linked entries it
//    truncates one), and the resume judges every file by the journal's sha256: what matches stays, what the
//    staging still holds whole is switched, and when a file is neither the resume cannot finish alone: a
//    fresh staged update fetches the set again from the master, the journal staying until its own replaces it.
// 6. The first stage's files on p1 are never part of the set and never deleted: clusterboot.* (the marker,
//    the stamp, the journal, U-Boot's clusterboot.tries), boot.scr.uimg (the local script the firststage
//    phase lays) and the staging directory itself.
// FAT compares names without case: every comparison here goes through key().
import { BOOT_JOURNAL, BOOT_STAGING, BOOT_STAMP } from '../paths.ts';
import { LOCAL_SCRIPT } from '../contract/firststage.ts';
import { parseStamp } from '../contract/stamp.ts';

/** One file of a boot set, as the journal records it. */
export interface BootFile {
  path: string;
  size: number;
  sha256: string;
}

/** The set p1 is to hold (the journal's content): the master's bootfs/ files, its directories and stamp. */
export interface BootSet {
  /** The text of the bootfs stamp this set belongs to (written to clusterboot.bootfs.stamp at the end). */
  stamp: string;
  files: BootFile[];
  dirs: string[];
}

/** What a tree on p1 holds at a path; sha256 only where the reader hashed it (sizes that match the set's). */
export type Entry = { kind: 'dir' } | { kind: 'file'; size: number; sha256?: string };
/** Relative path (as on the card, '/'-separated) to what is there. */
export type Tree = ReadonlyMap<string, Entry>;

/** p1 as the phase read it: the live tree (without the staging) and the staging tree. */
export interface P1State {
  live: Tree;
  staged: Tree;
}

/** One step of an update or of its resume; describe() renders it as the shell command it stands for. */
export type BootAction =
  | { kind: 'journal'; describe(): string }
  | { kind: 'mkdir'; path: string; describe(): string }
  | { kind: 'switch'; path: string; critical: boolean; describe(): string }
  | { kind: 'delete'; path: string; describe(): string }
  | { kind: 'rmdir'; path: string; describe(): string }
  | { kind: 'stamp'; describe(): string }
  | { kind: 'clean'; describe(): string }
  | { kind: 'finish'; describe(): string };

export type BootPlan =
  { ok: true; actions: BootAction[]; switches: number; deletes: number } | { ok: false; missing: string[] };

/** FAT's name comparison (case-insensitive; ASCII is what firmware names use). */
export const key = (p: string): string => p.toLowerCase();

const STAGING_KEY = key(BOOT_STAGING);
const LOCAL_KEY = key(LOCAL_SCRIPT);

/** The first stage's and clusterboot's own entries on p1: never part of a set, never deleted. */
export function ownedByFirstStage(path: string): boolean {
  const top = key(path.split('/')[0] ?? '');
  return top === STAGING_KEY || top === LOCAL_KEY || top.startsWith('clusterboot.');
}

/** rsync filter for every copy of bootfs/ onto p1: the master's copies of these names never land on p1. */
export const BOOT_EXCLUDES: readonly string[] = [
  '--exclude=/clusterboot.*',
  `--exclude=/${LOCAL_SCRIPT}`,
  `--exclude=/${BOOT_STAGING}`,
];

/**
 * Where a file switches in the update: 0 for all that the firmware does not read first, then the
 * boot-critical ones (top level only): 1 firmware, 2 loaders, 3 cmdline.txt, 4 config.txt (last).
 */
export function bootRank(path: string): number {
  if (path.includes('/')) return 0;
  const n = key(path);
  if (n === 'config.txt') return 4;
  if (n === 'cmdline.txt') return 3;
  if (/^(armstub.*\.bin|u-boot.*\.bin|kernel.*\.img)$/.test(n)) return 2;
  if (/^(bootcode\.bin|start.*\.elf|fixup.*\.dat)$/.test(n)) return 1;
  return 0;
}

export const isBootCritical = (path: string): boolean => bootRank(path) > 0;

/** Order within the update: by rank; start4.elf and fixup4.dat (the same variant) next to each other. */
function switchOrder(a: string, b: string): number {
  const ra = bootRank(a);
  const rb = bootRank(b);
  if (ra !== rb) return ra - rb;
  const sortKey = (p: string) => {
    const m = /^(start|fixup)(.*)\.(elf|dat)$/.exec(key(p));
    return m ? `${m[2]}\u0000${m[1] === 'start' ? 0 : 1}` : key(p);
  };
  const ka = sortKey(a);
  const kb = sortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

const depth = (p: string) => p.split('/').length;

function ancestors(p: string): string[] {
  const parts = p.split('/');
  return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join('/'));
}

/** A relative path p1 may hold: no empty, '.' or '..' part, no backslash or control character. */
export function validPath(p: string): boolean {
  if (p === '' || p.length > 1024 || p.startsWith('/') || p.endsWith('/')) return false;
  if (/[\u0000-\u001f\u007f\\]/.test(p)) return false;
  return p.split('/').every((s) => s !== '' && s !== '.' && s !== '..' && s.length <= 255);
}

/** Why a set cannot go onto p1 (invalid names, names only case tells apart, first-stage names), or []. */
export function setProblems(files: readonly { path: string }[], dirs: readonly string[]): string[] {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  for (const p of [...dirs, ...files.map((f) => f.path)]) {
    if (!validPath(p)) {
      problems.push(`'${p.replace(/[^\x20-\x7e]/g, '?')}' is not a usable name`);
      continue;
    }
    if (ownedByFirstStage(p)) problems.push(`${p} is a name the first stage keeps on p1`);
    const k = key(p);
    const other = seen.get(k);
    if (other !== undefined) problems.push(`${other} and ${p} are the same name on FAT`);
    else seen.set(k, p);
  }
  const fileKeys = new Set(files.map((f) => key(f.path)));
  for (const f of files)
    for (const a of ancestors(f.path))
      if (fileKeys.has(key(a))) problems.push(`${a} is a file and a directory of ${f.path}`);
  return problems;
}

/** The master's bootfs/ as `rsync -r --list-only --no-h` prints it: regular files with sizes, directories. */
export function parseListing(
  text: string,
):
  | { ok: true; files: { path: string; size: number }[]; dirs: string[]; skipped: string[] }
  | { ok: false; error: string } {
  const files: { path: string; size: number }[] = [];
  const dirs: string[] = [];
  const skipped: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^([-dlpscb])[-rwxsStT]{9}[.+]?\s+([\d,.]+) \d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d (.+)$/.exec(line);
    if (!m) return { ok: false, error: `unexpected rsync listing line '${line.slice(0, 80)}'` };
    const [, type, sizeText, path] = m as unknown as [string, string, string, string];
    if (path === '.') continue;
    if (type === 'd') dirs.push(path);
    else if (type === '-') files.push({ path, size: Number(sizeText.replace(/[,.]/g, '')) });
    else skipped.push(path); // FAT holds no symlinks, devices or FIFOs: the old rsync -rt skipped them too
  }
  return { ok: true, files, dirs, skipped };
}

const JOURNAL_HEADER = 'clusterboot-bootfs-journal 1';

/** The journal's text: a header line, then the set as JSON (one line). */
export function renderJournal(s: BootSet): string {
  return `${JOURNAL_HEADER}\n${JSON.stringify({ stamp: s.stamp, dirs: s.dirs, files: s.files })}\n`;
}

/** The journal back, checked as hostile input (anyone with the card can edit it). */
export function parseJournal(text: string): { ok: true; set: BootSet } | { ok: false; error: string } {
  const nl = text.indexOf('\n');
  if (nl < 0 || text.slice(0, nl) !== JOURNAL_HEADER)
    return { ok: false, error: `not a journal (first line '${text.slice(0, Math.min(40, nl < 0 ? 40 : nl))}')` };
  let o: unknown;
  try {
    o = JSON.parse(text.slice(nl + 1));
  } catch (e) {
    return { ok: false, error: `its JSON does not parse (${(e as Error).message}): truncated?` };
  }
  const v = o as { stamp?: unknown; dirs?: unknown; files?: unknown };
  if (typeof v !== 'object' || v === null) return { ok: false, error: 'its body is not an object' };
  if (typeof v.stamp !== 'string' || !parseStamp(v.stamp).ok) return { ok: false, error: 'its stamp is invalid' };
  if (!Array.isArray(v.dirs) || !v.dirs.every((d) => typeof d === 'string'))
    return { ok: false, error: 'its directory list is invalid' };
  if (!Array.isArray(v.files)) return { ok: false, error: 'its file list is invalid' };
  const files: BootFile[] = [];
  for (const f of v.files as unknown[]) {
    const x = f as { path?: unknown; size?: unknown; sha256?: unknown };
    if (
      typeof x !== 'object' ||
      x === null ||
      typeof x.path !== 'string' ||
      typeof x.size !== 'number' ||
      !Number.isSafeInteger(x.size) ||
      x.size < 0 ||
      typeof x.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(x.sha256)
    )
      return { ok: false, error: 'a file entry is invalid' };
    files.push({ path: x.path, size: x.size, sha256: x.sha256 });
  }
  const dirs = v.dirs as string[];
  const problems = setProblems(files, dirs);
  if (problems.length) return { ok: false, error: problems.slice(0, 3).join('; ') };
  return { ok: true, set: { stamp: v.stamp, dirs, files } };
}

// Shell quoting for describe(): bare when safe, single quotes otherwise.
function q(s: string): string {
  if (s !== '' && /^[A-Za-z0-9._/:=@%+,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const act = {
  journal: (n: number): BootAction => ({
    kind: 'journal',
    describe: () => `cat > ${BOOT_JOURNAL}  # the new set, ${n} files (temp + fsync + rename): the commit point`,
  }),
  mkdir: (path: string): BootAction => ({ kind: 'mkdir', path, describe: () => `mkdir ${q(path)}` }),
  switch: (path: string): BootAction => ({
    kind: 'switch',
    path,
    critical: isBootCritical(path),
    describe: () => `mv -f ${q(`${BOOT_STAGING}/${path}`)} ${q(path)}`,
  }),
  delete: (path: string): BootAction => ({ kind: 'delete', path, describe: () => `rm -f ${q(path)}` }),
  rmdir: (path: string): BootAction => ({ kind: 'rmdir', path, describe: () => `rmdir ${q(path)}` }),
  stamp: (stamp: string): BootAction => {
    const p = parseStamp(stamp);
    return {
      kind: 'stamp',
      describe: () => `cat > ${BOOT_STAMP}  # bootfs ${p.ok ? p.stamp.id : '?'} (temp + fsync + rename)`,
    };
  },
  clean: (): BootAction => ({ kind: 'clean', describe: () => `rm -rf ${BOOT_STAGING}` }),
  finish: (): BootAction => ({ kind: 'finish', describe: () => `rm -f ${BOOT_JOURNAL}  # the update is complete` }),
};

const matches = (e: Entry | undefined, f: BootFile): boolean =>
  e?.kind === 'file' && e.size === f.size && e.sha256 === f.sha256;

function byKey(t: Tree): Map<string, { path: string; entry: Entry }> {
  const m = new Map<string, { path: string; entry: Entry }>();
  for (const [path, entry] of t) m.set(key(path), { path, entry });
  return m;
}

/**
 * The actions that take p1 from `state` to exactly `set` (plus the first stage's own files), in the order
 * the header argues for; or the files that are neither in place nor staged whole (the master must send them
 * again). Used for a fresh update (after staging) and for the resume alike: it depends only on what is there.
 */
export function applyPlan(set: BootSet, state: P1State): BootPlan {
  const live = byKey(state.live);
  const staged = byKey(state.staged);
  const switches: string[] = [];
  const missing: string[] = [];
  for (const f of set.files) {
    if (matches(live.get(key(f.path))?.entry, f)) continue;
    if (matches(staged.get(key(f.path))?.entry, f)) switches.push(f.path);
    else missing.push(f.path);
  }
  if (missing.length) return { ok: false, missing };

  const wantFiles = new Set(set.files.map((f) => key(f.path)));
  const wantDirs = new Map<string, string>();
  const addDir = (d: string) => {
    if (!wantDirs.has(key(d))) wantDirs.set(key(d), d);
  };
  for (const d of set.dirs) for (const a of [...ancestors(d), d]) addDir(a);
  for (const f of set.files) for (const a of ancestors(f.path)) addDir(a);

  const actions: BootAction[] = [];
  const removed = new Set<string>();
  // what stands where the new set needs another kind of entry (a file where a directory goes, or the reverse)
  const removeTree = (k: string) => {
    const under = [...live].filter(([lk]) => (lk === k || lk.startsWith(`${k}/`)) && !removed.has(lk));
    for (const [lk, l] of under.filter(([, l]) => l.entry.kind === 'file')) {
      actions.push(act.delete(l.path));
      removed.add(lk);
    }
    for (const [lk, l] of under.filter(([, l]) => l.entry.kind === 'dir').sort((a, b) => depth(b[0]) - depth(a[0]))) {
      actions.push(act.rmdir(l.path));
      removed.add(lk);
    }
  };

  const dirs = [...wantDirs.values()].sort((a, b) => depth(a) - depth(b) || (key(a) < key(b) ? -1 : 1));
  for (const d of dirs) {
    const l = live.get(key(d));
    if (l?.entry.kind === 'dir' && !removed.has(key(d))) continue;
    if (l && !removed.has(key(d))) removeTree(key(d));
    actions.push(act.mkdir(d));
  }
  for (const p of switches.sort(switchOrder)) {
    if (live.get(key(p))?.entry.kind === 'dir') removeTree(key(p));
    actions.push(act.switch(p));
  }
  const obsolete = [...live].filter(([k]) => !removed.has(k) && !ownedByFirstStage(k));
  const deletes = obsolete
    .filter(([k, l]) => l.entry.kind === 'file' && !wantFiles.has(k))
    .map(([, l]) => l.path)
    .sort(switchOrder);
  for (const p of deletes) actions.push(act.delete(p));
  const rmdirs = obsolete
    .filter(([k, l]) => l.entry.kind === 'dir' && !wantDirs.has(k))
    .map(([, l]) => l.path)
    .sort((a, b) => depth(b) - depth(a) || (key(a) < key(b) ? -1 : 1));
  for (const p of rmdirs) actions.push(act.rmdir(p));
  actions.push(act.stamp(set.stamp), act.clean(), act.finish());
  return { ok: true, actions, switches: switches.length, deletes: deletes.length + rmdirs.length };
}

/**
 * The new set as the staging left it: each listed file's sha256 from its staged copy, or, when rsync sent none
 * (--checksum found the live file equal), from the live file. A staged copy whose size is not the listed one
 * (bootfs/ changed during the copy), or a file that is neither, is missing: the update does not go ahead.
 */
export function stagedSet(
  stamp: string,
  listing: { files: readonly { path: string; size: number }[]; dirs: readonly string[] },
  state: P1State,
): { ok: true; set: BootSet } | { ok: false; missing: string[] } {
  const live = byKey(state.live);
  const staged = byKey(state.staged);
  const files: BootFile[] = [];
  const missing: string[] = [];
  for (const f of listing.files) {
    const e = staged.get(key(f.path))?.entry ?? live.get(key(f.path))?.entry;
    if (e?.kind === 'file' && e.size === f.size && e.sha256 !== undefined)
      files.push({ path: f.path, size: f.size, sha256: e.sha256 });
    else missing.push(f.path);
  }
  return missing.length ? { ok: false, missing } : { ok: true, set: { stamp, files, dirs: [...listing.dirs] } };
}

/**
 * The least room the staging needs on p1 (bytes, whole clusters): the listed files that surely differ from
 * the live ones (absent, or another size). Files of the same size may differ too; rsync finds out, and a p1
 * that fills up keeps its old set all the same.
 */
export function stagingNeed(
  files: readonly { path: string; size: number }[],
  live: Tree,
  clusterBytes: number,
): number {
  const l = byKey(live);
  const c = Math.max(1, clusterBytes);
  return files
    .filter((f) => {
      const e = l.get(key(f.path))?.entry;
      return e?.kind !== 'file' || e.size !== f.size;
    })
    .reduce((n, f) => n + Math.ceil(f.size / c) * c, 0);
}

/** A fresh update, once the staging is complete: the journal first (the commit point), then applyPlan's steps. */
export function bootUpdatePlan(set: BootSet, state: P1State): BootPlan {
  const p = applyPlan(set, state);
  return p.ok ? { ...p, actions: [act.journal(set.files.length), ...p.actions] } : p;
}

/** The next boot's roll forward from a journal: whatever is not yet in place, in the same order. */
export const resumePlan = (journal: BootSet, state: P1State): BootPlan => applyPlan(journal, state);

/** One run of fsck.fat on p1: -n (check only) or -a (repair); code null when it did not run to an exit. */
export interface FsckRun {
  flag: '-n' | '-a';
  code: number | null;
  output: string;
}

export type FsckStep =
  | { run: '-n' | '-a' }
  | { verdict: 'clean' }
  | { verdict: 'repaired'; findings: string }
  | { verdict: 'unrepairable'; findings: string };

/** What fsck.fat said beyond its banner and its summary line. */
export function fsckFindings(output: string): string {
  return (
    output
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^fsck\.fat \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l))
      .filter(
        (l) => !/^(Leaving filesystem unchanged\.|\*\*\* Filesystem was changed \*\*\*|Writing changes\.)$/.test(l),
      )
      // the initramfs has no iconv modules: dosfstools says so each time it reads a name, and uses its own table
      .filter((l) => !/^(Cannot initialize conversion from |Using internal CP\d+ conversion table)/.test(l))
      .join(' | ')
  );
}

/**
 * Before p1 is written: `fsck.fat -n`; clean (0) goes on. Anything else (1: findings, such as the dirty bit a
 * cut leaves, or a FAT it cannot read) is repaired with `-a` and checked again with `-n`: clean then is
 * 'repaired', still not clean is 'unrepairable', which the phase reports and never formats (fsck.fat exits
 * 1 for "repaired" and for "gave up" alike, so only the second check tells them apart).
 */
export function fsckNext(done: readonly FsckRun[]): FsckStep {
  const [first, repair, again] = done;
  if (!first) return { run: '-n' };
  if (first.code === 0) return { verdict: 'clean' };
  if (!repair) return { run: '-a' };
  if (!again) return { run: '-n' };
  const findings = fsckFindings(first.output) || `fsck.fat -n exited ${first.code ?? 'without an exit code'}`;
  if (again.code === 0) return { verdict: 'repaired', findings };
  const left = fsckFindings(again.output) || fsckFindings(repair.output);
  return {
    verdict: 'unrepairable',
    findings: left || `fsck.fat -n still exits ${again.code ?? 'without an exit code'} after fsck.fat -a`,
  };
}

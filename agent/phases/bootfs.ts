// Phase "bootfs": the boot (firmware) partition follows the master's bootfs stamp; new firmware means a reboot.
// p1 is never rewritten in place: the new set is staged beside the old one, a journal commits it, and renames
// switch it in, config.txt and U-Boot last; a boot that finds a journal finishes that update first
// (plans/bootfs.ts has the order and the argument). fsck.fat checks p1 before anything writes to it.
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statfsSync,
  statSync,
} from 'node:fs';
import type { Link } from '../net/link.ts';
import { partName } from '../plans/sfdisk.ts';
import { decideStamp, parseStamp } from '../contract/stamp.ts';
import { info, progress, warn } from '../log.ts';
import { checkVfat, mountFs, readSmall, umountQuiet } from '../sys/fsutil.ts';
import { fsyncDir, writeAtomic } from '../contract/atomic.ts';
import { type Ctx, type Phase, type StampFile } from '../phase.ts';
import { PhaseFailure, RebootRequest } from '../errors.ts';
import { stampKey } from '../contract/initramfs.ts';
import { mount, syncDisks } from '../sys/libc.ts';
import { watchdogProgress } from '../devices/watchdog.ts';
import { BOOTFS_DIR, masterBase } from '../contract/tree.ts';
import { MARKER, BOOT_MNT, BOOT_STAMP, BOOT_STAGING, BOOT_JOURNAL } from '../paths.ts';
import {
  BOOT_EXCLUDES,
  bootUpdatePlan,
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
  type P1State,
} from '../plans/bootfs.ts';

/** mount(2): every directory change (rename, unlink, mkdir) is on the disk before the call returns. */
const MS_DIRSYNC = 128;
const STAGE = `${BOOT_MNT}/${BOOT_STAGING}`;
const JOURNAL = `${BOOT_MNT}/${BOOT_JOURNAL}`;
const TOO_SMALL =
  'an update is staged beside the old set, so p1 must hold the changed files twice: enlarge p1 in partitions.sfdisk';
const MARKER_TEXT = "clusterboot boot partition: its contents follow the master's bootfs/\n";

/**
 * The first fill of a freshly formatted p1 (the partitions phase, which reboots after it): rsync bootfs/ straight
 * in, then the stamp and the marker. Direct, not staged: the format has just ended whatever p1 booted before,
 * so there is no old set a cut could break and nothing to keep beside. A cut leaves a partial set without a
 * stamp, and the next boot's bootfs phase (no local stamp: an update) replaces it by a staged update.
 */
export async function fillBoot(link: Link, base: string, stamp: StampFile | null): Promise<void> {
  await link.rsync(
    [
      '-rt',
      '--modify-window=2',
      '--delete',
      ...BOOT_EXCLUDES,
      '--timeout=120',
      link.remote(`${base}${BOOTFS_DIR}/`),
      `${BOOT_MNT}/`,
    ],
    { timeoutMs: 30 * 60_000, onLine: () => watchdogProgress('bootfs rsync') },
  );
  writeAtomic(`${BOOT_MNT}/${MARKER}`, MARKER_TEXT);
  if (stamp) writeAtomic(`${BOOT_MNT}/${BOOT_STAMP}`, stamp.text);
  syncDisks();
}

function mountRw(p1: string): void {
  mkdirSync(BOOT_MNT, { recursive: true });
  try {
    // dirsync: each rename of the plan is on the card before the next one starts (the order is the guarantee)
    mount(p1, BOOT_MNT, 'vfat', MS_DIRSYNC, '');
  } catch (e) {
    throw new PhaseFailure(
      `cannot mount the boot partition ${p1} for writing: ${(e as Error).message}`,
      'fsck.fat passed it, so the card itself may fail: check dmesg, replace the card',
      'disk',
      { cause: e },
    );
  }
}

interface Seen {
  stampText: string | null;
  journalText: string | null;
}

/** p1 read-only: the local stamp and a journal left by an interrupted update. A warm boot writes nothing to p1. */
function peek(p1: string): Seen {
  // read-only: a warm boot must not write a byte to p1 (vfat would store access dates)
  mountFs(p1, BOOT_MNT, 'vfat', true);
  try {
    const journal = readSmall(JOURNAL, 16 << 20);
    if (journal.refused) warn('bootfs', `p1's ${BOOT_JOURNAL} is ${journal.refused}: taken as unreadable`);
    return {
      stampText: readSmall(`${BOOT_MNT}/${BOOT_STAMP}`).text,
      journalText: journal.refused ? '' : journal.text,
    };
  } finally {
    umountQuiet(BOOT_MNT);
  }
}

function walk(root: string, skipTop: string | null): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const rec = (rel: string) => {
    for (const d of readdirSync(rel ? `${root}/${rel}` : root, { withFileTypes: true })) {
      if (!rel && skipTop !== null && key(d.name) === key(skipTop)) continue;
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        out.set(p, { kind: 'dir' });
        rec(p);
      } else if (d.isFile()) out.set(p, { kind: 'file', size: statSync(`${root}/${p}`).size });
    }
  };
  if (existsSync(root)) rec('');
  return out;
}

function sha256File(path: string): string {
  return new Bun.CryptoHasher('sha256').update(readFileSync(path)).digest('hex');
}

/** The live tree and the staging tree, with sha256 of each file whose size is the one the set wants there. */
function readState(want: readonly { path: string; size: number }[]): P1State {
  const live = walk(BOOT_MNT, BOOT_STAGING);
  const staged = walk(STAGE, null);
  for (const [root, tree] of [
    [BOOT_MNT, live],
    [STAGE, staged],
  ] as const) {
    const byKey = new Map([...tree.keys()].map((p) => [key(p), p]));
    for (const f of want) {
      const p = byKey.get(key(f.path));
      const e = p === undefined ? undefined : tree.get(p);
      if (p !== undefined && e?.kind === 'file' && e.size === f.size)
        tree.set(p, { ...e, sha256: sha256File(`${root}/${p}`) });
    }
  }
  return { live, staged };
}

/** Carry out a plan's actions in order; onCommit once the journal is on the card. */
function execute(set: BootSet, actions: readonly BootAction[], onCommit: () => void = () => {}): void {
  for (const a of actions) {
    switch (a.kind) {
      case 'journal':
        writeAtomic(JOURNAL, renderJournal(set));
        onCommit();
        break;
      case 'mkdir':
        mkdirSync(`${BOOT_MNT}/${a.path}`);
        break;
      case 'switch':
        renameSync(`${STAGE}/${a.path}`, `${BOOT_MNT}/${a.path}`);
        break;
      case 'delete':
        rmSync(`${BOOT_MNT}/${a.path}`, { force: true });
        break;
      case 'rmdir':
        rmdirSync(`${BOOT_MNT}/${a.path}`);
        break;
      case 'stamp':
        syncDisks(); // the clusters the renames freed, before the stamp says the set is in place
        writeAtomic(`${BOOT_MNT}/${BOOT_STAMP}`, set.stamp);
        if (!existsSync(`${BOOT_MNT}/${MARKER}`)) writeAtomic(`${BOOT_MNT}/${MARKER}`, MARKER_TEXT);
        break;
      case 'clean':
        rmSync(STAGE, { recursive: true, force: true });
        syncDisks();
        break;
      case 'finish':
        rmSync(JOURNAL, { force: true });
        fsyncDir(BOOT_MNT);
        syncDisks();
        break;
    }
  }
}

function dropStaging(): void {
  try {
    rmSync(STAGE, { recursive: true, force: true });
    syncDisks();
  } catch {
    // the next update starts by removing it again
  }
}

const stampId = (text: string) => {
  const p = parseStamp(text);
  return p.ok ? p.stamp.id : '?';
};

/**
 * A journal on p1: an update was cut after its staging was complete. Finish it from the card alone (the master
 * may be down), then reboot into the new firmware. 'restage' when the card cannot finish it and the master
 * can send the set again.
 */
async function resume(ctx: Ctx, p1: string, text: string, online: boolean): Promise<string> {
  const j = parseJournal(text);
  const unfinished = 'interrupted update left unfinished (master offline)';
  if (!j.ok) {
    warn(
      'bootfs',
      `${p1} holds the journal of an interrupted update, but it is unreadable (${j.error}): ${online ? 'the set is fetched again from the master' : 'p1 stays as it is until the master is back'}`,
    );
    return ctx.params.dryRun ? 'dry run' : online ? 'restage' : unfinished;
  }
  const id = stampId(j.set.stamp);
  progress('bootfs', `finishing the interrupted update of the boot partition ${p1} (bootfs ${id}) from its journal`);
  if (ctx.params.dryRun) {
    mountFs(p1, BOOT_MNT, 'vfat', true);
    try {
      const plan = resumePlan(j.set, readState(j.set.files));
      if (plan.ok) for (const a of plan.actions) info('bootfs', `dry run: would ${a.describe()}`);
      else info('bootfs', `dry run: ${plan.missing.length} files must come from the master again`);
    } finally {
      umountQuiet(BOOT_MNT);
    }
    return 'dry run';
  }
  await checkVfat(p1, 'bootfs');
  mountRw(p1);
  try {
    const plan = resumePlan(j.set, readState(j.set.files));
    if (!plan.ok) {
      warn(
        'bootfs',
        `${plan.missing.length} file${plan.missing.length > 1 ? 's' : ''} of the new boot set ${plan.missing.length > 1 ? 'are' : 'is'} neither in place nor staged whole (${plan.missing.slice(0, 5).join(', ')}): ` +
          (online ? 'fetching the set again from the master' : 'p1 stays as it is until the master is back'),
      );
      return online ? 'restage' : unfinished;
    }
    info('bootfs', `resuming: switching ${plan.switches} files into place, then ${plan.deletes} deletions`, {
      plan: plan.actions.map((a) => a.describe()),
    });
    execute(j.set, plan.actions);
  } finally {
    umountQuiet(BOOT_MNT);
  }
  throw new RebootRequest(
    `the interrupted boot-partition update is finished (bootfs ${id}): the new boot firmware takes effect at the next boot`,
  );
}

/** Stage the master's bootfs/ beside the live files, check it, and plan the switch (or say why p1 stays). */
async function stage(
  ctx: Ctx,
  link: Link,
  stamp: StampFile,
): Promise<{ set: BootSet; actions: BootAction[]; switches: number; deletes: number } | { keep: string }> {
  rmSync(STAGE, { recursive: true, force: true });
  mkdirSync(STAGE);
  const src = link.remote(`${masterBase(ctx.params.masterRoot)}${BOOTFS_DIR}/`);
  const listed = parseListing(
    (
      await link.rsync(['-r', '--list-only', '--no-h', ...BOOT_EXCLUDES, '--timeout=120', src], {
        timeoutMs: 10 * 60_000,
      })
    ).stdout,
  );
  if (!listed.ok) return { keep: `the master's bootfs/ listing is unreadable: ${listed.error}` };
  for (const s of listed.skipped)
    warn('bootfs', `bootfs/${s} is neither a file nor a directory: FAT cannot hold it, left out`);
  for (const f of listed.files.filter((x) => ownedByFirstStage(x.path)))
    warn('bootfs', `bootfs/${f.path} has the name of a file the first stage keeps on p1: left out`);
  const files = listed.files.filter((x) => !ownedByFirstStage(x.path));
  const dirs = listed.dirs.filter((x) => !ownedByFirstStage(x));
  const problems = setProblems(files, dirs);
  if (problems.length) return { keep: `the master's bootfs/ cannot go onto FAT: ${problems.slice(0, 3).join('; ')}` };
  const mb = files.reduce((n, f) => n + f.size, 0) / 1e6;
  const fs = statfsSync(BOOT_MNT);
  const need = stagingNeed(files, walk(BOOT_MNT, BOOT_STAGING), fs.bsize);
  const free = fs.bavail * fs.bsize;
  if (need > free)
    return {
      keep: `p1 has ${(free / 1e6).toFixed(1)} MB free and the new files need at least ${(need / 1e6).toFixed(1)} MB beside the old ones (${TOO_SMALL})`,
    };
  progress(
    'bootfs',
    `staging the new boot files beside the old ones in /${BOOT_STAGING}/ (a set of ${files.length} files, ${mb.toFixed(1)} MB)`,
  );
  await link.rsync(
    [
      '-rt',
      '--checksum', // content, not FAT's 2-second times, decides what is unchanged
      '--modify-window=2',
      `--compare-dest=${BOOT_MNT}/`, // files equal to the live ones stay out of the staging (and off the wire)
      ...BOOT_EXCLUDES,
      '--timeout=120',
      src,
      `${STAGE}/`,
    ],
    { timeoutMs: 30 * 60_000, onLine: () => watchdogProgress('bootfs rsync') },
  );
  syncDisks();
  const state = readState(files);
  const s = stagedSet(stamp.text, { files, dirs }, state);
  if (!s.ok)
    return {
      keep: `the staged files do not match the master's listing (${s.missing.slice(0, 5).join(', ')}): did bootfs/ change during the copy?`,
    };
  const plan = bootUpdatePlan(s.set, state);
  if (!plan.ok) return { keep: `the staging lacks ${plan.missing.slice(0, 5).join(', ')}` };
  return { set: s.set, actions: plan.actions, switches: plan.switches, deletes: plan.deletes };
}

/** The update: fsck, stage, journal, switch; the live files change only after the journal. */
async function update(ctx: Ctx, link: Link, p1: string, stamp: StampFile, reason: string): Promise<string> {
  progress('bootfs', `updating the boot partition ${p1}: ${reason}`);
  await checkVfat(p1, 'bootfs');
  mountRw(p1);
  let committed = false;
  const kept = (why: string) => {
    dropStaging();
    warn('bootfs', `${why}; the boot partition keeps its old files, unchanged (the next boot tries again)`);
    return 'kept the old boot files (update failed)';
  };
  try {
    const s = await stage(ctx, link, stamp);
    if ('keep' in s) return kept(s.keep);
    info(
      'bootfs',
      `switching ${s.switches} files into place (the boot-critical ones last, config.txt the very last), then ${s.deletes} deletions`,
      { plan: s.actions.map((a) => a.describe()) },
    );
    execute(s.set, s.actions, () => (committed = true));
  } catch (e) {
    const msg = (e as Error).message;
    if (committed)
      throw new PhaseFailure(
        `the boot partition update stopped half-way: ${msg}`,
        'the next boot finishes it from the journal on p1; if that fails too, check the card (dmesg)',
        'sync',
        { cause: e },
      );
    if (e instanceof PhaseFailure) {
      dropStaging();
      throw e;
    }
    const full = /No space left on device/i.test(msg) ? ` (${TOO_SMALL})` : '';
    return kept(`could not stage the new boot files: ${msg.slice(-300)}${full}`);
  } finally {
    umountQuiet(BOOT_MNT);
  }
  throw new RebootRequest('new boot firmware written: it takes effect at the next boot');
}

export const bootfs: Phase = {
  name: 'bootfs',
  needs: { tools: ['rsync', 'fsckVfat'], modules: ['vfat'] },
  async run(ctx) {
    const d = ctx.facts.disk;
    const w = ctx.facts.wanted;
    const link = ctx.facts.link;
    const online = Boolean(ctx.facts.online && link && w);
    if (!d || (!online && !d.currentTable)) return 'skipped: master offline';
    const p1 = partName(d.device, 1);
    let seen: Seen | null = null;
    let mountError: unknown = null;
    try {
      seen = peek(p1);
    } catch (e) {
      mountError = e;
    }
    // an update a power cut stopped after its commit point is finished before anything else, master or not
    let restage = false;
    if (seen?.journalText != null) {
      const r = await resume(ctx, p1, seen.journalText, online);
      if (r !== 'restage') return r;
      restage = true;
    }
    if (!online || !w || !link) return 'skipped: master offline';
    if (!w.bootfs) {
      warn('bootfs', 'the master has no bootfs stamp: run `builder publish bootfs` on the master');
      return 'skipped: no bootfs stamp';
    }
    if (!seen) {
      // a p1 that does not mount: fsck.fat may repair it; otherwise say so
      const cannot = (e: unknown) =>
        new PhaseFailure(
          `cannot mount the boot partition ${p1}: ${(e as Error).message}`,
          'the table has no vfat p1: check partitions.sfdisk (p1 type b or c)',
          'disk',
          { cause: e },
        );
      if (ctx.params.dryRun || (await checkVfat(p1, 'bootfs')) === 'clean') throw cannot(mountError);
      try {
        seen = peek(p1);
      } catch (e) {
        throw cannot(e);
      }
    }
    const local = seen.stampText ? parseStamp(seen.stampText) : null;
    const decision = decideStamp({
      name: 'bootfs',
      masterText: w.bootfs.text,
      masterSig: w.bootfs.sig,
      publicKeyPem: stampKey(),
      local: local?.ok ? local.stamp : null,
      localComplete: Boolean(local?.ok),
    });
    if (decision.action === 'refuse') {
      warn('bootfs', `${decision.reason}; keeping the boot partition as it is (${decision.remedy})`);
      return "refused the master's bootfs stamp";
    }
    if (decision.action === 'keep' && !restage) return 'up to date';
    const reason =
      decision.action === 'keep' ? `finishing the interrupted update (${decision.reason})` : decision.reason;
    if (ctx.params.dryRun) {
      info('bootfs', `dry run: would stage bootfs/ in ${p1}:/${BOOT_STAGING}/, switch it in and reboot (${reason})`);
      return 'dry run';
    }
    return update(ctx, link, p1, w.bootfs, reason);
  },
};

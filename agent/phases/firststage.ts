// Phase "firststage": the commit point. This boot reached the master and finished its root phase, so the
// kernel and initramfs it runs become the disk's cached first stage, and U-Boot's local script is laid on p1.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync } from 'node:fs';
import { fsyncDir, writeAtomic } from '../contract/atomic.ts';
import {
  CACHE_DIR,
  CACHE_RECORD,
  LOCAL_SCRIPT,
  parseAnnouncement,
  parseRecord,
  fallbackInScript,
  renderLocalScript,
  renderRecord,
  TRIES_FILE,
  type Announcement,
  type StageFile,
} from '../contract/firststage.ts';
import { INITRAMFS, KERNEL, masterBase, TFTP_DIR } from '../contract/tree.ts';
import { scriptImage } from '../contract/uimage.ts';
import type { Ctx, Phase } from '../phase.ts';
import { info, progress, warn } from '../log.ts';
import { BOOT_MNT, ROOT_MNT } from '../paths.ts';
import { localScriptPrimary, planFirstStage, type BootedStage, type FirstStagePlan } from '../plans/firststage.ts';
import { partName } from '../plans/sfdisk.ts';
import { checkVfat, mountFs, umountQuiet } from '../sys/fsutil.ts';
import { syncDisks } from '../sys/libc.ts';
import { watchdogProgress } from '../devices/watchdog.ts';
import { firmwareFirstStage } from './firmware.ts';

const CACHE = `${ROOT_MNT}/${CACHE_DIR}`;
/** What the root partition keeps free for the next root sync beyond the cache (a slot's changed files). */
const RESERVE_BYTES = 64 * 1024 * 1024;

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return null;
  }
}

/** The local script as U-Boot sources it: a legacy script image. */
export function localScriptImage(primary: string | null = null): Uint8Array {
  return scriptImage(renderLocalScript(primary), { arch: 'arm64', name: 'clusterboot local script', time: 0 });
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  return a !== null && a.length === b.length && a.every((x, i) => x === b[i]);
}

/** p1 read-only: is the tries file there, and the local script's bytes (null: none). */
function readBootPartition(dev: string): { triesPresent: boolean; localScript: Uint8Array | null } {
  mountFs(dev, BOOT_MNT, 'vfat', true);
  try {
    return {
      triesPresent: existsSync(`${BOOT_MNT}/${TRIES_FILE}`),
      localScript: existsSync(`${BOOT_MNT}/${LOCAL_SCRIPT}`)
        ? new Uint8Array(readFileSync(`${BOOT_MNT}/${LOCAL_SCRIPT}`))
        : null,
    };
  } finally {
    umountQuiet(BOOT_MNT);
  }
}

function sha256(path: string): string {
  return new Bun.CryptoHasher('sha256').update(readFileSync(path)).digest('hex');
}

function check(path: string, want: StageFile, what: string): void {
  const size = fileSize(path);
  if (size !== want.size) throw new Error(`${what}: ${size} bytes, the master announces ${want.size}`);
  if (sha256(path) !== want.sha256) throw new Error(`${what}: sha256 differs from the master's announcement`);
}

function fileSize(path: string): number {
  try {
    return Bun.file(path).size;
  } catch {
    return -1;
  }
}

/** Fetch the announced kernel and initramfs into a temp folder beside the cache, check them, then rename it in. */
async function fetchIntoCache(ctx: Ctx, a: Announcement, basis: string | null): Promise<void> {
  const link = ctx.facts.link;
  if (!link) throw new Error('no connection to the master');
  const tmp = `${CACHE}/.${a.id}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  progress(
    'firststage',
    `caching first stage ${a.id} (${((a.kernel.size + a.initramfs.size) / 1e6).toFixed(1)} MB) from ${link.target.host}`,
  );
  const copyDest = basis && existsSync(`${CACHE}/${basis}`) ? [`--copy-dest=${CACHE}/${basis}/`] : [];
  await link.rsync(
    [
      '-rt',
      '--timeout=120',
      ...copyDest,
      `--include=/${KERNEL}`,
      `--include=/${INITRAMFS}`,
      '--exclude=*',
      link.remote(`${masterBase(ctx.params.masterRoot)}${TFTP_DIR}/`),
      `${tmp}/`,
    ],
    { timeoutMs: 30 * 60_000, onLine: () => watchdogProgress('first-stage rsync') },
  );
  // the cache keeps the master's file names (contract/firststage.ts says so for U-Boot)
  check(`${tmp}/${KERNEL}`, a.kernel, 'kernel');
  check(`${tmp}/${INITRAMFS}`, a.initramfs, 'initramfs');
  syncDisks();
  rmSync(`${CACHE}/${a.id}`, { recursive: true, force: true });
  renameSync(tmp, `${CACHE}/${a.id}`);
  fsyncDir(CACHE);
}

async function apply(
  ctx: Ctx,
  plan: FirstStagePlan,
  a: Announcement | null,
  p1: string,
  primary: string | null,
): Promise<void> {
  if (plan.actions.includes('cache') && a) {
    mkdirSync(CACHE, { recursive: true });
    // a copy that is about to go anyway makes room first; the record still names it until the new one is in,
    // and U-Boot's checks refuse a copy whose files are gone (it falls back, as for a damaged one)
    for (const id of plan.dropFirst) rmSync(`${CACHE}/${id}`, { recursive: true, force: true });
    await fetchIntoCache(ctx, a, plan.record.prev?.id ?? null);
    // the record names the new copy only once it is complete and checked: a cut before leaves the old record
    writeAtomic(`${ROOT_MNT}/${CACHE_RECORD}`, renderRecord(plan.record));
    for (const name of readdirSync(CACHE)) {
      if (name !== 'record.env' && !plan.keep.includes(name))
        rmSync(`${CACHE}/${name}`, { recursive: true, force: true });
    }
    syncDisks();
  }
  const onP1 = plan.actions.filter((x) => x !== 'cache');
  if (!onP1.length) return;
  // p1 holds the firmware and U-Boot: checked by fsck.fat before anything writes to it (once per boot)
  await checkVfat(p1, 'firststage');
  mountFs(p1, BOOT_MNT, 'vfat');
  try {
    if (onP1.includes('clear-tries')) rmSync(`${BOOT_MNT}/${TRIES_FILE}`, { force: true });
    if (onP1.includes('write-local-script')) writeAtomic(`${BOOT_MNT}/${LOCAL_SCRIPT}`, localScriptImage(primary));
    syncDisks();
  } finally {
    umountQuiet(BOOT_MNT);
  }
}

/** What U-Boot's scripts said on the command line about the first stage this boot runs. */
function bootedStage(ctx: Ctx): BootedStage {
  const p = ctx.params;
  return {
    ...(p.stageId ? { id: p.stageId } : {}),
    ...(p.stageFrom ? { from: p.stageFrom } : {}),
    ...(p.stageTry !== undefined ? { try: p.stageTry } : {}),
    ...(p.stageFailed ? { failed: p.stageFailed } : {}),
  };
}

export const firststage: Phase = {
  name: 'firststage',
  needs: { tools: ['rsync', 'fsckVfat'], modules: ['vfat'] },
  async run(ctx) {
    // the Raspberry Pi firmware path (no U-Boot): the p1 sets and tryboot, agent/phases/firmware.ts
    if (ctx.params.stageSet) return firmwareFirstStage(ctx);
    const d = ctx.facts.disk;
    if (!d || !ctx.facts.rootSlot) return 'skipped: no root';
    const text = ctx.facts.wanted?.firstStage ?? null;
    const parsed = text === null ? null : parseAnnouncement(text);
    const p1 = partName(d.device, 1);
    let boot: ReturnType<typeof readBootPartition>;
    try {
      boot = readBootPartition(p1);
    } catch (e) {
      warn(
        'firststage',
        `cannot read the boot partition ${p1}: ${(e as Error).message}; the first stage is not cached`,
      );
      return 'skipped: p1 unreadable';
    }
    // the local script's fallback: the primary when online, else the one the script on p1 has (read from its text)
    const local = boot.localScript;
    const primary = localScriptPrimary({
      online: Boolean(ctx.facts.online),
      masters: ctx.facts.masters ?? [],
      kept: local === null ? null : fallbackInScript(Buffer.from(local).toString('latin1')),
    });
    const fs = statfsSync(ROOT_MNT);
    const record = parseRecord(readOr(`${ROOT_MNT}/${CACHE_RECORD}`));
    const plan = planFirstStage({
      online: Boolean(ctx.facts.online),
      announcement: parsed?.ok ? parsed.announcement : null,
      ...(parsed && !parsed.ok ? { announcementError: parsed.error } : {}),
      booted: bootedStage(ctx),
      record,
      triesPresent: boot.triesPresent,
      localScriptCurrent: sameBytes(local, localScriptImage(primary)),
      freeBytes: fs.bavail * fs.bsize,
      reserveBytes: RESERVE_BYTES,
    });
    for (const w of plan.warnings) warn('firststage', w);
    ctx.facts.firstStage = plan.report;
    info('firststage', plan.message, { firstStage: plan.report, actions: plan.actions });
    if (ctx.params.dryRun) {
      for (const x of plan.actions) info('firststage', `dry run: would ${x}`);
      return 'dry run';
    }
    try {
      await apply(ctx, plan, parsed?.ok ? parsed.announcement : null, p1, primary);
    } catch (e) {
      // the cache is an optimisation: a failure costs the next boot a TFTP, never this boot
      warn('firststage', `could not cache the first stage: ${(e as Error).message}; the next boot loads it by TFTP`);
      rmSync(`${CACHE}/.${plan.report.announced}.tmp`, { recursive: true, force: true });
      ctx.facts.firstStage = { ...plan.report, cached: record.cur?.id ?? null };
      return 'not cached (see the warning)';
    }
    return plan.actions.length
      ? `${plan.actions.join(', ')}: ${plan.report.cached ?? 'none'}`
      : `cached ${plan.report.cached ?? 'none'}`;
  },
};

// The firststage phase on the Raspberry Pi firmware path (cmdline.txt says clusterboot.set=a|b|net): the
// commit point keeps the pair that booted well in one of p1's two sets and takes a new one through the firmware's
// tryboot. The decisions are agent/plans/tryboot.ts; here are the reads and the writes.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../contract/atomic.ts';
import {
  FW_ANNOUNCEMENT,
  FW_CMDLINE,
  FW_CONFIG,
  FW_LOADERS,
  firmwareCmdline,
  fwDir,
  parseFirmwareAnnouncement,
  parseSetRecord,
  parseSwitch,
  renderSetRecord,
  renderSwitch,
  SET_NAMES,
  SET_RECORD,
  setDir,
  SWITCH_FILE,
  type FirmwareAnnouncement,
  type SetName,
} from '../contract/firmware.ts';
import { DEFAULT_TRIES } from '../contract/firststage.ts';
import { masterBase, TFTP_DIR } from '../contract/tree.ts';
import { watchdogProgress } from '../devices/watchdog.ts';
import { RebootRequest } from '../errors.ts';
import { info, progress, warn } from '../log.ts';
import type { Ctx } from '../phase.ts';
import { BOOT_MNT, RUN_DIR } from '../paths.ts';
import { planTryboot, type TrybootAction, type TrybootPlan } from '../plans/tryboot.ts';
import { partName } from '../plans/sfdisk.ts';
import { checkVfat, mountFs, umountQuiet } from '../sys/fsutil.ts';
import { syncDisks } from '../sys/libc.ts';

/** The firmware puts the tryboot flag it booted with here (a big-endian u32). */
export const TRYBOOT_NODE = '/proc/device-tree/chosen/bootloader/tryboot';
const FETCHED = `${RUN_DIR}/firmware`;

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return null;
  }
}

function trybootFlag(): boolean {
  try {
    const b = readFileSync(TRYBOOT_NODE);
    return b.length >= 4 ? b.readUInt32BE(0) === 1 : b[0] === 1;
  } catch {
    return false;
  }
}

function treeBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? treeBytes(p) : statSync(p).size;
  }
  return n;
}

const sha256 = (path: string) => new Bun.CryptoHasher('sha256').update(readFileSync(path)).digest('hex');

/** The master's tftp/firmware.env, through the boot's SSH connection (a few hundred bytes). */
async function fetchAnnouncement(ctx: Ctx): Promise<string | null> {
  const link = ctx.facts.link;
  if (!link) return null;
  rmSync(FETCHED, { recursive: true, force: true });
  mkdirSync(FETCHED, { recursive: true });
  await link.rsync(
    [
      '-rt',
      '--timeout=60',
      '--max-size=256K',
      `--include=/${FW_ANNOUNCEMENT}`,
      '--exclude=*',
      link.remote(`${masterBase(ctx.params.masterRoot)}${TFTP_DIR}/`),
      `${FETCHED}/`,
    ],
    { timeoutMs: 120_000 },
  );
  return readOr(`${FETCHED}/${FW_ANNOUNCEMENT}`);
}

/**
 * One set into p1:/clusterboot.<s>/: its record goes first (the set is incomplete from now on), the old files,
 * the master's set by rsync (each file under a temporary name, renamed when whole), every file checked against
 * the announcement, the set's own cmdline.txt, then the record last. The current set is never touched.
 */
async function writeSet(ctx: Ctx, s: SetName, a: FirmwareAnnouncement): Promise<void> {
  const link = ctx.facts.link;
  if (!link) throw new Error('no connection to the master');
  const dir = `${BOOT_MNT}/${setDir(s)}`;
  rmSync(`${dir}/${SET_RECORD}`, { force: true });
  syncDisks();
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const mb = (a.files.reduce((n, f) => n + f.size, 0) / 1e6).toFixed(1);
  progress('firststage', `writing firmware set ${a.id} (${mb} MB) into p1:/${setDir(s)}/ from ${link.target.host}`);
  await link.rsync(
    [
      '-r',
      '--timeout=120',
      ...[FW_CONFIG, FW_CMDLINE, ...FW_LOADERS].map((x) => `--exclude=/${x}`),
      link.remote(`${masterBase(ctx.params.masterRoot)}${TFTP_DIR}/${fwDir(a.id)}/`),
      `${dir}/`,
    ],
    { timeoutMs: 30 * 60_000, onLine: () => watchdogProgress('firmware set rsync') },
  );
  for (const f of a.files) {
    const p = `${dir}/${f.path}`;
    const size = existsSync(p) ? statSync(p).size : -1;
    if (size !== f.size) throw new Error(`${setDir(s)}/${f.path}: ${size} bytes, the master announces ${f.size}`);
    if (sha256(p) !== f.sha256) throw new Error(`${setDir(s)}/${f.path}: sha256 differs from the announcement`);
  }
  writeAtomic(`${dir}/${FW_CMDLINE}`, firmwareCmdline(a.bootargs, a.id, s));
  syncDisks();
  writeAtomic(`${dir}/${SET_RECORD}`, renderSetRecord(a.id));
  syncDisks();
}

async function apply(ctx: Ctx, plan: TrybootPlan, a: FirmwareAnnouncement | null): Promise<void> {
  for (const x of plan.actions as TrybootAction[]) {
    info('firststage', x.describe());
    if (x.kind === 'write-set') {
      if (!a) throw new Error('no announcement');
      await writeSet(ctx, x.set, a);
    } else if (x.kind === 'switch') {
      writeAtomic(`${BOOT_MNT}/${SWITCH_FILE}`, renderSwitch(x.state));
      syncDisks();
    } else if (x.kind === 'reboot-tryboot') {
      umountQuiet(BOOT_MNT);
      throw new RebootRequest(`trying the new first stage ${a?.id ?? ''} once (tryboot)`, '0 tryboot');
    }
  }
}

export async function firmwareFirstStage(ctx: Ctx): Promise<string> {
  const d = ctx.facts.disk;
  if (!d || !ctx.facts.rootSlot) return 'skipped: no root';
  let text: string | null = null;
  if (ctx.facts.online) {
    try {
      text = await fetchAnnouncement(ctx);
    } catch (e) {
      warn('firststage', `cannot fetch the master's ${FW_ANNOUNCEMENT}: ${(e as Error).message}`);
    }
  }
  const parsed = text === null ? null : parseFirmwareAnnouncement(text);
  const p1 = partName(d.device, 1);
  try {
    // p1 holds the firmware and both sets: checked by fsck.fat before this phase may write to it (once per boot)
    if (!ctx.params.dryRun) await checkVfat(p1, 'firststage');
    mountFs(p1, BOOT_MNT, 'vfat');
  } catch (e) {
    warn('firststage', `cannot use the boot partition ${p1}: ${(e as Error).message}; the p1 sets stay as they are`);
    return 'skipped: p1 unreadable';
  }
  try {
    const sets = Object.fromEntries(
      SET_NAMES.map((s) => [s, parseSetRecord(readOr(`${BOOT_MNT}/${setDir(s)}/${SET_RECORD}`))]),
    ) as Record<SetName, string | null>;
    const fs = statfsSync(BOOT_MNT);
    const p = ctx.params;
    const plan = planTryboot({
      online: Boolean(ctx.facts.online),
      announcement: parsed?.ok ? parsed.announcement : null,
      ...(parsed && !parsed.ok ? { announcementError: parsed.error } : {}),
      booted: { ...(p.stageId ? { id: p.stageId } : {}), ...(p.stageSet ? { set: p.stageSet } : {}) },
      tryboot: trybootFlag(),
      sw: parseSwitch(readOr(`${BOOT_MNT}/${SWITCH_FILE}`)),
      sets,
      p1Free: fs.bavail * fs.bsize,
      reclaimBytes: (s) => treeBytes(`${BOOT_MNT}/${setDir(s)}`),
      maxTries: DEFAULT_TRIES,
    });
    for (const w of plan.warnings) warn('firststage', w);
    info('firststage', plan.message, { actions: plan.actions.map((x) => x.describe()) });
    ctx.facts.firstStage = {
      booted: p.stageId ?? null,
      from: p.stageFrom ?? null,
      announced: parsed?.ok ? parsed.announcement.id : null,
      cached: null,
    };
    if (p.dryRun) {
      for (const x of plan.actions) info('firststage', `dry run: would ${x.describe()}`);
      return 'dry run';
    }
    try {
      await apply(ctx, plan, parsed?.ok ? parsed.announcement : null);
    } catch (e) {
      if (e instanceof RebootRequest) throw e;
      // the current set is untouched whatever failed: the card boots it, and the next boot tries again
      warn('firststage', `could not update the p1 sets: ${(e as Error).message}; the current set stays`);
      return 'not written (see the warning)';
    }
    const after = parseSwitch(readOr(`${BOOT_MNT}/${SWITCH_FILE}`));
    const cur = after ? parseSetRecord(readOr(`${BOOT_MNT}/${setDir(after.current)}/${SET_RECORD}`)) : null;
    ctx.facts.firstStage = { ...ctx.facts.firstStage, cached: cur };
    return plan.actions.length
      ? `${plan.actions.map((x) => x.kind).join(', ')}: current ${after?.current ?? '-'} ${cur ?? ''}`.trim()
      : `current ${after?.current ?? '-'} ${cur ?? ''}`.trim();
  } finally {
    umountQuiet(BOOT_MNT);
  }
}

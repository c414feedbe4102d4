// Phase "root": fsck, then the crash-safe slots: sync a new slot only when the master's stamp moved.
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statfsSync,
  symlinkSync,
} from 'node:fs';
import { ToolError } from '../sys/exec.ts';
import { partName } from '../plans/sfdisk.ts';
import {
  parseProgress2,
  parseRsyncStats,
  planRoot,
  rootDecision,
  syncSlotDelay,
  readSlotState,
  renderRecord,
  SYNC_RSYNC_OPTIONS,
  type SlotAction,
  type SlotFacts,
} from '../plans/slots.ts';
import { NO_SYNC_SLOT } from '../contract/syncslot.ts';
import { info, progress, warn } from '../log.ts';
import { mkfs, mountFs, repairExt4 } from '../sys/fsutil.ts';
import { fsckVerdict } from '../plans/fsck.ts';
import { fsyncDir, writeAtomic } from '../contract/atomic.ts';
import { type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { rm } from 'node:fs/promises';
import { watchdogProgress } from '../devices/watchdog.ts';
import { syncDisks } from '../sys/libc.ts';
import { stampKey } from '../contract/initramfs.ts';
import { masterBase, ROOTFS_DIR } from '../contract/tree.ts';
import { ROOT_MNT } from '../paths.ts';

/** What is on the root partition, read raw for the pure slot logic. */
export function readSlotFacts(mnt: string): SlotFacts {
  const slots = `${mnt}/slots`;
  mkdirSync(slots, { recursive: true });
  const dirs: string[] = [];
  const records: Record<string, string> = {};
  for (const name of readdirSync(slots)) {
    const st = lstatSync(`${slots}/${name}`);
    if (st.isDirectory()) dirs.push(name);
    else if (name.endsWith('.json')) records[name] = readFileSync(`${slots}/${name}`, 'utf8');
  }
  const link = (n: string) => {
    try {
      return readlinkSync(`${mnt}/${n}`);
    } catch {
      return null;
    }
  };
  return { dirs, records, current: link('current'), previous: link('previous') };
}

function flip(mnt: string, link: string, to: string): void {
  const tmp = `${mnt}/.${link}.new`;
  rmSync(tmp, { force: true });
  symlinkSync(to, tmp);
  renameSync(tmp, `${mnt}/${link}`);
  fsyncDir(mnt);
}

/** How long a node keeps asking for a sync slot before it boots its current root instead (or fails). */
const SLOT_PATIENCE_MS = 30 * 60_000;

/**
 * Run an rsync of the root template, waiting while the master's sync slots are all taken (after a
 * mass reboot): jittered backoff, a visible message, the watchdog fed.
 */
async function withSyncSlot<T>(f: () => Promise<T>): Promise<T> {
  const start = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      return await f();
    } catch (e) {
      const m = e instanceof ToolError ? NO_SYNC_SLOT.exec(e.stderrTail) : null;
      if (!m || Date.now() - start > SLOT_PATIENCE_MS) throw e;
      const wait = syncSlotDelay(attempt, Math.random());
      progress(
        'root',
        `waiting for a sync slot: the master's ${m[1]} are in use; asking again in ${wait.toFixed(1)} s`,
      );
      const end = Date.now() + wait * 1000;
      while (Date.now() < end) {
        watchdogProgress('waiting for a sync slot');
        await Bun.sleep(Math.min(2000, end - Date.now()));
      }
    }
  }
}

async function syncSlot(ctx: Ctx, a: Extract<SlotAction, { kind: 'sync' }>): Promise<{ files: number; bytes: number }> {
  const link = ctx.facts.link;
  if (!link) throw new PhaseFailure('no connection to the master', 'internal', 'master');
  const dest = `${ROOT_MNT}/slots/${a.id}/`;
  mkdirSync(dest, { recursive: true });
  syncDisks(); // the slot exists on disk before any byte lands in it: a power cut leaves a visible partial slot
  const src = link.remote(`${masterBase(ctx.params.masterRoot)}${ROOTFS_DIR}/`);
  const linkDest = a.linkDest ? [`--link-dest=${ROOT_MNT}/${a.linkDest}/`] : [];
  // how much would travel, against the free space (a dry run lists the tree once, transfers nothing)
  const dry = await withSyncSlot(() =>
    link.rsync([...SYNC_RSYNC_OPTIONS.filter((o) => !o.startsWith('--info')), '-n', ...linkDest, src, dest], {
      timeoutMs: 30 * 60_000,
    }),
  );
  const need = parseRsyncStats(dry.stdout)?.literalData ?? 0;
  const plannedBytes = /Total transferred file size: ([\d,.]+)/.exec(dry.stdout)?.[1]?.replace(/[,.]/g, '') ?? '0';
  const fs = statfsSync(ROOT_MNT);
  const free = fs.bavail * fs.bsize;
  const want = Math.max(need, Number(plannedBytes));
  if (want > free * 0.97) {
    throw new PhaseFailure(
      `root partition too small: the new root needs ${(want / 1e6).toFixed(0)} MB, ${(free / 1e6).toFixed(0)} MB free`,
      'enlarge p2 in partitions.sfdisk or slim the template',
      'sync',
    );
  }
  progress(
    'root',
    `syncing ${(want / 1e6).toFixed(1)} MB from ${link.target.host} into slot ${a.id}${a.linkDest ? ` (unchanged files linked from ${a.linkDest})` : ' (full copy)'}`,
  );
  let lastShown = -100;
  let lastAt = 0;
  const r = await withSyncSlot(() =>
    link.rsync([...SYNC_RSYNC_OPTIONS, '--timeout=120', ...linkDest, src, dest], {
      timeoutMs: 6 * 3_600_000,
      onLine: (line) => {
        watchdogProgress('rsync output');
        const p = parseProgress2(line);
        if (!p) return;
        const now = Date.now();
        if (p.percent >= lastShown + 10 || now - lastAt > 15_000) {
          lastShown = p.percent;
          lastAt = now;
          progress('root', `syncing: ${(p.bytes / 1e6).toFixed(1)} MB at ${p.rate}`, p.percent);
        }
      },
    }),
  );
  const stats = parseRsyncStats(r.stdout);
  const files = stats?.files ?? 0;
  const bytes = stats?.bytesReceived ?? 0;
  ctx.facts.bytesReceived = (ctx.facts.bytesReceived ?? 0) + bytes;
  info(
    'root',
    `slot ${a.id} synced: ${files} files, ${stats?.regularTransferred ?? '?'} transferred, ${bytes} bytes received`,
    { rsync: stats },
  );
  syncDisks();
  return { files, bytes };
}

export const root: Phase = {
  name: 'root',
  needs: { tools: ['rsync', 'e2fsck', 'mke2fs'], modules: ['ext4'] },
  async run(ctx) {
    const d = ctx.facts.disk;
    if (!d) throw new PhaseFailure('no disk facts', 'internal: the disk phase must run first', 'disk');
    const p2 = partName(d.device, 2);
    if (!existsSync(p2)) {
      throw new PhaseFailure(
        `no root partition ${p2}`,
        ctx.facts.online
          ? 'check partitions.sfdisk (p2 is the root)'
          : 'the master must be reachable to partition this disk',
        'disk',
      );
    }
    let forceFull = false;
    let result = await repairExt4(p2, 'root');
    if (result.ok) {
      try {
        mountFs(p2, ROOT_MNT, 'ext4');
      } catch (e) {
        warn('root', `e2fsck passed but ${p2} does not mount: ${(e as Error).message}`);
        result = { ok: false, exits: result.exits };
      }
    }
    const repair = fsckVerdict({ role: 'root', device: p2, result, online: Boolean(ctx.facts.online) });
    if (repair.action === 'fail') throw new PhaseFailure(repair.error, repair.remedy, 'fsck');
    if (repair.action === 'format') {
      warn('root', repair.why);
      await mkfs(p2, 'ext4', 'cb-root');
      forceFull = true;
      mountFs(p2, ROOT_MNT, 'ext4');
    }
    const state = readSlotState(readSlotFacts(ROOT_MNT));
    for (const p of state.problems) warn('root', p);
    ctx.facts.rootBefore = state.current?.id ?? null;
    const w = ctx.facts.wanted;
    const verdict = rootDecision({
      online: Boolean(ctx.facts.online && w),
      master: w?.rootfs ?? null,
      publicKeyPem: stampKey(),
      current: state.current,
      recovery: Boolean(ctx.facts.recovery),
    });
    if (verdict.warning) warn('root', verdict.warning);
    const decision = verdict.decision;
    if (verdict.forceFull) forceFull = true;
    const plan = planRoot({ state, decision, rollback: ctx.params.rollback, forceFull });
    info('root', plan.message, { plan: plan.actions.map((a) => a.describe()), use: plan.use, stale: plan.stale });
    if (ctx.params.dryRun) {
      for (const a of plan.actions) info('root', `dry run: ${a.describe()}`);
      if (!plan.use || plan.actions.some((a) => a.kind === 'sync')) return 'dry run';
    } else {
      let rsyncFailed: unknown = null;
      for (const a of plan.actions) {
        if (rsyncFailed) break;
        switch (a.kind) {
          case 'delete-partial':
          case 'delete-old':
            info('root', a.describe());
            rmSync(`${ROOT_MNT}/slots/${a.id}.json`, { force: true });
            await rm(`${ROOT_MNT}/slots/${a.id}`, { recursive: true, force: true }); // async: the watchdog keeps being fed
            break;
          case 'sync':
            try {
              const r = await syncSlot(ctx, a);
              const rec = plan.actions.find((x) => x.kind === 'write-record');
              if (rec?.kind === 'write-record') Object.assign(rec.record, r);
            } catch (e) {
              rsyncFailed = e;
            }
            break;
          case 'write-record':
            writeAtomic(`${ROOT_MNT}/slots/${a.record.id}.json`, renderRecord(a.record));
            break;
          case 'flip':
            flip(ROOT_MNT, a.link, a.to);
            break;
        }
      }
      if (rsyncFailed) {
        const msg =
          rsyncFailed instanceof ToolError || rsyncFailed instanceof Error ? rsyncFailed.message : String(rsyncFailed);
        if (state.current) {
          warn(
            'root',
            `root sync failed: ${msg}; booting the last complete root ${state.current.id} (it may be stale); the partial slot is deleted at the next boot`,
          );
          ctx.facts.rootSlot = `${ROOT_MNT}/slots/${state.current.id}`;
          ctx.facts.rootStale = true;
          return `sync failed; booting ${state.current.id}`;
        }
        throw new PhaseFailure(
          `root sync failed: ${msg}`,
          rsyncFailed instanceof PhaseFailure
            ? rsyncFailed.remedy
            : 'check the master (rsync, rrsync, disk space) and the network; the node retries',
          'sync',
          { cause: rsyncFailed },
        );
      }
      syncDisks();
    }
    if (!plan.use) {
      throw new PhaseFailure(
        'no complete root on the disk and none can be fetched now',
        'bring the master back (or publish a root); the node keeps retrying',
        'master',
      );
    }
    ctx.facts.rootSlot = `${ROOT_MNT}/${plan.use}`;
    ctx.facts.rootStale = plan.stale;
    if (plan.stale)
      warn(
        'root',
        `booting ${plan.use}: it may be stale (${ctx.facts.online ? "the master's stamp was not used" : 'the master is unreachable'})`,
      );
    return `${plan.use}${plan.stale ? ' (may be stale)' : ''}`;
  },
};

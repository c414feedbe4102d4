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
  writeFileSync,
} from 'node:fs';
import { ToolError } from '../sys/exec.ts';
import { TOOLS } from '../sys/tools.ts';
import { partName } from '../plans/sfdisk.ts';
import {
  parseProgress2,
  parseRsyncStats,
  planRoot,
  rootDecision,
  syncSlotDelay,
  readSlotState,
  renderRecord,
  SALVAGE,
  SYNC_RSYNC_OPTIONS,
  type SlotAction,
  type SlotFacts,
} from '../plans/slots.ts';
import { NO_ADDRESS_SYNC_SLOT, NO_SYNC_SLOT } from '../contract/syncslot.ts';
import { info, progress, warn } from '../log.ts';
import { mkfs, mountFs, repairExt4 } from '../sys/fsutil.ts';
import { fsckVerdict } from '../plans/fsck.ts';
import { fsyncDir, writeAtomic } from '../contract/atomic.ts';
import { type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { readdir, rm } from 'node:fs/promises';
import { watchdogProgress } from '../devices/watchdog.ts';
import { syncDisks } from '../sys/libc.ts';
import { stampKey } from '../contract/initramfs.ts';
import { masterBase } from '../contract/tree.ts';
import { ROOT_MNT } from '../paths.ts';
import { snapshotPath } from '../contract/manifest.ts';
import {
  fetchFileList,
  prepareDelta,
  previousList,
  pruneLists,
  SlotRefused,
  storeList,
  verifySlot,
} from './rootverify.ts';
import { FETCH_DIR } from '../paths.ts';

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

/** How often a running root sync flushes what it wrote (bounds what a cut loses to about this much). */
const SYNC_FLUSH_MS = 3_000;

/** Files an interrupted slot changed in its last second are dropped from the salvage (see trimSalvage). */
const SALVAGE_SETTLE_MS = 1_000;

/**
 * Keep only what an interrupted sync surely finished: rsync writes each file under a temporary name and renames it
 * when complete, and ext4 (data=ordered, delayed allocation) never shows a size the data did not reach, so a file
 * whose data was lost in the cut fails rsync's size check and is fetched again. As a margin, files changed in the
 * last second of the slot's life (by ctime, on the node's own clock, which runs on within one boot) are dropped,
 * and so are rsync's temporary files. Returns what is kept and dropped.
 */
async function trimSalvage(dir: string): Promise<{ kept: number; keptBytes: number; dropped: number }> {
  const files: Array<{ path: string; ctimeMs: number; size: number }> = [];
  const seen = new Set<string>();
  // a Debian root's salvage is thousands of files: listed off the JS thread, and the walk yields to the timers
  // every few hundred files, so the watchdog feeder keeps its ticks (session 8's lesson)
  let n = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (++n % 256 === 0) await new Promise((r) => setImmediate(r));
    if (!e.isFile()) continue;
    const path = `${e.parentPath}/${e.name}`;
    // the Debian-root soak saw one path listed twice (usr/share/perl/5.36/warnings/register.pm): its second unlink
    // failed with ENOENT and made the root phase fatal; each path is taken once, and a missing one is no failure
    if (seen.has(path)) continue;
    seen.add(path);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st) files.push({ path, ctimeMs: st.ctimeMs, size: st.size });
  }
  const last = files.reduce((m, f) => Math.max(m, f.ctimeMs), 0);
  let kept = 0;
  let keptBytes = 0;
  let dropped = 0;
  for (const f of files) {
    if (++n % 256 === 0) await new Promise((r) => setImmediate(r));
    if (
      f.ctimeMs > last - SALVAGE_SETTLE_MS ||
      /^\..+\.[A-Za-z0-9]{6}$/.test(f.path.slice(f.path.lastIndexOf('/') + 1))
    ) {
      rmSync(f.path, { force: true });
      dropped++;
    } else {
      kept++;
      keptBytes += f.size;
    }
  }
  return { kept, keptBytes, dropped };
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
      const own = e instanceof ToolError ? NO_ADDRESS_SYNC_SLOT.exec(e.stderrTail) : null;
      progress(
        'root',
        own
          ? `waiting for a sync slot: this node's address ${own[2]} still holds one on the master (an earlier pull not reaped yet); asking again in ${wait.toFixed(1)} s`
          : `waiting for a sync slot: the master's ${m[1]} are in use; asking again in ${wait.toFixed(1)} s`,
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
  // the snapshot the signed manifest describes, never the live rootfs/ (which may be half-edited by now)
  const m = ctx.facts.wanted?.manifest;
  if (!m?.ok) throw new SlotRefused(m ? m.reason : 'no rootfs manifest', m ? m.remedy : 'run `builder publish rootfs`');
  const base = masterBase(ctx.params.masterRoot);
  const prevId = a.linkDest ? a.linkDest.replace(/^slots\//, '') : null;
  const list = await withSyncSlot(() => fetchFileList(link, base, m.header, prevId));
  const src = link.remote(`${base}${snapshotPath('rootfs', m.header.id)}/`);
  const linkDest = [
    ...(a.linkDest ? [`--link-dest=${ROOT_MNT}/${a.linkDest}/`] : []),
    ...(a.salvage && existsSync(`${ROOT_MNT}/${SALVAGE}`) ? [`--link-dest=${ROOT_MNT}/${SALVAGE}/`] : []),
  ];
  // with the previous slot's verified list: the delta (only the changed paths travel, no whole-tree file list)
  // (not over transport=rsyncd: a 3.2.7 client's --files-from pull from a 3.5.0 daemon fails with "file has vanished")
  const prevList = prevId && !a.salvage && ctx.params.transport !== 'rsyncd' ? previousList(prevId) : null;
  let options: string[] = [...SYNC_RSYNC_OPTIONS, ...linkDest];
  let want: number;
  if (prevList && a.linkDest) {
    const d = prepareDelta(dest.replace(/\/$/, ''), `${ROOT_MNT}/${a.linkDest}`, list.entries, prevList);
    const from = `${FETCH_DIR}/files-from`;
    writeFileSync(from, Buffer.from(d.list, 'latin1'));
    info(
      'root',
      `delta against ${a.linkDest}: ${d.paths} paths to fetch (${d.bytes} bytes of changed files), ${d.linked} linked here`,
    );
    options = [...SYNC_RSYNC_OPTIONS.filter((o) => o !== '--delete'), `--files-from=${from}`, '--from0'];
    want = d.bytes;
  } else {
    // how much would travel, against the free space (a dry run lists the tree once, transfers nothing)
    const dry = await withSyncSlot(() =>
      link.rsync([...SYNC_RSYNC_OPTIONS.filter((o) => !o.startsWith('--info')), '-n', ...linkDest, src, dest], {
        timeoutMs: 30 * 60_000,
      }),
    );
    const need = parseRsyncStats(dry.stdout)?.literalData ?? 0;
    const plannedBytes = /Total transferred file size: ([\d,.]+)/.exec(dry.stdout)?.[1]?.replace(/[,.]/g, '') ?? '0';
    want = Math.max(need, Number(plannedBytes));
  }
  const fs = statfsSync(ROOT_MNT);
  const free = fs.bavail * fs.bsize;
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
  // Flush the slot's finished files every few seconds (a background `sync`, never blocking PID 1): after a cut,
  // what was renamed into place before the last flush is on the card, and the retry links it (salvage).
  let flushedAt = Date.now();
  let flushing: Promise<unknown> | null = null;
  const flushNow = () => {
    if (flushing || Date.now() - flushedAt < SYNC_FLUSH_MS) return;
    flushedAt = Date.now();
    flushing = Bun.spawn([TOOLS.busybox, 'sync'], { stdout: 'ignore', stderr: 'ignore' }).exited.finally(() => {
      flushing = null;
    });
  };
  const r = await withSyncSlot(() =>
    link.rsync([...options, '--timeout=120', src, dest], {
      timeoutMs: 6 * 3_600_000,
      onLine: (line) => {
        watchdogProgress('rsync output');
        flushNow();
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
  // the file list's bytes count too: the honest total of what this sync received
  const bytes = (stats?.bytesReceived ?? 0) + list.bytes;
  ctx.facts.bytesReceived = (ctx.facts.bytesReceived ?? 0) + bytes;
  info(
    'root',
    `slot ${a.id} synced: ${files} files, ${stats?.regularTransferred ?? '?'} transferred, ${bytes} bytes received (${list.bytes} of them the file list)`,
    { rsync: stats },
  );
  let check;
  try {
    check = await verifySlot(
      dest.replace(/\/$/, ''),
      list.entries,
      a.linkDest ? { dir: `${ROOT_MNT}/${a.linkDest}`, id: a.linkDest.replace(/^slots\//, '') } : null,
    );
  } catch (e) {
    await rm(dest, { recursive: true, force: true });
    throw e;
  }
  info(
    'root',
    `slot ${a.id} matches the manifest: ${check.hashed} files hashed (${(check.hashedBytes / 1e6).toFixed(1)} MB), ${check.trusted} hard-linked from the verified ${a.linkDest ?? '-'}, in ${(check.ms / 1000).toFixed(1)} s`,
  );
  storeList(a.id, list.text);
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
    let decision = verdict.decision;
    // a sync needs the content manifest (checked in the master phase): without it the master's root is refused
    const mv = w?.manifest;
    if (decision.action === 'sync' && mv && !mv.ok) {
      warn('root', `refused the master's root ${decision.masterStamp?.id ?? ''}: ${mv.reason}. Remedy: ${mv.remedy}`);
      decision = { action: 'refuse', ...(decision.masterStamp ? { masterStamp: decision.masterStamp } : {}) };
    }
    if (verdict.forceFull) forceFull = true;
    const plan = planRoot({
      state,
      decision,
      rollback: ctx.params.rollback,
      forceFull,
      salvage: existsSync(`${ROOT_MNT}/${SALVAGE}`),
    });
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
          case 'salvage': {
            info('root', a.describe());
            await rm(`${ROOT_MNT}/${SALVAGE}`, { recursive: true, force: true });
            renameSync(`${ROOT_MNT}/slots/${a.id}`, `${ROOT_MNT}/${SALVAGE}`);
            rmSync(`${ROOT_MNT}/slots/${a.id}.json`, { force: true });
            const t = await trimSalvage(`${ROOT_MNT}/${SALVAGE}`);
            syncDisks();
            info(
              'root',
              `the interrupted slot ${a.id} left ${t.kept} finished files (${(t.keptBytes / 1e6).toFixed(1)} MB): the sync links them instead of fetching them again (${t.dropped} written just before the cut dropped)`,
            );
            break;
          }
          case 'drop-salvage':
            info('root', a.describe());
            await rm(`${ROOT_MNT}/${SALVAGE}`, { recursive: true, force: true });
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
      pruneLists();
      if (rsyncFailed instanceof SlotRefused) {
        const why = `refused the new root before the flip: ${rsyncFailed.message}. Remedy: ${rsyncFailed.remedy}`;
        if (state.current) {
          warn('root', `${why}; booting the last complete root ${state.current.id}`);
          ctx.facts.rootSlot = `${ROOT_MNT}/slots/${state.current.id}`;
          ctx.facts.rootStale = true;
          return `new root refused; booting ${state.current.id}`;
        }
        throw new PhaseFailure(why, rsyncFailed.remedy, 'sync', { cause: rsyncFailed });
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

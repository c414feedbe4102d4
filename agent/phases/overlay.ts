// Phase "overlay": the chosen slot read-only under a writable layer (tmpfs, or p3 when persistent).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { OVERLAY_PATHS, planOverlay, type MountStep, type OverlayMode, type OverlayPlan } from '../plans/overlay.ts';
import { fsckVerdict } from '../plans/fsck.ts';
import { partName } from '../plans/sfdisk.ts';
import { info, warn } from '../log.ts';
import { MS_NOATIME, repairExt4, umountQuiet } from '../sys/fsutil.ts';
import { type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { bindMount, mount, MS_RDONLY } from '../sys/libc.ts';

function flagsOf(flags: string[]): number {
  let f = 0;
  for (const x of flags) {
    if (x === 'ro') f |= MS_RDONLY;
    if (x === 'noatime') f |= MS_NOATIME;
  }
  return f;
}

function wipe(path: string): void {
  if (!existsSync(path)) return;
  for (const name of readdirSync(path)) rmSync(`${path}/${name}`, { recursive: true, force: true });
}

function apply(s: MountStep): void {
  switch (s.kind) {
    case 'mkdir':
      mkdirSync(s.path, { recursive: true });
      return;
    case 'bind':
      bindMount(s.source, s.target, s.readonly);
      return;
    case 'mount':
      mount(s.source, s.target, s.fstype, flagsOf(s.flags), s.data);
      return;
    case 'wipe':
      wipe(s.path);
      return;
  }
}

function planFor(ctx: Ctx, mode: OverlayMode, writable: string | null, reset: boolean, slot: string): OverlayPlan {
  return planOverlay({
    mode,
    kernelFilesystems: readFileSync('/proc/filesystems', 'utf8'),
    writablePartition: mode === 'disk' ? writable : null,
    reset,
    slotPath: slot,
  });
}

function applyPlan(ctx: Ctx, plan: OverlayPlan): void {
  if (!plan.ok) return;
  for (const s of plan.steps) {
    if (ctx.params.dryRun && s.kind === 'wipe') {
      info('overlay', `dry run: ${s.describe()}`);
      continue;
    }
    info('overlay', s.describe());
    apply(s);
  }
}

// A persistent plan that failed half-way: undo its mounts, innermost first, so the tmpfs plan starts clean.
function undo(): void {
  for (const m of [OVERLAY_PATHS.newRoot, OVERLAY_PATHS.rw, OVERLAY_PATHS.lower]) umountQuiet(m);
}

export const overlay: Phase = {
  name: 'overlay',
  needs: { modules: ['overlay', 'ext4'] },
  async run(ctx) {
    const slot = ctx.facts.rootSlot;
    const d = ctx.facts.disk;
    if (!slot || !d)
      throw new PhaseFailure('no root slot chosen', 'internal: the root phase must run first', 'overlay');
    const p3 = partName(d.device, 3);
    const writable = existsSync(p3) ? p3 : null;
    const reset = ctx.params.reset || Boolean(ctx.facts.wanted?.reset) || Boolean(ctx.facts.recovery);
    if (reset)
      info(
        'overlay',
        `resetting the writable layer (${ctx.params.reset ? 'kernel parameter reset' : ctx.facts.recovery ? 'recovery button' : 'flag nodes/<host>/reset on the master'})`,
      );
    let mode = ctx.params.overlay;
    // the writable layer is this node's own data: repaired if it can be, never formatted (plans/fsck.ts)
    const alarm = (why: string, remedy: string) => {
      warn('overlay', `ALARM: ${why}; booting with a tmpfs layer instead (remedy: ${remedy})`);
      (ctx.facts.alarms ??= []).push(why);
      mode = 'tmpfs';
    };
    if (mode === 'disk' && writable) {
      const v = fsckVerdict({
        role: 'writable',
        device: writable,
        result: await repairExt4(writable, 'overlay'),
        online: Boolean(ctx.facts.online),
      });
      if (v.action === 'tmpfs') alarm(v.alarm, v.remedy);
    }
    let plan = planFor(ctx, mode, writable, reset, slot);
    try {
      applyPlan(ctx, plan);
    } catch (e) {
      if (mode !== 'disk' || !writable) throw e;
      undo();
      alarm(
        `the writable layer ${writable} passed e2fsck but could not be mounted (${(e as Error).message}); it is left untouched and this boot's changes live in RAM only`,
        `check ${writable} from the rescue shell (dmesg, e2fsck -f), or replace the card`,
      );
      plan = planFor(ctx, mode, writable, reset, slot);
      applyPlan(ctx, plan);
    }
    if (!plan.ok) throw new PhaseFailure(plan.error, plan.remedy, 'overlay');
    info('overlay', plan.message, {
      driver: plan.driver,
      mode,
      lower: plan.lower,
      upper: plan.upper,
    });
    ctx.facts.overlayMode = `${mode} (${plan.driver})`;
    return ctx.facts.overlayMode;
  },
};

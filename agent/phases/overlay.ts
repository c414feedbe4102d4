// Phase "overlay": the chosen slot read-only under a writable layer (tmpfs, or p3 when persistent).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { planOverlay, type MountStep } from '../plans/overlay.ts';
import { partName } from '../plans/sfdisk.ts';
import { info, warn } from '../log.ts';
import { fsckExt4, mkfs, MS_NOATIME } from '../sys/fsutil.ts';
import { type Phase } from '../phase.ts';
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
    if (ctx.params.overlay === 'disk' && writable && (await fsckExt4(writable, 'overlay')) === 'broken') {
      warn('overlay', `the writable layer ${writable} is damaged beyond e2fsck: formatting it (its changes are lost)`);
      await mkfs(writable, 'ext4', 'cb-rw');
    }
    const plan = planOverlay({
      mode: ctx.params.overlay,
      kernelFilesystems: readFileSync('/proc/filesystems', 'utf8'),
      writablePartition: writable,
      reset,
      slotPath: slot,
    });
    if (!plan.ok) throw new PhaseFailure(plan.error, plan.remedy, 'overlay');
    for (const s of plan.steps) {
      if (ctx.params.dryRun && s.kind === 'wipe') {
        info('overlay', `dry run: ${s.describe()}`);
        continue;
      }
      info('overlay', s.describe());
      apply(s);
    }
    info('overlay', plan.message, {
      driver: plan.driver,
      mode: ctx.params.overlay,
      lower: plan.lower,
      upper: plan.upper,
    });
    ctx.facts.overlayMode = `${ctx.params.overlay} (${plan.driver})`;
    return ctx.facts.overlayMode;
  },
};

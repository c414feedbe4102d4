// Runs the sequence: logs each phase with its timing, and sends every failure down one fatal path.
import { spawnSync } from 'node:child_process';
import { emit, info, uptime } from './log.ts';
import { type Ctx, type Phase } from './phase.ts';
import { PhaseFailure, RebootRequest } from './errors.ts';
import { hardReboot, syncDisks } from './sys/libc.ts';
import { TOOLS } from './sys/tools.ts';
import { sendReport } from './net/report.ts';

/** A shell on the console; returns when the admin leaves it. */
export function rescueShell(why: string): void {
  info('rescue', `${why}: starting a shell on the console; exit it to continue`);
  spawnSync(TOOLS.busybox, ['sh'], {
    stdio: 'inherit',
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', PS1: 'clusterboot# ' },
  });
}

export async function runPhases(phases: readonly Phase[], ctx: Ctx): Promise<void> {
  const of = phases.length;
  for (const [i, phase] of phases.entries()) {
    if (ctx.params.break === phase.name) rescueShell(`break=${phase.name}`);
    const n = i + 1;
    emit({ kind: 'phase-start', phase: phase.name, n, of });
    const t0 = uptime();
    if (ctx.params.debugHang === phase.name) {
      info(phase.name, 'clusterboot.hang: hanging here on purpose (debug)');
      for (;;) await Bun.sleep(60_000);
    }
    const summary = await phase.run(ctx);
    emit({ kind: 'phase-done', phase: phase.name, n, of, seconds: uptime() - t0, ...(summary ? { summary } : {}) });
    startLookaheads(phases.slice(i + 1), phase.name, ctx);
  }
}

/** Starts the look-aheads that wait for `done`; none with break= (the admin inspects the disk as it was). */
export function startLookaheads(later: readonly Phase[], done: string, ctx: Ctx): void {
  if (ctx.params.break) return;
  for (const p of later) {
    if (p.lookahead?.after !== done) continue;
    const work = p.lookahead.run(ctx);
    work.catch(() => undefined); // its failure is the phase's, raised when the phase awaits it
    (ctx.lookaheads ??= new Map()).set(p.name, work);
  }
}

/** Seconds before the reboot that retries, after `attempt` earlier failures in this same boot
 * (a rescue shell left, a reboot that did not happen): base, doubling, at most 300. */
export function retryWaitS(base: number, attempt: number): number {
  return Math.min(300, base * 2 ** Math.min(attempt, 4));
}

/** The one fatal path: say what failed and what to do, then reboot, shell, or wait and retry. */
export async function fatal(err: unknown, phase: string, ctx: Ctx | null, attempt: number): Promise<void> {
  if (err instanceof RebootRequest) {
    info(phase, `rebooting: ${err.reason}`);
    await ctx?.facts.link?.close().catch(() => undefined);
    await sendReport(ctx, 'reboot', err.reason);
    syncDisks();
    await Bun.sleep(500);
    hardReboot('reboot', err.restartArg);
    return;
  }
  const remedy = err instanceof PhaseFailure ? err.remedy : 'see the message above; boot with `rescue` for a shell';
  const message = err instanceof Error ? err.message : String(err);
  const waitS = retryWaitS(ctx?.params.retryWait ?? 15, attempt);
  const next = ctx?.params.rescue ? 'rescue shell (kernel parameter `rescue`)' : `reboot in ${waitS}s to try again`;
  emit({
    kind: 'fatal',
    phase,
    error: message,
    remedy,
    next,
    code: err instanceof PhaseFailure ? err.ledCode : 'fatal',
  });
  await sendReport(ctx, 'fatal', message, remedy);
  if (ctx?.params.rescue) {
    rescueShell(`phase ${phase} failed`);
    return;
  }
  await Bun.sleep(waitS * 1000);
  syncDisks();
  hardReboot();
}

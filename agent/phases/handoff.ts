// Phase "handoff": close everything of ours, move the kernel filesystems, and become the real init.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { events, info } from '../log.ts';
import { type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { moveMount, syncDisks } from '../sys/libc.ts';
import { TOOLS } from '../sys/tools.ts';
import { releaseWatchdog } from '../devices/watchdog.ts';
import { finalLeds } from '../devices/leds.ts';
import { RUN_DIR, NEWROOT } from '../paths.ts';
import { closeReportLink, sendReport } from '../net/report.ts';
import { stopSyslog } from '../devices/syslog.ts';
import { resolveInRoot } from '../plans/rootpath.ts';
import { lstatLink } from '../sys/fsutil.ts';

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** The agent's peak memory and what the initramfs holds, against the machine's RAM (a Zero 2 W has 512 MB). */
export function memoryLine(status: string, meminfo: string): string {
  const kb = (text: string, key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  const mb = (n: number) => (Number.isFinite(n) ? `${(n / 1024).toFixed(1)} MB` : '?');
  return (
    `memory: agent peak ${mb(kb(status, 'VmHWM'))} (VmHWM), now ${mb(kb(status, 'VmRSS'))}; ` +
    `initramfs and /run hold ${mb(kb(meminfo, 'Shmem'))} (Shmem); ${mb(kb(meminfo, 'MemAvailable'))} available of ${mb(kb(meminfo, 'MemTotal'))}`
  );
}

export const handoff: Phase = {
  name: 'handoff',
  needs: {},
  async run(ctx) {
    const init = ctx.params.init;
    if (!resolveInRoot(NEWROOT, init, lstatLink)) {
      throw new PhaseFailure(
        `the root has no ${init}`,
        `the template must contain ${init} (check rootfs/ on the master, then \`builder publish rootfs\`), or set init=`,
        'overlay',
      );
    }
    await ctx.facts.link?.close();
    writeFileSync(
      `${RUN_DIR}/boot-report.json`,
      JSON.stringify(
        {
          hostname: ctx.facts.hostname,
          slot: ctx.facts.rootSlot,
          stale: ctx.facts.rootStale ?? false,
          events: events(),
        },
        null,
        1,
      ),
    );
    info('handoff', memoryLine(readText('/proc/self/status'), readText('/proc/meminfo')));
    await sendReport(ctx, 'ok');
    await closeReportLink();
    stopSyslog();
    if (ctx.params.dryRun) {
      info('handoff', `dry run: would switch_root to ${init}; holding instead`);
      for (;;) await Bun.sleep(3_600_000);
    }
    for (const m of ['/dev', '/proc', '/sys', '/run']) {
      mkdirSync(`${NEWROOT}${m}`, { recursive: true });
    }
    releaseWatchdog();
    info('handoff', `switch_root ${NEWROOT} ${init}`);
    // after the switch_root line, which alone would show the plain booted pattern
    finalLeds(Boolean(ctx.facts.alarms?.length));
    syncDisks();
    for (const m of ['/run', '/sys', '/dev']) moveMount(m, `${NEWROOT}${m}`);
    moveMount('/proc', `${NEWROOT}/proc`);
    // No return: busybox switch_root empties the initramfs, chroots and execs init as PID 1.
    process.execve?.(TOOLS.busybox, ['switch_root', NEWROOT, init], {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      TERM: 'linux',
    });
    throw new PhaseFailure('switch_root returned', 'boot with `rescue` and inspect /newroot', 'overlay');
  },
};

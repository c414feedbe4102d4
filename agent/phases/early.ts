// Phase "early": the kernel filesystems, /run, and the command line as typed parameters.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { info, warn } from '../log.ts';
import { mount } from '../sys/libc.ts';
import { startLeds } from '../devices/leds.ts';
import { buttonHeld } from '../devices/button.ts';
import type { Phase } from '../phase.ts';
import { RUN_DIR } from '../paths.ts';

/** Mount points we expect, from /proc/mounts text. */
export function mountedPoints(procMounts: string): Set<string> {
  return new Set(
    procMounts
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((x): x is string => Boolean(x)),
  );
}

export const early: Phase = {
  name: 'early',
  needs: {},
  async run(ctx) {
    const have = mountedPoints(readFileSync('/proc/mounts', 'utf8'));
    const want: Array<[string, string, string, number, string]> = [
      ['sysfs', '/sys', 'sysfs', 0, ''],
      ['devtmpfs', '/dev', 'devtmpfs', 0, 'mode=0755'],
      ['tmpfs', '/run', 'tmpfs', 0, 'mode=0755,size=50%'],
      ['devpts', '/dev/pts', 'devpts', 0, 'gid=5,mode=620'],
    ];
    for (const [src, target, fs, flags, data] of want) {
      if (have.has(target)) continue;
      mkdirSync(target, { recursive: true });
      mount(src, target, fs, flags, data);
    }
    mkdirSync(RUN_DIR, { recursive: true });
    startLeds(ctx.params.leds);
    if (await buttonHeld(ctx.params.button)) {
      ctx.facts.recovery = true;
      info(
        'recovery',
        'recovery requested by the button: the writable layer will be wiped and the root copied again in full',
      );
    }
    const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    ctx.facts.kernel = kernel;
    info('early', `agent is PID ${process.pid}, kernel ${kernel}, ${process.arch}`, { pid: process.pid, kernel });
    info('early', `command line: ${readFileSync('/proc/cmdline', 'utf8').trim()}`);
    const p = ctx.params;
    info(
      'early',
      `parameters: master=${p.master ?? '(from DHCP)'} disk=${p.disk} overlay=${p.overlay} init=${p.init}` +
        `${p.rescue ? ' rescue' : ''}${p.dryRun ? ' dryrun' : ''}${p.break ? ` break=${p.break}` : ''}`,
      { params: p },
    );
    if (!existsSync('/dev/console')) warn('early', '/dev/console missing: messages may be lost');
    return `PID ${process.pid}, kernel ${kernel}`;
  },
};

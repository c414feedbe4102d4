// The agent's entry: PID 1 of the initramfs. Guards first, then the sequence; it never returns.
import { readFileSync } from 'node:fs';
import pkg from '../package.json' with { type: 'json' };
import { parseCmdline } from './cmdline.ts';
import { info, warn } from './log.ts';
import type { Ctx } from './phase.ts';
import { startReaper } from './sys/reaper.ts';
import { fatal, runPhases } from './runner.ts';
import { PHASE_NAMES, SEQUENCE } from './sequence.ts';

// Bun exits on these by default when on a TTY: PID 1 exiting panics the kernel.
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGPIPE'] as const) {
  process.on(sig, () => warn('signal', `ignored ${sig} (PID 1 does not exit)`));
}

let currentPhase = 'init';
let ctx: Ctx | null = null;
let attempt = 0;

process.on('uncaughtException', (e) => void fatal(e, currentPhase, ctx, attempt++));
process.on('unhandledRejection', (e) => void fatal(e, currentPhase, ctx, attempt++));

if (process.argv.includes('--version')) {
  console.log(`clusterboot-agent ${pkg.version} ${process.arch}`);
  process.exit(0);
}

startReaper();

async function main(): Promise<never> {
  for (;;) {
    try {
      const cmdline = readFileSync('/proc/cmdline', 'utf8');
      const parsed = parseCmdline(cmdline, PHASE_NAMES);
      ctx = { params: parsed.params, facts: {} };
      // processMs: since exec, Bun's own start plus loading the agent (the benchmark splits the first word's time with it)
      info('early', `clusterboot agent ${pkg.version} starting`, { processMs: Math.round(performance.now()) });
      for (const w of parsed.warnings) warn('early', w);
      if (parsed.unknown.length) warn('early', `unknown parameters ignored: ${parsed.unknown.join(' ')}`);
      const phases = SEQUENCE.map((p) => ({
        ...p,
        run: (c: Ctx) => {
          currentPhase = p.name;
          return p.run(c);
        },
      }));
      await runPhases(phases, ctx);
      throw new Error('the sequence ended without a handoff');
    } catch (e) {
      await fatal(e, currentPhase, ctx, attempt++);
    }
  }
}

void main();

// One boot of a test node from power-on to QEMU's exit (the guest rebooted or powered off).
import { appendFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { type Images, tftpFolder } from './images.ts';
import { type AgentEvent, QemuNode, type NodeOptions } from './qemu.ts';

export interface BootResult {
  /** The agent's and the template's lines only (kernel and U-Boot noise left out, so failures read well). */
  console: string;
  raw: string;
  events: AgentEvent[];
  exitCode: number;
  /** How the boot ended, read from the console. */
  ending: 'reboot' | 'template' | 'fatal' | 'other';
  seconds: number;
  /** Wall seconds from power-on to U-Boot's `Starting kernel` (NaN when the kernel never started). */
  kernelAtS: number;
}

export interface BootOptions extends Partial<NodeOptions> {
  disk: string;
  bootargs: string;
  timeoutMs?: number;
  /** Stop QEMU as soon as this matches (e.g. mid-rsync power cut), instead of waiting for its exit. */
  killOn?: RegExp;
  /** With killOn: wait this long after the match before the power cut. */
  killDelayMs?: number;
}

export async function boot(img: Images, work: string, o: BootOptions): Promise<BootResult> {
  const tftp = tftpFolder(
    `${work}/tftp-${createHash('sha1')
      .update(img.dir + o.bootargs)
      .digest('hex')
      .slice(0, 8)}`,
    img,
    o.bootargs,
  );
  const logFile = `${work}/console.log`;
  appendFileSync(logFile, `\n===== boot: ${o.bootargs}\n`);
  const node = new QemuNode({ tftpDir: tftp, logFile, ...o, disk: o.disk });
  const t0 = performance.now();
  try {
    if (o.killOn) {
      await node.waitFor(o.killOn, o.timeoutMs ?? 300_000);
      if (o.killDelayMs) await Bun.sleep(o.killDelayMs);
      await node.kill();
    } else {
      await node.waitForExit(o.timeoutMs ?? 300_000);
    }
  } finally {
    await node.kill();
  }
  const r = resultOf(node, t0);
  // CI keeps no console.log: a boot that ended with no verdict from the agent (a reset, a panic) shows its last
  // lines in the test's own output, where a failed run can be read
  if (r.ending === 'other' && !o.killOn)
    console.error(
      `boot ended with no verdict from the agent (QEMU exit ${r.exitCode} after ${r.seconds.toFixed(1)} s); console tail:\n${node.tail(30)}`,
    );
  return r;
}

/** What a finished QEMU run shows: the agent's and template's lines, its events, and how it ended. */
export function resultOf(node: QemuNode, t0: number): BootResult {
  const c = node.console;
  const ending = /TEMPLATE-DONE/.test(c)
    ? 'template'
    : /"kind":"fatal"/.test(c)
      ? 'fatal'
      : /rebooting: /.test(c)
        ? 'reboot'
        : 'other';
  const lines = c.split(/\r?\n/).filter((l) => /^(clusterboot:|TEMPLATE-|  remedy:|  next:)/.test(l));
  return {
    console: lines.join('\n'),
    raw: c,
    events: node.events(),
    exitCode: node.exitCode ?? -1,
    ending,
    seconds: (performance.now() - t0) / 1000,
    kernelAtS: node.kernelAtMs === undefined ? Number.NaN : node.kernelAtMs / 1000,
  };
}

/** sha256 of a disk image: "unchanged" means byte for byte. */
export function diskHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export function sfdiskDump(path: string): string {
  try {
    return execFileSync('sfdisk', ['-d', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** Seconds from U-Boot's `Starting kernel` to the agent's switch_root line, from kernel uptime stamps. */
export function kernelToSwitchRoot(r: BootResult): number | null {
  const e = r.events.find(
    (x) => x.kind === 'info' && x.phase === 'handoff' && String(x.message).startsWith('switch_root'),
  );
  return e ? e.t : null;
}

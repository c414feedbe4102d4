// One QEMU arm64 node on the real chain: U-Boot firmware, DHCP and TFTP from QEMU's user network,
// a virtio disk; the console is captured so tests can wait for phase lines with deadlines.
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Subprocess } from 'bun';
import { fastEnvFlash } from './ubootenv';

export const UBOOT = '/usr/lib/u-boot/qemu_arm64/u-boot.bin';

export interface NodeOptions {
  tftpDir: string;
  disk: string;
  serial?: string;
  /** A QEMU blkdebug config (inject-error rules) put between the node and its disk image. */
  blkdebug?: string;
  mac?: string;
  memoryMb?: number;
  /** The Pi 4's core by default (no AES instructions were an issue there: Bun's JIT runs as on a Pi). */
  cpu?: string;
  /** Extra QEMU arguments (e.g. a watchdog device). */
  extra?: string[];
  /** Console copy on the host for humans (appended). */
  logFile?: string;
  /** Echo the console to this process's stderr. */
  echo?: boolean;
  /** Network: QEMU user networking (default) or a prepared argument list. */
  netdev?: string[];
  /** A command QEMU runs under, e.g. ['ip', 'netns', 'exec', NS] for a node of a virtual cluster. */
  wrap?: string[];
  /** Virtual CPUs (default 2). */
  smp?: number;
  /** The whole QEMU command (after `wrap`) for another machine, e.g. an x86-64 PC (qemu-x86.ts); the options above then do not apply. */
  argv?: string[];
  /** Boot these files directly (-kernel/-initrd/-append) instead of U-Boot: what the Pi firmware would load. */
  direct?: { kernel: string; initrd: string; append: string };
}

export interface AgentEvent {
  kind: string;
  phase: string;
  t: number;
  [k: string]: unknown;
}

/** The bootdelay=0 environment (ubootenv.ts) as QEMU's second flash bank, when it could be made. */
function envFlash(): string[] {
  const img = fastEnvFlash(UBOOT, join(import.meta.dir, '..', '..', '.cache'));
  return img ? ['-drive', `if=pflash,unit=1,format=raw,readonly=on,file=${img}`] : [];
}

/** CLUSTERBOOT_TRACE=1: every console line in the log file starts with the seconds since QEMU started (where time goes). */
const TRACE = process.env.CLUSTERBOOT_TRACE === '1';

function stamped(text: string, t0: number): string {
  const at = `[${((performance.now() - t0) / 1000).toFixed(2).padStart(7)}] `;
  return text.replace(/\n(?=.)/g, `\n${at}`);
}

/** U-Boot never runs a PCI option ROM; without this QEMU wants efi-virtio.rom, which only ipxe-qemu (a Recommends) ships. */
export const NO_ROM = 'romfile=';

export class QemuNode {
  console = '';
  exitCode: number | null = null;
  private proc: Subprocess<'pipe', 'pipe', 'pipe'>;
  private waiters: Array<() => void> = [];
  readonly startedAt = performance.now();
  /** Wall ms from QEMU's start to U-Boot's `Starting kernel` (firmware, DHCP and TFTP), once seen. */
  kernelAtMs: number | undefined;
  readonly exited: Promise<number>;

  constructor(readonly opts: NodeOptions) {
    if (!opts.argv && !opts.direct && !existsSync(UBOOT))
      throw new Error(`${UBOOT} missing: apt-get install u-boot-qemu`);
    const aarch64 = [
      ...(opts.wrap ?? []),
      'qemu-system-aarch64',
      '-M',
      'virt,acpi=off', // acpi=off: with firmware loaded QEMU leaves out the PL061 GPIO chip otherwise
      '-cpu',
      opts.cpu ?? 'cortex-a72',
      '-smp',
      String(opts.smp ?? 2),
      '-m',
      String(opts.memoryMb ?? 1024),
      ...(opts.direct
        ? ['-kernel', opts.direct.kernel, '-initrd', opts.direct.initrd, '-append', opts.direct.append]
        : ['-bios', UBOOT, ...envFlash()]),
      '-display',
      'none',
      '-serial',
      'stdio',
      '-monitor',
      'none',
      '-no-reboot',
      ...(opts.netdev ?? [
        '-netdev',
        `user,id=n0,tftp=${opts.tftpDir},bootfile=boot.scr.uimg`,
        '-device',
        `virtio-net-pci,netdev=n0${opts.mac ? `,mac=${opts.mac}` : ''},${NO_ROM}`,
      ]),
      '-drive',
      `if=none,id=d0,file=${opts.blkdebug ? `blkdebug:${opts.blkdebug}:` : ''}${opts.disk},format=raw,cache=unsafe`,
      '-device',
      `virtio-blk-pci,drive=d0${opts.serial ? `,serial=${opts.serial}` : ''}`,
      '-device',
      'i6300esb', // a hardware watchdog, as a Pi has one (bcm2835)
      ...(opts.extra ?? []),
    ];
    const args = opts.argv ? [...(opts.wrap ?? []), ...opts.argv] : aarch64;
    if (opts.logFile) writeFileSync(opts.logFile, `# ${args.join(' ')}\n`, { flag: 'a' });
    this.proc = Bun.spawn(args, { stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
    void this.pump(this.proc.stdout);
    void this.pump(this.proc.stderr);
    this.exited = this.proc.exited.then((c) => {
      this.exitCode = c;
      this.wake();
      return c;
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      const text = dec.decode(chunk, { stream: true });
      const before = this.console.length;
      this.console += text;
      // only the new text (and the few bytes before it a line may straddle) is searched, not the whole console each time
      if (this.kernelAtMs === undefined && this.console.includes('Starting kernel', Math.max(0, before - 16)))
        this.kernelAtMs = performance.now() - this.startedAt;
      if (this.opts.logFile) appendFileSync(this.opts.logFile, TRACE ? stamped(text, this.startedAt) : text);
      if (this.opts.echo) process.stderr.write(text);
      this.wake();
    }
  }

  /** Wait until the console matches; fails with the console tail when the deadline passes or QEMU exits. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = this.console.slice(from).match(re);
      if (m) return m;
      if (this.exitCode !== null)
        throw new Error(`QEMU exited (${this.exitCode}) before ${re}\n--- console tail ---\n${this.tail()}`);
      const left = deadline - performance.now();
      if (left <= 0)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${re}\n--- console tail ---\n${this.tail()}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** Wait for QEMU to exit by itself (the guest rebooted or powered off; -no-reboot makes both exits). */
  async waitForExit(timeoutMs: number): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`QEMU still running after ${timeoutMs} ms\n${this.tail()}`)), timeoutMs);
    });
    // the timer is cleared once QEMU exits, or it would hold the event loop (a finished script) open until it fires
    return Promise.race([this.exited, t]).finally(() => clearTimeout(timer));
  }

  /** The agent's machine lines, parsed. */
  events(): AgentEvent[] {
    const out: AgentEvent[] = [];
    for (const m of this.console.matchAll(/^@@clusterboot (\{.*\})\r?$/gm)) {
      try {
        out.push(JSON.parse(m[1] ?? '') as AgentEvent);
      } catch {
        // a line cut by the kernel's own console output: skip it
      }
    }
    return out;
  }

  send(text: string): void {
    this.proc.stdin.write(text);
    this.proc.stdin.flush();
  }

  tail(lines = 40): string {
    return this.console.split('\n').slice(-lines).join('\n');
  }

  async kill(): Promise<void> {
    if (this.exitCode === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A blank raw disk image of the given size (sparse). */
export function blankDisk(path: string, megabytes: number): void {
  writeFileSync(path, '');
  Bun.spawnSync(['truncate', '-s', `${megabytes}M`, path]);
}

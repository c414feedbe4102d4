// A dnsmasq in the virtual cluster's namespace, in the foreground, its log kept: the master's (DHCP, DNS, TFTP, as
// `builder stage` configured it) or a mirror's TFTP-only one (`builder mirror --serve --tftp`).
import type { Subprocess } from 'bun';

export class Dnsmasq {
  private constructor(private proc: Subprocess) {}

  /**
   * Start it (`wrap`: `ip netns exec <ns>`) on a configuration file and wait until it says it is serving; its
   * output goes to `onLog` as it comes. Throws with the log when it exits or stays silent for `timeoutMs`.
   */
  static async start(o: {
    wrap: readonly string[];
    conf: string;
    pidFile: string;
    extra?: readonly string[];
    onLog: (text: string) => void;
    timeoutMs?: number;
  }): Promise<Dnsmasq> {
    const proc = Bun.spawn(
      [
        ...o.wrap,
        ...['/usr/sbin/dnsmasq', '--keep-in-foreground', '--log-facility=-', '--user=root'],
        ...[`--conf-file=${o.conf}`, `--pid-file=${o.pidFile}`, ...(o.extra ?? [])],
      ],
      { stdout: 'pipe', stderr: 'pipe' },
    );
    let log = '';
    for (const s of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[])
      void (async () => {
        for await (const c of s) {
          const t = new TextDecoder().decode(c);
          log += t;
          o.onLog(t);
        }
      })();
    const end = Date.now() + (o.timeoutMs ?? 10_000);
    // DHCP's or TFTP's start line, whichever the configuration has
    while (!/DHCP, sockets bound|started, version|TFTP root is/.test(log)) {
      if (proc.exitCode !== null || Date.now() > end) {
        proc.kill();
        throw new Error(`dnsmasq (${o.conf}) did not start:\n${log}`);
      }
      await Bun.sleep(50);
    }
    return new Dnsmasq(proc);
  }

  get running(): boolean {
    return this.proc.exitCode === null;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null) {
      this.proc.kill();
      await this.proc.exited;
    }
  }
}

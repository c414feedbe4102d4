// Remote syslog lines (RFC 5424 over UDP) for the agent's console messages. Pure: formatting and the
// target; agent/syslogdev.ts owns the socket.
// The timestamp is the NILVALUE '-': a node has no clock in the initramfs (1970), and the receiving
// syslog stamps the line with the master's time. The agent's uptime goes into the message instead.

export const SYSLOG_PORT = 514;
/** daemon facility (3): the agent is a system daemon before it becomes init. */
const FACILITY = 3;
const SEVERITY = { error: 3, warning: 4, notice: 5, info: 6 } as const;
export type Severity = keyof typeof SEVERITY;
/** RFC 5424 asks receivers to take at least 480 bytes; stay well under a UDP datagram everywhere. */
const MAX_BYTES = 1024;

/** host[:port] from syslog=, or null when it does not parse (cmdline.ts already checked the shape). */
export function syslogTarget(value: string): { host: string; port: number } | null {
  const m = /^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(value);
  if (!m) return null;
  const port = m[2] ? Number(m[2]) : SYSLOG_PORT;
  if (port < 1 || port > 65535) return null;
  return { host: m[1] ?? '', port };
}

/** The severity of an agent event kind. */
export function severityOf(kind: string): Severity {
  if (kind === 'fatal' || kind === 'phase-failed') return 'error';
  if (kind === 'warn') return 'warning';
  if (kind === 'phase-done' || kind === 'phase-start') return 'notice';
  return 'info';
}

/** One RFC 5424 line: <PRI>1 - HOST clusterboot - - - [uptime] text. Control characters become spaces. */
export function formatSyslog(o: { severity: Severity; hostname: string | null; uptime: number; text: string }): string {
  const pri = FACILITY * 8 + SEVERITY[o.severity];
  const host = o.hostname && /^[\x21-\x7e]{1,255}$/.test(o.hostname) ? o.hostname : '-';
  const text = o.text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  const line = `<${pri}>1 - ${host} clusterboot - - - ${o.uptime.toFixed(2)}s ${text}`;
  const bytes = Buffer.from(line);
  return bytes.length <= MAX_BYTES
    ? line
    : `${bytes
        .subarray(0, MAX_BYTES - 3)
        .toString('utf8')
        .replace(/\uFFFD$/, '')}...`;
}

// A master tree for the fleet view's tests: nodes.list, a rootfs stamp, and boot reports made by the agent's own
// report writer (buildReport) from the event history a real boot emits, with realistic phase timings; and the
// syslog lines those boots send, in the agent's RFC 5424 form (formatSyslog over humanLine).
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildReport, reportName, type BootReport, type ReportEvent } from '../../../../agent/contract/report.ts';
import { newStamp, renderStamp } from '../../../../agent/contract/stamp.ts';
import { humanLine, type Event } from '../../../../agent/log.ts';
import { formatSyslog, severityOf } from '../../../../agent/plans/syslog.ts';
import { renderNodesList } from '../../../../builder/master/nodelist.ts';
import { BOOT_PHASES } from '../../../../builder/master/fleetview.ts';

/** The agent's phases in boot order, as the fleet view knows them. */
export const PHASES = BOOT_PHASES;

/** Seconds per phase of a cold boot (the root phase syncs the whole template) and of a warm one. */
export const COLD = [0.05, 0.42, 2.31, 0.84, 0.12, 0.21, 0.35, 41.2, 1.52, 0.18, 0.09, 0.31];
export const WARM = [0.05, 0.4, 2.2, 0.81, 0.1, 0.05, 0.04, 1.9, 0.06, 0.17, 0.08, 0.29];

export const NODES = [
  { mac: '52:54:00:c1:00:01', hostname: 'node1', ip: '10.77.0.11' },
  { mac: '52:54:00:c1:00:02', hostname: 'node2', ip: '10.77.0.12' },
  { mac: '52:54:00:c1:00:03', hostname: 'node3', ip: '10.77.0.13' },
];

export const STAMP = newStamp('rootfs', 3, new Date('2026-11-25T09:00:00Z'));

/** The events of one boot: every phase starts and finishes in order; `failAt` stops there with a fatal error. */
export function bootEvents(seconds: number[], failAt?: string): Array<Event & { t: number }> {
  const out: Array<Event & { t: number }> = [];
  let t = 1.2;
  out.push({ kind: 'info', phase: 'early', message: 'clusterboot agent 0.1.0 starting', t: 1.1 });
  for (const [i, phase] of PHASES.entries()) {
    out.push({ kind: 'phase-start', phase, n: i + 1, of: PHASES.length, t });
    if (phase === 'root')
      for (const p of [26, 71])
        out.push({ kind: 'progress', phase, message: `syncing: ${p / 5} MB at 6.85MB/s`, percent: p, t: t + 1 });
    if (phase === failAt) {
      t += 3.5;
      out.push({ kind: 'fatal', phase, error: 'rsync exited 12', remedy: 'check the master', next: 'reboot', t });
      return out;
    }
    t += seconds[i] ?? 0;
    // handoff never finishes: switch_root execs the template's init (the report counts it from its start)
    if (phase !== 'handoff')
      out.push({ kind: 'phase-done', phase, n: i + 1, of: PHASES.length, seconds: seconds[i] ?? 0, t });
  }
  out.push({ kind: 'info', phase: 'master', message: 'connection to the master closed', t });
  out.push({ kind: 'info', phase: 'report', message: 'boot report sent to 10.77.0.1 (ok, 12 phases)', t });
  out.push({ kind: 'info', phase: 'handoff', message: 'switch_root /newroot /sbin/init', t });
  return out;
}

/** A report as the agent builds it at the end of that boot. */
export function reportFor(node: (typeof NODES)[number], events: Array<Event & { t: number }>): BootReport {
  const fatal = events.some((e) => e.kind === 'fatal');
  return buildReport({
    events: events as unknown as ReportEvent[],
    mac: node.mac,
    hostname: node.hostname,
    hostnameFrom: 'dhcp',
    ip: node.ip,
    agentVersion: '0.1.0',
    kernel: '6.1.0-28-arm64',
    result: fatal ? 'fatal' : 'ok',
    ...(fatal ? { reason: 'root: rsync exited 12', remedy: 'check the master' } : {}),
    bytesReceived: 21_000_000,
    overlay: fatal ? null : 'partition',
    uptime: events.at(-1)?.t ?? 0, // an unfinished phase (handoff, or where it failed) counts up to here
    rootBefore: null,
    rootAfter: fatal ? null : STAMP.id,
    masterRoot: STAMP.id,
  });
}

/** The syslog lines of those events from that host, one per line. */
export function syslogLines(host: string, events: Array<Event & { t: number }>): string {
  // humanLine tags a message `[n/of phase]` while that phase runs (log.ts keeps the current phase as emit does)
  let current = { phase: '', n: 0, of: 0 };
  return events
    .filter((e) => !(e.kind === 'info' && e.message.startsWith('switch_root'))) // after the syslog closed
    .map((e) => {
      if (e.kind === 'phase-start') current = { phase: e.phase, n: e.n, of: e.of };
      let text = humanLine(e);
      if (e.kind !== 'phase-start' && e.kind !== 'phase-done' && e.phase === current.phase)
        text = text.replace(`[${e.phase}]`, `[${current.n}/${current.of} ${e.phase}]`);
      return `${formatSyslog({ severity: severityOf(e.kind), hostname: host, uptime: e.t, text })}\n`;
    })
    .join('');
}

/** A master root with the node list and stamp; reports written with writeReport. */
export function masterTree(root: string): void {
  mkdirSync(join(root, 'reports'), { recursive: true });
  mkdirSync(join(root, 'stamps'), { recursive: true });
  writeFileSync(join(root, 'stamps/rootfs.stamp'), renderStamp(STAMP));
  writeFileSync(
    join(root, 'nodes.list'),
    renderNodesList(
      NODES.map((n, i) => ({ ...n, line: i + 1 })),
      'test',
    ),
  );
}

export function writeReport(root: string, r: BootReport, mtimeMs = Date.now()): void {
  const f = join(root, 'reports', reportName(r.mac));
  writeFileSync(f, `${JSON.stringify(r, null, 2)}\n`);
  utimesSync(f, mtimeMs / 1000, mtimeMs / 1000);
}

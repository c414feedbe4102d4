// The boot report's trip to the master: built from the events and facts, written under /run, and sent
// with the report key (`rrsync -wo` on the master: it can write reports and nothing else).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import pkg from '../../package.json' with { type: 'json' };
import { run } from '../sys/exec.ts';
import { buildReport, reportName, type BootReport, type BootResult } from '../contract/report.ts';
import { parseStamp } from '../contract/stamp.ts';
import { sshOptions } from './link.ts';
import { REPORT_KEY } from '../contract/initramfs.ts';
import { events, info, uptime, warn } from '../log.ts';
import type { Ctx } from '../phase.ts';
import { TOOLS } from '../sys/tools.ts';
import { ENROL_REPORT_KEY, REPORT_FILE_DIR, REPORT_SOCKET } from '../paths.ts';
import type { Subprocess } from 'bun';

/** This boot as a report (pure apart from reading the clock and the history). */
export function makeReport(ctx: Ctx, result: BootResult, reason?: string, remedy?: string): BootReport {
  const f = ctx.facts;
  const master = f.wanted?.rootfs ? parseStamp(f.wanted.rootfs.text) : null;
  return buildReport({
    events: events(),
    mac: f.mac ?? null,
    hostname: f.hostname ?? null,
    hostnameFrom: f.hostnameFrom ?? null,
    ip: f.lease?.ip || null,
    agentVersion: pkg.version,
    kernel: f.kernel ?? null,
    result,
    ...(reason ? { reason } : {}),
    ...(remedy ? { remedy } : {}),
    rootBefore: f.rootBefore ?? null,
    rootAfter: f.rootSlot ? basename(f.rootSlot) : null,
    masterRoot: master?.ok ? master.stamp.id : null,
    bytesReceived: f.bytesReceived ?? 0,
    overlay: f.overlayMode ?? null,
    uptime: uptime(),
    ...(f.approval ? { approval: f.approval } : {}),
    ...(f.firstStage ? { firstStage: f.firstStage } : {}),
    ...(f.alarms?.length ? { alarms: f.alarms } : {}),
    ...(f.hostKeys?.length ? { hostKeys: f.hostKeys } : {}),
    ...(f.enrolKey ? { enrolKey: f.enrolKey } : {}),
    ...(f.online && f.master ? { master: f.master } : {}),
    ...(f.masterFailover?.length ? { failover: f.masterFailover } : {}),
  });
}

let sent = false;
let early: Subprocess | null = null;

function reportTarget(ctx: Ctx): { host: string; user: string; port: number } | null {
  const host = ctx.facts.master;
  if (!existsSync(REPORT_KEY) || !host || ctx.params.transport !== 'ssh') return null;
  return { host, user: ctx.params.masterUser, port: ctx.params.masterPort };
}

/**
 * Open the report key's connection now, in the background, so its SSH handshake (seconds on a Pi) overlaps
 * the disk phases instead of delaying the handoff; the push later rides on it, or connects itself if it failed.
 */
export function preconnectReport(ctx: Ctx): void {
  const target = reportTarget(ctx);
  if (!target || early) return;
  rmSync(REPORT_SOCKET, { force: true });
  early = Bun.spawn(
    [
      TOOLS.ssh,
      ...sshOptions(target, { key: REPORT_KEY, control: REPORT_SOCKET }),
      '-M',
      '-N',
      '-o',
      'ControlPersist=no',
      target.host,
    ],
    {
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'ignore',
      env: { HOME: '/root', PATH: '/usr/bin:/bin:/usr/sbin:/sbin' },
    },
  );
}

/** Close the report key's connection: nothing of ours may outlive the handoff. */
export async function closeReportLink(): Promise<void> {
  const p = early;
  early = null;
  if (!p) return;
  p.kill('SIGTERM');
  if ((await Promise.race([p.exited, Bun.sleep(3000).then(() => 'late' as const)])) === 'late') p.kill('SIGKILL');
}

/**
 * Send the report; bounded (20 s) and never throws: a master that cannot take a report must not stop
 * a boot. Without a packed report key (reports not set up) it only writes the local copy.
 */
export async function sendReport(
  ctx: Ctx | null,
  result: BootResult,
  reason?: string,
  remedy?: string,
): Promise<boolean> {
  // one final report per boot; 'waiting' ones may come before it
  if (!ctx || sent) return false;
  try {
    const report = makeReport(ctx, result, reason, remedy);
    mkdirSync(REPORT_FILE_DIR, { recursive: true });
    const name = reportName(report.mac);
    const file = `${REPORT_FILE_DIR}/${name}`;
    writeFileSync(file, `${JSON.stringify(report, null, 1)}\n`);
    const target = reportTarget(ctx);
    if (!target) return false;
    const host = target.host;
    // over the early connection when it is up (ssh falls back to a connection of its own when it is not); the
    // master's forced command for this key is the report sink: it reads the JSON on stdin, names the file itself
    // from the MAC its sender's address belongs to, and times it by the master's clock ("last boot")
    // an enrolled node whose key the master took this boot reports with it (its own connection): the sink then
    // stores the report as this node's and no other's
    const enrolled = Boolean(ctx.facts.enrolReport) && existsSync(ENROL_REPORT_KEY);
    const r = await run(
      'ssh',
      [
        ...sshOptions(
          target,
          enrolled ? { key: ENROL_REPORT_KEY, shared: false } : { key: REPORT_KEY, control: REPORT_SOCKET },
        ),
        host,
        'clusterboot-report',
      ],
      { input: readFileSync(file), timeoutMs: 20_000, okCodes: [0, 65, 73, 75] },
    ).finally(() => {
      // the key copy never reaches the booted system's /run
      if (result !== 'waiting') rmSync(ENROL_REPORT_KEY, { force: true });
    });
    if (r.exitCode !== 0) {
      warn(
        'report',
        `the master refused the boot report: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.exitCode}`}`,
      );
      return false;
    }
    if (result !== 'waiting') {
      sent = true;
      await closeReportLink();
    }
    info(
      'report',
      `boot report sent to ${host} (${result}, ${report.phases.length} phases${enrolled ? ', with the enrolment key' : ''})`,
    );
    return true;
  } catch (e) {
    warn('report', `could not send the boot report: ${(e as Error).message.split('\n').slice(-2).join(' ')}`);
    return false;
  }
}

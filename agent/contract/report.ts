// The boot report a node sends to the master at the end of every boot (and on failure when it can).
// Pure: the agent builds it from its event history and facts; `builder status` reads it back.
import { createHash } from 'node:crypto';
import type { FirstStageReport } from './firststage.ts';

// On the master a report lands as reports/<mac>.json (MAC lower case, ':' replaced by '-'), written
// through a second SSH key whose only right is `rrsync -wo <master root>/reports`. The file's mtime is
// the master's clock at arrival: `builder status` uses it as "last boot", never a time the node sent.

export const REPORT_SCHEMA = 1;

/** waiting: held before repartitioning until the master approves the new table (approval mode). */
export type BootResult = 'ok' | 'reboot' | 'fatal' | 'waiting';

/** A table change in approval mode: what the node has, what the master wants, and where it stands. */
export interface ApprovalState {
  /** pending: not approved, the disk is untouched; approved: the change was approved and applied this boot. */
  state: 'pending' | 'approved';
  /** sha256 (hex) of the master's partitions.sfdisk bytes: `builder approve` approves exactly this table. */
  tableSha256: string;
  /** The disk's table now (sfdisk -d), null when it has none. */
  current: string | null;
  wanted: string;
  /** What the node does meanwhile: boots its current root, or waits. */
  meanwhile: 'booting the current root' | 'waiting';
}

export interface PhaseTiming {
  name: string;
  seconds: number;
  summary?: string;
  failed?: boolean;
}

export interface BootReport {
  schema: typeof REPORT_SCHEMA;
  mac: string;
  /** The hostname this boot used; null when DHCP gave none (no fixed lease) and no hostname= was set. */
  hostname: string | null;
  /** Where the hostname came from: a fixed DHCP lease, the kernel command line, or nowhere. */
  hostnameFrom: 'dhcp' | 'cmdline' | null;
  ip: string | null;
  agentVersion: string;
  kernel: string | null;
  /** ok: handed off to the template's init; reboot: asked for a fresh boot (new table or firmware); fatal: failed. */
  result: BootResult;
  /** The reboot reason or the fatal error. */
  reason?: string;
  remedy?: string;
  phases: PhaseTiming[];
  stamps: {
    /** The root slot's stamp id before this boot (null: none, e.g. a blank disk). */
    rootBefore: string | null;
    /** The root slot's stamp id this boot hands off to. */
    rootAfter: string | null;
    /** The master's rootfs stamp id as fetched this boot (null: offline or not published). */
    masterRoot: string | null;
  };
  bytesReceived: number;
  /** Overlay mode of the handed-off root: 'tmpfs', 'partition' or 'aufs-…'; null when it did not get that far. */
  overlay: string | null;
  /** Warnings and failures, in order. */
  errors: string[];
  /** Present when the master's table differs and approval mode is on. */
  approval?: ApprovalState;
  /** The first stage this boot ran, how U-Boot loaded it, what the master announces and what the disk caches. */
  firstStage?: FirstStageReport;
  /** Kernel uptime when the report was made, in seconds. */
  uptime: number;
  /** The boot handed over, but something needs the admin (a writable layer that could not be repaired). */
  alarms?: string[];
  /** The node's public SSH host keys (`type base64`), for `builder known-hosts`; the private halves never leave it. */
  hostKeys?: string[];
  /** The node's enrolment key, public half (`ssh-ed25519 base64`), for `builder enrol`; the private half never leaves it. */
  enrolKey?: string;
  /** The master that served this boot (absent: offline, or no master known). */
  master?: string;
  /** Set by the master's report sink, never by the node: the report came with the node's enrolled key. */
  enrolled?: boolean;
  /** Masters tried before it (masterip=a,b,c), each with why it was passed over. */
  failover?: string[];
}

/** One public SSH host key as a report carries it: `type base64`, no comment. */
export const HOST_KEY_LINE = /^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]{20,2000}={0,2}$/;

/** A node's public enrolment key as a report carries it: an ed25519 key, `type base64`, no comment. */
export const ENROL_KEY_LINE = /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}$/;

/** A public key's fingerprint as `ssh-keygen -l` prints it (`SHA256:` + unpadded base64): what an admin compares. */
export function keyFingerprint(line: string): string {
  const blob = line.trim().split(/\s+/)[1] ?? '';
  const hash = createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64');
  return `SHA256:${hash.replace(/=+$/, '')}`;
}

/** File name of a node's report on the master. */
export function reportName(mac: string): string {
  return `${mac.toLowerCase().replace(/:/g, '-')}.json`;
}

/** The slice of the agent's event history a report is built from (log.ts Event plus its time). */
export interface ReportEvent {
  kind: string;
  phase: string;
  t: number;
  seconds?: number;
  summary?: string;
  error?: string;
  message?: string;
}

/** What a report is built from: its own fields, plus the event history and the stamps as separate facts. */
export interface ReportInput extends Omit<
  BootReport,
  | 'schema'
  | 'mac'
  | 'phases'
  | 'stamps'
  | 'errors'
  | 'approval'
  | 'firstStage'
  | 'alarms'
  | 'hostKeys'
  | 'enrolKey'
  | 'master'
  | 'failover'
  | 'enrolled'
> {
  events: readonly ReportEvent[];
  mac: string | null;
  rootBefore: string | null;
  rootAfter: string | null;
  masterRoot: string | null;
  approval?: ApprovalState | undefined;
  firstStage?: FirstStageReport | undefined;
  alarms?: string[] | undefined;
  hostKeys?: string[] | undefined;
  enrolKey?: string | undefined;
  master?: string | undefined;
  failover?: string[] | undefined;
}

const MAX_ERRORS = 20;
const MAX_TEXT = 400;

function clip(s: string): string {
  return s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT - 1)}…` : s;
}

/** A report from the boot's events and facts: each phase's duration, the warnings and failures, the stamps. */
export function buildReport(i: ReportInput): BootReport {
  const phases: PhaseTiming[] = [];
  const errors: string[] = [];
  const started = new Map<string, number>();
  for (const e of i.events) {
    if (e.kind === 'phase-start') started.set(e.phase, e.t);
    else if (e.kind === 'phase-done') {
      phases.push({
        name: e.phase,
        seconds: round(e.seconds ?? 0),
        ...(e.summary ? { summary: clip(e.summary) } : {}),
      });
      started.delete(e.phase);
    } else if (e.kind === 'phase-failed' || e.kind === 'fatal') {
      errors.push(clip(`${e.phase}: ${e.error ?? 'failed'}`));
    } else if (e.kind === 'warn') {
      errors.push(clip(`${e.phase}: ${e.message ?? ''}`));
    }
  }
  // a phase that started and never finished is where the boot stopped (a reboot request or a failure)
  for (const [name, t] of started)
    phases.push({ name, seconds: round(Math.max(0, i.uptime - t)), failed: i.result === 'fatal' });
  const kept =
    errors.length > MAX_ERRORS
      ? [...errors.slice(0, MAX_ERRORS - 1), `… and ${errors.length - MAX_ERRORS + 1} more`]
      : errors;
  return {
    schema: REPORT_SCHEMA,
    mac: (i.mac ?? 'unknown').toLowerCase(),
    hostname: i.hostname,
    hostnameFrom: i.hostnameFrom,
    ip: i.ip,
    agentVersion: i.agentVersion,
    kernel: i.kernel,
    result: i.result,
    ...(i.reason ? { reason: clip(i.reason) } : {}),
    ...(i.remedy ? { remedy: clip(i.remedy) } : {}),
    phases,
    stamps: { rootBefore: i.rootBefore, rootAfter: i.rootAfter, masterRoot: i.masterRoot },
    bytesReceived: i.bytesReceived,
    overlay: i.overlay,
    errors: kept,
    uptime: round(i.uptime),
    ...(i.approval ? { approval: i.approval } : {}),
    ...(i.firstStage ? { firstStage: i.firstStage } : {}),
    ...(i.alarms?.length ? { alarms: i.alarms.slice(0, MAX_ERRORS).map(clip) } : {}),
    ...(i.hostKeys?.length ? { hostKeys: i.hostKeys.slice(0, 8) } : {}),
    ...(i.enrolKey && ENROL_KEY_LINE.test(i.enrolKey) ? { enrolKey: i.enrolKey } : {}),
    ...(i.master ? { master: i.master } : {}),
    ...(i.failover?.length ? { failover: i.failover.slice(0, 8).map(clip) } : {}),
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

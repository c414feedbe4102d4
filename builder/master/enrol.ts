// Enrolment: private per-node files reach one node only, through a key that node made itself.
//
// The node key is in the initramfs, which anyone on the LAN can TFTP, so everything it reads (the master root) is
// public. A node's secrets live outside the master root, in <state-dir>/private/<host>/files/, and the only key
// that reads them is that node's enrolment key: made on the node at its first boot (kept on its disk, outside the
// slots), its public half sent in the boot report. `builder enrol <host>` turns that report into an
// authorized_keys line, from= the node's listed address, whose command is the enrol gate: read-only rsync of
// <state-dir>/private/<host>, or (`clusterboot-report`) the node's boot report into the report sink as that node:
// the sink takes only a report for the MAC the line names, and marks it `enrolled` (proof, not a claim).
//
// Why the admin decides: a report is a claim (whoever holds the node's address when the node is off can send
// one), so enrolment is trust on first use, as ssh's known_hosts is. The node prints its key's fingerprint on its
// console and `builder enrol --list` prints the reported one; a key that changes later is never taken silently
// (--replace). Pure plan first (enrolPlan), then the effect (applyEnrol).
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { ENROL_KEY_LINE, keyFingerprint } from '../../agent/contract/report.ts';
import { ENROLLED_FLAG, NODES_DIR } from '../../agent/contract/tree.ts';
import { isHostname } from '../../agent/plans/hostname.ts';
import { checkCommandPaths, DEFAULT_RRSYNC, keyLine, parseKeyLine } from '../sshkeys.ts';
import { DEFAULT_REPORT_USER, isUserName, PYTHON, reportSinkPaths } from './reportsink.ts';
import { MAC_RE, parseIPv4 } from './nodelist.ts';
import type { StatusRow } from './status.ts';

export const PRIVATE_DIR = 'private';
export const ENROL_GATE = 'enrol-gate';

/** The enrol gate: the forced command of every enrolment key line (`enrol-gate <host> <mac>`). */
export function enrolGateScript(stateDir: string, o: { user?: string; rrsync?: string } = {}): string {
  const user = o.user ?? DEFAULT_REPORT_USER;
  const rrsync = o.rrsync ?? DEFAULT_RRSYNC;
  if (!isUserName(user)) throw new Error(`enrolGateScript: ${user} is not a user name`);
  const p = reportSinkPaths(stateDir);
  checkCommandPaths('enrolGateScript', [
    ['stateDir', stateDir],
    ['rrsync', rrsync],
  ]);
  return `#!/bin/sh
# clusterboot enrol gate: written by \`builder enrol\`; do not edit (the next enrol rewrites it).
# The forced command of every node's enrolment key, given that key's host name and MAC by its line:
# \`clusterboot-report\` stores the node's boot report through the report sink, as that node and no other;
# anything else is read-only rsync of the node's private tree.
case "$1" in ''|*[!A-Za-z0-9-]*) echo "clusterboot: enrol gate: bad host name" >&2; exit 64 ;; esac
case "$SSH_ORIGINAL_COMMAND" in
  clusterboot-report) exec ${PYTHON} -I ${p.script} ${p.reports} ${user} ${p.peers} /dev/null 0 "$2" ;;
  *) exec ${rrsync} -ro "${join(stateDir, PRIVATE_DIR)}/$1" ;;
esac
`;
}

/** Where a node's private tree lives: `<state-dir>/private/<host>` (its `files/` is laid onto the node's root). */
export function privateDir(stateDir: string, host: string): string {
  return join(stateDir, PRIVATE_DIR, host);
}

/** The enrolment key's authorized_keys line: the enrol gate for this host and MAC, from its address only. */
export function enrolLine(pub: string, host: string, ip: string, mac: string, stateDir: string): string {
  if (!isHostname(host)) throw new Error(`enrolLine: ${JSON.stringify(host)} is not a host name`);
  if (parseIPv4(ip) === null) throw new Error(`enrolLine: ${JSON.stringify(ip)} is not an IPv4 address`);
  if (!MAC_RE.test(mac.toLowerCase())) throw new Error(`enrolLine: ${JSON.stringify(mac)} is not a MAC address`);
  if (!ENROL_KEY_LINE.test(pub)) throw new Error('enrolLine: not an ed25519 public key');
  const gate = join(stateDir, ENROL_GATE);
  checkCommandPaths('enrolLine', [['enrol gate', gate]]);
  return keyLine(
    `restrict,from="${ip}",command="${gate} ${host} ${mac.toLowerCase()}"`,
    `${pub} clusterboot-enrol@${host}`,
    'enrolLine',
  );
}

/** An enrolment line of ours: restrict, from, then `<state-dir>/enrol-gate <host> <mac>`; its host and key. */
export function parseEnrolLine(line: string, stateDir: string): { host: string; key: string } | null {
  const k = parseKeyLine(line);
  if (!k) return null;
  const names = k.options.map((o) => o.name).join(',');
  if (names !== 'restrict,from,command') return null;
  const w = (k.options[2]?.value ?? '').split(' ');
  if (w.length !== 3 || w[0] !== join(stateDir, ENROL_GATE) || !MAC_RE.test((w[2] ?? '').toLowerCase())) return null;
  const host = w[1] as string;
  return isHostname(host) ? { host, key: `${k.type} ${k.blob}` } : null;
}

export interface EnrolState {
  host: string;
  ip: string | null;
  mac: string;
  /** The enrolment key the node's last report carries. */
  reported: string | null;
  /** The key an enrolment line in authorized_keys gives this host. */
  enrolled: string | null;
}

/** Each listed node's reported and enrolled keys. */
export function enrolStates(rows: readonly StatusRow[], authorized: string, stateDir: string): EnrolState[] {
  const lines = new Map<string, string>();
  for (const l of authorized.split('\n')) {
    const e = parseEnrolLine(l.trim(), stateDir);
    if (e && !lines.has(e.host)) lines.set(e.host, e.key);
  }
  return rows
    .filter((r) => r.listed && r.hostname !== null && isHostname(r.hostname))
    .map((r) => ({
      host: r.hostname as string,
      ip: r.ip,
      mac: r.mac,
      reported: r.enrolKey ?? null,
      enrolled: lines.get(r.hostname as string) ?? null,
    }));
}

export interface EnrolPlan {
  /** authorized_keys after the plan (the input when nothing changes). */
  text: string;
  enrolled: string[];
  replaced: string[];
  already: string[];
  problems: string[];
}

/**
 * Which hosts to enrol and the authorized_keys text that does it. `hosts` empty with `all`: every listed node that
 * reports a key and has none enrolled. An enrolled key is replaced only with `replace` (a node re-imaged, or booted
 * with newidentity); a key another host reports too is refused (one of them is not what it claims).
 */
export function enrolPlan(
  states: readonly EnrolState[],
  authorized: string,
  o: { hosts: readonly string[]; all: boolean; replace: boolean; stateDir: string },
): EnrolPlan {
  const out: EnrolPlan = { text: authorized, enrolled: [], replaced: [], already: [], problems: [] };
  const byHost = new Map(states.map((s) => [s.host, s]));
  const names = o.all ? states.filter((s) => s.reported && !s.enrolled).map((s) => s.host) : [...o.hosts];
  const reporters = new Map<string, string[]>();
  for (const s of states) if (s.reported) reporters.set(s.reported, [...(reporters.get(s.reported) ?? []), s.host]);
  let lines = authorized.split('\n');
  for (const host of names) {
    const s = byHost.get(host);
    if (!s) {
      out.problems.push(`${host}: not a listed node (the node list gives each node its name and address)`);
      continue;
    }
    if (!s.ip) {
      out.problems.push(`${host}: no fixed address in the node list; the enrolment line is for that address only`);
      continue;
    }
    if (!s.reported) {
      out.problems.push(`${host}: no enrolment key reported yet: boot it once (with this agent), then enrol it`);
      continue;
    }
    const shared = reporters.get(s.reported) ?? [];
    if (shared.length > 1) {
      out.problems.push(
        `${host}: the same enrolment key is reported by ${shared.join(', ')}: one of them is not what it claims; not enrolled`,
      );
      continue;
    }
    if (s.enrolled === s.reported) {
      out.already.push(host);
      continue;
    }
    if (s.enrolled && !o.replace) {
      out.problems.push(
        `${host}: enrolled with ${keyFingerprint(s.enrolled)}, but it reports ${keyFingerprint(s.reported)}; if it was re-imaged or booted with newidentity (compare its console), run: builder enrol --replace ${host}`,
      );
      continue;
    }
    const line = enrolLine(s.reported, host, s.ip, s.mac, o.stateDir);
    if (s.enrolled) {
      lines = lines.map((l) => (parseEnrolLine(l.trim(), o.stateDir)?.host === host ? line : l));
      out.replaced.push(host);
    } else {
      if (lines.length && lines.at(-1) === '') lines.pop();
      lines.push(line, '');
      out.enrolled.push(host);
    }
  }
  const text = lines.join('\n');
  out.text = text === '\n' ? '' : text;
  return out;
}

/** `builder enrol --list`: one line per listed node. */
export function enrolList(states: readonly EnrolState[]): string {
  const rows = states.map((s) => {
    const state = !s.reported
      ? s.enrolled
        ? 'enrolled; no key reported since'
        : 'no key reported yet'
      : s.enrolled === s.reported
        ? 'enrolled'
        : s.enrolled
          ? `enrolled with another key (${keyFingerprint(s.enrolled)}): builder enrol --replace ${s.host}`
          : `not enrolled: builder enrol ${s.host}`;
    return `${s.host.padEnd(16)} ${(s.ip ?? '-').padEnd(15)} ${(s.reported ? keyFingerprint(s.reported) : '-').padEnd(50)} ${state}`;
  });
  return `${['HOST'.padEnd(16), 'IP'.padEnd(15), 'REPORTED KEY'.padEnd(50), 'STATE'].join(' ')}\n${rows.map((r) => `${r}\n`).join('')}`;
}

/**
 * The effect: authorized_keys rewritten atomically (its mode kept), each enrolled node's private files/ made
 * (root only), and the public marker nodes/<host>/enrolled that tells the node to ask with its key.
 */
export function applyEnrol(
  plan: EnrolPlan,
  states: readonly EnrolState[],
  o: { masterRoot: string; stateDir: string; authorizedKeys: string; reportUser?: string },
): string[] {
  const written: string[] = [];
  const hosts = [...plan.enrolled, ...plan.replaced];
  if (!hosts.length) return written;
  mkdirSync(join(o.stateDir, PRIVATE_DIR), { recursive: true, mode: 0o700 });
  const gate = join(o.stateDir, ENROL_GATE);
  writeAtomic(gate, enrolGateScript(o.stateDir, o.reportUser ? { user: o.reportUser } : {}), 0o755);
  written.push(gate);
  for (const host of hosts) {
    const files = join(privateDir(o.stateDir, host), 'files');
    mkdirSync(files, { recursive: true, mode: 0o700 });
    const key = states.find((s) => s.host === host)?.reported ?? '';
    const flagDir = join(o.masterRoot, NODES_DIR, host);
    mkdirSync(flagDir, { recursive: true });
    writeAtomic(join(flagDir, ENROLLED_FLAG), `${keyFingerprint(key)}\n`, 0o644);
    written.push(files, join(flagDir, ENROLLED_FLAG));
  }
  const mode = existsSync(o.authorizedKeys) ? statSync(o.authorizedKeys).mode & 0o777 : 0o600;
  writeAtomic(o.authorizedKeys, plan.text, mode);
  written.push(o.authorizedKeys);
  return written;
}

/** authorized_keys as text ('' when there is none yet). */
export function readAuthorized(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

/** The user the report sink stores reports as, read off the report key's line (the gate's sink must match it). */
export function reportUserIn(authorized: string): string | undefined {
  for (const l of authorized.split('\n')) {
    const c = parseKeyLine(l.trim())?.options.find((o) => o.name === 'command')?.value ?? '';
    const w = c.split(' ');
    if (w[0] === PYTHON && w[1] === '-I' && w[2]?.endsWith('/report-sink') && w.length === 8) return w[4];
  }
  return undefined;
}

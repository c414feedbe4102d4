// The cluster's ssh_known_hosts from the nodes' own host keys (identity born on the node: each node makes its keys
// at first boot and its boot report carries the public halves), and optionally OpenSSH host certificates signed
// by a cluster CA, which the nodes lay in at their next boot.
//
// Why trust on first use: a report says which key a node has, and today anyone holding the report key (it is in
// the public initramfs) can send one. So the first key seen for a host name is kept, and a different key later is
// shown as a change and not taken until the admin names the host with --accept (as ssh itself does). A signed
// certificate then carries that decision to every client that trusts the CA.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { HOST_KEY_LINE } from '../../agent/contract/report.ts';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { NODES_DIR } from '../../agent/contract/tree.ts';
import type { StatusRow } from './status.ts';
import { SSH_KEYGEN } from './identity.ts';

/** One host's entry: the names clients use for it and its public keys (`type base64`). */
export interface KnownHost {
  host: string;
  names: string[];
  keys: string[];
}

export interface KnownHostsPlan {
  hosts: KnownHost[];
  /** The file's text: one `names type base64` line per key, sorted by host. */
  text: string;
  added: string[];
  changed: Array<{ host: string; kept: string[]; reported: string[] }>;
  /** Listed nodes whose report carries no host key yet (never booted, or an agent before identity on the node). */
  missing: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/;

/** The entries of an existing known_hosts file written by this command (other lines are ignored). */
export function parseKnownHosts(text: string): Map<string, KnownHost> {
  const out = new Map<string, KnownHost>();
  for (const line of text.split('\n')) {
    const m = /^(\S+) (\S+ \S+)$/.exec(line.trim());
    if (!m || line.startsWith('#') || line.startsWith('@')) continue;
    const names = (m[1] ?? '').split(',');
    const host = names[0] ?? '';
    const key = m[2] ?? '';
    if (!NAME.test(host) || !HOST_KEY_LINE.test(key)) continue;
    const h = out.get(host) ?? { host, names, keys: [] };
    if (!h.keys.includes(key)) h.keys.push(key);
    out.set(host, h);
  }
  return out;
}

/**
 * What the known_hosts file should hold: each listed node's reported keys under its name, its name in `domain`
 * and its IP; a host already in `previous` keeps its keys unless they are the same or it is in `accept`.
 */
export function knownHostsPlan(
  rows: readonly StatusRow[],
  previous: Map<string, KnownHost>,
  o: { domain?: string; accept?: ReadonlySet<string> } = {},
): KnownHostsPlan {
  const hosts = new Map(previous);
  const added: string[] = [];
  const changed: KnownHostsPlan['changed'] = [];
  const missing: string[] = [];
  for (const r of rows) {
    if (!r.listed || r.hostname === null || !NAME.test(r.hostname)) continue;
    const keys = [...new Set((r.hostKeys ?? []).filter((k) => HOST_KEY_LINE.test(k)))].sort();
    if (!keys.length) {
      if (!hosts.has(r.hostname)) missing.push(r.hostname);
      continue;
    }
    const names = [r.hostname, ...(o.domain ? [`${r.hostname}.${o.domain}`] : []), ...(r.ip ? [r.ip] : [])];
    const old = hosts.get(r.hostname);
    const same = old && old.keys.length === keys.length && old.keys.every((k) => keys.includes(k));
    if (old && !same && !o.accept?.has(r.hostname)) {
      changed.push({ host: r.hostname, kept: old.keys, reported: keys });
      hosts.set(r.hostname, { ...old, names });
      continue;
    }
    if (!old) added.push(r.hostname);
    hosts.set(r.hostname, { host: r.hostname, names, keys });
  }
  const list = [...hosts.values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  const text = list.flatMap((h) => h.keys.map((k) => `${h.names.join(',')} ${k}`)).join('\n');
  return { hosts: list, text: text ? `${text}\n` : '', added, changed, missing };
}

export const HOST_CERT = 'etc/ssh/ssh_host_ed25519_key-cert.pub';
export const HOST_CERT_CONF = 'etc/ssh/sshd_config.d/clusterboot-hostcert.conf';

/**
 * Sign each host's ed25519 key with the CA (`ssh-keygen -s`), for its names, into the node's files/ on the master
 * (public data: the agent lays it in at the next boot, with the sshd line that serves it). Returns the hosts signed.
 */
export function signHostCerts(masterRoot: string, hosts: readonly KnownHost[], caKey: string): string[] {
  if (!existsSync(caKey))
    throw new Error(`--ca ${caKey}: no such CA key (make one with ssh-keygen -t ed25519 -f ${caKey})`);
  const signed: string[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'clusterboot-cert-'));
  try {
    for (const h of hosts) {
      const key = h.keys.find((k) => k.startsWith('ssh-ed25519 '));
      if (!key) continue;
      const pub = join(tmp, `${h.host}.pub`);
      writeFileSync(pub, `${key}\n`);
      const r = spawnSync(SSH_KEYGEN, ['-q', '-s', caKey, '-I', h.host, '-h', '-n', h.names.join(','), pub], {
        encoding: 'utf8',
      });
      if (r.status !== 0)
        throw new Error(`ssh-keygen -s ${caKey} for ${h.host}: ${r.stderr.trim() || `exit ${r.status}`}`);
      const files = join(masterRoot, NODES_DIR, h.host, 'files');
      mkdirSync(dirname(join(files, HOST_CERT_CONF)), { recursive: true });
      writeAtomic(join(files, HOST_CERT), readFileSync(join(tmp, `${h.host}-cert.pub`)), 0o644);
      writeAtomic(
        join(files, HOST_CERT_CONF),
        '# written by `builder known-hosts --ca`: serve the host certificate signed by the cluster CA\nHostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n',
        0o644,
      );
      signed.push(h.host);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return signed;
}

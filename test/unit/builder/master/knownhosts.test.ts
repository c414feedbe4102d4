// builder known-hosts: the nodes' own host keys from their reports, trust on first use, CA-signed host certificates.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  HOST_CERT,
  HOST_CERT_CONF,
  knownHostsPlan,
  parseKnownHosts,
  signHostCerts,
} from '../../../../builder/master/knownhosts.ts';
import type { StatusRow } from '../../../../builder/master/status.ts';
import { statusRow } from '../../../fixtures/statusrow.ts';

let tmp: string;
const keygen = (f: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', f]);
const pub = (f: string) => readFileSync(`${f}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
let k1: string;
let k2: string;
let k3: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'knownhosts-test-'));
  for (const n of ['n1', 'n2', 'n3', 'ca']) keygen(join(tmp, n));
  [k1, k2, k3] = ['n1', 'n2', 'n3'].map((n) => pub(join(tmp, n))) as [string, string, string];
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const row = (hostname: string | null, ip: string | null, hostKeys: string[] | undefined, listed = true): StatusRow =>
  statusRow({ hostname, ip, listed, ...(hostKeys ? { hostKeys } : {}) });

describe('knownHostsPlan', () => {
  test("each listed node's reported keys under its name, its name in the domain and its IP; sorted", () => {
    const p = knownHostsPlan([row('node2', '10.0.0.12', [k2]), row('node1', '10.0.0.11', [k1])], new Map(), {
      domain: 'cluster.lan',
    });
    expect(p.text).toBe(`node1,node1.cluster.lan,10.0.0.11 ${k1}\nnode2,node2.cluster.lan,10.0.0.12 ${k2}\n`);
    expect(p.added).toEqual(['node2', 'node1']);
    expect(p.changed).toEqual([]);
  });
  test('unlisted MACs, rows without a host name and malformed keys give nothing; nodes without keys are named', () => {
    const p = knownHostsPlan(
      [
        row('stranger', '10.0.0.99', [k3], false),
        row(null, '10.0.0.98', [k3]),
        row('node1', '10.0.0.11', ['ssh-ed25519 not;base64', 'ssh-dss AAAA']),
        row('node2', '10.0.0.12', undefined),
      ],
      new Map(),
    );
    expect(p.text).toBe('');
    expect(p.missing).toEqual(['node1', 'node2']);
  });
  test('trust on first use: a different key later is held back (the old one stays) until --accept names the host', () => {
    const first = knownHostsPlan([row('node1', '10.0.0.11', [k1])], new Map());
    const prev = parseKnownHosts(first.text);
    const forged = knownHostsPlan([row('node1', '10.0.0.11', [k3])], prev);
    expect(forged.text).toBe(first.text);
    expect(forged.changed).toEqual([{ host: 'node1', kept: [k1], reported: [k3] }]);
    const accepted = knownHostsPlan([row('node1', '10.0.0.11', [k3])], prev, { accept: new Set(['node1']) });
    expect(accepted.text).toBe(`node1,10.0.0.11 ${k3}\n`);
    expect(accepted.changed).toEqual([]);
    // the same keys again: nothing changes; a host that did not report this time is kept
    expect(knownHostsPlan([row('node1', '10.0.0.11', [k1])], prev).text).toBe(first.text);
    expect(knownHostsPlan([], prev).text).toBe(first.text);
  });
  test('parseKnownHosts ignores comments, markers and lines it did not write', () => {
    const m = parseKnownHosts(`# hi\n@cert-authority *.lan ${k1}\nnode1,10.0.0.11 ${k1}\ngarbage\n|1|hashed ${k2}\n`);
    expect([...m.keys()]).toEqual(['node1']);
    expect(m.get('node1')?.keys).toEqual([k1]);
  });
});

describe('signHostCerts (the real ssh-keygen -s)', () => {
  test("a host certificate for each node's ed25519 key and its names, and the sshd line, in its files/", () => {
    const root = join(tmp, 'master');
    const p = knownHostsPlan([row('node1', '10.0.0.11', [k1])], new Map(), { domain: 'cluster.lan' });
    expect(signHostCerts(root, p.hosts, join(tmp, 'ca'))).toEqual(['node1']);
    const cert = join(root, 'nodes/node1/files', HOST_CERT);
    const info = execFileSync('ssh-keygen', ['-L', '-f', cert], { encoding: 'utf8' });
    expect(info).toContain('host certificate');
    expect(info).toMatch(/Key ID: "node1"/);
    for (const n of ['node1', 'node1.cluster.lan', '10.0.0.11']) expect(info).toContain(n);
    expect(readFileSync(join(root, 'nodes/node1/files', HOST_CERT_CONF), 'utf8')).toContain(
      'HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub',
    );
    // the certificate is for this node's key: its public part matches
    expect(readFileSync(cert, 'utf8')).toContain('ssh-ed25519-cert-v01@openssh.com');
    expect(() => signHostCerts(root, p.hosts, join(tmp, 'no-such-ca'))).toThrow(/no such CA key/);
    expect(existsSync(join(root, 'nodes/node1/files/etc/ssh/ssh_host_ed25519_key'))).toBe(false);
  });
});

// builder enrol: a node's private files reach it through its own enrolment key only; trust on first use.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  applyEnrol,
  enrolLine,
  enrolList,
  enrolPlan,
  enrolStates,
  parseEnrolLine,
  privateDir,
  reportUserIn,
} from '../../../../builder/master/enrol.ts';
import { ENROL_KEY_LINE, keyFingerprint } from '../../../../agent/contract/report.ts';
import { parseKeyLine } from '../../../../builder/sshkeys.ts';
import type { StatusRow } from '../../../../builder/master/status.ts';
import { statusRow } from '../../../fixtures/statusrow.ts';

let tmp: string;
let k1: string;
let k2: string;
let k3: string;
const STATE = '/var/lib/clusterboot';
const MAC1 = '52:54:00:00:00:01';

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'enrol-test-'));
  [k1, k2, k3] = ['n1', 'n2', 'n3'].map((n) => {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(tmp, n)]);
    return readFileSync(join(tmp, `${n}.pub`), 'utf8')
      .trim()
      .split(' ')
      .slice(0, 2)
      .join(' ');
  }) as [string, string, string];
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const row = (hostname: string, ip: string | null, enrolKey?: string, listed = true): StatusRow =>
  statusRow({ hostname, ip, listed, ...(enrolKey ? { enrolKey } : {}) });

const ADMIN = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop\n';

describe('the enrolment line', () => {
  test('the enrol gate for this host and MAC, from its address only, restrict: nothing else', () => {
    const l = enrolLine(k1, 'node1', '10.0.0.11', MAC1, STATE);
    expect(l).toBe(
      `restrict,from="10.0.0.11",command="/var/lib/clusterboot/enrol-gate node1 52:54:00:00:00:01" ${k1} clusterboot-enrol@node1`,
    );
    // sshd reads it as these options
    expect(parseKeyLine(l)?.options.map((o) => o.name)).toEqual(['restrict', 'from', 'command']);
    expect(parseEnrolLine(l, STATE)).toEqual({ host: 'node1', key: k1 });
    expect(privateDir(STATE, 'node1')).toBe('/var/lib/clusterboot/private/node1');
  });
  test('refused: a host name that is a path, an address that is a pattern, a key that is not ed25519', () => {
    expect(() => enrolLine(k1, '../node2', '10.0.0.11', MAC1, STATE)).toThrow('not a host name');
    expect(() => enrolLine(k1, 'node1', '10.0.0.*', MAC1, STATE)).toThrow('not an IPv4 address');
    expect(() => enrolLine(k1, 'node1', '10.0.0.11', '52:54:00:00:00', STATE)).toThrow('not a MAC');
    expect(() => enrolLine('ssh-rsa AAAAB3NzaC1yc2E', 'node1', '10.0.0.11', MAC1, STATE)).toThrow('ed25519');
  });
  test("other lines are not ours: the node key's line, an admin key, another state dir", () => {
    expect(parseEnrolLine(ADMIN.trim(), STATE)).toBeNull();
    expect(parseEnrolLine(`restrict,from="10.0.0.0/24",command="/usr/bin/rrsync -ro /data/slaves" ${k1}`, STATE)).toBe(
      null,
    );
    expect(parseEnrolLine(enrolLine(k1, 'node1', '10.0.0.11', MAC1, '/srv/other'), STATE)).toBeNull();
  });
  test("the gate's sink runs as the report sink's user, read off the report key's line", () => {
    const sinkLine = `restrict,from="10.0.0.0/24",command="/usr/bin/python3 -I ${STATE}/report-sink ${STATE}/reports cbreports ${STATE}/report-peers /var/lib/misc/dnsmasq.leases 260" ${k2}`;
    expect(reportUserIn(`${ADMIN}${sinkLine}\n`)).toBe('cbreports');
    expect(reportUserIn(ADMIN)).toBeUndefined();
  });
  test('the fingerprint is the one ssh-keygen -l prints', () => {
    const out = execFileSync('ssh-keygen', ['-lf', join(tmp, 'n1.pub')], { encoding: 'utf8' });
    expect(out.split(' ')[1]).toBe(keyFingerprint(k1));
    expect(ENROL_KEY_LINE.test(k1)).toBe(true);
  });
});

describe('enrolPlan', () => {
  const rows = () => [row('node1', '10.0.0.11', k1), row('node2', '10.0.0.12', k2), row('node3', '10.0.0.13')];
  const o = { hosts: [] as string[], all: false, replace: false, stateDir: STATE };

  test('the named node gets its line after the admin lines; the others are left alone', () => {
    const p = enrolPlan(enrolStates(rows(), ADMIN, STATE), ADMIN, { ...o, hosts: ['node1'] });
    expect(p.enrolled).toEqual(['node1']);
    expect(p.problems).toEqual([]);
    expect(p.text).toBe(`${ADMIN}${enrolLine(k1, 'node1', '10.0.0.11', MAC1, STATE)}\n`);
    // enrolling again changes nothing
    const again = enrolPlan(enrolStates(rows(), p.text, STATE), p.text, { ...o, hosts: ['node1'] });
    expect(again.already).toEqual(['node1']);
    expect(again.text).toBe(p.text);
  });
  test('--all: every listed node that reports a key and has none enrolled; a node without a key is not named', () => {
    const p = enrolPlan(enrolStates(rows(), '', STATE), '', { ...o, all: true });
    expect(p.enrolled).toEqual(['node1', 'node2']);
    expect(p.problems).toEqual([]);
    expect(p.text.split('\n').filter(Boolean).length).toBe(2);
  });
  test('refused with the reason: no key reported, not listed, no fixed address', () => {
    const rs = [...rows(), row('node4', null, k3), row('ghost', '10.0.0.99', k3, false)];
    const p = enrolPlan(enrolStates(rs, '', STATE), '', { ...o, hosts: ['node3', 'node4', 'ghost'] });
    expect(p.enrolled).toEqual([]);
    expect(p.text).toBe('');
    expect(p.problems.join('\n')).toContain('node3: no enrolment key reported yet');
    expect(p.problems.join('\n')).toContain('node4: no fixed address');
    expect(p.problems.join('\n')).toContain('ghost: not a listed node');
  });
  test('a changed key is never taken silently: held with both fingerprints until --replace, then replaced in place', () => {
    const first = enrolPlan(enrolStates(rows(), ADMIN, STATE), ADMIN, { ...o, hosts: ['node1'] }).text;
    const changed = [row('node1', '10.0.0.11', k3), row('node2', '10.0.0.12', k2)];
    const held = enrolPlan(enrolStates(changed, first, STATE), first, { ...o, hosts: ['node1'] });
    expect(held.text).toBe(first);
    expect(held.problems[0]).toContain(`enrolled with ${keyFingerprint(k1)}, but it reports ${keyFingerprint(k3)}`);
    expect(held.problems[0]).toContain('builder enrol --replace node1');
    const taken = enrolPlan(enrolStates(changed, first, STATE), first, { ...o, hosts: ['node1'], replace: true });
    expect(taken.replaced).toEqual(['node1']);
    expect(taken.text).toBe(`${ADMIN}${enrolLine(k3, 'node1', '10.0.0.11', MAC1, STATE)}\n`);
  });
  test('one key reported by two nodes: neither is enrolled (one of them is not what it claims)', () => {
    const rs = [row('node1', '10.0.0.11', k1), row('node2', '10.0.0.12', k1)];
    const p = enrolPlan(enrolStates(rs, '', STATE), '', { ...o, hosts: ['node1', 'node2'] });
    expect(p.enrolled).toEqual([]);
    expect(p.problems).toHaveLength(2);
    expect(p.problems[0]).toContain('reported by node1, node2');
  });
  test('--list: fingerprint and state per node, with the command that fixes it', () => {
    const first = enrolPlan(enrolStates(rows(), '', STATE), '', { ...o, hosts: ['node1'] }).text;
    const text = enrolList(enrolStates([row('node1', '10.0.0.11', k3), ...rows().slice(1)], first, STATE));
    expect(text).toContain(`enrolled with another key (${keyFingerprint(k1)}): builder enrol --replace node1`);
    expect(text).toContain(`${keyFingerprint(k2)}`);
    expect(text).toContain('not enrolled: builder enrol node2');
    expect(text).toContain('no key reported yet');
  });
});

describe('applyEnrol', () => {
  test("authorized_keys keeps its mode; the private files/ is root's only; the public marker names the fingerprint", () => {
    const root = join(tmp, 'root');
    const state = join(tmp, 'state');
    const auth = join(tmp, 'authorized_keys');
    writeFileSync(auth, ADMIN, { mode: 0o640 });
    const states = enrolStates([row('node1', '10.0.0.11', k1)], ADMIN, state);
    const plan = enrolPlan(states, ADMIN, { hosts: ['node1'], all: false, replace: false, stateDir: state });
    applyEnrol(plan, states, { masterRoot: root, stateDir: state, authorizedKeys: auth });
    expect(readFileSync(auth, 'utf8')).toBe(plan.text);
    expect(statSync(auth).mode & 0o777).toBe(0o640);
    expect(statSync(join(state, 'private/node1/files')).mode & 0o777).toBe(0o700);
    expect(statSync(join(state, 'private')).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(root, 'nodes/node1/enrolled'), 'utf8')).toBe(`${keyFingerprint(k1)}\n`);
    // the gate: a report goes to the sink in its enrolled mode (the line's MAC), anything else to rrsync -ro
    const gate = readFileSync(join(state, 'enrol-gate'), 'utf8');
    expect(statSync(join(state, 'enrol-gate')).mode & 0o777).toBe(0o755);
    expect(gate).toContain(`clusterboot-report) exec /usr/bin/python3 -I ${state}/report-sink ${state}/reports nobody`);
    expect(gate).toContain(`*) exec /usr/bin/rrsync -ro "${state}/private/$1"`);
    // nothing to do: nothing written
    const none = enrolPlan(enrolStates([row('node1', '10.0.0.11', k1)], plan.text, state), plan.text, {
      hosts: ['node1'],
      all: false,
      replace: false,
      stateDir: state,
    });
    rmSync(join(root, 'nodes/node1/enrolled'));
    expect(applyEnrol(none, states, { masterRoot: root, stateDir: state, authorizedKeys: auth })).toEqual([]);
    expect(existsSync(join(root, 'nodes/node1/enrolled'))).toBe(false);
  });
});

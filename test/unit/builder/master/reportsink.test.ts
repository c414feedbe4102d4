// The report sink, for real: the script `builder stage` installs, run by python3 as sshd would run it (as root,
// SSH_CONNECTION set), dropping to an unprivileged user. What the report key can do is what this allows.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { replaceOwnNodeLines, restrictFrom } from '../../../../builder/master/authkeys.ts';
import { reportKeysLine } from '../../../../builder/master/keylines.ts';
import {
  installReportSink,
  MAX_REPORT_BYTES,
  PYTHON,
  reportPeers,
  reportSinkKeysLine,
  SINK_TIMEOUT_S,
} from '../../../../builder/master/reportsink.ts';

const PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBJ3PmS2n7ZlN4ajnkjN2gNPb2ZQ0gT6sHzwXNSG9v3P report';
let tmp: string;
let state: string;
let leases: string;
const NODES = [
  { mac: '52:54:00:C1:00:01', hostname: 'node1', ip: '10.77.0.11', line: 1 },
  { mac: '52:54:00:c1:00:02', hostname: 'node2', ip: '10.77.0.12', line: 2 },
];
const asRoot = process.getuid?.() === 0;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'reportsink-test-'));
  state = join(tmp, 'state');
  leases = join(tmp, 'dnsmasq.leases');
  writeFileSync(leases, '1999999999 52:54:00:c1:00:99 10.77.0.150 * 01:52:54:00:c1:00:99\n');
  installReportSink(state, 'nobody', NODES);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const report = (mac: string, over: Record<string, unknown> = {}) =>
  JSON.stringify({ schema: 1, mac, result: 'ok', hostname: 'node1', errors: [], ...over });

/** The sink as sshd runs it for the report key: the words of the forced command, stdin, the sender's address. */
const sinkArgv = (maxFiles: number) => [
  PYTHON,
  '-I',
  join(state, 'report-sink'),
  join(state, 'reports'),
  'nobody',
  join(state, 'report-peers'),
  leases,
  String(maxFiles),
];
function sink(input: string | Buffer, from: string | null, maxFiles = 100) {
  const [cmd, ...args] = sinkArgv(maxFiles) as [string, ...string[]];
  const r = spawnSync(cmd, args, {
    input,
    encoding: 'utf8',
    env: from === null ? {} : { SSH_CONNECTION: `${from} 51234 10.77.0.1 22` },
  });
  return { status: r.status, out: r.stdout + r.stderr };
}
const stored = (mac: string) => join(state, 'reports', `${mac.replace(/:/g, '-')}.json`);

describe('report sink', () => {
  // #14 item 3: a node's own enrolment key reaches the sink through the enrol gate with the MAC of its line
  test('enrolled mode: the report of the MAC the key line names is stored, marked enrolled; any other MAC is refused', () => {
    const [cmd, ...args] = [...sinkArgv(0), '52:54:00:c1:00:02'] as unknown as [string, ...string[]];
    const run = (input: string, from: string) =>
      spawnSync(cmd, args, { input, encoding: 'utf8', env: { SSH_CONNECTION: `${from} 51234 10.77.0.1 22` } });
    // from whatever address (the key line's from= pins it), capped folder or not (max 0): one file per enrolled MAC
    const ok = run(report('52:54:00:C1:00:02', { enrolled: false }), '10.77.0.99');
    expect(ok.stdout).toContain('report stored as 52-54-00-c1-00-02.json');
    expect(JSON.parse(readFileSync(stored('52:54:00:c1:00:02'), 'utf8')).enrolled).toBe(true);
    const other = run(report('52:54:00:c1:00:01'), '10.77.0.12');
    expect(other.status).toBe(65);
    expect(other.stderr).toContain("this enrolment key is 52:54:00:c1:00:02's: it cannot report for 52:54:00:c1:00:01");
    // through the shared report key, a report's own claim to be enrolled is dropped
    const claimed = sink(report('52:54:00:C1:00:02', { enrolled: true }), '10.77.0.12');
    expect(claimed.status).toBe(0);
    expect(JSON.parse(readFileSync(stored('52:54:00:c1:00:02'), 'utf8')).enrolled).toBeUndefined();
  });

  test("a listed node's report from its own address is stored under its MAC, as the sink's user, by the master's clock", () => {
    const t0 = Date.now();
    const r = sink(report('52:54:00:C1:00:01', { uptime: 12.5 }), '10.77.0.11');
    expect(r.out).toContain('report stored as 52-54-00-c1-00-01.json');
    expect(r.status).toBe(0);
    const st = lstatSync(stored('52:54:00:c1:00:01'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o644);
    expect(st.mtimeMs).toBeGreaterThanOrEqual(t0 - 2000);
    if (asRoot) expect(st.uid).toBe(Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim()));
    expect(JSON.parse(readFileSync(stored('52:54:00:c1:00:01'), 'utf8'))).toMatchObject({
      mac: '52:54:00:C1:00:01',
      uptime: 12.5,
    });
  });

  test("another node's MAC, a listed node's address for a stranger, no lease, no address: refused, nothing written", () => {
    const before = readdirSync(join(state, 'reports')).sort();
    for (const [mac, from, why] of [
      ['52:54:00:c1:00:02', '10.77.0.11', 'is listed at 10.77.0.12, not 10.77.0.11'],
      ['52:54:00:c1:00:77', '10.77.0.12', "another listed node's address"],
      ['52:54:00:c1:00:77', '10.77.0.150', 'no DHCP lease gives 10.77.0.150 to 52:54:00:c1:00:77'],
      ['52:54:00:c1:00:01', null, 'is listed at 10.77.0.11, not ?'],
    ] as const) {
      const r = sink(report(mac), from);
      expect(r.status).toBe(65);
      expect(r.out).toContain(why);
    }
    expect(readdirSync(join(state, 'reports')).sort()).toEqual(before);
  });

  test("an unlisted node is taken for the MAC its address was leased to (the stranger's case)", () => {
    const r = sink(report('52:54:00:c1:00:99'), '10.77.0.150');
    expect(r.status).toBe(0);
    expect(existsSync(stored('52:54:00:c1:00:99'))).toBe(true);
  });

  test('too large, not JSON, another schema, no MAC, the rsync protocol: refused', () => {
    const cases: Array<[string | Buffer, string]> = [
      [report('52:54:00:c1:00:01', { pad: 'x'.repeat(MAX_REPORT_BYTES) }), `larger than ${MAX_REPORT_BYTES} bytes`],
      [Buffer.alloc(10 << 20, 0x41), `larger than ${MAX_REPORT_BYTES} bytes`],
      ['{"schema":1,', 'not a JSON report'],
      [Buffer.from([0xff, 0xfe, 0x00]), 'not a JSON report'],
      [report('52:54:00:c1:00:01', { schema: 2 }), 'not a clusterboot report'],
      ['[1,2]', 'not a clusterboot report'],
      [report('../../etc/passwd'), 'no valid MAC'],
      [Buffer.from([0x1f, 0x00, 0x00, 0x00]), 'not a JSON report'], // what an rsync client sends first
    ];
    for (const [input, why] of cases) {
      const r = sink(input, '10.77.0.11');
      expect(r.status).toBe(65);
      expect(r.out).toContain(why);
    }
  });

  test('a symlink planted at the name is replaced, never followed; the text stored is plain ASCII JSON', () => {
    const victim = join(tmp, 'victim');
    writeFileSync(victim, 'precious\n');
    rmSync(stored('52:54:00:c1:00:02'), { force: true });
    symlinkSync(victim, stored('52:54:00:c1:00:02'));
    const r = sink(report('52:54:00:c1:00:02', { hostname: 'n\u001b[31m2' }), '10.77.0.12');
    expect(r.status).toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(stored('52:54:00:c1:00:02')).isFile()).toBe(true);
    const text = readFileSync(stored('52:54:00:c1:00:02'), 'utf8');
    expect(/[^\x20-\x7e\n]/.test(text)).toBe(false);
    expect(JSON.parse(text).hostname).toBe('n\u001b[31m2');
  });

  test('a sender that never finishes (an rsync client waiting for its greeting) is dropped after the sink timeout', async () => {
    const t0 = performance.now();
    const p = Bun.spawn(sinkArgv(100), {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      env: { SSH_CONNECTION: '10.77.0.11 5 10.77.0.1 22' },
    });
    p.stdin.write(new Uint8Array([0x1f, 0, 0, 0])); // and then nothing, with the pipe left open
    p.stdin.flush();
    const code = await p.exited;
    const s = (performance.now() - t0) / 1000;
    expect(code).toBe(65);
    expect(await new Response(p.stderr).text()).toContain(`no complete report within ${SINK_TIMEOUT_S} s`);
    expect(s).toBeGreaterThan(SINK_TIMEOUT_S - 1);
    expect(s).toBeLessThan(SINK_TIMEOUT_S + 10);
  }, 40_000);

  test('the folder is capped: a new name is refused when full, a known one still replaces its file', () => {
    const n = readdirSync(join(state, 'reports')).filter((f) => !f.startsWith('.')).length;
    expect(sink(report('52:54:00:c1:00:01'), '10.77.0.11', n).status).toBe(0);
    rmSync(stored('52:54:00:c1:00:99'));
    writeFileSync(join(state, 'reports', 'filler.json'), '{}');
    const full = sink(report('52:54:00:c1:00:99'), '10.77.0.150', n);
    expect(full.status).toBe(75);
    expect(full.out).toContain('already holds');
  });

  test('the key line runs the sink only; an older write-only rsync line of the same key is replaced in place', () => {
    const line = reportSinkKeysLine(PUB, '/var/lib/clusterboot', { maxFiles: 266 });
    expect(line).toBe(
      `restrict,command="${PYTHON} -I /var/lib/clusterboot/report-sink /var/lib/clusterboot/reports nobody /var/lib/clusterboot/report-peers /var/lib/misc/dnsmasq.leases 266" ${PUB}`,
    );
    const old = reportKeysLine(PUB, '/data/slaves');
    const r = replaceOwnNodeLines(`# keys\n${old}\n`, [line], '/data/slaves');
    expect(r.replaced).toEqual([old]);
    expect(r.text).toBe(`# keys\n${line}\n`);
    expect(() => reportSinkKeysLine(PUB, '/x', { user: 'root"; rm -rf /', maxFiles: 1 })).toThrow();
    expect(reportPeers(NODES)).toBe('52:54:00:c1:00:01 10.77.0.11\n52:54:00:c1:00:02 10.77.0.12\n');
    // from= the cluster subnet: the public keys work from the cluster's addresses only; an unrestricted older line
    // of the same key is replaced by it in place
    const limited = restrictFrom(line, '10.77.0.0/24');
    expect(limited).toStartWith(`restrict,from="10.77.0.0/24",command="${PYTHON} -I `);
    expect(replaceOwnNodeLines(`${old}\n`, [limited], '/data/slaves').text).toBe(`${limited}\n`);
    expect(replaceOwnNodeLines(`${line}\n`, [limited], '/data/slaves').replaced).toEqual([line]);
    expect(() => restrictFrom(line, '10.0.0.0/8" ,command="/bin/sh')).toThrow(/not an address list/);
  });
});

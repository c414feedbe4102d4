// `builder status`: rows from the master's files, the table, and the --json output of the real CLI.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newStamp, renderStamp } from '../../../../agent/contract/stamp.ts';
import { reportName, type BootReport } from '../../../../agent/contract/report.ts';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import type { NodeEntry } from '../../../../builder/master/nodelist.ts';
import { tableHash } from '../../../../agent/contract/approval.ts';
import {
  approvalList,
  mirrorRow,
  parseReport,
  readStatus,
  renderStatusTable,
  statusRows,
  tableDiff,
  type StatusRow,
} from '../../../../builder/master/status.ts';

let tmp = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'status-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const NOW = Date.parse('2026-11-25T12:00:00Z');
const MASTER = newStamp('rootfs', 7, new Date('2026-11-25T09:00:00Z'));
const OLD = newStamp('rootfs', 6, new Date('2026-11-20T09:00:00Z'));

const node = (line: number, mac: string, hostname: string, ip: string): NodeEntry => ({ mac, hostname, ip, line });
const NODES = [
  node(1, 'b8:27:eb:00:00:01', 'rpinode01', '10.77.0.11'),
  node(2, 'b8:27:eb:00:00:02', 'rpinode02', '10.77.0.12'),
  node(3, 'b8:27:eb:00:00:03', 'rpinode03', '10.77.0.13'),
  node(4, 'b8:27:eb:00:00:04', 'rpinode04', '10.77.0.14'),
  node(5, 'b8:27:eb:00:00:05', 'rpinode05', '10.77.0.15'),
];

function report(over: Partial<BootReport> = {}): BootReport {
  return {
    schema: 1,
    mac: 'b8:27:eb:00:00:01',
    hostname: 'rpinode01',
    hostnameFrom: 'dhcp',
    ip: '10.77.0.11',
    agentVersion: '0.1.0',
    kernel: '6.1.0-28-arm64',
    result: 'ok',
    phases: [
      { name: 'early', seconds: 0.04 },
      { name: 'network', seconds: 2.5 },
      { name: 'master', seconds: 1.25 },
      { name: 'root', seconds: 4.1 },
    ],
    stamps: { rootBefore: MASTER.id, rootAfter: MASTER.id, masterRoot: MASTER.id },
    bytesReceived: 0,
    overlay: 'tmpfs',
    errors: [],
    uptime: 9.2,
    ...over,
  };
}
const file = (r: BootReport, minutesAgo: number) => ({
  file: reportName(r.mac),
  text: JSON.stringify(r),
  mtimeMs: NOW - minutesAgo * 60_000,
});

// the fleet of the brief: current, behind, never booted, fatal with reason, garbage file, plus an unknown MAC
const REPORTS = [
  file(report(), 5),
  file(
    report({
      mac: 'b8:27:eb:00:00:02',
      hostname: 'rpinode02',
      ip: '10.77.0.12',
      stamps: { rootBefore: OLD.id, rootAfter: OLD.id, masterRoot: OLD.id },
    }),
    600,
  ),
  // rpinode03: no report
  file(
    report({
      mac: 'B8:27:EB:00:00:04',
      hostname: 'rpinode04',
      ip: '10.77.0.14',
      result: 'fatal',
      reason: 'no disk found (mmcblk0, sda)',
      remedy: 'plug in the USB disk',
      overlay: null,
      stamps: { rootBefore: null, rootAfter: null, masterRoot: MASTER.id },
      phases: [
        { name: 'early', seconds: 0.1 },
        { name: 'disk', seconds: 30, failed: true },
      ],
      errors: ['disk: no disk found (mmcblk0, sda)'],
    }),
    2,
  ),
  { file: 'b8-27-eb-00-00-05.json', text: '{"schema":1,"mac":"b8:27:eb:00:00:05","result":', mtimeMs: NOW - 60_000 },
  file(report({ mac: 'dc:a6:32:00:00:99', hostname: null, hostnameFrom: null, ip: '10.77.0.200' }), 1),
];

const rows = () => statusRows({ nodes: NODES, reports: REPORTS, masterStamp: renderStamp(MASTER), now: NOW });
const byName = (rs: StatusRow[], h: string | null) => rs.find((r) => r.hostname === h);

describe('statusRows', () => {
  test('one row per listed node in list order, then the unknown MAC', () => {
    expect(rows().map((r) => [r.hostname, r.mac, r.listed])).toEqual([
      ['rpinode01', 'b8:27:eb:00:00:01', true],
      ['rpinode02', 'b8:27:eb:00:00:02', true],
      ['rpinode03', 'b8:27:eb:00:00:03', true],
      ['rpinode04', 'b8:27:eb:00:00:04', true],
      ['rpinode05', 'b8:27:eb:00:00:05', true],
      [null, 'dc:a6:32:00:00:99', false],
    ]);
  });

  test('a current node: ok, root current, last boot from the file mtime, total and phases', () => {
    const r = byName(rows(), 'rpinode01') as StatusRow;
    expect(r).toMatchObject({
      ip: '10.77.0.11',
      result: 'ok',
      root: 'current',
      overlay: 'tmpfs',
      report: 'reports/b8-27-eb-00-00-01.json',
      lastBoot: '2026-11-25T11:55:00.000Z',
      ageSeconds: 300,
      totalSeconds: 7.9,
      phases: 'early 0.0 network 2.5 master 1.3 root 4.1',
    });
    expect(r.notes).toEqual([]);
  });

  test('a behind node names both stamps', () => {
    expect(byName(rows(), 'rpinode02')?.root).toBe(`behind (have ${OLD.id}, master ${MASTER.id})`);
    expect(byName(rows(), 'rpinode02')?.ageSeconds).toBe(36000);
  });

  test('a listed node without a report: never booted, nothing else known', () => {
    expect(byName(rows(), 'rpinode03')).toMatchObject({
      result: 'never booted',
      root: 'unknown',
      lastBoot: null,
      report: null,
      ip: '10.77.0.13',
      totalSeconds: null,
    });
  });

  test('a fatal report: FATAL, reason and remedy in the notes, failed phase marked, root unknown', () => {
    const r = byName(rows(), 'rpinode04') as StatusRow;
    expect(r).toMatchObject({
      result: 'FATAL',
      root: 'unknown',
      overlay: null,
      phases: 'early 0.1 disk 30.0!',
      totalSeconds: 30.1,
    });
    expect(r.notes).toEqual([
      'fatal: no disk found (mmcblk0, sda)',
      'remedy: plug in the USB disk',
      '1 error in the report, first: disk: no disk found (mmcblk0, sda)',
    ]);
  });

  test('an ok boot with an alarm (writable layer left unused): ALARM, the alarm in the notes, counted apart', () => {
    const why = 'the writable layer /dev/mmcblk0p3 could not be repaired (e2fsck ran 7 times); it is left untouched';
    const rs = statusRows({
      nodes: NODES,
      reports: [file(report({ alarms: [why], errors: [`overlay: ALARM: ${why}`] }), 5)],
      masterStamp: renderStamp(MASTER),
      now: NOW,
    });
    const r = byName(rs, 'rpinode01') as StatusRow;
    expect(r.result).toBe('ALARM');
    expect(r.notes[0]).toBe(`ALARM: ${why}`);
    expect(renderStatusTable(rs, NOW)).toMatch(/1 ALARM/);
    expect(parseReport(JSON.stringify({ ...report(), alarms: [3] })).ok).toBe(false);
    expect(byName(rows(), 'rpinode01')?.result).toBe('ok');
  });

  test('a garbage file: unreadable report and why, never a throw', () => {
    const r = byName(rows(), 'rpinode05') as StatusRow;
    expect(r.result).toBe('unreadable report');
    expect(r.notes).toHaveLength(1);
    expect(r.notes[0]).toStartWith('unreadable report reports/b8-27-eb-00-00-05.json: not JSON');
    expect(r.lastBoot).toBe('2026-11-25T11:59:00.000Z');
  });

  test('an unknown MAC: its own IP, flagged, and no fixed lease when it got no host name', () => {
    const r = rows().at(-1) as StatusRow;
    expect(r).toMatchObject({ hostname: null, ip: '10.77.0.200', result: 'ok', root: 'current' });
    expect(r.notes).toEqual([
      'unknown MAC: not in nodes.list, so no fixed lease',
      'no fixed lease: DHCP gave no host name (and no hostname= was set)',
    ]);
  });

  test('differences between the report and nodes.list are notes; a reboot gives its reason', () => {
    const [r] = statusRows({
      nodes: [NODES[0] as NodeEntry],
      masterStamp: renderStamp(MASTER),
      now: NOW,
      reports: [
        file(report({ hostname: 'other', ip: '10.77.0.99', result: 'reboot', reason: 'new partition table' }), 1),
      ],
    });
    expect(r?.result).toBe('reboot');
    expect(r?.notes).toEqual([
      'reboot: new partition table',
      'booted as other, nodes.list says rpinode01',
      'booted with IP 10.77.0.99, nodes.list says 10.77.0.11',
    ]);
  });

  test('the master that served the boot is in the row; a failover is a note; a bad master or failover field is refused', () => {
    const one = (over: Partial<BootReport>) =>
      statusRows({
        nodes: [NODES[0] as NodeEntry],
        masterStamp: renderStamp(MASTER),
        now: NOW,
        reports: [file(report(over), 1)],
      })[0];
    expect(one({ master: '10.77.0.2' })).toMatchObject({ master: '10.77.0.2', notes: [] });
    const failed = one({ master: '10.77.0.1', failover: ['10.77.0.3: master unreachable: No route to host'] });
    expect([failed?.master, failed?.notes]).toEqual([
      '10.77.0.1',
      ['served by 10.77.0.1 after failing over from 10.77.0.3: master unreachable: No route to host'],
    ]);
    expect(one({}) && 'master' in (one({}) as StatusRow)).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), master: 7 })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), failover: 'x' })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), failover: ['a', 2] })).ok).toBe(false);
  });

  test('no master stamp or no rootAfter: root unknown; the newest of two reports for one MAC wins', () => {
    const rs = statusRows({
      nodes: [NODES[0] as NodeEntry],
      masterStamp: null,
      now: NOW,
      reports: [
        { ...file(report({ result: 'fatal', reason: 'old' }), 50), file: 'B8-27-EB-00-00-01.json' },
        file(report(), 5),
      ],
    });
    expect(rs).toHaveLength(1);
    expect(rs[0]).toMatchObject({ result: 'ok', root: 'unknown', ageSeconds: 300 });
    expect(rs[0]?.notes).toEqual(['1 older report file(s) for this MAC ignored: B8-27-EB-00-00-01.json']);
  });

  test("a report whose mtime is the node's 1970 clock says so (the push kept the node's time)", () => {
    const [r] = statusRows({
      nodes: [NODES[0] as NodeEntry],
      masterStamp: null,
      now: NOW,
      reports: [{ ...file(report(), 0), mtimeMs: 12_000 }],
    });
    expect(r?.notes).toEqual([
      "report file time is before 2000: it carries the node's clock (pushed with rsync -t or -a?), not its arrival time",
    ]);
  });

  test('wrong-schema and wrong-typed reports are unreadable with the reason; terminal escapes are neutralised', () => {
    expect(parseReport(JSON.stringify({ ...report(), schema: 2 }))).toEqual({
      ok: false,
      error: 'schema 2, this builder reads 1: update the builder or the agent so they match',
    });
    expect(parseReport('[]')).toEqual({ ok: false, error: 'not a JSON object' });
    expect(parseReport(JSON.stringify({ ...report(), result: 'great' })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), phases: [{ name: 'x', seconds: -1 }] })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), stamps: null })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), errors: [1] })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...report(), extraFieldFromANewerAgent: true })).ok).toBe(true);
    expect(parseReport(JSON.stringify({ ...report(), enrolKey: 'ssh-ed25519 AAAA; rm -rf /' })).ok).toBe(false);
    const [r] = statusRows({
      nodes: [],
      masterStamp: null,
      now: NOW,
      reports: [
        file(report({ hostname: 'evil\x1b[2J', hostnameFrom: 'cmdline', result: 'reboot', reason: 'x\x07' }), 1),
      ],
    });
    expect(r?.hostname).toBe('evil?[2J');
    expect(r?.notes).toContain('reboot: x?');
  });
});

describe('renderStatusTable', () => {
  test('a header and one aligned line per row, notes under it, a summary line', () => {
    const text = renderStatusTable(rows(), NOW, { id: MASTER.id, problem: null });
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^NODE +MAC +IP +LAST-BOOT +RESULT +ROOT +OVERLAY +TIME +PHASES$/);
    const table = lines.slice(0, 7);
    // every column starts at the same offset on every line: find each header's offset and check the cell under it
    const cols = ['MAC', 'IP', 'LAST-BOOT', 'RESULT', 'ROOT'].map((h) => (lines[0] as string).indexOf(h));
    const expectations: Array<[string, string]> = [
      ['rpinode01', 'ok'],
      ['rpinode02', 'ok'],
      ['rpinode03', 'never booted'],
      ['rpinode04', 'FATAL'],
      ['rpinode05', 'unreadable report'],
      ['?', 'ok'],
    ];
    expectations.forEach(([host, result], i) => {
      const l = table[i + 1] as string;
      expect(l.startsWith(`${host} `)).toBe(true);
      expect(l.slice(cols[3] as number)).toStartWith(`${result} `);
      for (const c of cols) expect(l[(c as number) - 1]).toBe(' '); // a space before each column: nothing overflowed into it
      expect(l.slice(cols[0] as number, (cols[0] as number) + 17)).toMatch(/^[0-9a-f:]{17}$/);
    });
    expect(table[1]).toContain('2026-11-25 11:55Z (5m ago)');
    expect(table[2]).toContain('(10h ago)');
    expect(text).toContain('\nnotes:\n  rpinode03: no report yet');
    expect(text).toContain('  rpinode04: fatal: no disk found (mmcblk0, sda)\n');
    expect(text).toContain('  dc:a6:32:00:00:99: unknown MAC: not in nodes.list, so no fixed lease\n');
    expect(lines.at(-2)).toBe(
      `6 nodes: 3 ok, 1 FATAL, 1 never booted, 1 unreadable report; 1 not in nodes.list; 1 behind the master's rootfs; master rootfs stamp ${MASTER.id}`,
    );
  });

  test("the brief's example summary, and a master without a stamp", () => {
    const rs = statusRows({
      nodes: NODES.slice(0, 3),
      reports: REPORTS.slice(0, 2),
      masterStamp: renderStamp(MASTER),
      now: NOW,
    });
    expect(renderStatusTable(rs, NOW, { id: MASTER.id, problem: null })).toEndWith(
      `\n3 nodes: 2 ok, 1 never booted; 1 behind the master's rootfs; master rootfs stamp ${MASTER.id}\n`,
    );
    expect(
      renderStatusTable([], NOW, { id: null, problem: 'no rootfs stamp: run `builder publish rootfs`' }),
    ).toEndWith('\n0 nodes: none listed and no reports; master: no rootfs stamp: run `builder publish rootfs`\n');
  });
});

describe('readStatus and the CLI', () => {
  /** A master root with nodes.list, reports/ (mtimes set) and a stamp, as builder stage and publish leave it. */
  function masterRoot(): string {
    const root = join(tmp, 'master');
    mkdirSync(join(root, 'reports'), { recursive: true });
    mkdirSync(join(root, 'stamps'), { recursive: true });
    writeFileSync(
      join(root, 'nodes.list'),
      `# header\n${NODES.map((x) => `${x.mac} ${x.hostname} ${x.ip}`).join('\n')}\n`,
    );
    for (const r of REPORTS) {
      writeFileSync(join(root, 'reports', r.file), r.text);
      utimesSync(join(root, 'reports', r.file), new Date(r.mtimeMs), new Date(r.mtimeMs));
    }
    writeFileSync(join(root, 'reports', '.b8-27-eb-00-00-03.json.Xy12ab'), '{'); // rsync's temp file: ignored
    writeFileSync(join(root, 'stamps/rootfs.stamp'), renderStamp(MASTER));
    return root;
  }

  test('readStatus reads the same rows as statusRows over the files', () => {
    const root = masterRoot();
    const s = readStatus({ masterRoot: root, stateDir: root }, NOW);
    expect(s.warnings).toEqual([]);
    expect(s.masterStamp).toEqual({ id: MASTER.id, problem: null });
    expect(s.rows.map((r) => [r.mac, r.result, r.root, r.ageSeconds])).toEqual(
      rows().map((r) => [r.mac, r.result, r.root, r.ageSeconds]),
    );
    // a fresh master: nothing yet, a warning, no throw
    const empty = readStatus({ masterRoot: join(tmp, 'nothing-here'), stateDir: join(tmp, 'nothing-here') }, NOW);
    expect(empty.rows).toEqual([]);
    expect(empty.warnings[0]).toContain('run `builder stage`');
    expect(empty.masterStamp.id).toBeNull();
  });

  test('`builder status --json` parses back to the rows and the master stamp; the table names every node', () => {
    const root = masterRoot();
    const run = (...args: string[]) =>
      spawnSync(
        process.execPath,
        [join(REPO, 'builder/cli.ts'), 'status', '--master-root', root, '--state-dir', root, ...args],
        {
          encoding: 'utf8',
        },
      );
    const j = run('--json');
    expect(j.status).toBe(0);
    const parsed = JSON.parse(j.stdout) as { masterStamp: { id: string }; rows: StatusRow[]; warnings: string[] };
    expect(parsed.masterStamp.id).toBe(MASTER.id);
    expect(parsed.rows.map((r) => [r.hostname, r.result])).toEqual(rows().map((r) => [r.hostname, r.result]));
    const t = run();
    expect(t.status).toBe(0);
    for (const x of NODES) expect(t.stdout).toContain(x.hostname);
    expect(t.stdout).toContain('FATAL');
  });
});

// Approval mode: a node held before repartitioning reports result 'waiting' and an approval block; the master's
// approved/<host> file says whether the operator already approved that exact table.
describe('approval mode in status', () => {
  const CUR =
    'label: dos\nunit: sectors\n\n/dev/mmcblk0p1 : start=8192, size=524288, type=c\n/dev/mmcblk0p2 : start=532480, size=8388608, type=83\n';
  const WANT = CUR.replace('size=8388608', 'size=16777216') + '/dev/mmcblk0p3 : start=16809984, type=83\n';
  const HASH = tableHash(WANT);
  const waiting = (over: Partial<BootReport> = {}) =>
    report({
      result: 'waiting',
      reason: 'the partition table differs and approval mode is on',
      overlay: null,
      stamps: { rootBefore: MASTER.id, rootAfter: null, masterRoot: MASTER.id },
      approval: { state: 'pending', tableSha256: HASH, current: CUR, wanted: WANT, meanwhile: 'waiting' },
      ...over,
    });

  test('parseReport takes waiting and an approval block, and refuses a malformed one', () => {
    expect(parseReport(JSON.stringify(waiting())).ok).toBe(true);
    expect(
      parseReport(
        JSON.stringify(
          waiting({
            approval: {
              state: 'approved',
              tableSha256: HASH,
              current: null,
              wanted: WANT,
              meanwhile: 'booting the current root',
            },
          }),
        ),
      ).ok,
    ).toBe(true);
    const bad: Array<[string, unknown]> = [
      ['state', 'maybe'],
      ['tableSha256', 'abc'],
      ['tableSha256', HASH.toUpperCase()],
      ['current', 5],
      ['wanted', null],
      ['meanwhile', 'sleeping'],
    ];
    for (const [k, v] of bad) {
      const r = parseReport(JSON.stringify({ ...waiting(), approval: { ...waiting().approval, [k]: v } }));
      expect([k, r.ok]).toEqual([k, false]);
      expect(!r.ok && r.error).toStartWith('approval is not {');
    }
    expect(parseReport(JSON.stringify({ ...waiting(), approval: null })).ok).toBe(false);
    expect(parseReport(JSON.stringify({ ...waiting(), approval: [] })).ok).toBe(false);
  });

  test('a waiting node: WAITING, the approve command, the differing lines only; counted in the summary', () => {
    const rs = statusRows({
      nodes: NODES.slice(0, 2),
      reports: [file(waiting(), 3), REPORTS[1] as ReturnType<typeof file>],
      masterStamp: renderStamp(MASTER),
      now: NOW,
    });
    const r = rs[0] as StatusRow;
    expect(r.result).toBe('WAITING');
    expect(r.approval).toEqual({
      state: 'pending',
      tableSha256: HASH,
      approved: false,
      meanwhile: 'waiting',
      diff: [
        '- /dev/mmcblk0p2 : start=532480, size=8388608, type=83',
        '+ /dev/mmcblk0p2 : start=532480, size=16777216, type=83',
        '+ /dev/mmcblk0p3 : start=16809984, type=83',
      ],
    });
    expect(r.notes).toEqual([
      'waiting: the partition table differs and approval mode is on',
      'table change waiting for approval: builder approve rpinode01',
    ]);
    expect(rs[1]?.approval).toBeUndefined();
    const text = renderStatusTable(rs, NOW, { id: MASTER.id, problem: null });
    expect(text).toContain(
      '  rpinode01: table change waiting for approval: builder approve rpinode01\n      - /dev/mmcblk0p2 : start=532480, size=8388608, type=83\n      + /dev/mmcblk0p2',
    );
    expect(text.split('\n').find((l) => l.startsWith('rpinode01 '))).toMatch(/ WAITING /);
    expect(text).toEndWith(
      `\n2 nodes: 1 ok, 1 WAITING; 1 behind the master's rootfs; 1 table change pending approval; master rootfs stamp ${MASTER.id}\n`,
    );
  });

  test('approved on the master for that table: "approved, applies at the next boot", no diff, not counted as pending', () => {
    const other = tableHash('another table\n');
    const pendingFor = (h: string) =>
      statusRows({
        nodes: NODES.slice(0, 1),
        reports: [file(waiting(), 3)],
        masterStamp: null,
        now: NOW,
        approvals: new Map([['rpinode01', h]]),
      })[0] as StatusRow;
    const ok = pendingFor(HASH);
    expect(ok.approval?.approved).toBe(true);
    expect(ok.notes).toContain('table change approved, applies at the next boot');
    const text = renderStatusTable([ok], NOW);
    expect(text).not.toContain('      - ');
    expect(text).toContain('1 approved, applying at the next boot');
    expect(text).not.toContain('pending approval');
    // an approval for another table (the master's table changed since) does not count
    const stale = pendingFor(other);
    expect(stale.approval?.approved).toBe(false);
    expect(stale.notes).toContain('table change waiting for approval: builder approve rpinode01');
  });

  test('a node booting its current root meanwhile stays ok with the pending note; an applied approval says so', () => {
    const [a] = statusRows({
      nodes: NODES.slice(0, 1),
      masterStamp: null,
      now: NOW,
      reports: [
        file(
          report({
            approval: {
              state: 'pending',
              tableSha256: HASH,
              current: CUR,
              wanted: WANT,
              meanwhile: 'booting the current root',
            },
          }),
          1,
        ),
      ],
    });
    expect(a?.result).toBe('ok');
    expect(a?.notes).toEqual(['table change waiting for approval: builder approve rpinode01']);
    const [b] = statusRows({
      nodes: NODES.slice(0, 1),
      masterStamp: null,
      now: NOW,
      reports: [
        file(
          report({
            approval: { state: 'approved', tableSha256: HASH, current: CUR, wanted: WANT, meanwhile: 'waiting' },
          }),
          1,
        ),
      ],
    });
    expect(b?.notes).toEqual(['approved table change applied this boot']);
    expect(b?.approval?.diff).toEqual([]);
  });

  test('tableDiff: only lines that differ, a blank disk, at most 8 lines with the rest counted', () => {
    expect(tableDiff(CUR, CUR)).toEqual([]);
    expect(tableDiff(null, 'label: dos\n\n/dev/sda1 : start=2048, type=c\n')).toEqual([
      '- (no partition table on the disk)',
      '+ label: dos',
      '+ /dev/sda1 : start=2048, type=c',
    ]);
    const many = Array.from({ length: 10 }, (_, i) => `/dev/sda${i + 1} : start=${i}`).join('\n');
    const d = tableDiff('', many);
    expect(d).toHaveLength(8);
    expect(d[6]).toBe('+ /dev/sda7 : start=6');
    expect(d[7]).toBe('… 3 more differing lines'); // 7 shown + 3 = the 10
    expect(tableDiff('x\x1b[2J', 'y')).toEqual(['- x?[2J', '+ y']); // a node's text never drives the terminal
  });

  test('readStatus and --json carry the approval block: mode, table hash, approvals', () => {
    const root = join(tmp, 'approval-master');
    mkdirSync(join(root, 'reports'), { recursive: true });
    mkdirSync(join(root, 'approved'), { recursive: true });
    writeFileSync(
      join(root, 'nodes.list'),
      `${NODES.slice(0, 1)
        .map((x) => `${x.mac} ${x.hostname} ${x.ip}`)
        .join('\n')}\n`,
    );
    writeFileSync(join(root, 'partitions.sfdisk'), WANT);
    writeFileSync(join(root, 'approval.required'), '# on\n');
    writeFileSync(join(root, 'approved/rpinode01'), `${HASH}\n`);
    writeFileSync(join(root, 'approved/rpinode02'), 'not a hash\n');
    writeFileSync(join(root, 'reports', reportName(waiting().mac)), JSON.stringify(waiting()));
    const s = readStatus({ masterRoot: root, stateDir: root }, NOW);
    expect(s.approval).toEqual({ required: true, tableSha256: HASH, approved: { rpinode01: HASH } });
    expect(s.warnings).toEqual([
      `${join(root, 'approved/rpinode02')} is not an approval (not a sha256 hex line): remove it, or run \`builder approve rpinode02\``,
    ]);
    expect(s.rows[0]?.approval?.approved).toBe(true);
    const j = spawnSync(
      process.execPath,
      [join(REPO, 'builder/cli.ts'), 'status', '--master-root', root, '--state-dir', root, '--json'],
      {
        encoding: 'utf8',
      },
    );
    expect(j.status).toBe(0);
    const parsed = JSON.parse(j.stdout) as { approval: unknown; rows: StatusRow[] };
    expect(parsed.approval).toEqual({ required: true, tableSha256: HASH, approved: { rpinode01: HASH } });
    expect(parsed.rows[0]?.result).toBe('WAITING');
    expect(parsed.rows[0]?.approval?.state).toBe('pending');
  });
});

// reports/ is written with a key anyone on the LAN can take from the initramfs: every file in it is hostile.
describe('hostile reports directory', () => {
  const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/; // any control character but the newline between lines
  const now = Date.now(); // the CLI runs on the real clock, so the files' times are relative to it
  const YEAR_2099 = Date.parse('2099-01-01T00:00:00Z');
  /** 99999999999999 s after 1970 (touch -d @99999999999999); set to what the file system keeps of it. */
  let farMs = 0;
  let roots = 0;

  function hostileRoot(): { root: string; marker: string } {
    const root = join(tmp, `hostile${roots++}`);
    const dir = join(root, 'reports');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(root, 'nodes.list'), `${NODES.map((x) => `${x.mac} ${x.hostname} ${x.ip}`).join('\n')}\n`);
    const put = (name: string | Buffer, text: string, mtime: number | Date) => {
      const f = typeof name === 'string' ? join(dir, name) : Buffer.concat([Buffer.from(`${dir}/`), name]);
      writeFileSync(f, text);
      utimesSync(f, mtime, mtime);
      return f;
    };
    // the victim's real, newest plausible report: it failed
    put(
      reportName('b8:27:eb:00:00:01'),
      JSON.stringify(report({ result: 'fatal', reason: 'no disk found' })),
      new Date(now - 600_000),
    );
    // forged "ok" reports for the victim with times from the future, under other names
    put('forged-2099.json', JSON.stringify(report()), new Date(YEAR_2099));
    const far = put('forged-far.json', JSON.stringify(report()), 99999999999999); // seconds: ext4 keeps 2446-05-10
    farMs = lstatSync(far).mtimeMs;
    // symlinks: a loop, a dangling one, to /dev/zero (rpinode02's name), to /proc/kmsg (blocks a root reader)
    symlinkSync('b8-27-eb-00-00-0b.json', join(dir, 'b8-27-eb-00-00-0a.json'));
    symlinkSync('b8-27-eb-00-00-0a.json', join(dir, 'b8-27-eb-00-00-0b.json'));
    symlinkSync(join(root, 'nowhere'), join(dir, 'b8-27-eb-00-00-0c.json'));
    symlinkSync('/dev/zero', join(dir, 'b8-27-eb-00-00-02.json'));
    symlinkSync('/proc/kmsg', join(dir, 'b8-27-eb-00-00-0d.json'));
    // a FIFO under rpinode03's name, and a directory
    expect(Bun.spawnSync(['mkfifo', join(dir, 'b8-27-eb-00-00-03.json')]).exitCode).toBe(0);
    mkdirSync(join(dir, 'b8-27-eb-00-00-0e.json'));
    // valid reports whose names carry a terminal escape, and a raw C1 CSI byte (not UTF-8)
    const minute = new Date(now - 60_000);
    const unlisted = (mac: string) =>
      JSON.stringify(report({ mac, hostname: null, hostnameFrom: null, ip: '10.77.0.201' }));
    put('\x1b[31mred.json', unlisted('dc:a6:32:00:00:31'), minute);
    put(Buffer.from([0x9b, ...Buffer.from('2J.json')]), unlisted('dc:a6:32:00:00:9b'), minute);
    // a sparse 1 GiB file under rpinode04's name
    const big = put(reportName('b8:27:eb:00:00:04'), '{', minute);
    truncateSync(big, 1 << 30);
    // a setuid shell script under rpinode05's name: read as text, never run
    const marker = join(root, 'setuid-ran');
    const suid = put(reportName('b8:27:eb:00:00:05'), `#!/bin/sh\ntouch ${marker}\n`, minute);
    chmodSync(suid, 0o4755);
    return { root, marker };
  }

  test('readStatus returns at once and never throws; forged future times do not mask the real report', () => {
    const { root, marker } = hostileRoot();
    expect(farMs).toBeGreaterThan(YEAR_2099); // the OS keeps at most 2446-05-10 of @99999999999999: still the future
    const t0 = performance.now();
    const s = readStatus({ masterRoot: root, stateDir: root }, now);
    expect(performance.now() - t0).toBeLessThan(20_000); // no FIFO opened, nothing huge read: no hang
    const row = (h: string | null) => s.rows.find((r) => r.hostname === h) as StatusRow;
    const victim = row('rpinode01');
    expect(victim.result).toBe('FATAL');
    expect(Math.abs((victim.lastBootMs ?? 0) - (now - 600_000))).toBeLessThan(1);
    expect(victim.notes).toContain('2 older report file(s) for this MAC ignored: forged-2099.json, forged-far.json');
    // the symlinks, the FIFO and the directory are skipped, each named, none read
    const warned = (name: string, what: string) =>
      expect(s.warnings).toContain(
        `${join(root, 'reports', name)} is ${what}, not a regular file: skipped, not read (a report is a regular file; remove it)`,
      );
    for (const n of ['0a', '0b', '0c', '02', '0d']) warned(`b8-27-eb-00-00-${n}.json`, 'a symbolic link');
    warned('b8-27-eb-00-00-03.json', 'a FIFO');
    warned('b8-27-eb-00-00-0e.json', 'a directory');
    expect(s.warnings).toHaveLength(7);
    expect(row('rpinode02').result).toBe('never booted');
    expect(row('rpinode03').result).toBe('never booted');
    // the 1 GiB file is refused unread
    expect(row('rpinode04').result).toBe('unreadable report');
    expect(row('rpinode04').notes).toEqual([
      `unreadable report reports/b8-27-eb-00-00-04.json: larger than 64 KiB (${1 << 30} bytes): refused unread, a boot report is a few kB`,
    ]);
    // the setuid script is just text that is not JSON
    expect(row('rpinode05').result).toBe('unreadable report');
    expect(row('rpinode05').notes[0]).toStartWith('unreadable report reports/b8-27-eb-00-00-05.json: not JSON');
    expect(existsSync(marker)).toBe(false);
    // the escaped names are read (they are valid reports) and shown with visible escapes
    const red = s.rows.find((r) => r.mac === 'dc:a6:32:00:00:31') as StatusRow;
    expect(red).toMatchObject({ result: 'ok', report: 'reports/\\x1b[31mred.json' });
    expect(red.notes).toContain('report file reports/\\x1b[31mred.json names MAC dc:a6:32:00:00:31');
    expect(s.rows.find((r) => r.mac === 'dc:a6:32:00:00:9b')?.report).toBe('reports/\\x9b2J.json');
    // nothing printed carries a raw control character: the table, the warnings, the JSON's strings
    const text = renderStatusTable(s.rows, now, s.masterStamp);
    for (const line of text.split('\n')) expect([line, CONTROL.test(line)]).toEqual([line, false]);
    expect(text).toContain('reports/\\x1b[31mred.json names MAC');
    for (const w of s.warnings) expect(CONTROL.test(w)).toBe(false);
    const json = JSON.stringify(s); // JSON escapes C0 as \u00xx but leaves C1 raw: neither may be left to escape
    expect(CONTROL.test(json)).toBe(false);
    expect(json).not.toMatch(/\\u00[01][0-9a-f]/i);
    expect(CONTROL.test(approvalList(s).text)).toBe(false);
  });

  test('`builder status` and `approve --list` on it: exit 0 in time, no raw control character on the terminal', () => {
    const { root } = hostileRoot();
    for (const args of [['status'], ['status', '--json'], ['approve', '--list']]) {
      const r = spawnSync(
        process.execPath,
        [join(REPO, 'builder/cli.ts'), ...args, '--master-root', root, '--state-dir', root],
        {
          encoding: 'utf8',
          timeout: 20_000,
        },
      );
      expect([args, r.status, r.signal]).toEqual([args, 0, null]);
      expect(CONTROL.test(r.stdout)).toBe(false);
      expect(CONTROL.test(r.stderr.replace(/\n/g, ''))).toBe(false);
      if (args[0] === 'status' && args.length === 1) {
        expect(r.stdout).toMatch(/^rpinode01 .* FATAL /m);
        expect(r.stderr).toContain('b8-27-eb-00-00-03.json is a FIFO, not a regular file: skipped');
      }
    }
  });

  test('an mtime Date cannot show (@99999999999999, NaN) or from the future: time unknown, ranked last, no throw', () => {
    const forged = file(report(), 0);
    for (const mtimeMs of [99999999999999 * 1000, NaN, Infinity, YEAR_2099]) {
      const [r] = statusRows({
        nodes: [NODES[0] as NodeEntry],
        masterStamp: null,
        now: NOW,
        reports: [{ ...forged, mtimeMs }],
      });
      expect(r).toMatchObject({ result: 'ok', lastBoot: null, lastBootMs: null, ageSeconds: null });
      expect(r?.notes).toHaveLength(1);
      expect(r?.notes[0]).toMatch(/^report file time is not plausible \(.*\): it carries no arrival time/);
      expect(renderStatusTable([r as StatusRow], NOW)).toContain(' time unknown ');
    }
    // a day of clock skew is still an arrival time; a report older but plausible beats a forged future one
    const [skew] = statusRows({
      nodes: [],
      masterStamp: null,
      now: NOW,
      reports: [{ ...forged, mtimeMs: NOW + 3_600_000 }],
    });
    expect(skew?.lastBootMs).toBe(NOW + 3_600_000);
    const [real] = statusRows({
      nodes: [NODES[0] as NodeEntry],
      masterStamp: null,
      now: NOW,
      reports: [
        { ...forged, file: 'zz-forged.json', mtimeMs: YEAR_2099 },
        { ...file(report({ result: 'fatal', reason: 'real' }), 30_000), file: 'aa-real.json' },
      ],
    });
    expect(real?.result).toBe('FATAL');
    expect(real?.notes).toContain('1 older report file(s) for this MAC ignored: zz-forged.json');
  });

  test('rows built elsewhere with control characters still print none', () => {
    const [r] = statusRows({
      nodes: [NODES[0] as NodeEntry],
      masterStamp: null,
      now: NOW,
      reports: [file(report(), 1)],
    });
    const evil = { ...(r as StatusRow), hostname: 'x\x1b[2J', root: 'y\x9b', notes: ['z\x07'] };
    const text = renderStatusTable([evil], NOW);
    expect(CONTROL.test(text)).toBe(false);
    expect(text).toContain('x?[2J');
    const list = approvalList({
      masterStamp: { id: null, problem: null },
      rows: [evil],
      approval: { required: true, tableSha256: null, approved: {} },
      mirrors: [],
      warnings: [],
    });
    expect(CONTROL.test(list.text)).toBe(false);
  });
});

// #19: the primary says which mirrors are behind, by stamp ids (never clocks), from the state `builder gather` brought
describe('mirrors in builder status', () => {
  const primary = { rootfs: 'r2', bootfs: 'b1' };
  test('a mirror serving the primary stamps is current; another publish is behind, named per template', () => {
    const cur = mirrorRow(
      '10.77.0.2',
      JSON.stringify({ stamps: { rootfs: 'r2', bootfs: 'b1' }, pulled: 'T' }),
      primary,
    );
    expect(cur.state).toBe('current');
    expect(cur.text).toBe('current: rootfs r2, bootfs b1 (pulled T)');
    const old = mirrorRow(
      '10.77.0.3',
      JSON.stringify({ stamps: { rootfs: 'r1', bootfs: 'b1' }, pulled: 'T' }),
      primary,
    );
    expect(old.state).toBe('behind');
    expect(old.text).toBe('behind: rootfs r1, the primary has r2 (pulled T)');
    // a template the mirror lacks entirely
    expect(mirrorRow('m', JSON.stringify({ stamps: { rootfs: 'r2' }, pulled: 'T' }), primary).text).toContain(
      'bootfs none, the primary has b1',
    );
  });
  test('a failed pull is said, with what it still serves; none gathered or garbage: unknown, with the remedy', () => {
    const f = mirrorRow(
      'm',
      JSON.stringify({ stamps: { rootfs: 'r1', bootfs: 'b1' }, pulled: 'T', error: 'rsync exit 12' }),
      primary,
    );
    expect([f.state, f.text]).toEqual([
      'behind',
      'behind: rootfs r1, the primary has r2 (pulled T); its last pull failed: rsync exit 12',
    ]);
    expect(mirrorRow('m', null, primary)).toMatchObject({
      state: 'unknown',
      text: expect.stringContaining('builder gather'),
    });
    expect(mirrorRow('m', '{"stamps": 3}', primary).state).toBe('unknown');
    expect(mirrorRow('m', 'not json', primary).state).toBe('unknown');
    // hostile text from a mirror does not drive the terminal
    const evil = mirrorRow('m', JSON.stringify({ stamps: { rootfs: 'x\x1b[2J' }, pulled: '\x07' }), primary);
    expect(/[\x00-\x1f]/.test(evil.text)).toBe(false);
  });
  test('the table lists the mirrors and counts the ones behind', () => {
    const rows = [
      mirrorRow('10.77.0.2', JSON.stringify({ stamps: primary, pulled: 'T' }), primary),
      mirrorRow('10.77.0.3', null, primary),
    ];
    const text = renderStatusTable([], NOW, { id: 'r2', problem: null }, rows);
    expect(text).toContain(
      'mirrors:\n  10.77.0.2: current: rootfs r2, bootfs b1 (pulled T)\n  10.77.0.3: no pull state',
    );
    expect(text).toContain('1 mirror behind or unknown');
    expect(renderStatusTable([], NOW, { id: 'r2', problem: null }, rows.slice(0, 1))).not.toContain(
      'behind or unknown',
    );
  });
});

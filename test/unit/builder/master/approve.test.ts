// Approval mode on the master (builder/approve.ts): approval files, their hash, the names they accept, the CLI.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reportName, type BootReport } from '../../../../agent/contract/report.ts';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import {
  APPROVAL_REQUIRED_TEXT,
  approvalState,
  approvalTargets,
  approve,
  ApproveError,
  readApprovals,
  setApprovalMode,
} from '../../../../builder/master/approve.ts';
import { approvalList, readStatus } from '../../../../builder/master/status.ts';
import { parseApproval, tableHash } from '../../../../agent/contract/approval.ts';
import type { NodeEntry } from '../../../../builder/master/nodelist.ts';

let tmp = '';
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'approve-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const TABLE =
  'label: dos\nunit: sectors\n\n/dev/mmcblk0p1 : start=8192, size=524288, type=c\n/dev/mmcblk0p2 : start=532480, size=16777216, type=83\n';
const TABLE2 = TABLE.replace('size=16777216', 'size=33554432');
const NODES = [
  'b8:27:eb:00:00:01 rpinode01 10.77.0.11',
  'b8:27:eb:00:00:02 rpinode02 10.77.0.12',
  'b8:27:eb:00:00:03 RpiNode03 10.77.0.13',
];

/** A master root as builder stage leaves it, with a partition table. */
function master(table: string | null = TABLE): string {
  const root = join(tmp, `master${n++}`);
  mkdirSync(root);
  writeFileSync(join(root, 'nodes.list'), `# MAC HOSTNAME IP\n${NODES.join('\n')}\n`);
  if (table !== null) writeFileSync(join(root, 'partitions.sfdisk'), table);
  return root;
}
/** sha256sum(1) of a file: an implementation other than the one under test. */
const sha256sum = (f: string) => spawnSync('sha256sum', [f], { encoding: 'utf8' }).stdout.split(' ')[0] as string;
const refused = (f: () => unknown): string[] => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApproveError);
    return (e as ApproveError).problems;
  }
  throw new Error('not refused');
};

describe('hashes and approval files', () => {
  test('tableHash is sha256 hex of the exact bytes', () => {
    expect(tableHash('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(tableHash(Buffer.from('abc'))).toBe(tableHash('abc'));
    // one byte more (a trailing newline) is another table
    expect(tableHash(`${TABLE}\n`)).not.toBe(tableHash(TABLE));
  });
  test('approvalState: this table, another table, none or garbage', () => {
    const h = tableHash(TABLE);
    expect(approvalState(`${h}\n`, h)).toBe('approved');
    expect(approvalState(`${h}`, h)).toBe('approved');
    expect(approvalState(`${tableHash(TABLE2)}\n`, h)).toBe('approved for another table');
    expect(approvalState(null, h)).toBe('not approved');
    expect(approvalState('yes\n', h)).toBe('not approved');
    expect(parseApproval(`${h.toUpperCase()}\n`)).toBeNull(); // lower-case hex only, as written
  });
});

describe('approve', () => {
  test('writes approved/<host> = sha256 of partitions.sfdisk + newline, 0644, atomically (no temp file left)', () => {
    const root = master();
    const r = approve({ masterRoot: root, names: ['rpinode01'] });
    expect(r).toMatchObject({ approved: ['rpinode01'], already: [], hash: sha256sum(join(root, 'partitions.sfdisk')) });
    expect(readFileSync(join(root, 'approved/rpinode01'), 'utf8')).toBe(
      `${sha256sum(join(root, 'partitions.sfdisk'))}\n`,
    );
    expect(statSync(join(root, 'approved/rpinode01')).mode & 0o777).toBe(0o644);
    expect(statSync(join(root, 'approved')).mode & 0o777).toBe(0o755);
    expect(readdirSync(join(root, 'approved'))).toEqual(['rpinode01']);
    // approval mode is off on this master: still written, with a warning saying how to turn it on
    expect(r.warnings.join('\n')).toContain('`builder stage --approval` turns it on');
    // again: nothing rewritten, said as such
    expect(approve({ masterRoot: root, names: ['rpinode01'] })).toMatchObject({ approved: [], already: ['rpinode01'] });
  });

  test('an approval is for one table: after a table change the old approval does not match; approving again does', () => {
    const root = master();
    approve({ masterRoot: root, names: ['rpinode02'] });
    const old = readFileSync(join(root, 'approved/rpinode02'), 'utf8');
    writeFileSync(join(root, 'partitions.sfdisk'), TABLE2);
    const now = tableHash(readFileSync(join(root, 'partitions.sfdisk')));
    expect(approvalState(old, now)).toBe('approved for another table');
    const r = approve({ masterRoot: root, names: ['rpinode02'] });
    expect(r.approved).toEqual(['rpinode02']);
    expect(approvalState(readFileSync(join(root, 'approved/rpinode02'), 'utf8'), now)).toBe('approved');
  });

  test('--all covers nodes.list, spelled as listed; names match case-insensitively and count once', () => {
    const root = master();
    const r = approve({ masterRoot: root, names: ['RPINODE01', 'rpinode03'], all: true });
    expect(r.approved).toEqual(['rpinode01', 'rpinode02', 'RpiNode03']);
    expect(readdirSync(join(root, 'approved')).sort()).toEqual(['RpiNode03', 'rpinode01', 'rpinode02']);
    expect(readApprovals(root).approvals).toEqual(
      new Map([
        ['rpinode01', r.hash],
        ['rpinode02', r.hash],
        ['rpinode03', r.hash],
      ]),
    );
  });

  test('unknown names are refused and nothing is written; --force takes a valid name, never a path', () => {
    const root = master();
    const p = refused(() => approve({ masterRoot: root, names: ['rpinode01', 'rpinode09'] }));
    expect(p).toEqual([
      'rpinode09 is not in nodes.list: check the spelling (`builder approve --list` shows the nodes), or use --force to approve a name the master does not list',
    ]);
    expect(existsSync(join(root, 'approved'))).toBe(false); // not even rpinode01: all names or none
    expect(approve({ masterRoot: root, names: ['rpinode09'], force: true }).approved).toEqual(['rpinode09']);
    for (const bad of ['../nodes.list', 'a/b', '.hidden']) {
      expect(refused(() => approve({ masterRoot: root, names: [bad], force: true }))[0]).toContain(
        'is not a host name',
      );
    }
    expect(readdirSync(join(root, 'approved'))).toEqual(['rpinode09']);
  });

  test('no table, or no names: refused with what to do', () => {
    expect(refused(() => approve({ masterRoot: master(null), names: ['rpinode01'] }))[0]).toMatch(
      /^no .*partitions\.sfdisk: there is no table to approve$/,
    );
    expect(refused(() => approve({ masterRoot: master(), names: [] }))[0]).toContain('or --all, or --list');
    expect(approvalTargets([], [], { all: true }).errors[0]).toContain('no nodes in nodes.list');
    const nodes: NodeEntry[] = [{ mac: 'b8:27:eb:00:00:01', hostname: 'a1', ip: '10.0.0.1', line: 1 }];
    expect(approvalTargets(nodes, ['A1', 'a1'])).toEqual({ hosts: ['a1'], errors: [] });
  });

  test('setApprovalMode: on writes the comment file, off removes it; unchanged calls report no change', () => {
    const root = master();
    expect(setApprovalMode(root, true)).toBe(true);
    expect(readFileSync(join(root, 'approval.required'), 'utf8')).toBe(APPROVAL_REQUIRED_TEXT);
    expect(APPROVAL_REQUIRED_TEXT).toStartWith('# ');
    expect(setApprovalMode(root, true)).toBe(false);
    expect(approve({ masterRoot: root, names: ['rpinode01'] }).warnings).toEqual([]); // on: no warning
    expect(setApprovalMode(root, false)).toBe(true);
    expect(existsSync(join(root, 'approval.required'))).toBe(false);
    expect(setApprovalMode(root, false)).toBe(false);
  });
});

describe('approvalList and the CLI', () => {
  const NOW = Date.now();
  /** A waiting report from rpinode01 (pending for `table`), an ok one from rpinode02. */
  function withReports(root: string, table: string): void {
    mkdirSync(join(root, 'reports'), { recursive: true });
    const base = {
      schema: 1,
      hostnameFrom: 'dhcp',
      agentVersion: '0.1.0',
      kernel: null,
      phases: [],
      bytesReceived: 0,
      overlay: null,
      errors: [],
      uptime: 9,
      stamps: { rootBefore: null, rootAfter: null, masterRoot: null },
    };
    const reports: BootReport[] = [
      {
        ...base,
        mac: 'b8:27:eb:00:00:01',
        hostname: 'rpinode01',
        ip: '10.77.0.11',
        result: 'waiting',
        reason: 'table change waits for approval',
        approval: {
          state: 'pending',
          tableSha256: tableHash(table),
          current: TABLE2,
          wanted: table,
          meanwhile: 'waiting',
        },
      } as BootReport,
      { ...base, mac: 'b8:27:eb:00:00:02', hostname: 'rpinode02', ip: '10.77.0.12', result: 'ok' } as BootReport,
    ];
    for (const r of reports) {
      const f = join(root, 'reports', reportName(r.mac));
      writeFileSync(f, JSON.stringify(r));
      utimesSync(f, new Date(NOW - 60_000), new Date(NOW - 60_000));
    }
  }

  test('lists the waiting node and where every node stands for the current table', () => {
    const root = master();
    withReports(root, TABLE);
    setApprovalMode(root, true);
    const before = approvalList(readStatus(root, NOW));
    expect(before.rows).toEqual([
      { node: 'rpinode01', report: 'pending', approval: 'not approved' },
      { node: 'rpinode02', report: '-', approval: 'not approved' },
      { node: 'RpiNode03', report: '-', approval: 'not approved' },
    ]);
    expect(before.text).toStartWith(`approval mode on; table ${tableHash(TABLE)}\n`);
    expect(before.text).toEndWith('\n1 waiting for approval: builder approve rpinode01\n');
    approve({ masterRoot: root, names: ['rpinode01'] });
    const after = approvalList(readStatus(root, NOW));
    expect(after.rows[0]).toEqual({ node: 'rpinode01', report: 'pending', approval: 'approved' });
    expect(after.text).toEndWith('\nnothing waits for approval\n');
    // the table changes again: the approval no longer covers it
    writeFileSync(join(root, 'partitions.sfdisk'), TABLE2);
    expect(approvalList(readStatus(root, NOW)).rows[0]?.approval).toBe('approved for another table');
  });

  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [join(REPO, 'builder/cli.ts'), 'approve', ...args], { encoding: 'utf8' });

  test('`builder approve` approves, prints the node and the hash; an unknown node exits 1 with the reason', () => {
    const root = master();
    const ok = cli('rpinode02', '--master-root', root);
    expect(ok.status).toBe(0);
    expect(ok.stderr).toContain('builder: approved rpinode02\n');
    expect(ok.stderr).toContain(`sha256 ${tableHash(TABLE)}`);
    expect(readFileSync(join(root, 'approved/rpinode02'), 'utf8')).toBe(`${tableHash(TABLE)}\n`);
    const bad = cli('nosuchnode', '--master-root', root);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('builder: error: nosuchnode is not in nodes.list');
    expect(existsSync(join(root, 'approved/nosuchnode'))).toBe(false);
    const all = cli('--all', '--master-root', root);
    expect(all.status).toBe(0);
    expect(all.stderr).toContain('builder: approved rpinode01, RpiNode03\n');
    expect(all.stderr).toContain('builder: already approved: rpinode02\n');
  });

  test('`builder approve --list` prints the list and approves nothing', () => {
    const root = master();
    withReports(root, TABLE);
    const l = cli('--list', '--master-root', root);
    expect(l.status).toBe(0);
    expect(l.stdout).toContain('1 waiting for approval: builder approve rpinode01');
    expect(existsSync(join(root, 'approved'))).toBe(false);
    expect(cli('--list', 'rpinode01', '--master-root', root).status).toBe(1);
  });
});

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
  symlinkSync,
  truncateSync,
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
  escapeName,
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
    const r = approve({ masterRoot: root, stateDir: root, names: ['rpinode01'] });
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
    expect(approve({ masterRoot: root, stateDir: root, names: ['rpinode01'] })).toMatchObject({
      approved: [],
      already: ['rpinode01'],
    });
  });

  test('an approval is for one table: after a table change the old approval does not match; approving again does', () => {
    const root = master();
    approve({ masterRoot: root, stateDir: root, names: ['rpinode02'] });
    const old = readFileSync(join(root, 'approved/rpinode02'), 'utf8');
    writeFileSync(join(root, 'partitions.sfdisk'), TABLE2);
    const now = tableHash(readFileSync(join(root, 'partitions.sfdisk')));
    expect(approvalState(old, now)).toBe('approved for another table');
    const r = approve({ masterRoot: root, stateDir: root, names: ['rpinode02'] });
    expect(r.approved).toEqual(['rpinode02']);
    expect(approvalState(readFileSync(join(root, 'approved/rpinode02'), 'utf8'), now)).toBe('approved');
  });

  test('--all covers nodes.list, spelled as listed; names match case-insensitively and count once', () => {
    const root = master();
    const r = approve({ masterRoot: root, stateDir: root, names: ['RPINODE01', 'rpinode03'], all: true });
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
    const p = refused(() => approve({ masterRoot: root, stateDir: root, names: ['rpinode01', 'rpinode09'] }));
    expect(p).toEqual([
      'rpinode09 is not in nodes.list: check the spelling (`builder approve --list` shows the nodes), or use --force to approve a name the master does not list',
    ]);
    expect(existsSync(join(root, 'approved'))).toBe(false); // not even rpinode01: all names or none
    expect(approve({ masterRoot: root, stateDir: root, names: ['rpinode09'], force: true }).approved).toEqual([
      'rpinode09',
    ]);
    for (const bad of ['../nodes.list', 'a/b', '.hidden']) {
      expect(refused(() => approve({ masterRoot: root, stateDir: root, names: [bad], force: true }))[0]).toContain(
        'is not a host name',
      );
    }
    expect(readdirSync(join(root, 'approved'))).toEqual(['rpinode09']);
  });

  test('no table, or no names: refused with what to do', () => {
    expect(
      refused(() => approve({ masterRoot: master(null), stateDir: master(null), names: ['rpinode01'] }))[0],
    ).toMatch(/^no .*partitions\.sfdisk: there is no table to approve$/);
    expect(refused(() => approve({ masterRoot: master(), stateDir: master(), names: [] }))[0]).toContain(
      'or --all, or --list',
    );
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
    expect(approve({ masterRoot: root, stateDir: root, names: ['rpinode01'] }).warnings).toEqual([]); // on: no warning
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
    const before = approvalList(readStatus({ masterRoot: root, stateDir: root }, NOW));
    expect(before.rows).toEqual([
      { node: 'rpinode01', report: 'pending', approval: 'not approved' },
      { node: 'rpinode02', report: '-', approval: 'not approved' },
      { node: 'RpiNode03', report: '-', approval: 'not approved' },
    ]);
    expect(before.text).toStartWith(`approval mode on; table ${tableHash(TABLE)}\n`);
    expect(before.text).toEndWith('\n1 waiting for approval: builder approve rpinode01\n');
    approve({ masterRoot: root, stateDir: root, names: ['rpinode01'] });
    const after = approvalList(readStatus({ masterRoot: root, stateDir: root }, NOW));
    expect(after.rows[0]).toEqual({ node: 'rpinode01', report: 'pending', approval: 'approved' });
    expect(after.text).toEndWith('\nnothing waits for approval\n');
    // the table changes again: the approval no longer covers it
    writeFileSync(join(root, 'partitions.sfdisk'), TABLE2);
    expect(approvalList(readStatus({ masterRoot: root, stateDir: root }, NOW)).rows[0]?.approval).toBe(
      'approved for another table',
    );
  });

  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [join(REPO, 'builder/cli.ts'), 'approve', ...args], { encoding: 'utf8' });

  test('`builder approve` approves, prints the node and the hash; an unknown node exits 1 with the reason', () => {
    const root = master();
    const ok = cli('rpinode02', '--master-root', root, '--state-dir', root);
    expect(ok.status).toBe(0);
    expect(ok.stderr).toContain('builder: approved rpinode02\n');
    expect(ok.stderr).toContain(`sha256 ${tableHash(TABLE)}`);
    expect(readFileSync(join(root, 'approved/rpinode02'), 'utf8')).toBe(`${tableHash(TABLE)}\n`);
    const bad = cli('nosuchnode', '--master-root', root, '--state-dir', root);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('builder: error: nosuchnode is not in nodes.list');
    expect(existsSync(join(root, 'approved/nosuchnode'))).toBe(false);
    const all = cli('--all', '--master-root', root, '--state-dir', root);
    expect(all.status).toBe(0);
    expect(all.stderr).toContain('builder: approved rpinode01, RpiNode03\n');
    expect(all.stderr).toContain('builder: already approved: rpinode02\n');
  });

  test('`builder approve --list` prints the list and approves nothing', () => {
    const root = master();
    withReports(root, TABLE);
    const l = cli('--list', '--master-root', root, '--state-dir', root);
    expect(l.status).toBe(0);
    expect(l.stdout).toContain('1 waiting for approval: builder approve rpinode01');
    expect(existsSync(join(root, 'approved'))).toBe(false);
    expect(cli('--list', 'rpinode01', '--master-root', root, '--state-dir', root).status).toBe(1);
  });
});

// approved/ is read with the same care as reports/: only regular files, bounded, names escaped, never a throw.
describe('readApprovals on a hostile approved/', () => {
  test('symlinks, a FIFO, a directory, a huge file and an escape-named file are refused; the real one counts', () => {
    const root = master();
    const dir = join(root, 'approved');
    mkdirSync(dir);
    const h = tableHash(TABLE);
    writeFileSync(join(dir, 'rpinode01'), `${h}\n`);
    // a symlink to a file holding a valid approval must not approve: only a regular file is an approval
    writeFileSync(join(root, 'elsewhere'), `${h}\n`);
    symlinkSync(join(root, 'elsewhere'), join(dir, 'rpinode02'));
    symlinkSync('/proc/kmsg', join(dir, 'kmsg'));
    symlinkSync('loop-b', join(dir, 'loop-a'));
    symlinkSync('loop-a', join(dir, 'loop-b'));
    expect(Bun.spawnSync(['mkfifo', join(dir, 'RpiNode03')]).exitCode).toBe(0);
    mkdirSync(join(dir, 'adir'));
    writeFileSync(join(dir, 'huge'), h);
    truncateSync(join(dir, 'huge'), 1 << 30);
    writeFileSync(join(dir, '\x1b[2Jevil'), `${h}\n`);
    const t0 = performance.now();
    const r = readApprovals(root);
    expect(performance.now() - t0).toBeLessThan(20_000); // the FIFO is not opened (that would hang)
    expect(r.approvals).toEqual(new Map([['rpinode01', h]]));
    const skip = (n: string, what: string) =>
      `${join(dir, n)} is ${what}, not a regular file: skipped, not read (an approval is a regular file)`;
    expect(r.warnings).toEqual([
      `${join(dir, '\\x1b[2Jevil')} is not an approval (its name is not a host name): remove it`,
      skip('RpiNode03', 'a FIFO'),
      skip('adir', 'a directory'),
      `${join(dir, 'huge')} is not an approval (${1 << 30} bytes): remove it`,
      skip('kmsg', 'a symbolic link'),
      skip('loop-a', 'a symbolic link'),
      skip('loop-b', 'a symbolic link'),
      skip('rpinode02', 'a symbolic link'),
    ]);
    for (const w of r.warnings) expect(/[\x00-\x1f\x7f-\x9f]/.test(w)).toBe(false);
    // `approve --list` over it: in time, exit 0, nothing raw on the terminal, rpinode02 not approved
    const l = spawnSync(
      process.execPath,
      [join(REPO, 'builder/cli.ts'), 'approve', '--list', '--master-root', root, '--state-dir', root],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    expect([l.status, l.signal]).toEqual([0, null]);
    expect(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(l.stdout + l.stderr)).toBe(false);
    expect(l.stdout).toMatch(/^rpinode02 +- +not approved$/m);
  });

  test('escapeName: control, C1 and bidi characters visible, backslash doubled, the rest as is', () => {
    expect(escapeName('\x1b[31mred\x00\x7f\x9b.json')).toBe('\\x1b[31mred\\x00\\x7f\\x9b.json');
    expect(escapeName('a\\x1b')).toBe('a\\\\x1b'); // a literal backslash-x never looks like an escape
    expect(escapeName('evil\u202egnp.json')).toBe('evil\\u{202e}gnp.json');
    expect(escapeName('rpinode01 é ü.json')).toBe('rpinode01 é ü.json');
  });
});

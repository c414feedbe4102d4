// `builder watch` on a real terminal (a tmux pane) and without one (a pipe), against a master tree whose reports
// and syslog the test changes while it runs. On the terminal the rows must update in place: the pane keeps one
// header, one line per node and the summary, and a node's line changes where it is. FLEETVIEW_CAPTURE=<dir> keeps
// the pane captures there.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import { bootEvents, COLD, masterTree, NODES, reportFor, syslogLines, WARM, writeReport } from './fleetfixture.ts';

const TMUX = '/usr/bin/tmux';
const BUN = join(REPO, 'node_modules/.bin/bun');
const CLI = join(REPO, 'builder/cli.ts');
let tmp = '';
let sock = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'fleetview-tmux-'));
  sock = join(tmp, 'tmux.sock');
});
afterAll(() => {
  if (existsSync(sock)) spawnSync(TMUX, ['-S', sock, 'kill-server']);
  rmSync(tmp, { recursive: true, force: true });
});

const tmux = (...a: string[]) => {
  const r = spawnSync(TMUX, ['-S', sock, ...a], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tmux ${a.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const capture = () => tmux('capture-pane', '-p', '-t', 'fv').replace(/\s+$/, '').split('\n');

async function until(what: string, f: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${capture().join('\n')}`);
    await Bun.sleep(100);
  }
}

const n1 = NODES[0] as (typeof NODES)[number];
const n2 = NODES[1] as (typeof NODES)[number];
const n3 = NODES[2] as (typeof NODES)[number];

describe('builder watch', () => {
  test('on a terminal the rows update in place', async () => {
    expect(existsSync(TMUX)).toBe(true);
    const root = join(tmp, 'tty');
    masterTree(root);
    const log = join(root, 'syslog.log');
    const cold = bootEvents(COLD);
    writeFileSync(log, syslogLines('node1', cold.slice(0, 7))); // node1 in 3/12 network
    writeReport(root, reportFor(n3, bootEvents(COLD, 'root')), Date.now() - 120_000);
    tmux(
      'new-session',
      '-d',
      '-s',
      'fv',
      '-x',
      '130',
      '-y',
      '20',
      `${BUN} ${CLI} watch --master-root ${root} --state-dir ${root} --syslog ${log} --interval 0.2; sleep 30`,
    );
    await until('the first frame', () => capture().some((l) => l.startsWith('node3')));
    const a = capture();
    expect(a).toHaveLength(5);
    expect(a[0]).toMatch(/^NODE +STATE +BOOT +PHASE +PROGRESS +LAST REPORT +MESSAGE$/);
    expect(a[1]).toMatch(/^node1 +booting +1 +3\/12 network /);
    expect(a[2]).toMatch(/^node2 +never booted +- +- .*no report yet/);
    expect(a[3]).toMatch(/^node3 +failed +- +8\/12 root .*FATAL 2m ago +fatal: root: rsync exited 12/);
    expect(a[4]).toMatch(/^3 nodes: 1 booting, 1 never booted, 1 failed — \d\d:\d\d:\d\dZ, every 0.2s/);

    // node1 reaches the root sync; node2 boots and reports
    appendFileSync(log, syslogLines('node1', cold.slice(7, 18)));
    const warm = bootEvents(WARM);
    appendFileSync(log, syslogLines('node2', warm));
    writeReport(root, reportFor(n2, warm));
    await until('node1 in the root phase', () => /^node1 +booting +1 +8\/12 root /.test(capture()[1] ?? ''));
    await until('node2 up', () => /^node2 +up +1 /.test(capture()[2] ?? ''));
    const b = capture();
    expect(b).toHaveLength(a.length);
    expect(b.filter((l) => l.startsWith('NODE')).length).toBe(1);
    for (const n of ['node1', 'node2', 'node3']) expect(b.filter((l) => l.startsWith(n)).length).toBe(1);
    expect(b[1]).toMatch(/^node1 +booting +1 +8\/12 root +#{6}\.{4} +64% +- +syncing: 14\.2 MB at 6\.85MB\/s \(71%\)$/);
    expect(b[2]).toMatch(
      /^node2 +up +1 +12\/12 handoff +#{10} 100% +ok 0s ago +boot report sent to 10\.77\.0\.1 \(ok, 12 phases\)$/,
    );
    expect(b[3]).toBe(a[3]);
    expect(b[4]).toMatch(/^3 nodes: 1 booting, 1 up, 1 failed/);

    // a node's hostile text is shown escaped and does not move the frame
    appendFileSync(log, '<30>1 - node1 clusterboot - - - 60.00s [8/12 root] x\x1b[2J\x1b[H owned\n');
    await until('the escaped line', () => (capture()[1] ?? '').includes('owned'));
    const c = capture();
    expect(c).toHaveLength(a.length);
    expect(c[1]).toContain('x\\x1b[2J\\x1b[H owned');

    const out = process.env.FLEETVIEW_CAPTURE;
    if (out) {
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, 'live-view-1.txt'), `${a.join('\n')}\n`);
      writeFileSync(join(out, 'live-view-2.txt'), `${b.join('\n')}\n`);
      writeFileSync(join(out, 'live-view-color.txt'), tmux('capture-pane', '-p', '-e', '-t', 'fv'));
    }
    tmux('send-keys', '-t', 'fv', 'C-c');
    // Ctrl-C ends the watch (the pane goes on to its `sleep`), leaving the last frame on the screen
    await until(
      'watch to end on Ctrl-C',
      () => tmux('display', '-p', '-t', 'fv', '#{pane_current_command}').trim() === 'sleep',
    );
    expect(capture().slice(0, 5)).toEqual(c);
  }, 60_000);

  test('without a terminal it prints a line when a row changes, and only then', async () => {
    const root = join(tmp, 'pipe');
    masterTree(root);
    const log = join(root, 'syslog.log');
    const cold = bootEvents(COLD);
    writeFileSync(log, syslogLines('node1', cold.slice(0, 7)));
    const p = spawn(
      BUN,
      [CLI, 'watch', '--master-root', root, '--state-dir', root, '--syslog', log, '--interval', '0.2'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let text = '';
    p.stdout.on('data', (d: Buffer) => {
      text += d.toString();
    });
    try {
      const wait = async (re: RegExp) => {
        const end = Date.now() + 20_000;
        while (!re.test(text)) {
          if (Date.now() > end) throw new Error(`no ${re} in:\n${text}`);
          await Bun.sleep(100);
        }
      };
      await wait(/^node3: /m);
      await Bun.sleep(700); // a few polls with nothing new: nothing printed
      const first = text.split('\n').filter(Boolean);
      expect(first).toEqual([
        'node1: booting [3/12 network] 25% done in 2.3s (last report: -)',
        'node2: never booted [-] no report yet: the node has not finished a boot since reports were set up (last report: -)',
        'node3: never booted [-] no report yet: the node has not finished a boot since reports were set up (last report: -)',
      ]);
      appendFileSync(log, syslogLines('node1', cold.slice(7, 18)));
      await wait(/^node1: booting \[8\/12 root\]/m);
      await Bun.sleep(700);
      const added = text.split('\n').filter(Boolean).slice(first.length);
      expect(added).toEqual(['node1: booting [8/12 root] 64% syncing: 14.2 MB at 6.85MB/s (71%) (last report: -)']);
      expect(text).not.toContain('\x1b');
    } finally {
      p.kill('SIGINT');
    }
    const code = await new Promise<number | null>((res) => p.on('exit', (c) => res(c)));
    expect(code).toBe(0);
  }, 60_000);

  test('--once draws one frame and exits', () => {
    const root = join(tmp, 'once');
    masterTree(root);
    writeReport(root, reportFor(n1, bootEvents(COLD)), Date.now() - 60_000);
    const r = spawnSync(BUN, [CLI, 'watch', '--master-root', root, '--state-dir', root, '--once'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean)).toEqual([
      'node1: up [12/12 handoff] 100% last boot ok in 47.6 s (its report) (last report: ok)',
      'node2: never booted [-] no report yet: the node has not finished a boot since reports were set up (last report: -)',
      'node3: never booted [-] no report yet: the node has not finished a boot since reports were set up (last report: -)',
    ]);
  });
});

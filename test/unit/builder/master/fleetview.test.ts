// The live fleet view's model and renderers (fleetview.ts), the status page (statushtml.ts), and the syslog
// follower (watch.ts), against reports and syslog lines made by the agent's own writers (test/unit/builder/ui/).
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PHASE_NAMES } from '../../../../agent/sequence.ts';
import {
  BOOT_PHASES,
  changedLines,
  fitWidth,
  fleetRows,
  foldSyslog,
  liveFromView,
  parseSyslogLine,
  redraw,
  renderFrame,
  type FleetRow,
  type NodeLive,
} from '../../../../builder/master/fleetview.ts';
import { readStatus } from '../../../../builder/master/status.ts';
import { html, renderStatusHtml } from '../../../../builder/master/statushtml.ts';
import { LogFollower, poll } from '../../../../builder/master/watch.ts';
import { bootEvents, COLD, masterTree, NODES, reportFor, syslogLines, WARM, writeReport } from '../ui/fleetfixture.ts';

let tmp = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'fleetview-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;
const n1 = NODES[0] as (typeof NODES)[number];
const n2 = NODES[1] as (typeof NODES)[number];
const n3 = NODES[2] as (typeof NODES)[number];

describe('syslog lines', () => {
  test("the agent's RFC 5424 line and a local syslogd's form parse; other programs' lines do not", () => {
    expect(
      parseSyslogLine('<30>1 - node1 clusterboot - - - 12.34s [8/12 root] syncing: 14.9 MB at 6.85MB/s (26%)'),
    ).toEqual({
      host: 'node1',
      uptime: 12.34,
      phase: 'root',
      n: 8,
      of: 12,
      text: 'syncing: 14.9 MB at 6.85MB/s (26%)',
    });
    expect(parseSyslogLine('Nov 25 12:00:00 node2 clusterboot: 3.10s [network] lease 10.77.0.12')).toMatchObject({
      host: 'node2',
      phase: 'network',
      n: null,
      text: 'lease 10.77.0.12',
    });
    expect(parseSyslogLine('Nov 25 12:00:00 master sshd[123]: Accepted publickey')).toBeNull();
    expect(parseSyslogLine('<30>1 - - clusterboot - - - 1.00s [early] start')).toBeNull(); // no host: no row
    expect(parseSyslogLine('<30>1 - node1 clusterboot - - - 1.00s [13/12 root] x')).toMatchObject({ n: null });
  });

  test("a boot's lines fold into its phase, percent, message and state; a new boot starts over", () => {
    const ev = bootEvents(COLD);
    const lines = syslogLines('node1', ev).split('\n');
    const upTo = (k: number) => foldSyslog(new Map(), lines.slice(0, k).join('\n')).get('node1') as NodeLive;
    const at = (pred: (l: string) => boolean) => lines.findIndex(pred) + 1;
    const sync = upTo(at((l) => l.includes('(26%)')));
    expect([sync.phase, sync.n, sync.of, sync.percent, sync.state]).toEqual(['root', 8, 12, 26, 'booting']);
    expect(sync.message).toBe('syncing: 5.2 MB at 6.85MB/s (26%)');
    const done = upTo(lines.length);
    expect([done.phase, done.n, done.state, done.boots]).toEqual(['handoff', 12, 'up', 1]);
    // the same node boots again: phase 1, state booting, boot 2
    const again = foldSyslog(new Map([['node1', done]]), syslogLines('node1', bootEvents(WARM).slice(0, 3)));
    expect(again.get('node1')).toMatchObject({ boots: 2, phase: 'early', n: 1, state: 'booting' });
    // fatal and reboot lines set their states
    const fatal = foldSyslog(new Map(), syslogLines('node3', bootEvents(COLD, 'root'))).get('node3');
    expect([fatal?.state, fatal?.phase]).toEqual(['failed', 'root']);
    const first = syslogLines('node2', bootEvents(COLD).slice(0, 12));
    const rb = foldSyslog(
      new Map(),
      `${first}<30>1 - node2 clusterboot - - - 9.00s [6/12 partitions] rebooting: new table\n`,
    );
    expect(rb.get('node2')).toMatchObject({ state: 'rebooting', boots: 1, phase: 'partitions', n: 6 });
    // the cold start's second boot: the agent's first line and `[1/12 early] start` are one boot, not two
    const second = foldSyslog(rb, syslogLines('node2', bootEvents(COLD))).get('node2');
    expect([second?.boots, second?.state, second?.n]).toEqual([2, 'up', 12]);
    // its first line lost: the first phase starting again is a new boot too
    const lost = foldSyslog(rb, syslogLines('node2', bootEvents(COLD).slice(1, 3))).get('node2');
    expect([lost?.boots, lost?.n]).toEqual([2, 1]);
  });
});

describe('rows from reports and syslog', () => {
  test('syslog rows win, report-only rows show the last boot, unknown syslog hosts are added', () => {
    const root = join(tmp, 'rows');
    masterTree(root);
    writeReport(root, reportFor(n1, bootEvents(COLD)), Date.now() - 300_000);
    writeReport(root, reportFor(n3, bootEvents(COLD, 'root')), Date.now() - 60_000);
    const live = foldSyslog(
      new Map(),
      syslogLines('node2', bootEvents(WARM).slice(0, 18)) + syslogLines('stray', bootEvents(WARM).slice(0, 2)),
    );
    const rows = fleetRows(readStatus({ masterRoot: root, stateDir: root }).rows, live);
    const by = (n: string) => rows.find((r) => r.node === n) as FleetRow;
    expect(rows.map((r) => [r.node, r.state, r.phase, r.n])).toEqual([
      ['node1', 'up', 'handoff', 12],
      ['node2', 'booting', 'root', 8],
      ['node3', 'failed', 'root', 8],
      ['stray', 'booting', 'early', 1],
    ]);
    expect(by('node1').message).toBe('last boot ok in 47.6 s (its report)');
    expect(by('node1').progress).toBe(1);
    expect(by('node2').progress).toBeCloseTo((7 + 0.71) / 12, 5);
    expect(by('node3').message).toBe('fatal: root: rsync exited 12');
    expect(by('node3').last).toBe('FATAL');
    expect(by('stray').last).toBe('not in nodes.list');
  });
});

describe("the virtual cluster's console view", () => {
  test('a NodeView becomes the live state the rows are made from', () => {
    const v = liveFromView({
      hostname: 'node2',
      boots: 2,
      phase: 'root',
      step: '8/12',
      detail: 'syncing: 14.9 MB at 6.85MB/s (26%)',
      state: 'booting',
    });
    expect(v).toMatchObject({ host: 'node2', boots: 2, phase: 'root', n: 8, of: 12, percent: 26, state: 'booting' });
    const off = liveFromView({ hostname: 'node1', boots: 0, phase: '-', step: '', detail: 'off', state: 'off' });
    expect([off.phase, off.n, off.percent, off.state]).toEqual([null, null, null, 'off']);
    const rows = fleetRows([], new Map([['node2', v]]));
    expect(rows[0]?.progress).toBeCloseTo((7 + 0.26) / 12, 5);
  });
});

describe('terminal frame and line mode', () => {
  const row = (over: Partial<FleetRow> = {}): FleetRow => ({
    node: 'node1',
    state: 'booting',
    boots: 2,
    phase: 'root',
    n: 8,
    of: 12,
    progress: 0.6,
    message: 'syncing: 14.9 MB at 6.85MB/s (26%)',
    last: 'ok',
    lastAgeSeconds: 300,
    ...over,
  });

  test('one line per node between a header and a summary, none wider than the terminal', () => {
    const rows = [row(), row({ node: 'node2', message: 'x'.repeat(500) }), row({ node: 'node3', state: 'up' })];
    for (const columns of [40, 80, 200]) {
      const f = renderFrame(rows, { columns });
      expect(f.length).toBe(rows.length + 2);
      for (const l of f) expect(Bun.stringWidth(l)).toBeLessThanOrEqual(columns - 1);
    }
    const f = renderFrame(rows, { columns: 200 });
    expect(f[0]).toMatch(/^NODE +STATE +BOOT +PHASE +PROGRESS +LAST REPORT +MESSAGE$/);
    expect(f[1]).toMatch(/^node1 +booting +2 +8\/12 root +######\.\.\.\. +60% +ok 5m ago +syncing: 14\.9 MB/);
    expect(f[2]).toMatch(/x…$/);
    expect(f[4]).toBe('3 nodes: 2 booting, 1 up');
    // colour goes on the state only, and only with color
    const c = renderFrame(rows, { columns: 200, color: true });
    expect(c[3]).toContain('\x1b[32mup\x1b[0m');
    expect(c[0]).not.toContain('\x1b');
  });

  test('wide characters count two columns', () => {
    expect(fitWidth('漢字漢字漢字', 7)).toBe('漢字漢…');
    expect(Bun.stringWidth(fitWidth('漢字漢字漢字', 7))).toBeLessThanOrEqual(7);
    expect(fitWidth('short', 7)).toBe('short');
  });

  test("a node's text never drives the terminal: control characters are shown escaped", () => {
    const evil = row({ node: 'n\x1b[2J', message: 'a\x1b]0;owned\x07b\u202e', phase: 'ro\x1bot' });
    const f = renderFrame([evil], { columns: 300 });
    for (const l of f) expect(CONTROL.test(l)).toBe(false);
    expect(f[1]).toContain('n\\x1b[2J');
    expect(f[1]).toContain('a\\x1b]0;owned\\x07b\\u{202e}');
    const lines = changedLines([evil], new Map()).lines;
    for (const l of lines) expect(CONTROL.test(l)).toBe(false);
  });

  test('redraw moves up over the last frame and rewrites each line; a shorter frame clears the rest', () => {
    const f = ['a', 'b', 'c'];
    expect(redraw(f, 0)).toBe('\r\x1b[2Ka\n\r\x1b[2Kb\n\r\x1b[2Kc\n');
    expect(redraw(f, 3)).toBe('\x1b[3A\r\x1b[2Ka\n\r\x1b[2Kb\n\r\x1b[2Kc\n');
    expect(redraw(['a'], 3)).toBe('\x1b[3A\r\x1b[2Ka\n\x1b[J');
  });

  test('line mode prints a row only when it changed, and the report age alone is no change', () => {
    const a = changedLines([row(), row({ node: 'node2' })], new Map());
    expect(a.lines).toEqual([
      'node1: booting [8/12 root] 60% syncing: 14.9 MB at 6.85MB/s (26%) (last report: ok)',
      'node2: booting [8/12 root] 60% syncing: 14.9 MB at 6.85MB/s (26%) (last report: ok)',
    ]);
    const b = changedLines([row({ lastAgeSeconds: 999 }), row({ node: 'node2', phase: 'firststage', n: 9 })], a.seen);
    expect(b.lines).toEqual([
      'node2: booting [9/12 firststage] 60% syncing: 14.9 MB at 6.85MB/s (26%) (last report: ok)',
    ]);
    expect(changedLines([row(), row({ node: 'node2', phase: 'firststage', n: 9 })], b.seen).lines).toEqual([]);
  });

  test("BOOT_PHASES is the agent's sequence", () => {
    expect([...BOOT_PHASES]).toEqual([...PHASE_NAMES]);
  });
});

describe('status page', () => {
  test('the fleet table and one timeline per node, segment widths in proportion to the phases', () => {
    const root = join(tmp, 'html');
    masterTree(root);
    const now = Date.now();
    writeReport(root, reportFor(n1, bootEvents(COLD)), now - 300_000);
    writeReport(root, reportFor(n2, bootEvents(WARM)), now - 30_000);
    const page = renderStatusHtml(readStatus({ masterRoot: root, stateDir: root }, now), now);
    expect(page).toContain(`default-src 'none'`);
    expect(page).not.toMatch(/<script|https?:\/\/|<link|@import|url\(/);
    expect([...page.matchAll(/<tr data-node="([^"]+)">/g)].map((m) => m[1])).toEqual(['node1', 'node2', 'node3']);
    const segs = (node: string) =>
      [
        ...(page
          .split(`<div class="tl-row" data-node="${node}">`)[1]
          ?.split('</div></div>')[0]
          ?.matchAll(/data-phase="([^"]+)" data-seconds="([\d.]+)" style="width:([\d.]+)%/g) ?? []),
      ].map((m) => ({ phase: m[1], seconds: Number(m[2]), width: Number(m[3]) }));
    const cold = segs('node1');
    expect(cold.map((s) => s.phase)).toEqual([...BOOT_PHASES]);
    const total = COLD.reduce((a, b) => a + b, 0);
    // the longest boot fills the track; every width is its phase's share of it
    for (const [i, s] of cold.entries()) expect(s.width).toBeCloseTo(((COLD[i] as number) / total) * 100, 2);
    const warm = segs('node2');
    expect(warm.reduce((a, s) => a + s.width, 0)).toBeCloseTo((WARM.reduce((a, b) => a + b, 0) / total) * 100, 1);
    expect(page).toMatch(/data-node="node3">.*no phases reported/);
  });

  test('markup and control characters from a report are escaped', () => {
    expect(html('<img src=x onerror=alert(1)> & "q" \'s\' \x1b')).toBe(
      '&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot; &#39;s&#39; \\x1b',
    );
    const root = join(tmp, 'evil');
    masterTree(root);
    const r = reportFor(n1, bootEvents(WARM));
    r.phases[0] = { name: '<b>x</b>"', seconds: 1 };
    r.overlay = '<script>alert(1)</script>';
    r.result = 'fatal';
    r.reason = '</td><h1>owned</h1>';
    writeReport(root, r);
    const page = renderStatusHtml(readStatus({ masterRoot: root, stateDir: root }), Date.now());
    expect(page).not.toContain('<script>');
    expect(page).not.toContain('<h1>owned');
    expect(page).not.toContain('<b>x');
    expect(page).toContain('&lt;script&gt;');
    expect(page).toContain('data-phase="&lt;b&gt;x&lt;/b&gt;&quot;"');
  });

  // #19: the page lists the gathered mirrors as status does, escaped like everything a mirror sends
  test('mirrors: a section with each one and its state; none gathered, no section', () => {
    const root = join(tmp, 'mirrored');
    masterTree(root);
    expect(renderStatusHtml(readStatus({ masterRoot: root, stateDir: root }), Date.now())).not.toContain('Mirrors');
    mkdirSync(join(root, 'mirrors/10.77.0.2/reports'), { recursive: true });
    writeFileSync(
      join(root, 'mirrors/10.77.0.2/reports/mirror.state'),
      JSON.stringify({ stamps: { rootfs: '<b>old</b>' }, pulled: 'T' }),
    );
    const page = renderStatusHtml(readStatus({ masterRoot: root, stateDir: root }), Date.now());
    expect(page).toContain('<h2>Mirrors</h2>');
    expect(page).toMatch(
      /<li class="mirror-behind">10\.77\.0\.2: behind: rootfs &lt;b&gt;old&lt;\/b&gt;, the primary has /,
    );
    expect(page).not.toContain('<b>old');
  });
});

describe('syslog follower and poll', () => {
  test('only whole new lines, a partial line waits, a truncated file starts over, a missing one is a warning', () => {
    const f = join(tmp, 'syslog.log');
    const fo = new LogFollower(f);
    expect(fo.read()).toBe('');
    expect(fo.problem).toMatch(/cannot read .*ENOENT|no such file/i);
    writeFileSync(f, 'one\ntw');
    expect(fo.read()).toBe('one\n');
    expect(fo.problem).toBeNull();
    appendFileSync(f, 'o\nthree\n');
    expect(fo.read()).toBe('two\nthree\n');
    expect(fo.read()).toBe('');
    writeFileSync(f, 'new\n');
    expect(fo.read()).toBe('new\n');
  });

  test('poll folds the new syslog lines into the rows of the master tree', () => {
    const root = join(tmp, 'poll');
    masterTree(root);
    const f = join(root, 'syslog.log');
    writeFileSync(f, syslogLines('node1', bootEvents(COLD).slice(0, 3)));
    const fo = new LogFollower(f);
    const a = poll({ masterRoot: root, stateDir: root }, fo, new Map());
    expect(a.rows.find((r) => r.node === 'node1')).toMatchObject({ phase: 'early', n: 1 });
    appendFileSync(f, syslogLines('node1', bootEvents(COLD).slice(3, 18)));
    const b = poll({ masterRoot: root, stateDir: root }, fo, a.live);
    expect(b.rows.find((r) => r.node === 'node1')).toMatchObject({ phase: 'root', n: 8, state: 'booting' });
    expect(b.rows.length).toBe(3);
  });
});

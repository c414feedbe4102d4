// The mirror model (bench/mirrormodel.ts): a mass cold re-image's wall time from bytes per node, fleet size,
// mirrors, links, SSH ceilings, sync slots and node disks. Its laws, its arithmetic on cases worked by hand, and
// its refusal of nonsense.
import { describe, expect, test } from 'bun:test';
import {
  checkInput,
  estimate,
  mirrorChoices,
  modelRows,
  renderModelTable,
  serveTime,
  type ModelInput,
  type ServerSpec,
} from '../../../bench/mirrormodel.ts';

const GBIT = 1e9;
const MB = 1e6;
const server = (linkGbit: number, sshBytesPerS = Infinity, slots = 8): ServerSpec => ({
  linkBitsPerS: linkGbit * GBIT,
  sshBytesPerS,
  slots,
});
const input = (o: Partial<ModelInput> = {}): ModelInput => ({
  bytesPerNode: 300 * MB,
  nodes: 100,
  mirrors: 0,
  primary: server(1),
  nodeBytesPerS: Infinity,
  ...o,
});

describe('the arithmetic', () => {
  test('100 nodes x 300 MB through one 1 Gbit/s server take at least 30e9 * 8 / 1e9 = 240 s, and no more when nothing else limits', () => {
    const floor = (100 * 300 * MB * 8) / GBIT;
    expect(floor).toBe(240);
    for (const slots of [0, 1, 8, 13, 100]) {
      const r = estimate(input({ primary: server(1, Infinity, slots) }));
      expect(r.totalSeconds).toBeGreaterThanOrEqual(floor - 1e-9);
      expect(r.totalSeconds).toBeCloseTo(floor, 6);
      expect([r.pullSeconds, r.tftpSeconds]).toEqual([0, 0]);
      expect(r.limit).toBe('link');
    }
    // any ceiling only adds to it
    for (const o of [
      { primary: server(1, 50 * MB) },
      { nodeBytesPerS: 10 * MB },
      { primary: server(1, 100 * MB, 4), nodeBytesPerS: 20 * MB },
    ])
      expect(estimate(input(o)).totalSeconds).toBeGreaterThan(floor);
  });

  test("a server's rate is min(link, SSH ceiling): a Pi 4 master at 30 MB/s on a 1 Gbit/s link", () => {
    const r = estimate(input({ nodes: 10, bytesPerNode: 30 * MB, primary: server(1, 30 * MB) }));
    expect(r.syncSeconds).toBeCloseTo(10, 9); // 300 MB at 30 MB/s
    expect(r.limit).toBe('ssh');
    const fast = estimate(input({ nodes: 10, bytesPerNode: 30 * MB, primary: server(10, 300 * MB) }));
    expect(fast.syncSeconds).toBeCloseTo(1, 9);
  });

  test('slots queue: 16 nodes on 8 slots sync in two waves; unlimited slots in one; one slot in 16', () => {
    const spec = { linkBitsPerS: 8 * GBIT, sshBytesPerS: Infinity }; // 1 GB/s: room for 33 nodes at 30 MB/s
    const at = (slots: number) => serveTime({ ...spec, slots }, 16, 300 * MB, 30 * MB);
    expect(at(8)).toMatchObject({ active: 8, waves: 2, nodeBytesPerS: 30 * MB, limit: 'node disk' });
    expect(at(8).seconds).toBeCloseTo(20, 9); // 2 waves x 300 MB / 30 MB/s
    expect(at(0)).toMatchObject({ active: 16, waves: 1 });
    expect(at(0).seconds).toBeCloseTo(10, 9);
    expect(at(1)).toMatchObject({ active: 1, waves: 16 });
    expect(at(1).seconds).toBeCloseTo(160, 9);
    // a partial last wave shares the server among fewer nodes: 10 nodes, 8 slots, link-bound
    const partial = serveTime({ linkBitsPerS: GBIT, sshBytesPerS: Infinity, slots: 8 }, 10, 125 * MB, Infinity);
    expect(partial.waves).toBe(2);
    expect(partial.seconds).toBeCloseTo(10, 9); // 8 then 2, the link always full: 10 x 125 MB at 125 MB/s
    // a short last wave leaves its server part idle: 20 nodes on 9 slots (9, 9, 2) take longer than on 8 (8, 8, 4)
    const link = { linkBitsPerS: GBIT, sshBytesPerS: Infinity };
    const w8 = serveTime({ ...link, slots: 8 }, 20, 300 * MB, 30 * MB);
    const w9 = serveTime({ ...link, slots: 9 }, 20, 300 * MB, 30 * MB);
    expect(w8.seconds).toBeCloseTo(2 * ((8 * 300) / 125) + 300 / 30, 9); // 48.4 s: the 4 of the last wave at their disks' 30 MB/s
    expect(w9.seconds).toBeCloseTo(2 * ((9 * 300) / 125) + 300 / 30, 9); // 53.2 s
    // the slots bite when the nodes could take more than the server gives them
    expect(estimate(input({ nodes: 16, nodeBytesPerS: 30 * MB, primary: server(8, Infinity, 8) })).syncSeconds).toBe(
      at(8).seconds,
    );
  });

  test('a node ceiling bounds the per-node rate: one node on a 10 Gbit/s server still writes at its SD card', () => {
    const r = estimate(input({ nodes: 1, primary: server(10, 1000 * MB), nodeBytesPerS: 30 * MB }));
    expect(r.servers[0]?.nodeBytesPerS).toBe(30 * MB);
    expect(r.syncSeconds).toBeCloseTo(10, 9);
    expect(r.limit).toBe('node disk');
    for (const nodes of [1, 3, 8, 9, 100, 500])
      for (const mirrors of [0, 1, 2, 5, 25])
        for (const ceiling of [5 * MB, 30 * MB, 1000 * MB]) {
          const x = estimate(
            input({ nodes, mirrors, nodeBytesPerS: ceiling, primary: server(10, 300 * MB), mirrorsCurrent: true }),
          );
          for (const s of x.servers) expect(s.nodeBytesPerS).toBeLessThanOrEqual(ceiling);
          // and no node finishes faster than its own disk allows
          expect(x.syncSeconds).toBeGreaterThanOrEqual((300 * MB) / ceiling - 1e-9);
        }
  });

  test("the mirrors' pull: one root each, all at once through the primary's rate, none faster than its own link", () => {
    const pull = (o: Partial<ModelInput>) => estimate(input({ bytesPerNode: 250 * MB, ...o })).pullSeconds;
    expect(pull({ mirrors: 0 })).toBe(0);
    expect(pull({ mirrors: 1 })).toBeCloseTo(2, 9); // 250 MB at 125 MB/s
    expect(pull({ mirrors: 5 })).toBeCloseTo(10, 9);
    expect(pull({ mirrors: 5, mirrorPullBytes: 100 * MB })).toBeCloseTo(4, 9);
    expect(pull({ mirrors: 5, primary: server(1, 25 * MB) })).toBeCloseTo(50, 9); // the primary's SSH ceiling
    expect(pull({ mirrors: 1, primary: server(10), mirror: server(0.1) })).toBeCloseTo(20, 9); // 100 Mbit/s mirror
    expect(pull({ mirrors: 5, mirrorsCurrent: true })).toBe(0);
    const r = estimate(input({ mirrors: 2 }));
    expect(r.totalSeconds).toBeCloseTo(r.pullSeconds + r.syncSeconds, 9);
  });

  test('TFTP comes from the primary for every node, mirrors or not, and no node beats its own U-Boot', () => {
    const tftp = (o: Partial<ModelInput>) =>
      estimate(input({ tftpBytesPerNode: 143 * MB, tftpNodeBytesPerS: 1.55 * 2 ** 20, ...o })).tftpSeconds;
    expect(tftp({ mirrors: 0 })).toBeCloseTo((100 * 143) / 125, 6); // 114.4 s through 1 Gbit/s
    expect(tftp({ mirrors: 5 })).toBe(tftp({ mirrors: 0 }));
    expect(tftp({ nodes: 2, primary: server(10) })).toBeCloseTo((143 * MB) / (1.55 * 2 ** 20), 6);
    expect(estimate(input()).tftpSeconds).toBe(0);
  });

  test('with --tftp-from-mirrors each mirror TFTPs its own share, through its own link; never slower', () => {
    const t = (o: Partial<ModelInput>) =>
      estimate(input({ tftpBytesPerNode: 143 * MB, tftpNodeBytesPerS: 1.55 * 2 ** 20, ...o }));
    const five = t({ mirrors: 5, tftpFromMirrors: true });
    // 20 nodes a mirror through 1 Gbit/s: 22.9 s, but no U-Boot TFTPs 143 MB faster than 1.55 MiB/s: 88 s
    expect(five.tftpSeconds).toBeCloseTo((143 * MB) / (1.55 * 2 ** 20), 6);
    expect(t({ mirrors: 5, tftpFromMirrors: true, tftpNodeBytesPerS: Infinity }).tftpSeconds).toBeCloseTo(
      (20 * 143) / 125,
      6,
    );
    expect(t({ mirrors: 5, tftpNodeBytesPerS: Infinity }).tftpSeconds).toBeCloseTo((100 * 143) / 125, 6);
    expect(five.primaryBytes).toBe(5 * 300 * MB); // the pulls only
    expect(t({ mirrors: 5 }).primaryBytes).toBe(5 * 300 * MB + 100 * 143 * MB);
    // no mirrors: the flag changes nothing
    const { input: _a, ...flagged } = t({ tftpFromMirrors: true });
    const { input: _b, ...plain } = t({});
    expect(flagged).toEqual(plain);
    // a mirror's own U-Boot floor still holds
    expect(t({ nodes: 10, mirrors: 10, tftpFromMirrors: true }).tftpSeconds).toBeCloseTo(
      (143 * MB) / (1.55 * 2 ** 20),
      6,
    );
    for (const nodes of [1, 7, 100, 500])
      for (const mirrors of [1, 2, 5, 13, 25])
        for (const link of [1, 10])
          expect(t({ nodes, mirrors, primary: server(link), tftpFromMirrors: true }).totalSeconds).toBeLessThanOrEqual(
            t({ nodes, mirrors, primary: server(link) }).totalSeconds + 1e-9,
          );
  });

  test("nodes are shared evenly, the busiest server sets the time; the primary's bytes are what it carries", () => {
    const r = estimate(input({ nodes: 7, mirrors: 2 }));
    expect(r.servers.map((s) => [s.role, s.nodes])).toEqual([
      ['mirror', 4],
      ['mirror', 3],
    ]);
    expect(r.nodesPerServer).toBe(4);
    expect(r.syncSeconds).toBe(r.servers[0]?.seconds ?? -1);
    expect(estimate(input({ nodes: 7, mirrors: 2, primaryServes: true })).nodesPerServer).toBe(3);
    expect(estimate(input({ nodes: 3, mirrors: 5 })).servers.filter((s) => s.nodes === 0)).toHaveLength(2);
    expect(estimate(input({ tftpBytesPerNode: 10 * MB })).primaryBytes).toBe(100 * 310 * MB);
    expect(estimate(input({ mirrors: 4, mirrorPullBytes: 200 * MB, tftpBytesPerNode: 10 * MB })).primaryBytes).toBe(
      4 * 200 * MB + 100 * 10 * MB,
    );
    expect(estimate(input({ mirrors: 4, mirrorsCurrent: true })).primaryBytes).toBe(0);
  });
});

describe('the laws', () => {
  const fleets = [1, 2, 7, 8, 9, 20, 100, 333, 500];
  const specs: Array<[string, ServerSpec, number]> = [
    ['1 Gbit/s, no ceilings', server(1), Infinity],
    ['1 Gbit/s x86, SD cards', server(1, 300 * MB), 30 * MB],
    ['10 Gbit/s x86, SD cards', server(10, 300 * MB), 30 * MB],
    ['Pi 4, slow SD cards', server(1, 30 * MB, 8), 20 * MB],
    ['unlimited slots', server(10, 300 * MB, 0), 40 * MB],
    ['one slot', server(1, 300 * MB, 1), 30 * MB],
  ];

  test('more mirrors are never slower to sync; with the mirrors already current, never slower in all', () => {
    for (const [name, spec, node] of specs)
      for (const nodes of fleets) {
        let last = Infinity;
        let lastTotal = Infinity;
        for (let mirrors = 0; mirrors <= 60; mirrors++) {
          const r = estimate(
            input({ nodes, mirrors, primary: spec, nodeBytesPerS: node, mirrorsCurrent: true, bytesPerNode: 250 * MB }),
          );
          if (r.syncSeconds > last + 1e-9) throw new Error(`${name}, ${nodes} nodes: ${mirrors} mirrors sync slower`);
          if (r.totalSeconds > lastTotal + 1e-9) throw new Error(`${name}, ${nodes} nodes: ${mirrors} mirrors slower`);
          // the pull counted, the sync still never slower
          const withPull = estimate(
            input({ nodes, mirrors, primary: spec, nodeBytesPerS: node, bytesPerNode: 250 * MB }),
          );
          expect(withPull.syncSeconds).toBeCloseTo(r.syncSeconds, 9);
          last = r.syncSeconds;
          lastTotal = r.totalSeconds;
        }
      }
  });

  test('the pull is counted: a mirror too many costs its pull when it saves no sync time', () => {
    // 10 nodes, each at its SD card's rate from any server: 10 mirrors sync no faster than 5, and pull twice the bytes
    const at = (mirrors: number) =>
      estimate(input({ nodes: 10, mirrors, primary: server(1, 300 * MB), nodeBytesPerS: 10 * MB }));
    expect(at(10).syncSeconds).toBeCloseTo(at(5).syncSeconds, 9);
    expect(at(10).pullSeconds).toBeCloseTo(2 * at(5).pullSeconds, 9);
    expect(at(10).totalSeconds).toBeGreaterThan(at(5).totalSeconds);
  });

  test('a 10 Gbit/s link is never slower than 1 Gbit/s, nor a higher SSH ceiling, a faster disk, or unlimited slots', () => {
    for (const nodes of fleets)
      for (const mirrors of [0, 1, 2, 5, Math.ceil(nodes / 20), Math.ceil(nodes / 40)])
        for (const ssh of [30 * MB, 300 * MB, Infinity])
          for (const slots of [1, 8, 0])
            for (const tftpBytesPerNode of [0, 143 * MB]) {
              const at = (link: number, o: Partial<ModelInput> = {}) =>
                estimate(
                  input({
                    nodes,
                    mirrors,
                    primary: server(link, ssh, slots),
                    nodeBytesPerS: 30 * MB,
                    tftpBytesPerNode,
                    ...o,
                  }),
                ).totalSeconds;
              expect(at(10)).toBeLessThanOrEqual(at(1) + 1e-9);
              expect(at(1, { nodeBytesPerS: 40 * MB })).toBeLessThanOrEqual(at(1) + 1e-9);
              expect(at(1, { primary: server(1, ssh * 2, slots) })).toBeLessThanOrEqual(at(1) + 1e-9);
              // unlimited slots are the fluid bound: never slower than any slot count (more slots are not always
              // faster: equal nodes finish in waves, and a short last wave may leave its server half idle)
              if (slots > 0) expect(at(1, { primary: server(1, ssh, 0) })).toBeLessThanOrEqual(at(1) + 1e-9);
            }
  });

  test('time grows with the fleet and with the bytes', () => {
    for (const [, spec, node] of specs)
      for (const mirrors of [0, 2, 5]) {
        let last = 0;
        for (const nodes of fleets) {
          const t = estimate(input({ nodes, mirrors, primary: spec, nodeBytesPerS: node })).totalSeconds;
          expect(t).toBeGreaterThanOrEqual(last - 1e-9);
          last = t;
          const more = estimate(input({ nodes, mirrors, primary: spec, nodeBytesPerS: node, bytesPerNode: 600 * MB }));
          expect(more.totalSeconds).toBeGreaterThan(t);
        }
      }
  });
});

describe('input', () => {
  test('nonsense throws: 0 nodes, negative bytes, a link of 0, fractional mirrors, negative slots', () => {
    const bad: Array<[string, Partial<ModelInput>, RegExp]> = [
      ['0 nodes', { nodes: 0 }, /nodes must be/],
      ['negative nodes', { nodes: -5 }, /nodes must be/],
      ['half a node', { nodes: 1.5 }, /nodes must be/],
      ['NaN nodes', { nodes: Number.NaN }, /nodes must be/],
      ['negative bytes', { bytesPerNode: -1 }, /bytesPerNode/],
      ['0 bytes', { bytesPerNode: 0 }, /bytesPerNode/],
      ['infinite bytes', { bytesPerNode: Infinity }, /bytesPerNode/],
      ['NaN bytes', { bytesPerNode: Number.NaN }, /bytesPerNode/],
      ['negative mirrors', { mirrors: -1 }, /mirrors must be/],
      ['2.5 mirrors', { mirrors: 2.5 }, /mirrors must be/],
      ['a link of 0', { primary: server(0) }, /primary\.linkBitsPerS/],
      ['an SSH ceiling of 0', { primary: server(1, 0) }, /primary\.sshBytesPerS/],
      ['negative slots', { primary: server(1, Infinity, -1) }, /primary\.slots/],
      ['a mirror with a negative link', { mirror: server(-1) }, /mirror\.linkBitsPerS/],
      ['a node disk of 0', { nodeBytesPerS: 0 }, /nodeBytesPerS/],
      ['negative TFTP bytes', { tftpBytesPerNode: -1 }, /tftpBytesPerNode/],
      ['a TFTP rate of 0', { tftpBytesPerNode: 1, tftpNodeBytesPerS: 0 }, /tftpNodeBytesPerS/],
      ['negative pull bytes', { mirrorPullBytes: -1 }, /mirrorPullBytes/],
    ];
    for (const [, o, message] of bad) {
      expect(() => estimate(input(o))).toThrow(message);
      expect(() => checkInput(input(o))).toThrow(message);
    }
    expect(() => mirrorChoices(100, [0], [0])).toThrow(/rack of 0/);
    expect(() => estimate(input())).not.toThrow();
  });
});

describe('the table', () => {
  test('mirror choices: 0, 1, 2, 5 and one per rack of 20 and 40, a count named once by all that chose it', () => {
    expect(mirrorChoices(100)).toEqual([
      { mirrors: 0, label: '0 (primary alone)' },
      { mirrors: 1, label: '1' },
      { mirrors: 2, label: '2' },
      { mirrors: 3, label: '3 (one per rack of 40)' },
      { mirrors: 5, label: '5 (one per rack of 20)' },
    ]);
    expect(mirrorChoices(500).map((c) => c.mirrors)).toEqual([0, 1, 2, 5, 13, 25]);
  });

  test('rows for every fleet, link and choice; the markdown has one line each, TFTP only when there is some', () => {
    const o = {
      base: { bytesPerNode: 250 * MB, nodeBytesPerS: 30 * MB },
      primary: { sshBytesPerS: 300 * MB, slots: 8 },
      nodes: [100, 500],
      linksGbit: [1, 10],
    };
    const rows = modelRows(o);
    expect(rows).toHaveLength(2 * 5 + 2 * 6);
    expect(rows.find((r) => r.nodes === 500 && r.linkGbit === 10 && r.mirrors === 25)?.result.input.mirror).toEqual({
      sshBytesPerS: 300 * MB,
      slots: 8,
      linkBitsPerS: 10 * GBIT,
    });
    const md = renderModelTable(rows);
    const lines = md.trim().split('\n');
    expect(lines).toHaveLength(2 + rows.length);
    expect(lines[0]).toContain('| nodes | link | mirrors |');
    expect(md).not.toContain('TFTP');
    expect(lines.every((l) => l.startsWith('|') && l.endsWith('|'))).toBe(true);
    const cells = lines[0]?.split('|').length;
    expect(lines.every((l) => l.split('|').length === cells)).toBe(true);
    // 100 nodes x 250 MB from a 1 Gbit/s primary alone: 200 s
    expect(lines[2]).toMatch(
      /^\| 100 \| 1 Gbit\/s \| 0 \(primary alone\) \| 100 \| - \| 3\.3 min \| \*\*3\.3 min\*\* \|/,
    );
    const tftpRows = modelRows({ ...o, base: { ...o.base, tftpBytesPerNode: 143 * MB } });
    expect(tftpRows.filter((r) => r.mirrorTftp).length).toBe(tftpRows.filter((r) => r.mirrors > 0).length);
    expect(tftpRows.every((r) => !r.mirrorTftp || r.mirrorTftp.totalSeconds <= r.result.totalSeconds)).toBe(true);
    const withTftp = renderModelTable(tftpRows);
    expect(withTftp).toContain('TFTP (primary)');
    expect(withTftp).toContain('total, TFTP from mirrors');
    expect(withTftp.split('\n').find((l) => l.startsWith('| 100 | 1 Gbit/s | 0 '))).toMatch(/\*\* \| - \|/);
    // a Pi 4 mirror keeps its own 1 Gbit/s link whatever the primary's
    const pi = modelRows({ ...o, mirror: { sshBytesPerS: 30 * MB, slots: 8 }, mirrorLinkGbit: 1 });
    expect(pi.find((r) => r.linkGbit === 10 && r.mirrors === 5)?.result.input.mirror?.linkBitsPerS).toBe(GBIT);
  });
});

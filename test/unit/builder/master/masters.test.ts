// Nodes spread over masters (#19 item 2, the master's side): the node list's master= field, stage's checks of it,
// and the dnsmasq lines that give such a node option 224 listing its master first and the primary after.
import { describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { masterTags, renderDnsmasq, validateStage } from '../../../../builder/master/dnsmasq.ts';
import { mirrorTftpConf } from '../../../../builder/master/mirror.ts';
import { parseNodeList, renderNodesList, type NodeEntry } from '../../../../builder/master/nodelist.ts';
import { stagePlan } from '../../../fixtures/stageplan.ts';

const node = (line: number, hostname: string, ip: string, extra: Partial<NodeEntry> = {}): NodeEntry => ({
  mac: `52:54:00:00:00:${String(line).padStart(2, '0')}`,
  hostname,
  ip,
  line,
  ...extra,
});
const plan = (nodes: NodeEntry[]) => stagePlan(nodes);

describe('node list: master=', () => {
  test('both forms take master= beside arch=, in any order; absent stays absent', () => {
    const r = parseNodeList(
      [
        '52:54:00:00:00:01 n1 10.77.0.11 master=10.77.0.2',
        '52:54:00:00:00:02 n2 10.77.0.12 master=10.77.0.3 arch=amd64',
        'dhcp-host=52:54:00:00:00:03,,n3,10.77.0.13,2h,master=10.77.0.2',
        '52:54:00:00:00:04 n4 10.77.0.14',
      ].join('\n'),
    );
    expect(r.errors).toEqual([]);
    expect(r.nodes.map((n) => [n.hostname, n.master, n.arch])).toEqual([
      ['n1', '10.77.0.2', undefined],
      ['n2', '10.77.0.3', 'amd64'],
      ['n3', '10.77.0.2', undefined],
      ['n4', undefined, undefined],
    ]);
    expect('master' in (r.nodes[3] as object)).toBe(false);
  });

  test('a master= that is no IPv4 address, or two of them, is an error with the line', () => {
    const r = parseNodeList(
      [
        '52:54:00:00:00:01 n1 10.77.0.11 master=mirror1',
        'dhcp-host=52:54:00:00:00:02,n2,10.77.0.12,master=10.77.0.2,master=10.77.0.3',
        '52:54:00:00:00:03 n3 10.77.0.13 master=10.77.0.2 master=10.77.0.3',
      ].join('\n'),
    );
    expect(r.nodes).toEqual([]);
    expect(r.errors).toEqual([
      "line 1: 'master=mirror1' is not master=<IPv4 address of the master or mirror this node syncs from>",
      "line 2: dhcp-host= has two master= fields ('master=10.77.0.3'): one per node",
      "line 3: two master= fields ('master=10.77.0.3'): one per node",
    ]);
  });

  test('nodes.list keeps master= and reads back unchanged', () => {
    const nodes = [node(1, 'n1', '10.77.0.11', { master: '10.77.0.2' }), node(2, 'n2', '10.77.0.12')];
    const text = renderNodesList(nodes, 'nodes.txt');
    expect(text).toContain('\n52:54:00:00:00:01 n1 10.77.0.11 master=10.77.0.2\n');
    const back = parseNodeList(text);
    expect(back.errors).toEqual([]);
    expect(back.nodes.map(({ line: _, ...n }) => n)).toEqual(nodes.map(({ line: _, ...n }) => n));
  });
});

describe('stage: nodes spread over masters', () => {
  test("a master outside the subnet, a node's own address or another node's is refused", () => {
    const errs = validateStage(
      plan([
        node(1, 'n1', '10.77.0.11', { master: '10.78.0.2' }),
        node(2, 'n2', '10.77.0.12', { master: '10.77.0.12' }),
        node(3, 'n3', '10.77.0.13', { master: '10.77.0.11' }),
      ]),
    );
    expect(errs).toHaveLength(3);
    expect(errs[0]).toMatch(/line 1: master=10\.78\.0\.2 of n1 10\.78\.0\.2 is outside the subnet 10\.77\.0\.0\/24/);
    expect(errs[1]).toMatch(/line 2: master=10\.77\.0\.12 is n2's own address/);
    expect(errs[2]).toMatch(/line 3: master=10\.77\.0\.11 of n3 is the address of node n1/);
  });

  test('one tag per master other than the primary, in list order; its nodes carry it', () => {
    const nodes = [
      node(1, 'n1', '10.77.0.11', { master: '10.77.0.3' }),
      node(2, 'n2', '10.77.0.12', { master: '10.77.0.2', arch: 'amd64' }),
      node(3, 'n3', '10.77.0.13', { master: '10.77.0.3' }),
      node(4, 'n4', '10.77.0.14', { master: '10.77.0.1' }),
      node(5, 'n5', '10.77.0.15'),
    ];
    expect([...masterTags(nodes, '10.77.0.1')]).toEqual([
      ['10.77.0.3', 'cb-master-1'],
      ['10.77.0.2', 'cb-master-2'],
    ]);
    const conf = renderDnsmasq(plan(nodes));
    expect(conf).toContain('\ndhcp-option=66,10.77.0.1\n');
    expect(conf).toContain('\ndhcp-option=tag:cb-master-1,224,"10.77.0.3,10.77.0.1"\n');
    expect(conf).toContain('\ndhcp-option=tag:cb-master-2,224,"10.77.0.2,10.77.0.1"\n');
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:01,set:cb-master-1,n1,10.77.0.11,1h\n');
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:02,set:cb-amd64,set:cb-master-2,n2,10.77.0.12,1h\n');
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:03,set:cb-master-1,n3,10.77.0.13,1h\n');
    // master= naming the primary is the default: no tag
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:04,n4,10.77.0.14,1h\n');
    expect(conf).toContain('\ndhcp-host=52:54:00:00:00:05,n5,10.77.0.15,1h\n');
  });

  test('a list without master= renders exactly as before (no master tag, no option 224)', () => {
    const conf = renderDnsmasq(plan([node(1, 'n1', '10.77.0.11'), node(2, 'n2', '10.77.0.12')]));
    expect(conf).not.toContain('cb-master');
    expect(conf).not.toContain(',224,');
    expect(conf.match(/^dhcp-option=(tag:[^,]+,)?66,/gm)).toEqual(['dhcp-option=66,']);
  });

  test.skipIf(!existsSync('/usr/sbin/dnsmasq'))('dnsmasq --test accepts the tags and the quoted list', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cb-masters-'));
    try {
      const file = join(dir, 'dnsmasq.conf');
      writeFileSync(
        file,
        renderDnsmasq(
          plan([
            node(1, 'n1', '10.77.0.11', { master: '10.77.0.3' }),
            node(2, 'n2', '10.77.0.12', { master: '10.77.0.2', arch: 'amd64' }),
          ]),
        ),
      );
      const r = spawnSync('/usr/sbin/dnsmasq', ['--test', `--conf-file=${file}`], { encoding: 'utf8' });
      expect(`${r.status} ${r.stderr.trim()}`).toMatch(/^0 dnsmasq: syntax check OK\.$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// #19 item 2: with --tftp-from-mirrors a node's U-Boot loads from its mirror: next-server (dhcp-boot's third field)
// and option 66 per master tag; exactly one dhcp-boot line matches any request
describe('TFTP from mirrors', () => {
  const nodes = [
    node(1, 'n1', '10.77.0.11', { master: '10.77.0.3' }),
    node(2, 'n2', '10.77.0.12', { master: '10.77.0.2', arch: 'amd64' }),
    node(3, 'n3', '10.77.0.13', { master: '10.77.0.2' }),
    node(5, 'n5', '10.77.0.15'),
  ];
  const conf = renderDnsmasq({ ...plan(nodes), tftpFromMirrors: true });
  const boots = conf
    .split('\n')
    .filter((l) => l.startsWith('dhcp-boot='))
    .map((l) => l.slice('dhcp-boot='.length).split(','));
  /** dnsmasq's rule: every tag:X present and every tag:!X absent. Returns [file, server] of the matching lines. */
  const matching = (tags: string[]) =>
    boots
      .filter((f) =>
        f
          .filter((x) => x.startsWith('tag:'))
          .every((t) => (t.startsWith('tag:!') ? !tags.includes(t.slice(5)) : tags.includes(t.slice(4)))),
      )
      .map((f) => {
        const rest = f.filter((x) => !x.startsWith('tag:'));
        return [rest[0], rest[2] ?? 'this master'];
      });
  test('each node is told its own TFTP server; PCs and unlisted masters stay on this one', () => {
    expect(matching(['cb-master-1'])).toEqual([['boot.scr.uimg', '10.77.0.3']]);
    expect(matching(['cb-master-2'])).toEqual([['boot.scr.uimg', '10.77.0.2']]);
    expect(matching([])).toEqual([['boot.scr.uimg', 'this master']]);
    // an amd64 node with master=: iPXE from this master (BIOS firmware request)
    expect(matching(['cb-amd64', 'cb-master-2'])).toEqual([['undionly.kpxe', 'this master']]);
    expect(conf).toContain('\ndhcp-option=tag:cb-master-1,66,10.77.0.3\n');
    expect(conf).toContain('\ndhcp-option=tag:cb-master-2,66,10.77.0.2\n');
    expect(conf).toContain('\ndhcp-option=66,10.77.0.1\n');
  });
  test('off (the default): TFTP from this master only, as before', () => {
    const off = renderDnsmasq(plan(nodes));
    expect(off).not.toMatch(/^dhcp-boot=.*,,/m);
    expect(off.match(/^dhcp-option=(tag:[^,]+,)?66,/gm)).toEqual(['dhcp-option=66,']);
  });
  test.skipIf(!existsSync('/usr/sbin/dnsmasq'))(
    "dnsmasq --test accepts the per-mirror lines and the mirror's TFTP-only configuration",
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'cb-masters-'));
      try {
        for (const [name, text] of [
          ['primary.conf', conf],
          ['mirror.conf', mirrorTftpConf('/data/slaves', '10.77.0.2')],
        ] as const) {
          writeFileSync(join(dir, name), text);
          const r = spawnSync('/usr/sbin/dnsmasq', ['--test', `--conf-file=${join(dir, name)}`], { encoding: 'utf8' });
          expect(`${name} ${r.status} ${r.stderr.trim()}`).toBe(`${name} 0 dnsmasq: syntax check OK.`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
  test("the mirror's TFTP-only dnsmasq: no DHCP, no DNS, its address only, the mirror's tftp/", () => {
    const m = mirrorTftpConf('/data/slaves', '10.77.0.2');
    expect(m).toContain('\nport=0\n');
    expect(m).not.toContain('dhcp-range');
    expect(m).toContain('\nlisten-address=10.77.0.2\nbind-interfaces\n');
    expect(m).toContain('\ntftp-root=/data/slaves/tftp\n');
    expect(() => mirrorTftpConf('/data/slaves', '10.77.0.300')).toThrow('not an IPv4 address');
    expect(() => mirrorTftpConf('/data/sl,aves', '10.77.0.2')).toThrow('absolute path');
  });
});

// `builder stage`: node list parsing, the checks, the dnsmasq configuration, and the effect function on a temp dir.
import { gunzipSync } from 'node:zlib';
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
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_BOOTARGS } from '../../../../builder/image/bootscript.ts';
import { generateKeys } from '../../../../builder/master/keys.ts';
import { APPROVAL_REQUIRED_TEXT } from '../../../../builder/master/approve.ts';
import { identityFiles } from '../../../../builder/master/identity.ts';
import { stage, StageError, type StageOptions } from '../../../../builder/master/stage.ts';
import { mergeAuthorizedKeys, replaceOwnNodeLines } from '../../../../builder/master/authkeys.ts';
import { renderDnsmasq, validateStage, type StagePlan } from '../../../../builder/master/dnsmasq.ts';
import { parseNodeList, parseSubnet, renderNodesList, type NodeEntry } from '../../../../builder/master/nodelist.ts';
import { syncSlotScript } from '../../../../builder/master/syncslot.ts';
import { crc32, readUImageHeader, writeUImage } from '../../../../agent/contract/uimage.ts';

let tmp = '';
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'stage-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const node = (line: number, mac: string, hostname: string, ip: string): NodeEntry => ({ mac, hostname, ip, line });
const NODES = [
  node(1, 'b8:27:eb:cb:63:18', 'rpinode01', '10.77.0.11'),
  node(2, 'dc:a6:32:00:00:02', 'rpinode02', '10.77.0.12'),
];
const plan = (over: Partial<StagePlan> = {}): StagePlan => ({
  nodes: NODES,
  nodesFile: 'nodes.txt',
  masterIp: '10.77.0.1',
  subnet: '10.77.0.0/24',
  domain: 'cluster.lan',
  lease: '1h',
  tftpRoot: '/data/slaves/tftp',
  ...over,
});

describe('parseNodeList', () => {
  test("reads the seed's dhcp-host form and the plain form, skips comments and blank lines", () => {
    const text = [
      '# the seed',
      'dhcp-host=b8:27:eb:cb:63:18,,rpinode01,192.168.2.1,1h',
      '',
      "dhcp-host=B8:27:EB:CB:63:19,,rpinode02,192.168.2.2   # no lease time: the plan's applies",
      '   # indented comment',
      'dc:a6:32:00:00:03 rpinode03 192.168.2.3',
      'DC-A6-32-00-00-04,rpinode04,192.168.2.4\r', // CRLF file, dashes, commas
      'dc:a6:32:00:00:05 ,\trpinode05 , 192.168.2.5',
    ].join('\n');
    const r = parseNodeList(text);
    expect(r.errors).toEqual([]);
    expect(r.nodes).toEqual([
      { mac: 'b8:27:eb:cb:63:18', hostname: 'rpinode01', ip: '192.168.2.1', lease: '1h', line: 2 },
      { mac: 'b8:27:eb:cb:63:19', hostname: 'rpinode02', ip: '192.168.2.2', line: 4 },
      { mac: 'dc:a6:32:00:00:03', hostname: 'rpinode03', ip: '192.168.2.3', line: 6 },
      { mac: 'dc:a6:32:00:00:04', hostname: 'rpinode04', ip: '192.168.2.4', line: 7 },
      { mac: 'dc:a6:32:00:00:05', hostname: 'rpinode05', ip: '192.168.2.5', line: 8 },
    ]);
  });

  test('every bad line is an error with its line number; the good lines still parse', () => {
    const text = [
      'dc:a6:32:00:00:01 rpinode01 10.77.0.11',
      'dc:a6:32:00:00:02 rpinode02', // 2 fields
      'dhcp-range=10.77.0.100,10.77.0.200', // another dnsmasq option
      'dhcp-host=dc:a6:32:00:00:04,,10.77.0.14', // no hostname
      'dhcp-host=dc:a6:32:00:00:05,,rpinode05', // no IP
      'dhcp-host=dc:a6:32:00:00:06,dc:a6:32:00:00:16,rpinode06,10.77.0.16', // two MACs
      'dhcp-host=id:01:02,rpinode07,10.77.0.17', // client id
      'dhcp-host=dc:a6:32:00:00:08,a,b,10.77.0.18', // two names
      'dhcp-host=dc:a6:32:00:00:10,set:pi4,rpinode10,10.77.0.20', // a tag
      'dc:a6:32:00:00:11 rpinode11 10.77.0.21 extra',
    ].join('\n');
    const r = parseNodeList(text);
    expect(r.nodes.map((x) => x.hostname)).toEqual(['rpinode01']);
    expect(r.errors.map((e) => e.split(':')[0])).toEqual([
      'line 2',
      'line 3',
      'line 4',
      'line 5',
      'line 6',
      'line 7',
      'line 8',
      'line 9',
      'line 10',
    ]);
    expect(r.errors[0]).toContain('got 2 fields');
    expect(r.errors[1]).toContain('is a dnsmasq option, not a node');
    expect(r.errors[2]).toContain('has no host name');
    expect(r.errors[3]).toContain('has no IP address');
    expect(r.errors[4]).toContain('several MACs');
    expect(r.errors[5]).toContain("must start with the node's MAC");
    expect(r.errors[6]).toContain('two host names');
    expect(r.errors[7]).toContain("field 'set:pi4' (client id, tag, IPv6 or ignore) is not supported here");
    expect(r.errors[8]).toContain('got 4 fields');
  });

  test('renderNodesList reads back to the same nodes (what builder status sees)', () => {
    const text = renderNodesList(NODES, '/etc/clusterboot/nodes.txt');
    expect(text).toStartWith('# clusterboot nodes: generated by `builder stage` from /etc/clusterboot/nodes.txt');
    const back = parseNodeList(text);
    expect(back.errors).toEqual([]);
    expect(back.nodes.map(({ mac, hostname, ip }) => ({ mac, hostname, ip }))).toEqual(
      NODES.map(({ mac, hostname, ip }) => ({ mac, hostname, ip })),
    );
  });
});

describe('validateStage', () => {
  test('a good plan has no problems, with and without a dynamic range, router and interface', () => {
    expect(validateStage(plan())).toEqual([]);
    expect(
      validateStage(
        plan({ range: '10.77.0.200,10.77.0.250', router: '10.77.0.254', interface: 'eth0', lease: 'infinite' }),
      ),
    ).toEqual([]);
  });

  test('parseSubnet gives network, mask and broadcast, and refuses host bits', () => {
    const s = parseSubnet('10.77.0.0/23');
    expect(s).toEqual({
      ok: true,
      subnet: { network: 0x0a4d0000, prefix: 23, mask: 0xfffffe00, broadcast: 0x0a4d01ff },
    });
    const bad = parseSubnet('10.77.0.5/24');
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.error).toContain('the network is 10.77.0.0/24');
  });

  // Each case breaks one thing in a good plan: exactly one problem, naming it, and (where the check is about a
  // node) with the file and line number so the operator finds it.
  const withNode = (i: number, over: Partial<NodeEntry>) => ({
    nodes: NODES.map((x, j) => (j === i ? { ...x, ...over } : x)),
  });
  const cases: Array<[string, Partial<StagePlan>, RegExp]> = [
    [
      'malformed MAC',
      withNode(1, { mac: 'dc:a6:32:00:00' }),
      /^nodes\.txt line 2: MAC 'dc:a6:32:00:00' is malformed: write six hex pairs/,
    ],
    [
      'multicast MAC',
      withNode(1, { mac: '01:00:5e:00:00:02' }),
      /line 2: MAC 01:00:5e:00:00:02 is a multicast address \(first octet odd\)/,
    ],
    [
      'duplicate MAC, other case',
      withNode(1, { mac: 'B8:27:EB:CB:63:18' }),
      /line 2: MAC b8:27:eb:cb:63:18 is already on line 1 \(rpinode01\)/,
    ],
    [
      'duplicate hostname, other case',
      withNode(1, { hostname: 'RPINODE01' }),
      /line 2: hostname RPINODE01 is already used on line 1/,
    ],
    [
      'hostname with underscore',
      withNode(1, { hostname: 'rpi_node' }),
      /line 2: hostname 'rpi_node' is not a valid host name \(an RFC 1123 label/,
    ],
    ['hostname ending in -', withNode(1, { hostname: 'rpinode-' }), /is not a valid host name/],
    ['hostname with a dot', withNode(1, { hostname: 'rpinode02.lan' }), /is not a valid host name/],
    ['hostname of 64 characters', withNode(1, { hostname: 'a'.repeat(64) }), /is not a valid host name/],
    ['hostname dnsmasq reads as a lease time', withNode(1, { hostname: '30m' }), /looks like a dnsmasq lease time/],
    ['malformed IP', withNode(1, { ip: '10.77.0.256' }), /line 2: IP '10.77.0.256' is not an IPv4 address/],
    [
      'duplicate IP',
      withNode(1, { ip: '10.77.0.11' }),
      /line 2: IP 10.77.0.11 is already given to rpinode01 on line 1/,
    ],
    [
      'IP outside the subnet',
      withNode(1, { ip: '10.77.1.12' }),
      /line 2: IP 10.77.1.12 is outside the subnet 10.77.0.0\/24 \(hosts 10.77.0.1-10.77.0.254\)/,
    ],
    ['network address', withNode(1, { ip: '10.77.0.0' }), /line 2: IP 10.77.0.0 is the network address/],
    ['broadcast address', withNode(1, { ip: '10.77.0.255' }), /line 2: IP 10.77.0.255 is the broadcast address/],
    ["the master's IP", withNode(1, { ip: '10.77.0.1' }), /line 2: IP 10.77.0.1 is the master's own address/],
    [
      'node lease too short',
      withNode(1, { lease: '60s' }),
      /line 2: lease time for rpinode02 60s is shorter than dnsmasq's minimum/,
    ],
    [
      'IP inside the dynamic range',
      { range: '10.77.0.10,10.77.0.11' },
      /line 1: IP 10.77.0.11 is inside the dynamic range 10.77.0.10,10.77.0.11/,
    ],
    [
      'master IP outside the subnet',
      { masterIp: '10.78.0.1' },
      /^--master-ip 10.78.0.1 is outside the subnet 10.77.0.0\/24/,
    ],
    ['master IP malformed', { masterIp: 'master' }, /^--master-ip 'master' is not an IPv4 address/],
    ['range outside the subnet', { range: '10.77.0.200,10.77.1.10' }, /^--range end 10.77.1.10 is outside the subnet/],
    [
      'range reversed',
      { range: '10.77.0.250,10.77.0.200' },
      /^--range 10.77.0.250,10.77.0.200 is reversed \(start after end\): write it as 10.77.0.200,10.77.0.250/,
    ],
    ['range not START,END', { range: '10.77.0.200' }, /^--range '10.77.0.200' is not START,END/],
    ['master inside the range', { range: '10.77.0.1,10.77.0.9' }, /^--master-ip 10.77.0.1 is inside the dynamic range/],
    ['no nodes', { nodes: [] }, /^no nodes in nodes\.txt: add one line per node/],
    ['subnet malformed', { subnet: '10.77.0.0' }, /^--subnet '10.77.0.0' is not an IPv4 network in CIDR form/],
    ['subnet with host bits', { subnet: '10.77.0.1/24' }, /^--subnet '10.77.0.1\/24' has host bits set/],
    ['router outside the subnet', { router: '192.168.1.1' }, /^--router 192.168.1.1 is outside the subnet/],
    ['domain with a trailing dot', { domain: 'cluster.lan.' }, /^--domain 'cluster.lan.' is not a DNS domain/],
    ['interface with a space', { interface: 'eth0 eth1' }, /^--interface 'eth0 eth1' is not a network interface name/],
    ['lease not a time', { lease: 'forever' }, /^--lease 'forever' is not a lease time/],
    [
      'TFTP root with a comma',
      { tftpRoot: '/data/a,b/tftp' },
      /^TFTP root '\/data\/a,b\/tftp' must be an absolute path/,
    ],
  ];
  for (const [what, over, want] of cases) {
    test(`one problem: ${what}`, () => {
      const errs = validateStage(plan(over));
      expect(errs).toHaveLength(1);
      expect(errs[0]).toMatch(want);
      // every message says how to fix it after a colon, not only what is wrong
      expect((errs[0] as string).replace(/^nodes\.txt line \d+: /, '')).toMatch(/\S: \S/);
    });
  }

  test('all problems are collected at once, not the first only', () => {
    const errs = validateStage(
      plan({
        masterIp: '10.78.0.1',
        range: '10.77.0.250,10.77.0.200',
        nodes: [node(1, 'zz', 'a_b', '10.77.0.11'), node(2, '01:00:00:00:00:00', 'ok', '10.77.0.11')],
      }),
    );
    expect(errs.length).toBe(6); // master, range, bad MAC, bad hostname, multicast MAC, duplicate IP
  });
});

describe('renderDnsmasq', () => {
  test('one dhcp-host and one host-record per node in list order; option 66 is the master; static range without --range', () => {
    const conf = renderDnsmasq(
      plan({ nodes: [...NODES, { ...node(3, 'dc:a6:32:00:00:03', 'rpinode03', '10.77.0.13'), lease: '12h' }] }),
    );
    const lines = conf.split('\n');
    expect(lines[0]).toBe('# clusterboot dnsmasq configuration: generated by `builder stage` from nodes.txt.');
    expect(lines.filter((l) => l.startsWith('dhcp-host='))).toEqual([
      'dhcp-host=b8:27:eb:cb:63:18,rpinode01,10.77.0.11,1h',
      'dhcp-host=dc:a6:32:00:00:02,rpinode02,10.77.0.12,1h',
      'dhcp-host=dc:a6:32:00:00:03,rpinode03,10.77.0.13,12h', // the node list's own lease time wins
    ]);
    expect(lines.filter((l) => l.startsWith('host-record='))).toEqual([
      'host-record=rpinode01.cluster.lan,rpinode01,10.77.0.11',
      'host-record=rpinode02.cluster.lan,rpinode02,10.77.0.12',
      'host-record=rpinode03.cluster.lan,rpinode03,10.77.0.13',
    ]);
    expect(lines.filter((l) => l.startsWith('dhcp-option='))).toEqual([
      'dhcp-option=6,10.77.0.1',
      'dhcp-option=15,cluster.lan',
      'dhcp-option=66,10.77.0.1',
    ]);
    expect(lines.filter((l) => l.startsWith('dhcp-range='))).toEqual(['dhcp-range=10.77.0.0,static,255.255.255.0,1h']);
    for (const l of [
      'domain=cluster.lan',
      'enable-tftp',
      'tftp-root=/data/slaves/tftp',
      'dhcp-boot=boot.scr.uimg',
      'log-dhcp',
    ])
      expect(lines).toContain(l);
    expect(conf).not.toContain('interface=');
    expect(conf.endsWith('\n')).toBe(true);
    // deterministic: same plan, same bytes (no timestamp), a reordered list reorders the lines
    expect(renderDnsmasq(plan())).toBe(renderDnsmasq(plan()));
    expect(renderDnsmasq(plan({ nodes: [...NODES].reverse() })).indexOf('rpinode02')).toBeLessThan(
      renderDnsmasq(plan({ nodes: [...NODES].reverse() })).indexOf('rpinode01'),
    );
  });

  test('--range, --router, --interface and --domain appear as dnsmasq options', () => {
    const conf = renderDnsmasq(
      plan({
        range: '10.77.0.200,10.77.0.250',
        router: '10.77.0.254',
        interface: 'eth1',
        domain: 'pi.example',
        lease: '30m',
      }),
    );
    const lines = conf.split('\n');
    expect(lines.filter((l) => l.startsWith('dhcp-range='))).toEqual([
      'dhcp-range=10.77.0.200,10.77.0.250,255.255.255.0,30m',
    ]);
    expect(lines).toContain('dhcp-option=3,10.77.0.254');
    expect(lines).toContain('dhcp-option=15,pi.example');
    expect(lines.indexOf('bind-interfaces')).toBe(lines.indexOf('interface=eth1') + 1);
    expect(lines).toContain('host-record=rpinode01.pi.example,rpinode01,10.77.0.11');
    expect(conf).not.toContain('static');
  });

  test('refuses to render a plan validateStage refuses', () => {
    expect(() => renderDnsmasq(plan({ nodes: [] }))).toThrow(/invalid plan:\n {2}no nodes/);
  });

  // dnsmasq's own parser: a syntax check of exactly what we write (skipped where dnsmasq is not installed)
  const haveDnsmasq = existsSync('/usr/sbin/dnsmasq');
  test.skipIf(!haveDnsmasq)('dnsmasq --test accepts the configuration', () => {
    for (const p of [plan(), plan({ range: '10.77.0.200,10.77.0.250', router: '10.77.0.254', interface: 'eth0' })]) {
      const file = join(tmp, `dnsmasq${n++}.conf`);
      writeFileSync(file, renderDnsmasq(p));
      const r = spawnSync('/usr/sbin/dnsmasq', ['--test', `--conf-file=${file}`], { encoding: 'utf8' });
      expect(r.stderr.trim()).toBe('dnsmasq: syntax check OK.');
      expect(r.status).toBe(0);
    }
  });
});

describe('mergeAuthorizedKeys', () => {
  const ro =
    'restrict,command="/usr/bin/rrsync -ro /data/slaves" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node';
  const wo =
    'restrict,command="/usr/bin/rrsync -wo -no-lock -no-del /data/slaves/reports" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHWOEZuae46hKy0TsF3Wr+A4Qj5VK9ndxHwf4OGW3y58 clusterboot-report';
  test('appends only missing lines, after a newline when the file lacks one', () => {
    expect(mergeAuthorizedKeys('', [ro, wo])).toEqual({ append: `${ro}\n${wo}\n`, added: [ro, wo], conflicts: [] });
    expect(mergeAuthorizedKeys(`ssh-ed25519 AAAAother admin`, [ro, wo]).append).toBe(`\n${ro}\n${wo}\n`);
    expect(mergeAuthorizedKeys(`${ro}\n`, [ro, wo])).toEqual({ append: `${wo}\n`, added: [wo], conflicts: [] });
    expect(mergeAuthorizedKeys(`${ro}\n${wo}\n`, [ro, wo])).toEqual({ append: '', added: [], conflicts: [] });
  });
  test("replaceOwnNodeLines: stage's own older node line (other --sync-slots, same root) is replaced in place; others are not", () => {
    const slot = `restrict,command="/var/lib/clusterboot/sync-slot 8 /var/lib/clusterboot/slots /usr/bin/rrsync -ro /data/slaves" ${ro.split('" ')[1]}`;
    const admin = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC admin';
    // plain -> slots, keeping the other lines and their order
    expect(replaceOwnNodeLines(`${admin}\n${ro}\n${wo}\n`, [slot, wo], '/data/slaves')).toEqual({
      text: `${admin}\n${slot}\n${wo}\n`,
      replaced: [ro],
    });
    // slots -> plain, and 8 -> 2 slots
    expect(replaceOwnNodeLines(`${slot}\n`, [ro], '/data/slaves')).toEqual({ text: `${ro}\n`, replaced: [slot] });
    const two = slot.replace('sync-slot 8', 'sync-slot 2');
    expect(replaceOwnNodeLines(`${slot}\n`, [two], '/data/slaves').replaced).toEqual([slot]);
    // another master root, the report key's line, a hand-written line with the same key: left alone
    const other = ro.replace('/data/slaves', '/srv/old');
    expect(replaceOwnNodeLines(`${other}\n${admin}\n`, [slot], '/data/slaves')).toEqual({
      text: `${other}\n${admin}\n`,
      replaced: [],
    });
    expect(replaceOwnNodeLines(`${wo}\n`, [slot], '/data/slaves').replaced).toEqual([]);
    // the same line: nothing to replace
    expect(replaceOwnNodeLines(`${slot}\n`, [slot], '/data/slaves').replaced).toEqual([]);
    // stage's own is read as sshd reads it (the parser doctor uses): another option (a widening permitopen, a pty),
    // a read-write rrsync or a slot dir that is not the script's own is someone else's line, left for doctor to flag
    for (const foreign of [
      ro.replace('restrict,', 'restrict,pty,'),
      ro.replace('restrict,', 'restrict,permitopen="*:*",'),
      ro.replace(' -ro ', ' '),
      slot.replace('/var/lib/clusterboot/slots', '/tmp/slots'),
    ])
      expect(replaceOwnNodeLines(`${foreign}\n`, [slot], '/data/slaves').replaced).toEqual([]);
    // with from= (stage --key-from) it is still stage's own
    const fromRo = ro.replace('restrict,', 'restrict,from="10.0.0.0/24",');
    expect(replaceOwnNodeLines(`${fromRo}\n`, [slot], '/data/slaves').replaced).toEqual([fromRo]);
  });
  test('an older line for the same key (another master root) is reported: sshd would use it, not the new one', () => {
    const old = ro.replace('/data/slaves', '/srv/old');
    const m = mergeAuthorizedKeys(`${old}\n`, [ro, wo]);
    expect(m.added).toEqual([ro, wo]);
    expect(m.conflicts).toHaveLength(1);
    expect(m.conflicts[0]).toContain('/srv/old');
  });
});

describe('stage (effects)', () => {
  let keys = '';
  beforeAll(() => {
    keys = join(tmp, 'keys');
    generateKeys(keys);
  });
  const KERNEL = Buffer.from('not really a kernel, but bytes that must arrive unchanged\n'.repeat(100));

  /** A temp master with a node list, a kernel and an initramfs uImage; options for stage(). */
  function setup(
    list = 'b8:27:eb:cb:63:18 rpinode01 10.77.0.11\ndc:a6:32:00:00:02 rpinode02 10.77.0.12\n',
  ): StageOptions & { dir: string } {
    const dir = join(tmp, `stage${n++}`);
    mkdirSync(dir);
    writeFileSync(join(dir, 'nodes.txt'), list);
    writeFileSync(join(dir, 'vmlinuz-6.1'), KERNEL);
    writeFileSync(
      join(dir, 'initramfs.igz.uimg'),
      writeUImage(new Uint8Array(4096).fill(0x1f), { arch: 'arm64', type: 'ramdisk', comp: 'gzip', name: 'x' }),
    );
    return {
      dir,
      nodesFile: join(dir, 'nodes.txt'),
      masterRoot: join(dir, 'slaves'),
      kernel: join(dir, 'vmlinuz-6.1'),
      initramfs: join(dir, 'initramfs.igz.uimg'),
      bootargs: `${DEFAULT_BOOTARGS} hostname_test=1`,
      arch: 'arm64',
      dnsmasqConf: join(dir, 'dnsmasq.d/clusterboot.conf'),
      masterIp: '10.77.0.1',
      subnet: '10.77.0.0/24',
      domain: 'cluster.lan',
      lease: '1h',
      keysDir: keys,
      identity: false, // ssh-keygen per node is slow; the identity tests below turn it on
    };
  }
  const all = (dir: string) => readdirSync(dir, { recursive: true }).map(String).sort();

  test('writes the TFTP folder, nodes.list, reports/ and the dnsmasq configuration; boot.scr.uimg carries the bootargs', () => {
    const o = setup();
    const r = stage(o);
    const tftp = join(o.masterRoot, 'tftp');
    expect(all(o.masterRoot)).toEqual([
      'nodes.list',
      'reports',
      'tftp',
      'tftp/boot.scr.uimg',
      'tftp/firststage.env',
      'tftp/initramfs.igz.uimg',
      'tftp/vmlinuz',
      'tftp/vmlinuz.gz',
    ]);
    expect(r.written).toEqual([
      join(tftp, 'vmlinuz'),
      join(tftp, 'vmlinuz.gz'),
      join(tftp, 'initramfs.igz.uimg'),
      join(tftp, 'boot.scr.uimg'),
      join(tftp, 'firststage.env'),
      join(o.masterRoot, 'nodes.list'),
      o.dnsmasqConf,
    ]);
    // the gzip'd kernel is the raw one, and the announcement names all three files
    expect(gunzipSync(readFileSync(join(tftp, 'vmlinuz.gz')))).toEqual(KERNEL);
    expect(readFileSync(join(tftp, 'firststage.env'), 'utf8')).toContain(`cb_id=${r.firstStage.id}\n`);
    expect(readFileSync(join(tftp, 'vmlinuz'))).toEqual(KERNEL);
    expect(readFileSync(join(tftp, 'initramfs.igz.uimg'))).toEqual(readFileSync(o.initramfs));
    expect(r.reportsDir).toBe(join(o.masterRoot, 'reports'));
    expect(statSync(r.reportsDir).mode & 0o777).toBe(0o755);

    // the boot script decodes as a U-Boot script image (multi-file: length table, then the text)
    const img = readFileSync(join(tftp, 'boot.scr.uimg'));
    const h = readUImageHeader(img);
    expect({ type: h.type, arch: h.arch, comp: h.comp, time: h.time }).toEqual({ type: 6, arch: 22, comp: 0, time: 0 });
    const data = img.subarray(64);
    expect(h.size).toBe(data.length);
    expect(h.dcrc).toBe(crc32(data));
    const len = data.readUInt32BE(0);
    expect(data.readUInt32BE(4)).toBe(0);
    const script = data.subarray(8, 8 + len).toString('utf8');
    expect(script).toContain(
      `setenv bootargs "${DEFAULT_BOOTARGS} hostname_test=1 clusterboot.fs=${r.firstStage.id} clusterboot.from=`,
    );
    expect(script).toContain('tftp ${kernel_addr_r} vmlinuz.gz');
    expect(script).toContain('tftp ${ramdisk_addr_r} initramfs.igz.uimg');
    expect(script).toContain('booti ');

    const conf = readFileSync(o.dnsmasqConf, 'utf8');
    expect(conf).toContain(`from ${o.nodesFile}.`);
    expect(conf).toContain(`tftp-root=${tftp}\n`);
    expect(conf.match(/^dhcp-host=/gm)).toHaveLength(2);
    const listed = parseNodeList(readFileSync(join(o.masterRoot, 'nodes.list'), 'utf8'));
    expect(listed.nodes.map((x) => x.hostname)).toEqual(['rpinode01', 'rpinode02']);

    // without --authorized-keys: both lines returned for printing, the report line write-only into reports/
    expect(r.keyLines).toHaveLength(2);
    expect(r.keyLines[0]).toStartWith(
      `restrict,from="10.77.0.0/24",command="/usr/bin/rrsync -ro ${o.masterRoot}" ssh-ed25519 `,
    );
    expect(r.keyLines[1]).toStartWith(
      `restrict,from="10.77.0.0/24",command="/usr/bin/rrsync -wo -no-lock -no-del ${o.masterRoot}/reports" ssh-ed25519 `,
    );
    expect(r.keysAdded).toEqual([]);
    // no leftovers of the atomic writes
    expect(readdirSync(tftp).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  test('--authorized-keys: the two lines are appended once; a second run adds nothing and rewrites the same bytes', () => {
    const o = { ...setup(), authorizedKeys: '' };
    o.authorizedKeys = join(o.dir, 'root/.ssh/authorized_keys');
    mkdirSync(join(o.dir, 'root/.ssh'), { recursive: true });
    writeFileSync(
      o.authorizedKeys,
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC admin',
    ); // no final newline
    const r1 = stage(o);
    expect(r1.keysAdded).toEqual(r1.keyLines);
    const text = readFileSync(o.authorizedKeys, 'utf8');
    expect(text.split('\n')).toEqual([
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC admin',
      ...r1.keyLines,
      '',
    ]);
    const conf = readFileSync(o.dnsmasqConf);
    const r2 = stage(o);
    expect(r2.keysAdded).toEqual([]);
    expect(readFileSync(o.authorizedKeys, 'utf8')).toBe(text);
    expect(readFileSync(o.dnsmasqConf)).toEqual(conf);
  });

  // Nothing written: the master root and the dnsmasq folder stay absent, and the error lists every problem.
  const refuses = (o: StageOptions & { dir: string }, ...want: RegExp[]) => {
    let err: unknown;
    try {
      stage(o);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StageError);
    const problems = (err as StageError).problems;
    for (const w of want) expect(problems.some((p) => w.test(p))).toBe(true);
    expect((err as Error).message).toContain('nothing written');
    expect(existsSync(o.masterRoot)).toBe(false);
    expect(existsSync(join(o.dir, 'dnsmasq.d'))).toBe(false);
    return problems;
  };

  test('a bad node list writes nothing and lists every problem, with the file and line', () => {
    const o = setup(
      'b8:27:eb:cb:63:18 rpinode01 10.77.0.11\nb8:27:eb:cb:63:18 rpinode02 10.77.9.12\nnot a node line at all\n',
    );
    const problems = refuses(
      o,
      /nodes\.txt line 2: MAC b8:27:eb:cb:63:18 is already on line 1/,
      /nodes\.txt line 2: IP 10.77.9.12 is outside/,
      /nodes\.txt line 3: expected/,
    );
    expect(problems).toHaveLength(3);
  });

  test('a missing kernel, an initramfs that is not a uImage or is truncated, write nothing', () => {
    const a = setup();
    rmSync(a.kernel);
    refuses(a, /^kernel .*vmlinuz-6\.1 does not exist/);
    const b = setup();
    writeFileSync(b.initramfs, Buffer.alloc(200, 0x1f)); // a bare initramfs.igz
    refuses(b, /is not a U-Boot image .*not initramfs\.igz/);
    const c = setup();
    writeFileSync(c.initramfs, readFileSync(c.initramfs).subarray(0, 1000));
    refuses(c, /truncated or damaged copy/);
    const d = setup();
    writeFileSync(
      d.initramfs,
      writeUImage(new Uint8Array(10), { arch: 'arm64', type: 'kernel', comp: 'none', name: 'k' }),
    );
    refuses(d, /of type 2, not a ramdisk/);
  });

  test('a keys folder from before report keys writes nothing and says to run builder keys', () => {
    const o = setup();
    const old = join(o.dir, 'oldkeys');
    mkdirSync(old);
    writeFileSync(join(old, 'node_ed25519.pub'), readFileSync(join(keys, 'node_ed25519.pub')));
    o.keysDir = old;
    refuses(o, /report_ed25519\.pub is missing: run `builder keys --dir .*oldkeys`/);
  });

  test('identity: every node gets its files once; a re-stage creates nothing and keeps the bytes; --no-identity makes none', () => {
    const o = { ...setup(), identity: true };
    const r1 = stage(o);
    expect(r1.identity.map((i) => [i.hostname, [...i.created].sort()])).toEqual([
      ['rpinode01', identityFiles().sort()],
      ['rpinode02', identityFiles().sort()],
    ]);
    const id1 = readFileSync(join(o.masterRoot, 'nodes/rpinode01/files/etc/machine-id'));
    const key1 = readFileSync(join(o.masterRoot, 'nodes/rpinode01/files/etc/ssh/ssh_host_ed25519_key'));
    expect(readFileSync(join(o.masterRoot, 'nodes/rpinode02/files/etc/hostname'), 'utf8')).toBe('rpinode02\n');
    const r2 = stage(o);
    expect(r2.identity).toEqual([
      { hostname: 'rpinode01', created: [] },
      { hostname: 'rpinode02', created: [] },
    ]);
    expect(readFileSync(join(o.masterRoot, 'nodes/rpinode01/files/etc/machine-id'))).toEqual(id1);
    expect(readFileSync(join(o.masterRoot, 'nodes/rpinode01/files/etc/ssh/ssh_host_ed25519_key'))).toEqual(key1);
    const off = setup();
    expect(stage(off).identity).toEqual([]);
    expect(existsSync(join(off.masterRoot, 'nodes'))).toBe(false);
  });

  test("a file where a node's identity folder belongs writes nothing", () => {
    const o = { ...setup(), identity: true };
    mkdirSync(join(o.masterRoot, 'nodes'), { recursive: true });
    writeFileSync(join(o.masterRoot, 'nodes/rpinode02'), 'x');
    let err: unknown;
    try {
      stage(o);
    } catch (e) {
      err = e;
    }
    expect((err as StageError).problems).toEqual([
      `${join(o.masterRoot, 'nodes/rpinode02')} exists and is not a directory: move it away`,
    ]);
    expect(existsSync(join(o.masterRoot, 'tftp'))).toBe(false);
  });

  test('--sync-slots: the script 0755 and slots/ in the state dir, the node key line through sync-slot; the report key through the sink', () => {
    const o = { ...setup(), syncSlots: 3, stateDir: '' };
    o.stateDir = join(o.dir, 'state');
    const r = stage(o);
    expect(r.syncSlot).toEqual({
      script: join(o.stateDir, 'sync-slot'),
      slotsDir: join(o.stateDir, 'slots'),
      slots: 3,
      leaseSeconds: 3600,
      stallSeconds: 300,
      perAddress: 1,
    });
    expect(readFileSync(join(o.stateDir, 'sync-slot'), 'utf8')).toBe(syncSlotScript());
    expect(statSync(join(o.stateDir, 'sync-slot')).mode & 0o777).toBe(0o755);
    expect(statSync(join(o.stateDir, 'slots')).isDirectory()).toBe(true);
    expect(r.written).toContain(join(o.stateDir, 'sync-slot'));
    expect(r.keyLines[0]).toStartWith(
      `restrict,from="10.77.0.0/24",command="${o.stateDir}/sync-slot 3 ${o.stateDir}/slots /usr/bin/rrsync -ro ${o.masterRoot}" ssh-ed25519 `,
    );
    expect(r.keyLines[1]).toStartWith(
      `restrict,from="10.77.0.0/24",command="/usr/bin/python3 -I ${o.stateDir}/report-sink ${o.masterRoot}/reports nobody ${o.stateDir}/report-peers `,
    );
    expect(r.written).toContain(join(o.stateDir, 'report-sink'));
    // 0: no limit, the plain line, no sync-slot script (the report sink lives in the state dir all the same)
    const z = { ...setup(), syncSlots: 0, stateDir: join(tmp, 'unused-state') };
    expect(stage(z).keyLines[0]).toStartWith(
      `restrict,from="10.77.0.0/24",command="/usr/bin/rrsync -ro ${z.masterRoot}" `,
    );
    expect(existsSync(join(z.stateDir, 'sync-slot'))).toBe(false);
    expect(existsSync(join(z.stateDir, 'report-sink'))).toBe(true);
  });

  test('--sync-lease, --sync-stall, --sync-per-address: written into the script; the key line stays the same', () => {
    const o = { ...setup(), syncSlots: 2, stateDir: '', syncLease: 7200, syncStall: 0, syncPerAddress: 3 };
    o.stateDir = join(o.dir, 'state');
    const r = stage(o);
    expect(r.syncSlot).toMatchObject({ slots: 2, leaseSeconds: 7200, stallSeconds: 0, perAddress: 3 });
    expect(readFileSync(join(o.stateDir, 'sync-slot'), 'utf8')).toBe(
      syncSlotScript({ leaseSeconds: 7200, stallSeconds: 0, perAddress: 3 }),
    );
    expect(readFileSync(join(o.stateDir, 'sync-slot'), 'utf8')).toContain('\nlease=7200\nstall=0\nper_addr=3\n');
    expect(r.keyLines[0]).toStartWith(
      `restrict,from="10.77.0.0/24",command="${o.stateDir}/sync-slot 2 ${o.stateDir}/slots /usr/bin/rrsync -ro ${o.masterRoot}" ssh-ed25519 `,
    );
    for (const [bad, want] of [
      [{ syncLease: -5 }, /--sync-lease -5 must be a whole number/],
      [{ syncStall: 2.5 }, /--sync-stall 2.5 must be a whole number/],
      [{ syncPerAddress: 1001 }, /--sync-per-address 1001 must be a whole number/],
    ] as const) {
      const b = { ...setup(), syncSlots: 2, stateDir: '', ...bad };
      b.stateDir = join(b.dir, 'state');
      refuses(b, want);
      expect(existsSync(b.stateDir)).toBe(false);
    }
  });

  test('--sync-slots out of range, or without a state dir, writes nothing', () => {
    for (const [syncSlots, want] of [
      [1.5, /--sync-slots 1.5 must be a whole number/],
      [-1, /--sync-slots -1/],
      [1001, /--sync-slots 1001/],
    ] as const) {
      refuses({ ...setup(), syncSlots, stateDir: join(tmp, 'state-x') }, want);
    }
    const o = setup();
    refuses({ ...o, syncSlots: 2 }, /--sync-slots needs --state-dir/);
  });

  test('--authorized-keys: turning sync slots on replaces the plain node line in place, with no conflict warning', () => {
    const o = { ...setup(), authorizedKeys: '' };
    o.authorizedKeys = join(o.dir, 'authorized_keys');
    const plain = stage(o);
    const first = readFileSync(o.authorizedKeys, 'utf8');
    expect(first).toBe(`${plain.keyLines.join('\n')}\n`);
    const slotted = stage({ ...o, syncSlots: 4, stateDir: join(o.dir, 'state') });
    // the node line (now through sync-slot) and the report line (now the sink) of the same keys, both in place
    expect(slotted.keysReplaced).toEqual([plain.keyLines[0] as string, plain.keyLines[1] as string]);
    expect(slotted.keysAdded).toEqual([]);
    expect(slotted.warnings.filter((w) => w.includes('authorized_keys'))).toEqual([]);
    expect(readFileSync(o.authorizedKeys, 'utf8')).toBe(`${slotted.keyLines.join('\n')}\n`);
    expect(statSync(o.authorizedKeys).mode & 0o777).toBe(0o600);
  });

  test('--approval creates approval.required, no flag leaves it, --no-approval removes it', () => {
    const o = setup();
    expect(stage({ ...o, approval: true }).approvalMode).toBe(true);
    expect(readFileSync(join(o.masterRoot, 'approval.required'), 'utf8')).toBe(APPROVAL_REQUIRED_TEXT);
    expect(stage(o).approvalMode).toBe(true);
    expect(existsSync(join(o.masterRoot, 'approval.required'))).toBe(true);
    expect(stage({ ...o, approval: false }).approvalMode).toBe(false);
    expect(existsSync(join(o.masterRoot, 'approval.required'))).toBe(false);
  });

  test('without keys: the files are written, no key lines, a warning says so', () => {
    const o = setup();
    delete o.keysDir;
    const r = stage(o);
    expect(r.keyLines).toEqual([]);
    expect(r.warnings.join('\n')).toContain('no --keys');
    expect(existsSync(join(o.masterRoot, 'tftp/boot.scr.uimg'))).toBe(true);
  });
});

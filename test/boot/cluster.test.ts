// A fleet on one machine: two listed nodes and one stranger boot through the master's real dnsmasq
// (staged by `builder stage`) on a bridge, report their boots over the write-only report key, log to
// the master's syslog, and show up in `builder status`.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sysroot } from '../rig/images.ts';
import { DYNAMIC, MASTER_IP, VirtualCluster, nodeSpecs, type NodeSpec } from '../rig/cluster.ts';
import type { BootResult } from '../rig/boot.ts';

let vc: VirtualCluster;
let work: string;
const [a, b] = nodeSpecs(2) as [NodeSpec, NodeSpec];
/** Not in the node list: a Pi someone plugged in without telling the master. */
const stranger: NodeSpec = { hostname: 'stranger', mac: '52:54:00:c1:00:99', ip: '' };
let cold: BootResult[][] = [];
let coldBytes = 0;

beforeAll(async () => {
  const sr = await sysroot();
  work = mkdtempSync(join(tmpdir(), 'cb-cluster-'));
  vc = new VirtualCluster(work, [a, b], join(sr.root, 'bin/busybox'));
  await vc.start({ taps: 3 });
  vc.blankDisks([a, b, stranger]);
}, 20 * 60_000);

afterAll(async () => {
  await vc?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

const template = (rs: BootResult[]) => rs.at(-1);
const report = (mac: string) => vc.reports().get(`${mac.replace(/:/g, '-')}.json`) as Record<string, any> | undefined;

describe('virtual cluster', () => {
  test('two listed nodes boot from blank disks at once: fixed leases and hostnames from dnsmasq, then their template', async () => {
    const bytes0 = vc.masterBytesSent();
    const t0 = performance.now();
    cold = await Promise.all([vc.bootUntilUp(a, 0), vc.bootUntilUp(b, 1)]);
    coldBytes = vc.masterBytesSent() - bytes0;
    console.error(`measure: cluster cold nodes=2 wall_s=${((performance.now() - t0) / 1000).toFixed(1)} master_bytes_sent=${coldBytes}`);
    for (const [i, n] of [a, b].entries()) {
      const rs = cold[i] ?? [];
      expect(rs.map((r) => r.ending)).toEqual(['reboot', 'template']);
      const up = template(rs);
      expect(up?.console).toContain(`TEMPLATE-INIT pid=1 version=1 hostname=${n.hostname}`);
      // the agent's lease is the fixed one, from the master found through DHCP (no masterip= given)
      expect(up?.console).toContain(`lease ${n.ip}/24 on eth0 from ${MASTER_IP}`);
      expect(up?.console).toMatch(new RegExp(`master ${MASTER_IP.replace(/\./g, '\\.')} \\(DHCP (option 66|next-server)\\)`));
      expect(vc.leases().get(n.mac)).toEqual({ ip: n.ip, hostname: n.hostname });
    }
    // both nodes' roots came over the LAN: at least the two templates' data
    expect(coldBytes).toBeGreaterThan(2 * 4 * 1024 * 1024);
  }, 900_000);

  test('each node reported its boot: phases with durations, stamps, bytes, overlay; over the write-only key', () => {
    const stamp = /^id (\S+)/m.exec(readFileSync(join(vc.masterRoot, 'stamps/rootfs.stamp'), 'utf8'))?.[1];
    expect(stamp).toBeTruthy();
    for (const n of [a, b]) {
      const r = report(n.mac);
      expect(r).toBeDefined();
      expect(r?.result).toBe('ok');
      expect(r?.hostname).toBe(n.hostname);
      expect(r?.hostnameFrom).toBe('dhcp');
      expect(r?.ip).toBe(n.ip);
      expect(r?.stamps).toEqual({ rootBefore: null, rootAfter: stamp, masterRoot: stamp });
      expect(r?.bytesReceived).toBeGreaterThan(4 * 1024 * 1024);
      expect(r?.overlay).toBe('disk (overlay)');
      expect((r?.phases as { name: string }[]).map((p) => p.name)).toEqual(['early', 'modules', 'network', 'master', 'disk', 'partitions', 'bootfs', 'root', 'overlay', 'handoff']);
    }
    // the report key can write reports and nothing else: rrsync -wo in the line `builder stage` wrote
    const keys = readFileSync(join(work, 'authorized_keys'), 'utf8');
    expect(keys).toMatch(/command="\/usr\/bin\/rrsync -wo [^"]*\/reports" ssh-ed25519 /);
    expect(keys).toMatch(/command="\/usr\/bin\/rrsync -ro [^"]*" ssh-ed25519 /);
    // two different keys authenticated: the node key (read) and the report key (write)
    const fps = new Set([...vc.master.log.matchAll(/Accepted publickey for root from \S+ port \d+ ssh2: ED25519 (SHA256:\S+)/g)].map((m) => m[1]));
    expect(fps.size).toBe(2);
  });

  test('console messages reached the master\'s syslog, tagged with the node\'s hostname', () => {
    const log = readFileSync(vc.syslogFile, 'utf8');
    for (const n of [a, b]) {
      expect(log).toMatch(new RegExp(`^<\\d+>1 - ${n.hostname} clusterboot - - - [\\d.]+s \\[8/10 root\\] done in `, 'm'));
      // messages from before the network was up are sent too
      expect(log).toMatch(new RegExp(`^<\\d+>1 - ${n.hostname} clusterboot - - - [\\d.]+s \\[1/10 early\\] start`, 'm'));
    }
  });

  test('a warm boot of both takes the fast path: no root sync, a fraction of the bytes, reports updated', async () => {
    const bytes0 = vc.masterBytesSent();
    const t0 = performance.now();
    const warm = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
    const sent = vc.masterBytesSent() - bytes0;
    console.error(`measure: cluster warm nodes=2 wall_s=${((performance.now() - t0) / 1000).toFixed(1)} master_bytes_sent=${sent}`);
    for (const r of warm) {
      expect(r.ending).toBe('template');
      expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    }
    // a warm boot is the TFTP files (plus ~3 % of TFTP framing) and a little SSH: the root data is not sent
    // again (4 MiB per node would add over 4 %)
    const tftp = ['vmlinuz', 'initramfs.igz.uimg', 'boot.scr.uimg'].reduce((s, f) => s + statSync(join(vc.masterRoot, 'tftp', f)).size, 0);
    expect(sent).toBeGreaterThan(2 * tftp);
    expect(sent).toBeLessThan(2 * tftp * 1.06);
    expect(sent).toBeLessThan(coldBytes);
    for (const n of [a, b]) {
      const r = report(n.mac);
      expect(r?.bytesReceived).toBeLessThan(64 * 1024);
      expect(r?.stamps.rootBefore).toBe(r?.stamps.rootAfter);
    }
  }, 600_000);

  test('a node with an unknown MAC gets no fixed lease: a dynamic address, no hostname, and its report says so', async () => {
    const r = await vc.bootOnce(stranger, { tap: 2 });
    expect(r.ending).toBe('reboot'); // it still partitions its blank disk: the table is the cluster's
    expect(r.console).toContain('DHCP gave no hostname: 52:54:00:c1:00:99 has no fixed lease');
    const lease = vc.leases().get(stranger.mac);
    const [lo, hi] = DYNAMIC.split(',').map((x) => Number(x.split('.')[3]));
    const last = Number(lease?.ip.split('.')[3]);
    expect(last).toBeGreaterThanOrEqual(lo ?? 0);
    expect(last).toBeLessThanOrEqual(hi ?? 0);
    const rep = report(stranger.mac);
    expect(rep?.result).toBe('reboot');
    expect(rep?.hostname).toBeNull();
    expect(rep?.hostnameFrom).toBeNull();
  }, 400_000);

  test('builder status shows the fleet: both nodes ok and current, the stranger flagged', () => {
    const text = vc.status();
    expect(text).toMatch(/node1\s+52:54:00:c1:00:01\s+10\.77\.0\.11\s+.*\bok\b.*\bcurrent\b/);
    expect(text).toMatch(/node2\s+52:54:00:c1:00:02\s+10\.77\.0\.12\s+.*\bok\b.*\bcurrent\b/);
    expect(text).toContain('52:54:00:c1:00:99');
    expect(text).toMatch(/unknown MAC/);
    const json = JSON.parse(vc.status(true)) as { rows: Array<Record<string, unknown>> };
    const rows = json.rows;
    expect(rows.find((r) => r.mac === a.mac)?.result).toBe('ok');
    expect(rows.find((r) => r.mac === stranger.mac)?.result).toBe('reboot');
  });
});

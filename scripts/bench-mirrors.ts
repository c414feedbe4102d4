// Mirrors, measured and then modelled (issue #19 item 4). On the virtual cluster (test/rig/cluster.ts), N nodes
// (default 4) boot COLD (blank disks) at once, twice:
//   primary: all of them from the primary master (10.77.0.1) alone;
//   mirrors: spread over M mirrors (default 2: 10.77.0.2, 10.77.0.3) by `master=` in the node list, each mirror a
//            TestMaster in the cluster's namespace pulled from the primary with `builder mirror` and serving with
//            `builder mirror --serve`, as cluster.test.ts's mirror test sets one up.
// Per configuration: the wall time until every node ran its template's init; per server the nodes it served and
// the sum of their reports' bytesReceived (the root sync: grouped by the report's `master`), the bytes its sshd
// sent (its `Transferred: sent N` log lines: the root, the first-stage cache, the reports' replies) and, for the
// primary, the TFTP bytes U-Boot fetched (every node's first stage comes from the primary's TFTP); per node its
// boots, its time, what it received on its tap. Then bench/mirrormodel.ts models 100 and 500 nodes from the
// measured bytes per node. Writes docs/bench-mirrors.json and docs/bench-mirrors.md; `--model-only BYTES` skips
// QEMU and renders the model (and the last measurement in the JSON, if any) from a given bytes-per-node number.
import { execFileSync, spawnSync } from 'node:child_process';
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
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO } from '../builder/image/agentbuild.ts';
import { reportName } from '../agent/contract/report.ts';
import { duration, modelRows, renderModelTable, type ModelRow, type ServerSpec } from '../bench/mirrormodel.ts';
import { sysroot } from '../test/rig/images.ts';
import { BRIDGE, MASTER_IP, SUBNET, VirtualCluster, nodeSpecs } from '../test/rig/cluster.ts';
import { TestMaster, testKeys } from '../test/rig/master.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '4' },
    mirrors: { type: 'string', default: '2' },
    'data-mb': { type: 'string', default: '20' },
    out: { type: 'string', default: 'docs/bench-mirrors.json' },
    'model-only': { type: 'string' },
    'tftp-bytes': { type: 'string' },
    'pull-bytes': { type: 'string' },
  },
});
const say = (s: string) => console.error(`bench-mirrors: ${s}`);
const JSON_OUT = resolve(REPO, values.out);
const MD_OUT = JSON_OUT.replace(/\.json$/, '') + '.md';
const r2 = (n: number) => Math.round(n * 100) / 100;
const mb = (n: number) => (n / 1e6).toFixed(1);

// ---- the model's parameters (docs/bench-mirrors.md says where each comes from) ----
/** An x86 server: sshd with chacha20-poly1305 (README: 1325 MB/s for the cipher alone on one core) and rsync
 * reading a page-cached tree push a few hundred MB/s in all. */
const X86: Omit<ServerSpec, 'linkBitsPerS'> = { sshBytesPerS: 300e6, slots: 8 };
/** A Pi 4 as a mirror: 1 Gbit/s, no AES instructions; sshd and rsync make tens of MB/s. */
const PI4: Omit<ServerSpec, 'linkBitsPerS'> = { sshBytesPerS: 30e6, slots: 8 };
/** A Pi's SD card writing the root: 20-40 MB/s. */
const NODE_BYTES_PER_S = 30e6;
/** A Pi 4's U-Boot TFTP: 1.4-1.7 MiB/s in published figures (scripts/bench.ts uses the same). */
const PI4_TFTP_BYTES_PER_S = 1.55 * 2 ** 20;
const FLEETS = [100, 500];
const LINKS = [1, 10];

interface ModelInputs {
  bytesPerNode: number;
  tftpBytesPerNode: number;
  mirrorPullBytes: number;
  from: string;
}

function models(m: ModelInputs): { x86: ModelRow[]; pi4: ModelRow[] } {
  const base = {
    bytesPerNode: m.bytesPerNode,
    nodeBytesPerS: NODE_BYTES_PER_S,
    mirrorPullBytes: m.mirrorPullBytes,
    tftpBytesPerNode: m.tftpBytesPerNode,
    tftpNodeBytesPerS: PI4_TFTP_BYTES_PER_S,
  };
  return {
    x86: modelRows({ base, primary: X86, nodes: FLEETS, linksGbit: LINKS }),
    pi4: modelRows({ base, primary: X86, mirror: PI4, mirrorLinkGbit: 1, nodes: FLEETS, linksGbit: LINKS }),
  };
}

/** The rows for the JSON: the numbers, without the echoed input. */
const compactRows = (rows: ModelRow[]) =>
  rows.map((r) => ({
    nodes: r.nodes,
    linkGbit: r.linkGbit,
    mirrors: r.mirrors,
    label: r.label,
    nodesPerServer: r.result.nodesPerServer,
    pullS: r2(r.result.pullSeconds),
    tftpS: r2(r.result.tftpSeconds),
    syncS: r2(r.result.syncSeconds),
    totalS: r2(r.result.totalSeconds),
    limit: r.result.limit,
    waves: r.result.servers[0]?.waves ?? 0,
    primaryBytes: Math.round(r.result.primaryBytes),
  }));

/** `50-78 s`, `1.5-1.7 min`, `40 s-1.2 min`; one value when the two round alike. */
function durationRange(lo: number, hi: number): string {
  const a = duration(lo);
  const b = duration(hi);
  if (a === b) return a;
  const [na, ua] = a.split(' ');
  const [nb, ub] = b.split(' ');
  return ua === ub ? `${na}-${nb} ${ub}` : `${a}-${b}`;
}

/** Where one mirror per rack of 20-40 nodes stands, in words, from the rows. */
function rackParagraph(rows: ModelRow[], who: string): string {
  const parts: string[] = [];
  for (const nodes of FLEETS)
    for (const link of LINKS) {
      const at = rows.filter((r) => r.nodes === nodes && r.linkGbit === link);
      const alone = at.find((r) => r.mirrors === 0);
      const racks = at.filter((r) => /one per rack/.test(r.label));
      const five = at.find((r) => r.mirrors === 5);
      if (!alone || !racks.length) continue;
      const t = racks.map((r) => r.result.totalSeconds);
      const s = racks.map((r) => r.result.syncSeconds);
      const limits = [...new Set(racks.map((r) => r.result.limit))].join('/');
      const others = five && !racks.includes(five) ? `; 5 mirrors: ${duration(five.result.totalSeconds)}` : '';
      const x = (v: number) => (alone.result.totalSeconds / v).toFixed(1);
      const speed =
        x(Math.max(...t)) === x(Math.min(...t)) ? x(Math.min(...t)) : `${x(Math.max(...t))}-${x(Math.min(...t))}`;
      parts.push(
        `${nodes} nodes at ${link} Gbit/s: ${racks.map((r) => r.mirrors).join(' to ')} mirrors, ` +
          `${durationRange(Math.min(...t), Math.max(...t))} (sync ${durationRange(Math.min(...s), Math.max(...s))}, ` +
          `limit: ${limits}), ${speed}x as fast as the primary alone (${duration(alone.result.totalSeconds)}${others})`,
      );
    }
  return `**One ${who} mirror per rack of 20-40 nodes.** ${parts.join('; ')}.`;
}

function renderModel(m: ModelInputs): string {
  const { x86, pi4 } = models(m);
  const tftp = m.tftpBytesPerNode > 0;
  const rack = (rows: ModelRow[]) => rows.filter((r) => /one per rack/.test(r.label));
  const tftpShare = rack(x86).map((r) => r.result.tftpSeconds / r.result.totalSeconds);
  return [
    `## The model: 100 and 500 nodes (bench/mirrormodel.ts)`,
    '',
    `From ${m.from}: **${mb(m.bytesPerNode)} MB per node** through SSH from the node's server (its root and its first-stage cache), ` +
      (tftp
        ? `**${mb(m.tftpBytesPerNode)} MB per node by TFTP** from the primary (U-Boot's first stage, twice in a cold start: before and after the partitioning reboot), `
        : 'no TFTP (not modelled: give `--tftp-bytes`), ') +
      `and ${mb(m.mirrorPullBytes)} MB per mirror pull.`,
    '',
    `Assumed: a server's rate is min(link, its SSH/rsync ceiling): an x86 server ${mb(X86.sshBytesPerS)} MB/s, a Pi 4 ${mb(PI4.sshBytesPerS)} MB/s; ` +
      `${X86.slots} sync slots per server (the others queue: "waves"); a node writes at most ${mb(NODE_BYTES_PER_S)} MB/s (an SD card: 20-40 MB/s)` +
      (tftp ? `; U-Boot TFTPs at ${(PI4_TFTP_BYTES_PER_S / 2 ** 20).toFixed(2)} MiB/s per node (a Pi 4)` : '') +
      `. The phases run one after the other: the mirrors' pulls (all at once through the primary; a mirror shows a ` +
      `publish only after its commit pass, so nodes wait for it: not pipelined; a mirror that pulled on its timer ` +
      `before the reboot costs nothing here)` +
      (tftp
        ? ', then every node TFTPs its first stage from the primary (next-server per mirror is not built yet)'
        : '') +
      `, then the syncs, each server with its share of the nodes (mirrors only, when there are mirrors), the busiest ` +
      `server setting the time. Each server's own link is the only shared link (a non-blocking fabric, or a mirror ` +
      `behind each rack's switch); a node's boot work outside the transfers, and the 5-30 s backoff of a node that ` +
      `waits for a slot, are left out: the times are lower bounds. "Through the primary" is the mirrors' pulls, ` +
      `the TFTP and the primary's own syncs.`,
    '',
    `### x86 servers (primary and mirrors) at 1 and 10 Gbit/s`,
    '',
    renderModelTable(x86),
    `### An x86 primary, Pi 4 mirrors (link: the primary's; each Pi 4 mirror has 1 Gbit/s)`,
    '',
    renderModelTable(pi4),
    rackParagraph(x86, 'x86') +
      ' (limit: what holds the busiest server back. "link" or "ssh": its rate, shared by its ' +
      `${X86.slots} slots; "node disk": every syncing node already writes at its SD card's rate, and only fewer ` +
      'nodes per mirror, fewer waves, or more slots would shorten the sync.)' +
      (tftp
        ? ` The primary's TFTP is ${Math.round(100 * Math.min(...tftpShare))}-${Math.round(100 * Math.max(...tftpShare))} % of those times` +
          (Math.max(...tftpShare) > 0.3
            ? ': with the syncs on the mirrors, moving the first stage off the primary too (next-server per mirror, #19) is what would shorten them next.'
            : '.')
        : ''),
    '',
    rackParagraph(pi4, 'Pi 4'),
    '',
  ].join('\n');
}

// ---- the measurement ----
interface NodeRow {
  hostname: string;
  mac: string;
  ip: string;
  /** The server the node list sends it to first. */
  planned: string;
  /** The report's `master`: the server that served its last boot. */
  servedBy: string | null;
  failover: string[];
  boots: number;
  endings: string[];
  upS: number;
  /** The last report's bytesReceived (the root sync of the boot that synced). */
  reportBytes: number;
  /** U-Boot's TFTP bytes over all its boots (from the primary). */
  tftpBytes: number;
  /** Everything its tap delivered to it (all servers, all protocols, with their headers). */
  wireBytes: number;
}

interface ServerRow {
  ip: string;
  role: 'primary' | 'mirror';
  nodes: number;
  /** Sum of bytesReceived of the reports naming this server. */
  reportBytes: number;
  /** Sum of its sshd's `Transferred: sent N` lines during the boots. */
  sshBytesSent: number;
  sshConnections: number;
  tftpBytes: number;
}

interface Configuration {
  name: 'primary' | 'mirrors';
  description: string;
  wallS: number;
  /** Everything the servers sent onto the LAN (the bridge's transmit counter: all servers share it). */
  lanBytesSent: number;
  servers: ServerRow[];
  nodes: NodeRow[];
  pulls?: Array<{ mirror: string; seconds: number; sshBytesSent: number; loopbackBytes: number; passes: string }>;
}

interface Measurement {
  measured: string;
  commit: string;
  rig: string;
  nodes: number;
  mirrors: string[];
  dataMb: number;
  minutes: number;
  configurations: Configuration[];
  model?: ModelInputs & { x86: ReturnType<typeof compactRows>; pi4: ReturnType<typeof compactRows> };
}

/** sshd's per-connection totals in a stretch of its log (LogLevel VERBOSE: `Transferred: sent N, received M bytes`). */
function sshdSent(log: string): { bytes: number; connections: number } {
  let bytes = 0;
  let connections = 0;
  for (const m of log.matchAll(/Transferred: sent (\d+), received \d+ bytes/g)) {
    bytes += Number(m[1]);
    connections++;
  }
  return { bytes, connections };
}

/** U-Boot's TFTP bytes in a console: one `Bytes transferred = N (hex)` line per file. */
const tftpBytesIn = (console: string) =>
  [...console.matchAll(/Bytes transferred = (\d+) \(/g)].reduce((a, m) => a + Number(m[1]), 0);

function renderMeasured(j: Measurement): string {
  const out = [
    `# Mirrors: ${j.nodes} cold nodes from the primary, and from ${j.mirrors.length} mirrors`,
    '',
    `Written by \`scripts/bench-mirrors\` (issue #19 item 4). Measured ${j.measured} on commit ${j.commit}: ${j.rig}; ` +
      `a ${j.dataMb} MiB template; ${j.nodes} nodes with blank disks powered on at once, each until its template's init ran.`,
    '',
    '| configuration | wall, all up | server | nodes served | root bytes (reports) | SSH bytes sent | TFTP bytes |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const c of j.configurations)
    for (const [i, s] of c.servers.entries())
      out.push(
        `| ${i === 0 ? c.description : ''} | ${i === 0 ? `${c.wallS.toFixed(1)} s` : ''} | ${s.ip} (${s.role}) | ${s.nodes} | ${mb(s.reportBytes)} MB | ${mb(s.sshBytesSent)} MB | ${s.tftpBytes ? `${mb(s.tftpBytes)} MB` : '-'} |`,
      );
  out.push(
    '',
    '| configuration | node | served by | boots | up after | root bytes (report) | TFTP bytes | bytes on its link |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const c of j.configurations)
    for (const n of c.nodes)
      out.push(
        `| ${c.name} | ${n.hostname} | ${n.servedBy ?? 'no report'}${n.servedBy !== n.planned ? ` (listed: ${n.planned})` : ''} | ${n.boots} | ${n.upS.toFixed(1)} s | ${mb(n.reportBytes)} MB | ${mb(n.tftpBytes)} MB | ${mb(n.wireBytes)} MB |`,
      );
  const m = j.configurations.find((c) => c.name === 'mirrors');
  if (m?.pulls?.length)
    out.push(
      '',
      `Each mirror pulled the primary once before serving (\`builder mirror\`, three passes): ${m.pulls
        .map(
          (p) =>
            `${p.mirror} in ${p.seconds.toFixed(1)} s, ${mb(p.sshBytesSent)} MB from the primary's sshd (${p.passes})`,
        )
        .join('; ')}.`,
    );
  out.push(
    '',
    `Root bytes are the reports' \`bytesReceived\` (the root's rsync), grouped by the report's \`master\`. SSH bytes ` +
      `are what each server's sshd says it sent (\`Transferred:\` lines): the root, the first-stage cache (the kernel ` +
      `and initramfs a cold node copies to its disk from its server), the table, stamps and report replies. TFTP ` +
      `bytes are U-Boot's, over both cold boots; every node takes them from the primary, mirrors or not. Bytes on ` +
      `a node's link are its tap's transmit counter. The wall times are QEMU's: ${j.nodes} emulated arm64 nodes on ` +
      `${cpus().length === 2 ? 'two' : 'the'} host cores, all servers in one network namespace, so the CPU, not a link, ` +
      `sets them, and the two configurations take about as long; the split of the bytes between the servers is ` +
      `what carries over to a real cluster, and the model below takes it from there.`,
    '',
  );
  return out.join('\n');
}

function writeDoc(j: Measurement | null, m: ModelInputs): void {
  const model = renderModel(m);
  const head = j
    ? renderMeasured(j)
    : `# Mirrors: a model of a mass cold re-image\n\nNo measurement in ${JSON_OUT.replace(`${REPO}/`, '')} yet: run \`scripts/bench-mirrors\`.\n`;
  mkdirSync(dirname(MD_OUT), { recursive: true });
  writeFileSync(MD_OUT, `${head}\n${model}`);
  say(`wrote ${MD_OUT.replace(`${REPO}/`, '')}`);
}

function numberOption(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: ${v} is not a number of bytes`);
  return n;
}

async function measure(): Promise<void> {
  const count = Number(values.nodes);
  const mirrorCount = Number(values.mirrors);
  const dataMb = Number(values['data-mb']);
  if (!Number.isInteger(count) || count < 1 || count > 32) throw new Error('--nodes: 1..32');
  // .2 to .10: the nodes start at .11
  if (!Number.isInteger(mirrorCount) || mirrorCount < 1 || mirrorCount > 9) throw new Error('--mirrors: 1..9');
  if (!Number.isInteger(dataMb) || dataMb < 1) throw new Error('--data-mb: a whole number of MiB, 1 or more');
  const mirrorIps = Array.from({ length: mirrorCount }, (_, i) => `10.77.0.${2 + i}`);
  const git = (args: string[]) =>
    Bun.spawnSync(['git', '-C', REPO, ...args])
      .stdout.toString()
      .trim();
  const commit =
    git(['rev-parse', '--short', 'HEAD']) +
    (git(['status', '--porcelain', '--', 'agent', 'builder', 'bench', 'test/rig']) ? '+dirty' : '');
  const t0 = performance.now();
  const sr = await sysroot();
  const busybox = join(sr.root, 'bin/busybox');
  const dir = mkdtempSync(join(tmpdir(), 'cb-bench-mirrors-'));
  const specs = nodeSpecs(count);
  const vc = new VirtualCluster(dir, specs, busybox);
  const mirrors: Array<{ ip: string; master: TestMaster; state: string }> = [];
  /** A counter of an interface in the cluster's namespace. */
  const counter = (iface: string, what: 'tx_bytes' | 'rx_bytes') =>
    Number(
      execFileSync('ip', ['netns', 'exec', vc.ns, 'cat', `/sys/class/net/${iface}/statistics/${what}`], {
        encoding: 'utf8',
      }).trim(),
    );
  process.on('SIGINT', () => {
    void (async () => {
      for (const m of mirrors) await m.master.stop();
      await vc.stop();
      process.exit(130);
    })();
  });

  /** Every node from a blank disk at once, until each ran its template's init; then the reports and the logs. */
  async function coldRun(
    name: Configuration['name'],
    description: string,
    servers: Array<{ ip: string; role: 'primary' | 'mirror'; log: () => string; reports: string }>,
  ): Promise<Configuration> {
    vc.blankDisks();
    const logAt = servers.map((s) => s.log().length);
    const tap0 = specs.map((_, i) => counter(`cbtap${i}`, 'tx_bytes'));
    const lan0 = vc.masterBytesSent();
    const since = Date.now();
    const start = performance.now();
    say(`${name}: ${count} nodes from blank disks, at once (${description})`);
    const runs = await Promise.all(
      specs.map(async (n, i) => {
        const boots = await vc.bootUntilUp(n, i);
        return { boots, upS: (performance.now() - start) / 1000 };
      }),
    );
    const wallS = (performance.now() - start) / 1000;
    const lanBytesSent = vc.masterBytesSent() - lan0;
    for (const [i, r] of runs.entries()) {
      const last = r.boots.at(-1);
      // a report of a half-booted cluster would be worse than none: stop before docs/ is written
      if (last?.ending !== 'template')
        throw new Error(
          `${name}: ${specs[i]?.hostname} did not reach its template in ${r.boots.length} boots (ending ${last?.ending}); console tail:\n${last?.raw.split('\n').slice(-25).join('\n')}`,
        );
    }
    await Bun.sleep(1000); // sshd's last `Transferred:` lines, and the report sinks' renames
    // the reports written since the start, wherever they landed (a node that failed over reports to the primary)
    const reports = new Map<string, Record<string, unknown>>();
    const newest = new Map<string, number>();
    for (const s of servers) {
      if (!existsSync(s.reports)) continue;
      for (const f of readdirSync(s.reports).filter((x) => x.endsWith('.json'))) {
        const mtime = statSync(join(s.reports, f)).mtimeMs;
        if (mtime < since || mtime <= (newest.get(f) ?? 0)) continue;
        newest.set(f, mtime);
        reports.set(f, JSON.parse(readFileSync(join(s.reports, f), 'utf8')) as Record<string, unknown>);
      }
    }
    const nodes: NodeRow[] = specs.map((n, i) => {
      const rep = reports.get(reportName(n.mac));
      const r = runs[i];
      return {
        hostname: n.hostname,
        mac: n.mac,
        ip: n.ip,
        planned: n.master ?? MASTER_IP,
        servedBy: typeof rep?.master === 'string' ? rep.master : null,
        failover: Array.isArray(rep?.failover) ? rep.failover.map(String) : [],
        boots: r?.boots.length ?? 0,
        endings: (r?.boots ?? []).map((b) => b.ending),
        upS: r2(r?.upS ?? Number.NaN),
        reportBytes: Number(rep?.bytesReceived ?? 0),
        tftpBytes: (r?.boots ?? []).reduce((a, b) => a + tftpBytesIn(b.raw), 0),
        wireBytes: counter(`cbtap${i}`, 'tx_bytes') - (tap0[i] ?? 0),
      };
    });
    const rows: ServerRow[] = servers.map((s, i) => {
      const mine = nodes.filter((n) => n.servedBy === s.ip);
      const ssh = sshdSent(s.log().slice(logAt[i]));
      return {
        ip: s.ip,
        role: s.role,
        nodes: mine.length,
        reportBytes: mine.reduce((a, n) => a + n.reportBytes, 0),
        sshBytesSent: ssh.bytes,
        sshConnections: ssh.connections,
        tftpBytes: s.role === 'primary' ? nodes.reduce((a, n) => a + n.tftpBytes, 0) : 0,
      };
    });
    for (const n of nodes) {
      if (n.servedBy !== n.planned)
        say(
          `warning: ${name}: ${n.hostname} was listed for ${n.planned} but its report says ${n.servedBy ?? 'nothing'}${n.failover.length ? ` (failover: ${n.failover.join('; ')})` : ''}`,
        );
      console.log(
        `measure: mirrors ${name} ${n.hostname} served_by=${n.servedBy ?? 'none'} boots=${n.boots} up_s=${n.upS.toFixed(1)} report_bytes=${n.reportBytes} tftp_bytes=${n.tftpBytes} wire_bytes=${n.wireBytes}`,
      );
    }
    console.log(
      `measure: mirrors ${name} cold nodes=${count} wall_s=${wallS.toFixed(1)} lan_bytes_sent=${lanBytesSent} ${rows
        .map(
          (s) =>
            `${s.ip}:nodes=${s.nodes},report_bytes=${s.reportBytes},ssh_bytes_sent=${s.sshBytesSent},tftp_bytes=${s.tftpBytes}`,
        )
        .join(' ')}`,
    );
    return { name, description, wallS: r2(wallS), lanBytesSent, servers: rows, nodes };
  }

  try {
    await vc.start({ dataMb, taps: count });
    const primary = {
      ip: MASTER_IP,
      role: 'primary' as const,
      log: () => vc.master.log,
      reports: join(vc.stateDir, 'reports'),
    };
    // (a) the primary alone
    const alone = await coldRun('primary', 'primary alone', [primary]);

    // (b) the same nodes listed for the mirrors, two a mirror (node1 -> .2, node2 -> .3, node3 -> .2, ...)
    for (const [i, n] of specs.entries()) n.master = mirrorIps[i % mirrorCount];
    vc.stage();
    await vc.stopMaster();
    await vc.startMaster();
    const conf = readFileSync(vc.conf, 'utf8');
    for (const ip of mirrorIps)
      if (!conf.includes(`224,"${ip},${MASTER_IP}"`))
        throw new Error(`builder stage wrote no option 224 for ${ip} first:\n${conf}`);
    const hostPub = readFileSync(`${testKeys().hostKey}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const pulls: NonNullable<Configuration['pulls']> = [];
    for (const [i, ip] of mirrorIps.entries()) {
      const mdir = join(dir, `mirror${i + 1}`);
      const master = new TestMaster(mdir, busybox);
      const state = join(mdir, 'state');
      const key = join(mdir, 'mirror_ed25519');
      mkdirSync(mdir, { recursive: true });
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `mirror-${ip}`, '-f', key]);
      writeFileSync(join(mdir, 'known_hosts'), `${MASTER_IP} ${hostPub}\n`);
      execFileSync('ip', ['-n', vc.ns, 'addr', 'add', `${ip}/24`, 'dev', BRIDGE]);
      // on the primary: the mirror's key may read its master root, from the mirror's address only
      const allow = vc.builder(
        ...['mirror', '--allow', ip, '--key', key],
        ...['--master-root', vc.masterRoot, '--authorized-keys', vc.authorizedKeys],
      );
      if (allow.status !== 0) throw new Error(`builder mirror --allow ${ip}: ${allow.output}`);
      // on the mirror: one pull over SSH from inside the LAN (local addresses: it runs over the namespace's lo)
      const log0 = vc.master.log.length;
      const lo0 = counter('lo', 'tx_bytes');
      const p0 = performance.now();
      const pull = spawnSync(
        'ip',
        [
          ...['netns', 'exec', vc.ns, process.execPath, join(REPO, 'builder/cli.ts'), 'mirror'],
          ...['--primary', MASTER_IP, '--key', key, '--known-hosts', join(mdir, 'known_hosts')],
          ...['--master-root', master.root, '--bind', ip],
        ],
        { encoding: 'utf8' },
      );
      const seconds = (performance.now() - p0) / 1000;
      if (pull.status !== 0 || !/rootfs \S+ \(current\)/.test(pull.stderr))
        throw new Error(`builder mirror (the pull of ${ip}) exit ${pull.status}:\n${pull.stderr}${pull.stdout}`);
      await Bun.sleep(500);
      const ssh = sshdSent(vc.master.log.slice(log0));
      const passes = /: (content [^;]*);/.exec(pull.stderr)?.[1] ?? '';
      pulls.push({
        mirror: ip,
        seconds: r2(seconds),
        sshBytesSent: ssh.bytes,
        loopbackBytes: counter('lo', 'tx_bytes') - lo0,
        passes,
      });
      console.log(
        `measure: mirror pull ${ip} s=${seconds.toFixed(1)} ssh_bytes_sent=${ssh.bytes} loopback_bytes=${counter('lo', 'tx_bytes') - lo0} (${passes})`,
      );
      // the mirror serves nodes: the primary's public keys, its own report sink and sync slots
      const serve = vc.builder(
        ...['mirror', '--serve', '--keys', testKeys().dir, '--nodes', join(vc.dir, 'nodes.txt')],
        ...['--subnet', SUBNET, '--master-root', master.root, '--state-dir', state],
        ...['--authorized-keys', join(mdir, 'authorized_keys')],
      );
      if (serve.status !== 0) throw new Error(`builder mirror --serve (${ip}): ${serve.output}`);
      await master.start(testKeys().hostKey, {
        listen: ip,
        port: 22,
        wrap: vc.wrap,
        authorizedKeys: join(mdir, 'authorized_keys'),
      });
      mirrors.push({ ip, master, state });
    }
    const spread = await coldRun('mirrors', `${mirrorCount} mirrors`, [
      primary,
      ...mirrors.map((m) => ({
        ip: m.ip,
        role: 'mirror' as const,
        log: () => m.master.log,
        reports: join(m.state, 'reports'),
      })),
    ]);
    spread.pulls = pulls;

    const j: Measurement = {
      measured: new Date().toISOString(),
      commit,
      rig: `QEMU TCG arm64 nodes (1 vCPU each) on ${cpus().length} host cores (${cpus()[0]?.model ?? '?'})`,
      nodes: count,
      mirrors: mirrorIps,
      dataMb,
      minutes: r2((performance.now() - t0) / 60_000),
      configurations: [alone, spread],
    };
    // the model's bytes per node: what the primary's sshd sent per node when it served them all (root, first-stage
    // cache, replies); TFTP per node as measured; a mirror pull as measured (the mean of the mirrors')
    const primaryRow = alone.servers[0];
    const sshPerNode = (primaryRow?.sshBytesSent ?? 0) / count;
    const reportPerNode = (primaryRow?.reportBytes ?? 0) / count;
    const m: ModelInputs = {
      bytesPerNode: Math.round(sshPerNode > 0 ? sshPerNode : reportPerNode),
      tftpBytesPerNode: Math.round(alone.nodes.reduce((a, n) => a + n.tftpBytes, 0) / count),
      mirrorPullBytes: Math.round(pulls.reduce((a, p) => a + p.sshBytesSent, 0) / pulls.length),
      from: `the measurement above (${sshPerNode > 0 ? "the primary's SSH bytes sent" : "the reports' root bytes"} per node with the primary alone)`,
    };
    if (!(m.bytesPerNode > 0)) throw new Error('no bytes per node measured: no sshd totals and no reports');
    if (!(m.mirrorPullBytes > 0)) m.mirrorPullBytes = m.bytesPerNode;
    const rows = models(m);
    j.model = { ...m, x86: compactRows(rows.x86), pi4: compactRows(rows.pi4) };
    mkdirSync(dirname(JSON_OUT), { recursive: true });
    writeFileSync(JSON_OUT, `${JSON.stringify(j, null, 2)}\n`);
    say(`wrote ${JSON_OUT.replace(`${REPO}/`, '')}`);
    writeDoc(j, m);
  } finally {
    for (const m of mirrors) await m.master.stop();
    await vc.stop();
    if (process.env.KEEP) say(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

if (values['model-only'] !== undefined) {
  const bytes = Number(values['model-only']);
  if (!Number.isFinite(bytes) || bytes <= 0)
    throw new Error(`--model-only: ${values['model-only']} is not a number of bytes`);
  const m: ModelInputs = {
    bytesPerNode: bytes,
    tftpBytesPerNode: numberOption('tftp-bytes', values['tftp-bytes'], 0),
    mirrorPullBytes: numberOption('pull-bytes', values['pull-bytes'], bytes),
    from: '`--model-only`',
  };
  const last = existsSync(JSON_OUT) ? (JSON.parse(readFileSync(JSON_OUT, 'utf8')) as Measurement) : null;
  writeDoc(last, m);
  console.log(renderModel(m));
} else {
  await measure();
}
// the QEMU console pipes keep Bun's loop alive after the guests are gone: leave now
process.exit(process.exitCode ?? 0);

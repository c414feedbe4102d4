// Mirrors, measured and then modelled (issue #19 item 4). On the virtual cluster (test/rig/cluster.ts), N nodes
// (default 4) boot COLD (blank disks) at once, twice:
//   primary: all of them from the primary master (10.77.0.1) alone;
//   mirrors: spread over M mirrors (default 2: 10.77.0.2, 10.77.0.3) by `master=` in the node list, each mirror a
//            TestMaster in the cluster's namespace pulled from the primary with `builder mirror` and serving with
//            `builder mirror --serve`, as cluster.test.ts's mirror test sets one up.
// Per configuration: the wall time until every node ran its template's init; per server the nodes it served, the
// sum of their reports' bytesReceived (the root's rsync, grouped by the report's `master`), and what its address
// sent onto the LAN, SSH (roots, first-stage caches, small fetches) apart from the rest (the primary's TFTP, DHCP,
// DNS), counted by an HTB qdisc on the bridge; per node its boots, its time, its root bytes, the first stage it
// cached and from where, U-Boot's TFTP bytes, and what its tap delivered. Then bench/mirrormodel.ts models 100 and
// 500 nodes from the measured bytes per node. Writes docs/bench-mirrors.json and docs/bench-mirrors.md;
// `--model-only BYTES` skips QEMU and renders the model (after the last measurement in the JSON, if there is one)
// from a given bytes-per-node number. `--tftp-from-mirrors` adds a third run: the mirrors serve their nodes' TFTP
// too (`builder stage --tftp-from-mirrors`, `builder mirror --serve --tftp`). `--setup-only` sets up the cluster
// and the mirrors as for a run and checks that each server answers (its stamps to the node key, its TFTP) without
// booting a node, and writes nothing.
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
import { Dnsmasq } from '../test/rig/dnsmasq.ts';
import { REPO } from '../builder/image/agentbuild.ts';
import { reportName } from '../agent/contract/report.ts';
import { duration, modelRows, renderModelTable, type ModelRow, type ServerSpec } from '../bench/mirrormodel.ts';
import { sysroot } from '../test/rig/images.ts';
import { BRIDGE, MASTER_IP, SUBNET, VirtualCluster, nodeSpecs } from '../test/rig/cluster.ts';
import { TestMaster, testKeys } from '../test/rig/master.ts';
import { measuredCommit } from '../bench/commit.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '4' },
    mirrors: { type: 'string', default: '2' },
    'data-mb': { type: 'string', default: '20' },
    out: { type: 'string', default: 'docs/bench-mirrors.json' },
    'model-only': { type: 'string' },
    'tftp-bytes': { type: 'string' },
    'pull-bytes': { type: 'string' },
    'tftp-from-mirrors': { type: 'boolean', default: false },
    'setup-only': { type: 'boolean', default: false },
  },
});
const say = (s: string) => console.error(`bench-mirrors: ${s}`);
const JSON_OUT = resolve(REPO, values.out);
const MD_OUT = JSON_OUT.replace(/\.json$/, '') + '.md';
const r2 = (n: number) => Math.round(n * 100) / 100;
const mb = (n: number) => (n / 1e6).toFixed(1);

// ---- the model's parameters (docs/bench-mirrors.md says where each comes from) ----
/** An x86 server: sshd and rsync push a few hundred MB/s in all (the cipher is not the limit: README's
 * scripts/bench-ciphers has chacha20-poly1305 at 1325 MB/s on one x86 core even without AES-NI). */
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
      const mt = racks.flatMap((r) => (r.mirrorTftp ? [r.mirrorTftp.totalSeconds] : []));
      const limits = [...new Set(racks.map((r) => r.result.limit))].join('/');
      const others = five && !racks.includes(five) ? `; 5 mirrors: ${duration(five.result.totalSeconds)}` : '';
      const base = alone.result.totalSeconds;
      const speed = (xs: number[]) => {
        const [lo, hi] = [(base / Math.max(...xs)).toFixed(1), (base / Math.min(...xs)).toFixed(1)];
        return lo === hi ? `${lo}x` : `${lo}-${hi}x`;
      };
      const tr = durationRange(Math.min(...t), Math.max(...t));
      const mtr = mt.length ? durationRange(Math.min(...mt), Math.max(...mt)) : tr;
      parts.push(
        `${nodes} nodes at ${link} Gbit/s: ${racks.map((r) => r.mirrors).join(' to ')} mirrors, ${tr}` +
          (mtr !== tr
            ? ` (${mtr} with TFTP from the mirrors)`
            : mt.length
              ? ' (the same with TFTP from the mirrors)'
              : '') +
          `, sync ${durationRange(Math.min(...s), Math.max(...s))} (limit: ${limits}); ${speed(t)}` +
          (mtr !== tr ? ` (${speed(mt)})` : '') +
          ` as fast as the primary alone (${duration(base)}${others})`,
      );
    }
  return `**One ${who} mirror per rack of 20-40 nodes.** ${parts.join('; ')}.`;
}

function renderModel(m: ModelInputs): string {
  const { x86, pi4 } = models(m);
  const tftp = m.tftpBytesPerNode > 0;
  const rack = (rows: ModelRow[]) => rows.filter((r) => /one per rack/.test(r.label));
  const tftpShare = rack(x86).map((r) => r.result.tftpSeconds / r.result.totalSeconds);
  const pct = (xs: number[]) => {
    const [lo, hi] = [Math.round(100 * Math.min(...xs)), Math.round(100 * Math.max(...xs))];
    return lo === hi ? `${lo} %` : `${lo}-${hi} %`;
  };
  return [
    `## The model: 100 and 500 nodes (bench/mirrormodel.ts)`,
    '',
    `From ${m.from}: **${mb(m.bytesPerNode)} MB per node** through SSH from the node's server (its root and its first-stage cache), ` +
      (tftp
        ? `**${mb(m.tftpBytesPerNode)} MB per node by TFTP** (U-Boot's first stage, twice in a cold start: before and after the partitioning reboot), `
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
        ? ', then every node TFTPs its first stage: from the primary, as `builder stage` has it by default, or, in ' +
          'the column "TFTP from mirrors", each from its mirror (`builder stage --tftp-from-mirrors`, each mirror ' +
          "running `builder mirror --serve --tftp`; no SSH ceiling, no slots, the server's link)"
        : '') +
      `, then the syncs, each server with its share of the nodes (mirrors only, when there are mirrors), the busiest ` +
      `server setting the time. Each server's own link is the only shared link (a non-blocking fabric, or a mirror ` +
      `behind each rack's switch); a node's boot work outside the transfers, and the 5-30 s backoff of a node that ` +
      `waits for a slot, are left out: a real re-image takes longer. "Through the primary" is the mirrors' pulls, ` +
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
      (tftp ? ` With TFTP from the primary, the TFTP phase is ${pct(tftpShare)} of those times.` : ''),
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
  /** From the power-on of all nodes until this one's template init ran. */
  upS: number;
  /** The last report's bytesReceived (the root's rsync, in the boot that synced). */
  reportBytes: number;
  /** The first stage it cached on its disk (`caching first stage ... (N MB) from <server>`), and from where. */
  firstStageBytes: number;
  firstStageFrom: string | null;
  /** U-Boot's TFTP bytes over all its boots (`Bytes transferred = N`), in all and per server. */
  tftpBytes: number;
  tftpFrom: Record<string, number>;
  /** Everything its tap delivered to it: all servers, all protocols, with their headers. */
  wireBytes: number;
}

interface ServerRow {
  ip: string;
  role: 'primary' | 'mirror';
  nodes: number;
  /** Sum of bytesReceived of the reports naming this server. */
  reportBytes: number;
  /** Onto the LAN from this address, TCP from port 22 (SSH: roots, first-stage caches, tables, report replies), with
   *  headers; null: no traffic accounting on this host. */
  sshWireBytes: number | null;
  /** Onto the LAN from this address, everything else (the primary: TFTP, DHCP, DNS). */
  otherWireBytes: number | null;
  /** U-Boot's TFTP payload of the nodes that TFTPed from here (the primary; a node's mirror with TFTP from mirrors). */
  tftpBytes: number;
}

interface Pull {
  mirror: string;
  seconds: number;
  /** The namespace's loopback, both ways: the pull runs between two local addresses. */
  loopbackBytes: number;
  passes: string;
}

/** A mirror in the cluster's namespace: a TestMaster (its sshd) with its key, state dir and TFTP dnsmasq. */
interface Mirror {
  ip: string;
  dir: string;
  key: string;
  master: TestMaster;
  state: string;
  tftp: Dnsmasq | null;
}

interface Configuration {
  name: 'primary' | 'mirrors' | 'mirrors-tftp';
  description: string;
  wallS: number;
  /** Everything the servers sent onto the LAN (the bridge's transmit counter: all servers share it). */
  lanBytesSent: number;
  servers: ServerRow[];
  nodes: NodeRow[];
  pulls?: Pull[];
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

/** U-Boot's TFTP bytes in a console, per server: each `TFTP from server <ip>; ...` and its `Bytes transferred = N`. */
function tftpIn(raw: string): Record<string, number> {
  const by: Record<string, number> = {};
  for (const m of raw.matchAll(
    /TFTP from server ([\d.]+);(?:(?!TFTP from server)[\s\S])*?Bytes transferred = (\d+) \(/g,
  ))
    by[m[1] ?? '?'] = (by[m[1] ?? '?'] ?? 0) + Number(m[2]);
  return by;
}

/** The first stage a boot cached on the disk: the agent's `caching first stage <id> (N MB) from <host>`. */
function firstStageIn(raw: string): { bytes: number; from: string } | null {
  const m = /caching first stage \S+ \(([\d.]+) MB\) from ([\w.:-]+)/.exec(raw);
  return m ? { bytes: Math.round(Number(m[1]) * 1e6), from: m[2] ?? '' } : null;
}

/** An HTB class that never holds a packet back: it is there to count. */
const COUNT_ONLY = ['rate', '40gbit', 'burst', '4mb', 'cburst', '4mb', 'quantum', '200000'];

/**
 * Bytes each server sends onto the cluster's LAN, SSH apart from the rest: an HTB qdisc on the bridge whose
 * classes only count (40 Gbit/s each, far above what the QEMU nodes take: nothing waits), one u32 filter per
 * address and kind. Every server lives in the one namespace and sends through the bridge, so the bridge's own
 * counter cannot tell them apart; this can. The qdisc counts each segment with its headers (on-the-wire bytes).
 */
class Accounting {
  private readonly classes = new Map<string, { ssh: string; other: string }>();
  constructor(
    private readonly ns: string,
    private readonly dev: string,
    ips: string[],
  ) {
    ips.forEach((ip, i) =>
      this.classes.set(ip, { ssh: (0x10 + 2 * i).toString(16), other: (0x11 + 2 * i).toString(16) }),
    );
  }

  private tc(...args: string[]): string {
    return execFileSync('tc', ['-n', this.ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** false (and a warning): no HTB or u32 on this kernel; the run goes on without per-server wire bytes. */
  install(): boolean {
    try {
      this.tc('qdisc', 'add', 'dev', this.dev, 'root', 'handle', '1:', 'htb', 'default', '99');
      const cls = (id: string) =>
        this.tc(...['class', 'add', 'dev', this.dev, 'parent', '1:', 'classid', `1:${id}`, 'htb'], ...COUNT_ONLY);
      cls('99');
      for (const [ip, c] of this.classes) {
        cls(c.ssh);
        cls(c.other);
        const match = ['match', 'ip', 'src', `${ip}/32`];
        this.tc(
          ...['filter', 'add', 'dev', this.dev, 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', ...match],
          ...['match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'sport', '22', '0xffff', 'flowid', `1:${c.ssh}`],
        );
        this.tc(
          ...['filter', 'add', 'dev', this.dev, 'parent', '1:', 'protocol', 'ip', 'prio', '2', 'u32', ...match],
          ...['flowid', `1:${c.other}`],
        );
      }
      return true;
    } catch (e) {
      say(`warning: no per-server byte counts (tc: ${String(e instanceof Error ? e.message : e).split('\n')[0]})`);
      spawnSync('tc', ['-n', this.ns, 'qdisc', 'del', 'dev', this.dev, 'root']);
      return false;
    }
  }

  /** Bytes sent so far per address: SSH and the rest (undefined: tc failed, and said why). */
  read(): Map<string, { ssh: number; other: number }> | undefined {
    let text: string;
    try {
      text = this.tc('-s', 'class', 'show', 'dev', this.dev);
    } catch (e) {
      say(`warning: tc -s class show: ${String(e instanceof Error ? e.message : e).split('\n')[0]}`);
      return undefined;
    }
    const sent = new Map<string, number>();
    for (const m of text.matchAll(/class htb 1:([0-9a-f]+)[^\n]*\n\s*Sent (\d+) bytes/g))
      sent.set(m[1] ?? '', Number(m[2]));
    return new Map(
      [...this.classes].map(([ip, c]) => [ip, { ssh: sent.get(c.ssh) ?? 0, other: sent.get(c.other) ?? 0 }]),
    );
  }
}

function renderMeasured(j: Measurement): string {
  const wire = (n: number | null) => (n === null ? 'n/a' : `${mb(n)} MB`);
  const out = [
    `# Mirrors: ${j.nodes} cold nodes from the primary, and from ${j.mirrors.length} mirrors`,
    '',
    `Written by \`scripts/bench-mirrors\` (issue #19 item 4). Measured ${j.measured} on commit ${j.commit}: ${j.rig}; ` +
      `a ${j.dataMb} MiB template; ${j.nodes} nodes with blank disks powered on at once, each until its template's ` +
      `init ran (a cold start: partition, reboot, sync).`,
    '',
    '| configuration | wall, all up | server | nodes served | root bytes (reports) | SSH bytes sent | other bytes sent (TFTP, DHCP, DNS) | TFTP payload |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const c of j.configurations)
    for (const [i, s] of c.servers.entries())
      out.push(
        `| ${i === 0 ? c.description : ''} | ${i === 0 ? `${c.wallS.toFixed(1)} s` : ''} | ${s.ip} (${s.role}) | ${s.nodes} | ${mb(s.reportBytes)} MB | ${wire(s.sshWireBytes)} | ${wire(s.otherWireBytes)} | ${s.tftpBytes ? `${mb(s.tftpBytes)} MB` : '-'} |`,
      );
  out.push(
    '',
    '| configuration | node | served by | boots | up after | root bytes (report) | first stage cached | TFTP payload | bytes on its link |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const c of j.configurations)
    for (const n of c.nodes)
      out.push(
        `| ${c.name} | ${n.hostname} | ${n.servedBy ?? 'no report'}${n.servedBy !== n.planned ? ` (listed: ${n.planned})` : ''} | ${n.boots} | ${n.upS.toFixed(1)} s | ${mb(n.reportBytes)} MB | ${n.firstStageFrom ? `${mb(n.firstStageBytes)} MB from ${n.firstStageFrom}` : '-'} | ${
          Object.entries(n.tftpFrom)
            .map(([ip, b]) => `${mb(b)} MB from ${ip}`)
            .join(', ') || '-'
        } | ${mb(n.wireBytes)} MB |`,
      );
  for (const c of j.configurations)
    if (c.pulls?.length)
      out.push(
        '',
        `Before "${c.name}", each mirror pulled the primary (\`builder mirror\`: three rsync passes over SSH): ${c.pulls
          .map((p) => `${p.mirror} in ${p.seconds.toFixed(1)} s, ${mb(p.loopbackBytes)} MB (${p.passes})`)
          .join('; ')}. A pull runs between two addresses of the one namespace, over its loopback (counted both ways).`,
      );
  out.push(
    '',
    `Root bytes are the reports' \`bytesReceived\` (the root's rsync payload), grouped by the report's \`master\`. ` +
      `SSH bytes and other bytes are what each server's address sent onto the LAN, headers included (an HTB qdisc on ` +
      `the bridge counts them): SSH carries the root, the first-stage cache (the kernel and initramfs a cold node ` +
      `copies to its disk from its server), the table and stamps and the report replies; the rest is the primary's ` +
      `TFTP, DHCP and DNS (and a mirror's TFTP, with \`--tftp-from-mirrors\`). The TFTP payload is U-Boot's, over both ` +
      `cold boots: from the primary, or from the node's mirror with \`--tftp-from-mirrors\` (the "mirrors-tftp" ` +
      `run). Bytes on a node's link are its tap's transmit counter. The wall times are ` +
      `QEMU's: ${j.nodes} emulated arm64 nodes on ${j.rig.includes(' 2 host cores') ? 'two' : 'the'} host cores and ` +
      `every server in one network namespace, so the host's CPU, not a link, sets them; what carries over to a real ` +
      `cluster is the bytes and where they come from, which the model below takes from here.`,
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
  const commit = measuredCommit(['agent', 'builder', 'bench', 'test/rig']);
  const t0 = performance.now();
  const sr = await sysroot();
  const busybox = join(sr.root, 'bin/busybox');
  const dir = mkdtempSync(join(tmpdir(), 'cb-bench-mirrors-'));
  const specs = nodeSpecs(count);
  const vc = new VirtualCluster(dir, specs, busybox);
  const mirrors: Mirror[] = [];
  /** A counter of an interface in the cluster's namespace. */
  const counter = (iface: string) =>
    Number(
      execFileSync('ip', ['netns', 'exec', vc.ns, 'cat', `/sys/class/net/${iface}/statistics/tx_bytes`], {
        encoding: 'utf8',
      }).trim(),
    );
  process.on('SIGINT', () => {
    void (async () => {
      for (const m of mirrors) await stopMirror(m);
      await vc.stop();
      process.exit(130);
    })();
  });
  let accounting: Accounting | null = null;

  /** Every node from a blank disk at once, until each ran its template's init; then the reports and the counters. */
  async function coldRun(
    name: Configuration['name'],
    description: string,
    servers: Array<{ ip: string; role: 'primary' | 'mirror'; reports: string }>,
  ): Promise<Configuration> {
    if (values['setup-only']) {
      checkServers(name, servers);
      return { name, description, wallS: 0, lanBytesSent: 0, servers: [], nodes: [] };
    }
    vc.blankDisks();
    const tap0 = specs.map((_, i) => counter(`cbtap${i}`));
    const lan0 = vc.masterBytesSent();
    const wire0 = accounting?.read();
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
    const wire1 = accounting?.read();
    for (const [i, r] of runs.entries()) {
      const last = r.boots.at(-1);
      // a report of a half-booted cluster would be worse than none: stop before docs/ is written
      if (last?.ending !== 'template')
        throw new Error(
          `${name}: ${specs[i]?.hostname} did not reach its template in ${r.boots.length} boots (ending ${last?.ending}); console tail:\n${last?.raw.split('\n').slice(-25).join('\n')}`,
        );
    }
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
      const boots = runs[i]?.boots ?? [];
      const fs = boots.map((b) => firstStageIn(b.raw)).find((x) => x !== null) ?? null;
      const tftpFrom: Record<string, number> = {};
      for (const b of boots)
        for (const [ip, bytes] of Object.entries(tftpIn(b.raw))) tftpFrom[ip] = (tftpFrom[ip] ?? 0) + bytes;
      return {
        hostname: n.hostname,
        mac: n.mac,
        ip: n.ip,
        planned: n.master ?? MASTER_IP,
        servedBy: typeof rep?.master === 'string' ? rep.master : null,
        failover: Array.isArray(rep?.failover) ? rep.failover.map(String) : [],
        boots: boots.length,
        endings: boots.map((b) => b.ending),
        upS: r2(runs[i]?.upS ?? Number.NaN),
        reportBytes: Number(rep?.bytesReceived ?? 0),
        firstStageBytes: fs?.bytes ?? 0,
        firstStageFrom: fs?.from ?? null,
        tftpFrom,
        tftpBytes: Object.values(tftpFrom).reduce((a, x) => a + x, 0),
        wireBytes: counter(`cbtap${i}`) - (tap0[i] ?? 0),
      };
    });
    const rows: ServerRow[] = servers.map((s) => {
      const mine = nodes.filter((n) => n.servedBy === s.ip);
      const w0 = wire0?.get(s.ip);
      const w1 = wire1?.get(s.ip);
      return {
        ip: s.ip,
        role: s.role,
        nodes: mine.length,
        reportBytes: mine.reduce((a, n) => a + n.reportBytes, 0),
        sshWireBytes: w0 && w1 ? w1.ssh - w0.ssh : null,
        otherWireBytes: w0 && w1 ? w1.other - w0.other : null,
        tftpBytes: nodes.reduce((a, n) => a + (n.tftpFrom[s.ip] ?? 0), 0),
      };
    });
    for (const n of nodes) {
      if (n.servedBy !== n.planned)
        say(
          `warning: ${name}: ${n.hostname} was listed for ${n.planned} but its report says ${n.servedBy ?? 'nothing'}${n.failover.length ? ` (failover: ${n.failover.join('; ')})` : ''}`,
        );
      console.log(
        `measure: mirrors ${name} ${n.hostname} served_by=${n.servedBy ?? 'none'} boots=${n.boots} up_s=${n.upS.toFixed(1)} report_bytes=${n.reportBytes} first_stage_bytes=${n.firstStageBytes} tftp_bytes=${n.tftpBytes} wire_bytes=${n.wireBytes}`,
      );
    }
    console.log(
      `measure: mirrors ${name} cold nodes=${count} wall_s=${wallS.toFixed(1)} lan_bytes_sent=${lanBytesSent} ${rows
        .map(
          (s) =>
            `${s.ip}:nodes=${s.nodes},report_bytes=${s.reportBytes},ssh_bytes_sent=${s.sshWireBytes ?? 'n/a'},other_bytes_sent=${s.otherWireBytes ?? 'n/a'},tftp_bytes=${s.tftpBytes}`,
        )
        .join(' ')}`,
    );
    return { name, description, wallS: r2(wallS), lanBytesSent, servers: rows, nodes };
  }

  /**
   * `--setup-only`: instead of the boots, what a node would ask each server first, from inside the LAN: the stamps
   * through the node key (rrsync behind the sync slots) and, where the node would TFTP, the network script.
   */
  function checkServers(name: string, list: Array<{ ip: string; role: 'primary' | 'mirror' }>): void {
    const ssh = [
      '/usr/bin/ssh',
      `-i ${join(testKeys().dir, 'node_ed25519')}`,
      '-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
    ].join(' ');
    for (const s of list) {
      const r = spawnSync('ip', ['netns', 'exec', vc.ns, 'rsync', '--list-only', '-e', ssh, `root@${s.ip}:stamps/`], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status !== 0 || !/rootfs\.stamp/.test(r.stdout))
        throw new Error(`${name}: ${s.ip} did not list its stamps to the node key: ${r.stderr}${r.stdout}`);
      const tftpHere = s.role === 'primary' ? name !== 'mirrors-tftp' : name === 'mirrors-tftp';
      let tftp = '';
      if (tftpHere) {
        const t = spawnSync(
          'ip',
          [
            'netns',
            'exec',
            vc.ns,
            'curl',
            '-sS',
            '-o',
            '/dev/null',
            '-w',
            '%{size_download}',
            `tftp://${s.ip}/boot.scr.uimg`,
          ],
          { encoding: 'utf8', timeout: 60_000 },
        );
        if (t.status !== 0 || !(Number(t.stdout) > 0))
          throw new Error(`${name}: no boot.scr.uimg from ${s.ip}'s TFTP: ${t.stderr}${t.stdout}`);
        tftp = `, TFTP boot.scr.uimg ${t.stdout} bytes`;
      }
      say(`--setup-only: ${name}: ${s.ip} (${s.role}) serves: stamps to the node key${tftp}`);
    }
  }

  /** One pull of a mirror from the primary, as the mirror runs it: inside the LAN, from its own address. */
  function pullMirror(m: Mirror): Pull {
    const lo0 = counter('lo');
    const p0 = performance.now();
    const pull = spawnSync(
      'ip',
      [
        ...['netns', 'exec', vc.ns, process.execPath, join(REPO, 'builder/cli.ts'), 'mirror'],
        ...['--primary', MASTER_IP, '--key', m.key, '--known-hosts', join(m.dir, 'known_hosts')],
        ...['--master-root', m.master.root, '--state-dir', m.state, '--bind', m.ip],
      ],
      { encoding: 'utf8' },
    );
    const seconds = (performance.now() - p0) / 1000;
    if (pull.status !== 0 || !/rootfs \S+ \(current\)/.test(pull.stderr))
      throw new Error(`builder mirror (the pull of ${m.ip}) exit ${pull.status}:\n${pull.stderr}${pull.stdout}`);
    // the pull runs between two addresses of the namespace: over its loopback
    const loopbackBytes = counter('lo') - lo0;
    const passes = /: (content [^;]*);/.exec(pull.stderr)?.[1] ?? '';
    console.log(`measure: mirrors pull ${m.ip} s=${seconds.toFixed(1)} loopback_bytes=${loopbackBytes} (${passes})`);
    return { mirror: m.ip, seconds: r2(seconds), loopbackBytes, passes };
  }

  /** The mirror serves nodes: the primary's public keys, its own report sink and sync slots, its sshd; with tftp,
   *  its TFTP-only dnsmasq too. */
  async function serve(m: Mirror, tftp: boolean): Promise<void> {
    const conf = join(m.dir, 'dnsmasq.conf');
    const r = vc.builder(
      ...['mirror', '--serve', '--keys', testKeys().dir, '--nodes', join(vc.dir, 'nodes.txt')],
      ...['--subnet', SUBNET, '--master-root', m.master.root, '--state-dir', m.state],
      ...['--authorized-keys', join(m.dir, 'authorized_keys')],
      ...(tftp ? ['--tftp', m.ip, '--dnsmasq-conf', conf] : []),
    );
    if (r.status !== 0) throw new Error(`builder mirror --serve (${m.ip}): ${r.output}`);
    if (tftp)
      m.tftp = await Dnsmasq.start({
        wrap: vc.wrap,
        conf,
        pidFile: join(m.dir, 'dnsmasq.pid'),
        onLog: () => {},
      });
    await m.master.start(testKeys().hostKey, {
      listen: m.ip,
      port: 22,
      wrap: vc.wrap,
      authorizedKeys: join(m.dir, 'authorized_keys'),
    });
  }

  async function stopMirror(m: Mirror): Promise<void> {
    await m.tftp?.stop();
    m.tftp = null;
    await m.master.stop();
  }

  /** The servers whose reports and bytes a run reads: the primary and the mirrors. */
  const servers = () => [
    { ip: MASTER_IP, role: 'primary' as const, reports: join(vc.stateDir, 'reports') },
    ...mirrors.map((m) => ({ ip: m.ip, role: 'mirror' as const, reports: join(m.state, 'reports') })),
  ];

  try {
    await vc.start({ dataMb, taps: count });
    const acc = new Accounting(vc.ns, BRIDGE, [MASTER_IP, ...mirrorIps]);
    if (acc.install()) accounting = acc;
    // (a) the primary alone
    const alone = await coldRun('primary', 'primary alone', servers());

    // (b) the same nodes listed for the mirrors, spread evenly (node1 -> .2, node2 -> .3, node3 -> .2, ...)
    for (const [i, n] of specs.entries()) n.master = mirrorIps[i % mirrorCount];
    vc.stage();
    await vc.stopMaster();
    await vc.startMaster();
    const conf = readFileSync(vc.conf, 'utf8');
    for (const ip of mirrorIps)
      if (!conf.includes(`224,"${ip},${MASTER_IP}"`))
        throw new Error(`builder stage wrote no option 224 with ${ip} first:\n${conf}`);
    const hostPub = readFileSync(`${testKeys().hostKey}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const pulls: Pull[] = [];
    for (const [i, ip] of mirrorIps.entries()) {
      const mdir = join(dir, `mirror${i + 1}`);
      const m: Mirror = {
        ip,
        dir: mdir,
        key: join(mdir, 'mirror_ed25519'),
        master: new TestMaster(mdir, busybox),
        state: join(mdir, 'state'),
        tftp: null,
      };
      mkdirSync(mdir, { recursive: true });
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `mirror-${ip}`, '-f', m.key]);
      writeFileSync(join(mdir, 'known_hosts'), `${MASTER_IP} ${hostPub}\n`);
      // after the primary's dnsmasq bound its own address (bind-interfaces): it must not hold this one
      execFileSync('ip', ['-n', vc.ns, 'addr', 'add', `${ip}/24`, 'dev', BRIDGE]);
      // on the primary: the mirror's key may read its master root, from the mirror's address only
      const allow = vc.builder(
        ...['mirror', '--allow', ip, '--key', m.key],
        ...['--master-root', vc.masterRoot, '--authorized-keys', vc.authorizedKeys],
      );
      if (allow.status !== 0) throw new Error(`builder mirror --allow ${ip}: ${allow.output}`);
      mirrors.push(m);
      pulls.push(pullMirror(m));
      await serve(m, false);
    }
    const spread = await coldRun('mirrors', `${mirrorCount} mirrors`, servers());
    spread.pulls = pulls;
    const configurations = [alone, spread];

    // (c) with --tftp-from-mirrors: the mirrors serve their nodes' TFTP too (builder stage --tftp-from-mirrors, each
    // mirror's TFTP-only dnsmasq from `builder mirror --serve --tftp`), as cluster.test.ts's mirror test does. The
    // primary's dnsmasq restarts without the mirrors' addresses on the bridge, so that it binds its own only.
    if (values['tftp-from-mirrors']) {
      for (const m of mirrors) await stopMirror(m);
      for (const m of mirrors) execFileSync('ip', ['-n', vc.ns, 'addr', 'del', `${m.ip}/24`, 'dev', BRIDGE]);
      vc.stage({ tftpFromMirrors: true });
      await vc.stopMaster();
      await vc.startMaster();
      const conf = readFileSync(vc.conf, 'utf8');
      for (const ip of mirrorIps)
        if (!conf.includes(`boot.scr.uimg,,${ip}`))
          throw new Error(`builder stage --tftp-from-mirrors named no next-server ${ip}:\n${conf}`);
      const again: Pull[] = [];
      for (const m of mirrors) {
        execFileSync('ip', ['-n', vc.ns, 'addr', 'add', `${m.ip}/24`, 'dev', BRIDGE]);
        again.push(pullMirror(m)); // the restaged TFTP folder (nothing else changed)
        await serve(m, true);
      }
      const tftp = await coldRun('mirrors-tftp', `${mirrorCount} mirrors, TFTP from them too`, servers());
      tftp.pulls = again;
      configurations.push(tftp);
    }

    if (values['setup-only']) {
      say('--setup-only: the primary and the mirrors are set up and answer; no node booted, nothing written');
      return;
    }
    const j: Measurement = {
      measured: new Date().toISOString(),
      commit,
      rig: `QEMU TCG arm64 nodes (1 vCPU each) on ${cpus().length} host cores (${cpus()[0]?.model ?? '?'})`,
      nodes: count,
      mirrors: mirrorIps,
      dataMb,
      minutes: r2((performance.now() - t0) / 60_000),
      configurations,
    };
    // The model's inputs, per node, from the primary alone: its SSH bytes on the wire (the root, the first-stage
    // cache, the small fetches; headers included) and its other bytes (TFTP twice, DHCP, DNS). Without the
    // accounting: the payloads (the reports' root bytes and the first stage cached; U-Boot's TFTP). A mirror
    // pull: the mean of the mirrors'.
    const p = alone.servers[0];
    const payload = alone.nodes.reduce((a, n) => a + n.reportBytes + n.firstStageBytes, 0) / count;
    const tftpPayload = alone.nodes.reduce((a, n) => a + n.tftpBytes, 0) / count;
    const wired = p?.sshWireBytes != null && p.sshWireBytes > 0;
    const m: ModelInputs = {
      bytesPerNode: Math.round(wired ? (p?.sshWireBytes ?? 0) / count : payload),
      tftpBytesPerNode: Math.round(wired && p?.otherWireBytes != null ? p.otherWireBytes / count : tftpPayload),
      mirrorPullBytes: Math.round(pulls.reduce((a, x) => a + x.loopbackBytes, 0) / pulls.length),
      from:
        `the measurement above, per node with the primary alone (` +
        (wired
          ? 'its SSH bytes on the wire for the syncs, its other bytes for TFTP'
          : "the reports' root bytes and the first stage cached; U-Boot's TFTP payload") +
        `; a mirror pull as measured)`,
    };
    if (!(m.bytesPerNode > 0)) throw new Error('no bytes per node measured: no traffic counts and no reports');
    if (!(m.mirrorPullBytes > 0)) m.mirrorPullBytes = m.bytesPerNode;
    const rows = models(m);
    j.model = { ...m, x86: compactRows(rows.x86), pi4: compactRows(rows.pi4) };
    mkdirSync(dirname(JSON_OUT), { recursive: true });
    writeFileSync(JSON_OUT, `${JSON.stringify(j, null, 2)}\n`);
    say(`wrote ${JSON_OUT.replace(`${REPO}/`, '')}`);
    writeDoc(j, m);
  } finally {
    for (const m of mirrors) await stopMirror(m);
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

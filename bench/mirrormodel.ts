// A model of a mass cold re-image (every node from a blank disk at once) served by a primary master and M mirrors
// (issue #19 item 4). Pure: numbers in, numbers out; scripts/bench-mirrors.ts feeds it the bytes per node it
// measured on the virtual cluster and renders the tables in docs/bench-mirrors.md.
//
// The model, in three phases one after the other:
//  1. pull: each mirror pulls one publish (`builder mirror`) from the primary, all at once, through the primary's
//     server rate. Sequential with the serving, not pipelined: a mirror makes a publish visible only in its
//     commit pass, after the whole content pass (builder/master/mirror.ts), and a node that asks a mirror before
//     that takes the mirror's older root. So the re-image waits for the pulls. A mirror already current (it pulled
//     on its timer before the reboot) costs nothing here: `mirrorsCurrent`.
//  2. TFTP: U-Boot's first stage (twice in a cold start: before and after the partitioning reboot), all nodes at
//     once, no node faster than its own U-Boot's TFTP. By default from the primary for every node, mirrors or not,
//     through the primary's link (what `builder stage` does); with `tftpFromMirrors` (`builder stage
//     --tftp-from-mirrors`, each mirror running `builder mirror --serve --tftp`) each server TFTPs the nodes it
//     syncs, through its own link (TFTP is not SSH: no SSH ceiling, no slots). Zero bytes (the default) leaves
//     this phase out.
//  3. sync: every node pulls `bytesPerNode` over SSH from its server. The nodes are shared as evenly as possible
//     over the serving servers (the M mirrors; the primary alone when M = 0, and with `primaryServes` as one more
//     server). A server's rate is min(link, SSH/rsync ceiling); at most `slots` nodes sync on it at once (its
//     sync slots: the others queue), each at min(server rate / active nodes, node ceiling). Equal nodes on a
//     server finish together, so a server's time is its full waves of `slots` nodes plus one wave of the rest.
//     (So one slot more is not always faster: a short last wave of disk-bound nodes leaves the server part idle,
//     where real nodes, drifting apart, would fill it. Unlimited slots give the fluid bound.) The phase takes as
//     long as its busiest server.
// Not modelled: a node's CPU (a Pi's rsync and chacha20 outrun its SD card), the switch fabric (each server's own
// link is the only shared link: a non-blocking fabric, or a mirror in each rack behind the rack's switch), the idle
// gap before a queued node notices a free slot (it asks again after a jittered 5-30 s backoff), a node's boot and
// partitioning time outside the transfers, TCP and SSH framing (the measured bytes per node carry them).

export interface ServerSpec {
  /** The server's network link, bits per second. */
  linkBitsPerS: number;
  /** What one server's sshd and rsync can push in all, bytes per second (Infinity: no ceiling). */
  sshBytesPerS: number;
  /** Sync slots: root syncs at once (`builder stage --sync-slots`, default 8); 0: unlimited. */
  slots: number;
}

export interface ModelInput {
  /** Bytes one cold node pulls from its server over SSH (the root and the first-stage cache), as measured. */
  bytesPerNode: number;
  nodes: number;
  /** Mirrors; 0: the primary alone. */
  mirrors: number;
  primary: ServerSpec;
  /** Each mirror (default: as the primary). */
  mirror?: ServerSpec;
  /** A node's own ceiling, bytes per second: what its disk writes (an SD card on a Pi: 20-40 MB/s). */
  nodeBytesPerS: number;
  /** Bytes a mirror pulls from the primary before it serves (default: bytesPerNode, one root). */
  mirrorPullBytes?: number;
  /** The mirrors pulled before the re-image began (default false: the pull is part of the wall time). */
  mirrorsCurrent?: boolean;
  /** With mirrors, the primary serves a share of the nodes too (default false: mirrors only). */
  primaryServes?: boolean;
  /** TFTP bytes per node, always from the primary (default 0: no TFTP phase). */
  tftpBytesPerNode?: number;
  /** A node's U-Boot TFTP rate, bytes per second (default Infinity). */
  tftpNodeBytesPerS?: number;
  /** Each mirror TFTPs its own nodes (`builder stage --tftp-from-mirrors`); default false: the primary TFTPs all. */
  tftpFromMirrors?: boolean;
}

/** What limits a server in the sync phase. */
export type Limit = 'link' | 'ssh' | 'node disk' | 'none';

export interface ServerLoad {
  role: 'primary' | 'mirror';
  nodes: number;
  /** min(link, SSH ceiling), bytes per second. */
  rateBytesPerS: number;
  /** Nodes syncing at once in a full wave. */
  active: number;
  /** Waves of syncs (slots queue the rest). */
  waves: number;
  /** A node's rate in a full wave, bytes per second. */
  nodeBytesPerS: number;
  seconds: number;
  limit: Limit;
}

export interface ModelResult {
  input: ModelInput;
  pullSeconds: number;
  tftpSeconds: number;
  syncSeconds: number;
  totalSeconds: number;
  /** The serving servers, busiest first. */
  servers: ServerLoad[];
  /** The most nodes on one serving server. */
  nodesPerServer: number;
  /** What limits the busiest server. */
  limit: Limit;
  /** Bytes through the primary's link: the mirrors' pulls, all TFTP, its own share of syncs. */
  primaryBytes: number;
}

const positive = (x: number) => typeof x === 'number' && x > 0 && !Number.isNaN(x);
const finiteNonNegative = (x: number) => typeof x === 'number' && Number.isFinite(x) && x >= 0;

function checkServer(what: string, s: ServerSpec): void {
  if (!s || typeof s !== 'object') throw new Error(`mirrormodel: ${what}: no server spec`);
  if (!positive(s.linkBitsPerS) || !Number.isFinite(s.linkBitsPerS))
    throw new Error(`mirrormodel: ${what}.linkBitsPerS must be a positive number (${s.linkBitsPerS})`);
  if (!positive(s.sshBytesPerS))
    throw new Error(`mirrormodel: ${what}.sshBytesPerS must be positive (Infinity: none) (${s.sshBytesPerS})`);
  if (!Number.isInteger(s.slots) || s.slots < 0)
    throw new Error(`mirrormodel: ${what}.slots must be a whole number >= 0 (${s.slots})`);
}

/** Throws on input the model has no answer for (0 nodes, negative bytes, a link of 0, ...). */
export function checkInput(i: ModelInput): void {
  if (!positive(i.bytesPerNode) || !Number.isFinite(i.bytesPerNode))
    throw new Error(`mirrormodel: bytesPerNode must be a positive number (${i.bytesPerNode})`);
  if (!Number.isInteger(i.nodes) || i.nodes < 1)
    throw new Error(`mirrormodel: nodes must be a whole number >= 1 (${i.nodes})`);
  if (!Number.isInteger(i.mirrors) || i.mirrors < 0)
    throw new Error(`mirrormodel: mirrors must be a whole number >= 0 (${i.mirrors})`);
  checkServer('primary', i.primary);
  if (i.mirror !== undefined) checkServer('mirror', i.mirror);
  if (!positive(i.nodeBytesPerS)) throw new Error(`mirrormodel: nodeBytesPerS must be positive (${i.nodeBytesPerS})`);
  if (i.mirrorPullBytes !== undefined && !finiteNonNegative(i.mirrorPullBytes))
    throw new Error(`mirrormodel: mirrorPullBytes must be a number >= 0 (${i.mirrorPullBytes})`);
  if (i.tftpBytesPerNode !== undefined && !finiteNonNegative(i.tftpBytesPerNode))
    throw new Error(`mirrormodel: tftpBytesPerNode must be a number >= 0 (${i.tftpBytesPerNode})`);
  if (i.tftpNodeBytesPerS !== undefined && !positive(i.tftpNodeBytesPerS))
    throw new Error(`mirrormodel: tftpNodeBytesPerS must be positive (${i.tftpNodeBytesPerS})`);
}

/** A server's rate: its link (bits to bytes) or its SSH ceiling, the lower. */
export const serverRate = (s: ServerSpec): number => Math.min(s.linkBitsPerS / 8, s.sshBytesPerS);

/** One server syncing `nodes` nodes of `bytes` each: waves of at most `slots` nodes sharing its rate. */
export function serveTime(
  s: ServerSpec,
  nodes: number,
  bytes: number,
  nodeBytesPerS: number,
  role: ServerLoad['role'] = 'mirror',
): ServerLoad {
  const rate = serverRate(s);
  if (nodes === 0)
    return { role, nodes, rateBytesPerS: rate, active: 0, waves: 0, nodeBytesPerS: 0, seconds: 0, limit: 'none' };
  const active = s.slots > 0 ? Math.min(s.slots, nodes) : nodes;
  const full = Math.floor(nodes / active);
  const rest = nodes % active;
  const perNode = (k: number) => Math.min(rate / k, nodeBytesPerS);
  const seconds = (full * bytes) / perNode(active) + (rest ? bytes / perNode(rest) : 0);
  const limit: Limit =
    nodeBytesPerS < rate / active ? 'node disk' : s.linkBitsPerS / 8 <= s.sshBytesPerS ? 'link' : 'ssh';
  return {
    role,
    nodes,
    rateBytesPerS: rate,
    active,
    waves: full + (rest ? 1 : 0),
    nodeBytesPerS: perNode(active),
    seconds,
    limit,
  };
}

/** The mass cold re-image's wall time, and where it goes. */
export function estimate(input: ModelInput): ModelResult {
  checkInput(input);
  const { nodes, mirrors, bytesPerNode } = input;
  const mirror = input.mirror ?? input.primary;
  const primaryRate = serverRate(input.primary);
  // 1. the mirrors' pulls, all at once through the primary, none faster than its own link
  const pullBytes = input.mirrorPullBytes ?? bytesPerNode;
  const pullSeconds =
    mirrors === 0 || input.mirrorsCurrent || pullBytes === 0
      ? 0
      : pullBytes / Math.min(primaryRate / mirrors, mirror.linkBitsPerS / 8);
  // the serving servers' shares of the nodes (mirrors first when the share is uneven), and (3.) their syncs
  const serving: Array<{ role: 'primary' | 'mirror'; spec: ServerSpec }> =
    mirrors === 0
      ? [{ role: 'primary', spec: input.primary }]
      : [
          ...Array.from({ length: mirrors }, () => ({ role: 'mirror' as const, spec: mirror })),
          ...(input.primaryServes ? [{ role: 'primary' as const, spec: input.primary }] : []),
        ];
  const base = Math.floor(nodes / serving.length);
  const extra = nodes % serving.length;
  const shares = serving.map((s, i) => ({ ...s, nodes: base + (i < extra ? 1 : 0) }));
  const servers = shares
    .map((s) => serveTime(s.spec, s.nodes, bytesPerNode, input.nodeBytesPerS, s.role))
    .sort((a, b) => b.seconds - a.seconds || b.nodes - a.nodes);
  // 2. TFTP: from the primary to every node, or from each serving server to its share
  const tftp = input.tftpBytesPerNode ?? 0;
  const byMirrors = mirrors > 0 && input.tftpFromMirrors === true;
  const tftpNode = tftp / (input.tftpNodeBytesPerS ?? Infinity);
  const tftpSeconds =
    tftp === 0
      ? 0
      : byMirrors
        ? Math.max(...shares.map((s) => Math.max((s.nodes * tftp) / (s.spec.linkBitsPerS / 8), s.nodes ? tftpNode : 0)))
        : Math.max((nodes * tftp) / (input.primary.linkBitsPerS / 8), tftpNode);
  const busiest = servers[0];
  const syncSeconds = busiest?.seconds ?? 0;
  const primaryShare = servers.filter((s) => s.role === 'primary').reduce((a, s) => a + s.nodes, 0);
  const primaryTftp = byMirrors ? primaryShare : nodes;
  return {
    input,
    pullSeconds,
    tftpSeconds,
    syncSeconds,
    totalSeconds: pullSeconds + tftpSeconds + syncSeconds,
    servers,
    nodesPerServer: Math.max(...servers.map((s) => s.nodes)),
    limit: busiest?.limit ?? 'none',
    primaryBytes: (input.mirrorsCurrent ? 0 : mirrors * pullBytes) + primaryTftp * tftp + primaryShare * bytesPerNode,
  };
}

/** One row of the model's table: a fleet size, a link speed, a mirror count (with its name) and the estimate. */
export interface ModelRow {
  nodes: number;
  linkGbit: number;
  mirrors: number;
  /** How the mirror count was chosen: `0 (primary alone)`, `2`, `5 (one per rack of 20)`, ... */
  label: string;
  result: ModelResult;
  /** The same with each mirror TFTPing its own nodes (`--tftp-from-mirrors`): when there are mirrors and TFTP. */
  mirrorTftp?: ModelResult;
}

export interface GridOptions {
  /** Everything but nodes, mirrors and the servers' links. */
  base: Omit<ModelInput, 'nodes' | 'mirrors' | 'primary' | 'mirror'>;
  /** The primary's and the mirrors' SSH ceilings and slots (their links come from `linksGbit`). */
  primary: Omit<ServerSpec, 'linkBitsPerS'>;
  mirror?: Omit<ServerSpec, 'linkBitsPerS'>;
  nodes: readonly number[];
  linksGbit: readonly number[];
  /** Fixed mirror counts (default 0, 1, 2, 5). */
  mirrorCounts?: readonly number[];
  /** One mirror per rack of this many nodes (default 20 and 40). */
  rackSizes?: readonly number[];
  /** The mirrors' link when it does not follow `linksGbit` (a Pi 4 mirror: 1 Gbit/s). */
  mirrorLinkGbit?: number;
}

/** The mirror counts for a fleet: the fixed ones, then one per rack; one count named by all that chose it. */
export function mirrorChoices(
  nodes: number,
  counts: readonly number[] = [0, 1, 2, 5],
  racks: readonly number[] = [20, 40],
): Array<{ mirrors: number; label: string }> {
  const names = new Map<number, string[]>();
  const add = (m: number, why: string) => {
    const l = names.get(m) ?? [];
    if (why) l.push(why);
    names.set(m, l);
  };
  for (const m of counts) add(m, m === 0 ? 'primary alone' : '');
  for (const r of racks) {
    if (!Number.isInteger(r) || r < 1) throw new Error(`mirrormodel: a rack of ${r} nodes`);
    add(Math.ceil(nodes / r), `one per rack of ${r}`);
  }
  return [...names.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([mirrors, why]) => ({ mirrors, label: why.length ? `${mirrors} (${why.join(', ')})` : String(mirrors) }));
}

/** The table's rows: every fleet size, link and mirror choice. */
export function modelRows(o: GridOptions): ModelRow[] {
  const rows: ModelRow[] = [];
  for (const nodes of o.nodes)
    for (const linkGbit of o.linksGbit)
      for (const { mirrors, label } of mirrorChoices(nodes, o.mirrorCounts, o.rackSizes)) {
        const mirror = o.mirror ?? o.primary;
        const input: ModelInput = {
          ...o.base,
          nodes,
          mirrors,
          primary: { ...o.primary, linkBitsPerS: linkGbit * 1e9 },
          mirror: { ...mirror, linkBitsPerS: (o.mirrorLinkGbit ?? linkGbit) * 1e9 },
        };
        const both = mirrors > 0 && (o.base.tftpBytesPerNode ?? 0) > 0 && !o.base.tftpFromMirrors;
        rows.push({
          nodes,
          linkGbit,
          mirrors,
          label,
          result: estimate(input),
          ...(both ? { mirrorTftp: estimate({ ...input, tftpFromMirrors: true }) } : {}),
        });
      }
  return rows;
}

/** Seconds as people read them: `45 s`, `4.2 min`, `1.6 h`. */
export function duration(s: number): string {
  if (!Number.isFinite(s)) return String(s);
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** The rows as a markdown table. */
export function renderModelTable(rows: readonly ModelRow[]): string {
  const anyTftp = rows.some((r) => r.result.tftpSeconds > 0);
  const anyMirrorTftp = rows.some((r) => r.mirrorTftp !== undefined);
  const head = [
    'nodes',
    'link',
    'mirrors',
    'nodes per server',
    'mirror pull',
    ...(anyTftp ? ['TFTP (primary)'] : []),
    'sync',
    'total',
    ...(anyMirrorTftp ? ['total, TFTP from mirrors'] : []),
    'a node syncs at',
    'sync limit',
    'through the primary',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 3 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const r of rows) {
    const x = r.result;
    const busiest = x.servers[0];
    lines.push(
      `| ${[
        String(r.nodes),
        `${r.linkGbit} Gbit/s`,
        r.label,
        String(x.nodesPerServer),
        x.pullSeconds ? duration(x.pullSeconds) : '-',
        ...(anyTftp ? [duration(x.tftpSeconds)] : []),
        duration(x.syncSeconds),
        `**${duration(x.totalSeconds)}**`,
        ...(anyMirrorTftp ? [r.mirrorTftp ? `**${duration(r.mirrorTftp.totalSeconds)}**` : '-'] : []),
        busiest ? `${(busiest.nodeBytesPerS / 1e6).toFixed(1)} MB/s` : '-',
        `${x.limit}${busiest && busiest.waves > 1 ? `, ${busiest.waves} waves` : ''}`,
        `${(x.primaryBytes / 1e9).toFixed(1)} GB`,
      ].join(' | ')} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

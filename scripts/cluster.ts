// The main job on one machine: a master (dnsmasq staged by `builder stage`, sshd, syslog) and N virtual
// arm64 nodes on a bridge in a network namespace. The first run starts from blank disks: each node
// partitions, reboots, syncs its root, overlays it and hands off to the template's init. A second run
// keeps the disks and the master, so the nodes take the fast path. A live table follows every node.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO } from '../builder/image/agentbuild.ts';
import { sysroot } from '../test/rig/images.ts';
import { VirtualCluster, nodeSpecs, type NodeView } from '../test/rig/cluster.ts';
import { fleetRows, liveFromView, redraw, renderFrame } from '../builder/master/fleetview.ts';
import { readStatus } from '../builder/master/status.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    fresh: { type: 'boolean', default: false },
    'data-mb': { type: 'string', default: '20' },
  },
});
const count = Number(values.nodes);
if (!Number.isInteger(count) || count < 1 || count > 32) throw new Error('--nodes: 1..32');
const work = join(REPO, '.cache/cluster');
if (values.fresh) rmSync(work, { recursive: true, force: true });
const say = (s: string) => console.log(`\x1b[1mcluster:\x1b[0m ${s}`);
const specs = nodeSpecs(count);
const cold = specs.some((n) => !existsSync(join(work, `${n.hostname}.img`)));
say('building the sysroot, the agent and the initramfs (cached after the first run)');
const sr = await sysroot();
const vc = new VirtualCluster(work, specs, join(sr.root, 'bin/busybox'));
process.on('SIGINT', () => void vc.stop().then(() => process.exit(130)));
await vc.start({ dataMb: Number(values['data-mb']) });
say(`master 10.77.0.1 in namespace ${vc.ns}: dnsmasq (DHCP, DNS, TFTP), sshd, syslog; tree ${vc.masterRoot}`);
if (cold) {
  vc.blankDisks(specs.filter((n) => !existsSync(vc.disk(n))));
  say(`${count} blank disks: a cold start (partition, reboot, full root sync)`);
} else say(`${count} disks from the last run: the fast path (no sync) unless the master changed`);

const tty = process.stdout.isTTY;
let drawn = 0;
let last = '';
function table(views: NodeView[]): string {
  const rows = views.map((v) => [
    v.hostname,
    String(v.boots),
    v.state,
    `${v.step} ${v.phase}`.trim(),
    v.detail.slice(0, 70),
  ]);
  const head = ['NODE', 'BOOT', 'STATE', 'PHASE', 'DETAIL'];
  // fixed widths (wide enough for node names and phases) so lines printed one by one stay aligned
  const w = head.map((h, i) => Math.max(h.length, [8, 4, 9, 13, 0][i] ?? 0, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
function draw(): void {
  if (tty) {
    // the same rows as `builder watch`: each node's console events, and its last report on the master
    const live = new Map([...vc.views.values()].map((v) => [v.hostname.toLowerCase(), liveFromView(v)]));
    const frame = renderFrame(fleetRows(readStatus({ masterRoot: vc.masterRoot, stateDir: vc.stateDir }).rows, live), {
      columns: process.stdout.columns || 120,
      color: true,
    });
    process.stdout.write(redraw(frame, drawn));
    drawn = frame.length;
    return;
  }
  const text = table([...vc.views.values()]);
  if (text !== last) {
    // not a terminal (CI, a pipe): print only what changed, one line per node
    const before = last.split('\n');
    for (const [i, l] of text.split('\n').entries()) if (i > 0 && before[i] !== l) console.log(`  ${l}`);
  }
  last = text;
}
const timer = setInterval(draw, tty ? 500 : 1000);
const bytes0 = vc.masterBytesSent();
const t0 = performance.now();
try {
  const results = await Promise.all(specs.map((n, i) => vc.bootUntilUp(n, i)));
  clearInterval(timer);
  draw();
  const wall = (performance.now() - t0) / 1000;
  const sent = vc.masterBytesSent() - bytes0;
  const up = results.filter((r) => r.at(-1)?.ending === 'template').length;
  say(
    `${up}/${count} nodes ran their template's init; ${cold ? 'cold' : 'warm'} boot of the cluster took ${wall.toFixed(1)} s wall ` +
      `(QEMU emulating arm64 on this host), master sent ${(sent / 1e6).toFixed(2)} MB on the LAN`,
  );
  console.log(
    `measure: cluster ${cold ? 'cold' : 'warm'} nodes=${count} wall_s=${wall.toFixed(1)} master_bytes_sent=${sent}`,
  );
  say('builder status:');
  console.log(vc.status());
  say(
    `consoles: ${work}/node*.console.log; syslog: ${vc.syslogFile}; run again for the fast path, --fresh to start over`,
  );
  if (up !== count) process.exitCode = 1;
} finally {
  clearInterval(timer);
  await vc.stop();
}
// the QEMU console pipes keep Bun's loop alive after the guests are gone: leave now
process.exit(process.exitCode ?? 0);

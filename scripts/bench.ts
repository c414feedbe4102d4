// Boot benchmarks: the agent against a reference busybox-sh init that follows the seed's flow, on the
// same rig (QEMU TCG, U-Boot, TFTP, the same kernel, tools and modules). Every case runs several times
// and the medians are reported. Times are kernel uptimes from the console (U-Boot's `Starting kernel`
// is 0), so the host's load moves them less than wall time would.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO } from '../builder/image/agentbuild.ts';
import type { Compression } from '../builder/image/compress.ts';
import { packReference } from '../bench/reference.ts';
import { boot, kernelToSwitchRoot, type BootResult } from '../test/rig/boot.ts';
import { agentBinary, images, sysroot, tftpFolder, type Images } from '../test/rig/images.ts';
import { randomBytes, TestMaster, testAccessFiles } from '../test/rig/master.ts';
import { blankDisk, QemuNode } from '../test/rig/qemu.ts';
import { VirtualCluster, nodeSpecs } from '../test/rig/cluster.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    only: { type: 'string', default: 'sizes,boot,scale,multi' },
    quick: { type: 'boolean', default: false },
  },
});
const RUNS = Number(values.runs);
const ONLY = new Set(String(values.only).split(','));
const say = (s: string) => console.error(`bench: ${s}`);
const median = (xs: number[]) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return Number.NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? (v[m] ?? Number.NaN) : ((v[m - 1] ?? 0) + (v[m] ?? 0)) / 2;
};
const r2 = (n: number) => Math.round(n * 100) / 100;
const git = (args: string[]) =>
  Bun.spawnSync(['git', '-C', REPO, ...args])
    .stdout.toString()
    .trim();
const commit =
  git(['rev-parse', '--short', 'HEAD']) +
  (git(['status', '--porcelain', '--', 'agent', 'builder', 'bench', 'test/rig']) ? '+dirty' : '');
const t0 = performance.now();
const JSON_OUT = join(REPO, 'docs/bench.json');
// With --only, the other sections of the last report are kept; each section says when and on which commit it was measured.
const out: Record<string, unknown> =
  ONLY.size < 4 && existsSync(JSON_OUT) ? (JSON.parse(readFileSync(JSON_OUT, 'utf8')) as Record<string, unknown>) : {};
Object.assign(out, {
  measured: new Date().toISOString(),
  rig: `QEMU TCG cortex-a72 (-smp 2, 1 GiB), ${cpus().length} host cores (${cpus()[0]?.model ?? '?'})`,
  runs: RUNS,
});
const provenance = (out.provenance ??= {}) as Record<string, { commit: string; measured: string }>;
for (const section of ONLY) provenance[section] = { commit, measured: new Date().toISOString() };

/** Kernel timestamps: initramfs unpack start/end, and when the kernel ran /init. */
function kernelTimes(raw: string): { unpackStart: number; unpackEnd: number; runInit: number } {
  const at = (re: RegExp) => Number(re.exec(raw)?.[1] ?? Number.NaN);
  return {
    unpackStart: at(/\[\s*([\d.]+)\] Trying to unpack rootfs image as initramfs/),
    unpackEnd: at(/\[\s*([\d.]+)\] Freeing initrd memory/),
    runInit: at(/\[\s*([\d.]+)\] Run \/init as init process/),
  };
}

/** When the boot handed over (agent: its switch_root event; reference: its `refinit: T switch_root` line). */
function switchRootAt(r: BootResult): number {
  const e = r.events.find((x) => x.phase === 'handoff' && String(x.message ?? '').startsWith('switch_root'));
  if (e) return e.t;
  return Number(/^refinit:\s+([\d.]+)s switch_root/m.exec(r.raw)?.[1] ?? Number.NaN);
}
function rebootAt(r: BootResult): number {
  const e = r.events.find((x) => String(x.message ?? '').startsWith('rebooting'));
  if (e) return e.t;
  return Number(/^refinit:\s+([\d.]+)s reboot/m.exec(r.raw)?.[1] ?? Number.NaN);
}
function firstWordAt(r: BootResult): number {
  return r.events[0]?.t ?? Number(/^refinit:\s+([\d.]+)s /m.exec(r.raw)?.[1] ?? Number.NaN);
}
function bytesReceived(r: BootResult): number {
  const e = r.events.find((x) => x.phase === 'root' && String(x.message ?? '').includes('bytes received'));
  if (e) return Number(/(\d+) bytes received/.exec(String(e.message))?.[1] ?? 0);
  return Number(/^refinit:\s+[\d.]+s rsync done bytes=(\d+)/m.exec(r.raw)?.[1] ?? 0);
}
/** The agent's phase durations; the reference's steps as the gaps between its lines. */
function phases(r: BootResult): Record<string, number> {
  const p: Record<string, number> = {};
  for (const e of r.events) if (e.kind === 'phase-done') p[e.phase] = r2(Number(e.seconds));
  if (Object.keys(p).length) return p;
  const lines = [...r.raw.matchAll(/^refinit:\s+([\d.]+)s (\S+)/gm)];
  for (const [i, m] of lines.entries()) {
    const next = lines[i + 1];
    if (next) p[m[2] ?? '?'] = r2((p[m[2] ?? '?'] ?? 0) + Number(next[1]) - Number(m[1]));
  }
  return p;
}
const memoryMb = (r: BootResult) => {
  const m =
    /memory: agent peak ([\d.]+) MB \(VmHWM\).*hold ([\d.]+) MB \(Shmem\); ([\d.]+) MB available of ([\d.]+) MB/.exec(
      r.console,
    );
  return m ? { vmHwmMb: Number(m[1]), shmemMb: Number(m[2]), availableMb: Number(m[3]), totalMb: Number(m[4]) } : null;
};

const extra = testAccessFiles();
const inits: Record<'agent' | 'reference', () => Promise<Images>> = {
  agent: () => images({ extra }),
  reference: () => packReference({ extra }),
};

// 1. sizes and kernel unpack time per compression
if (ONLY.has('sizes')) {
  const rows: Record<string, unknown>[] = [];
  const variants: Array<[string, () => Promise<Images>]> = [
    ...(['gzip', 'zstd', 'xz'] as Compression[]).map(
      (c) => [`agent ${c}`, () => images({ extra, compress: c })] as [string, () => Promise<Images>],
    ),
    ['reference gzip', inits.reference],
  ];
  for (const [name, make] of variants) {
    const img = await make();
    const unpack: number[] = [];
    const first: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const work = mkdtempSync(join(tmpdir(), 'cb-bench-'));
      const tftp = tftpFolder(
        join(work, 'tftp'),
        img,
        'console=ttyAMA0 panic=10 disk=/dev/vda masterip=10.0.2.99 retries=1',
      );
      blankDisk(join(work, 'disk.img'), 64);
      const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img') });
      try {
        await node.waitFor(/@@clusterboot \{"kind":"phase-start"|^refinit: /m, 300_000);
        const k = kernelTimes(node.console);
        unpack.push(k.unpackEnd - k.unpackStart);
        first.push(
          Number(
            /@@clusterboot \{"kind":"[^"]+".*"t":([\d.]+)\}/.exec(node.console)?.[1] ??
              /^refinit:\s+([\d.]+)s/m.exec(node.console)?.[1],
          ),
        );
      } finally {
        await node.kill();
        rmSync(work, { recursive: true, force: true });
      }
    }
    rows.push({
      name,
      uimageBytes: statSync(img.initramfs).size,
      cpioBytes: img.pack.cpioBytes,
      unpackSeconds: r2(median(unpack)),
      firstWordAt: r2(median(first)),
    });
    say(
      `${name}: ${(statSync(img.initramfs).size / 1e6).toFixed(1)} MB, unpack ${median(unpack).toFixed(2)} s, first word at ${median(first).toFixed(2)} s`,
    );
  }
  out.sizes = { agentBinaryBytes: statSync(await agentBinary()).size, rows };
}

type Samples = { res: Record<string, number[]>; ph: Record<string, Record<string, number>[]> };

/** A node's life on one master: blank -> reboot, full sync, unchanged, one changed file; medians of the runs. */
async function lifecycle(
  kind: 'agent' | 'reference',
  o: { dataMb: number; runs: number; table?: string; diskMb?: number; changeFiles?: number },
) {
  return summarize(await lifecycleSamples(kind, o));
}

/** Appends one set of samples to another (runs of the agent and the reference are interleaved). */
function mergeSamples(into: Samples | null, more: Samples): Samples {
  if (!into) return more;
  for (const [k, v] of Object.entries(more.res)) (into.res[k] ??= []).push(...v);
  for (const [k, v] of Object.entries(more.ph)) (into.ph[k] ??= []).push(...v);
  return into;
}

async function lifecycleSamples(
  kind: 'agent' | 'reference',
  o: { dataMb: number; runs: number; table?: string; diskMb?: number; changeFiles?: number },
): Promise<Samples> {
  const img = await inits[kind]();
  const work = mkdtempSync(join(tmpdir(), `cb-bench-${kind}-`));
  const master = new TestMaster(work, join(img.sysroot, 'bin/busybox'));
  await master.layout({ dataMb: o.dataMb, ...(o.table ? { table: o.table } : {}) });
  await master.start();
  const res: Record<string, number[]> = {
    blank: [],
    full: [],
    unchanged: [],
    change: [],
    fullBytes: [],
    changeBytes: [],
    changedBytes: [],
    vmHwmMb: [],
    shmemMb: [],
    unchangedKernelAt: [],
    unchangedRunInit: [],
    unchangedFirstWord: [],
    unchangedProcessMs: [],
    unchangedPowerOnToSwitchRoot: [],
  };
  const ph: Record<string, Record<string, number>[]> = { full: [], unchanged: [] };
  try {
    for (let run = 0; run < o.runs; run++) {
      const disk = join(work, 'disk.img');
      blankDisk(disk, o.diskMb ?? 1024);
      const go = () => boot(img, work, { disk, bootargs: master.bootargs(), timeoutMs: 1_200_000 });
      const a = await go();
      res.blank?.push(rebootAt(a));
      const b = await go();
      res.full?.push(switchRootAt(b));
      res.fullBytes?.push(bytesReceived(b));
      ph.full?.push(phases(b));
      const c = await go();
      res.unchanged?.push(switchRootAt(c));
      ph.unchanged?.push(phases(c));
      // the start of the unchanged boot, split: U-Boot + TFTP (wall), the kernel's unpack and init, then /init's own start
      res.unchangedKernelAt?.push(c.kernelAtS);
      res.unchangedRunInit?.push(kernelTimes(c.raw).runInit);
      res.unchangedFirstWord?.push(firstWordAt(c));
      res.unchangedProcessMs?.push(
        Number((c.events[0]?.data as { processMs?: number } | undefined)?.processMs ?? Number.NaN),
      );
      res.unchangedPowerOnToSwitchRoot?.push(c.kernelAtS + switchRootAt(c));
      const m = memoryMb(c);
      if (m) {
        res.vmHwmMb?.push(m.vmHwmMb);
        res.shmemMb?.push(m.shmemMb);
      }
      // change 1 % of the template (at least one 1 MiB file) and publish
      const n = Math.max(1, o.changeFiles ?? Math.round(o.dataMb / 100));
      for (let i = 0; i < n; i++)
        writeFileSync(join(master.root, `rootfs/usr/share/data/blob${i}`), randomBytes(1 << 20, 1000 + run * 100 + i));
      await master.publish('rootfs');
      const d = await go();
      res.change?.push(switchRootAt(d));
      res.changeBytes?.push(bytesReceived(d));
      res.changedBytes?.push(n << 20);
      for (const [name, r] of Object.entries({ blank: a, full: b, unchanged: c, change: d })) {
        if (
          name === 'blank'
            ? r.ending !== 'reboot' && !/refinit:.*reboot/.test(r.raw)
            : !Number.isFinite(switchRootAt(r))
        ) {
          // A report of NaNs would be worse than none: stop here, before docs/ is written.
          throw new Error(
            `${kind} ${name} (run ${run + 1}) did not end as expected (ending ${r.ending}); console tail:\n${r.raw.split('\n').slice(-15).join('\n')}`,
          );
        }
      }
      say(
        `${kind} ${o.dataMb} MB run ${run + 1}: blank->reboot ${a && rebootAt(a).toFixed(2)} s, full ${switchRootAt(b).toFixed(2)} s, unchanged ${switchRootAt(c).toFixed(2)} s, change ${switchRootAt(d).toFixed(2)} s (${bytesReceived(d)} B)`,
      );
    }
  } finally {
    await master.stop();
    rmSync(work, { recursive: true, force: true });
  }
  return { res, ph };
}

function summarize({ res, ph }: Samples) {
  const med = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, r2(median(v))])) as Record<
    | 'blank'
    | 'full'
    | 'unchanged'
    | 'change'
    | 'fullBytes'
    | 'changeBytes'
    | 'changedBytes'
    | 'vmHwmMb'
    | 'shmemMb'
    | 'unchangedKernelAt'
    | 'unchangedRunInit'
    | 'unchangedFirstWord'
    | 'unchangedProcessMs'
    | 'unchangedPowerOnToSwitchRoot',
    number
  >;
  const phaseMed = (list: Record<string, number>[] | undefined) => {
    const keys = [...new Set((list ?? []).flatMap((x) => Object.keys(x)))];
    return Object.fromEntries(keys.map((k) => [k, r2(median((list ?? []).map((x) => x[k] ?? Number.NaN)))]));
  };
  return { ...med, samples: res, phasesFull: phaseMed(ph.full), phasesUnchanged: phaseMed(ph.unchanged) };
}

// 2. the boot cases, agent against reference, 20 MB template
if (ONLY.has('boot')) {
  // interleaved, one run of each at a time, so a host that slows down for a while hurts both alike
  let a: Samples | null = null;
  let r: Samples | null = null;
  for (let run = 0; run < RUNS; run++) {
    a = mergeSamples(a, await lifecycleSamples('agent', { dataMb: 20, runs: 1 }));
    r = mergeSamples(r, await lifecycleSamples('reference', { dataMb: 20, runs: 1 }));
  }
  if (!a || !r) throw new Error('--runs must be at least 1');
  const agent = summarize(a);
  const reference = summarize(r);
  const cases = ['blank', 'full', 'unchanged', 'change'];
  out.boot = {
    template: '20 MiB of incompressible files + busybox',
    agent,
    reference,
    ratios: Object.fromEntries(
      cases.map((k) => [
        k,
        r2(Number((agent as Record<string, unknown>)[k]) / Number((reference as Record<string, unknown>)[k])),
      ]),
    ),
    // the median of each run's own ratio (agent run i against reference run i, measured back to back)
    pairedRatios: Object.fromEntries(
      cases.map((k) => [k, r2(median((a.res[k] ?? []).map((x, i) => x / Number(r.res[k]?.[i]))))]),
    ),
  };
  say(`boot: unchanged agent ${String(agent.unchanged)} s vs reference ${String(reference.unchanged)} s`);
}

// 3. scaling with the template size (a 2 GiB disk with a 1.5 GiB root partition)
const BIG_TABLE = `label: dos
unit: sectors

/dev/mmcblk0p1 : start=        2048, size=       65536, type=c, bootable
/dev/mmcblk0p2 : start=       67584, size=     3145728, type=83
/dev/mmcblk0p3 : start=     3213312, size=      524288, type=83
/dev/mmcblk0p4 : start=     3737600, size=      262144, type=83
`;
if (ONLY.has('scale')) {
  const sizes = values.quick ? [20, 100] : [20, 100, 300];
  const rows: Record<string, unknown>[] = [];
  for (const mb of sizes) {
    const r = await lifecycle('agent', { dataMb: mb, runs: 1, table: BIG_TABLE, diskMb: 2048 });
    rows.push({
      templateMb: mb,
      fullSyncToSwitchRoot: r.full,
      rootPhaseFull: (r.phasesFull as Record<string, number>).root,
      fullBytes: r.fullBytes,
      unchangedToSwitchRoot: r.unchanged,
      rootPhaseUnchanged: (r.phasesUnchanged as Record<string, number>).root,
      changedBytes: r.changedBytes,
      changeBytesReceived: r.changeBytes,
      changeLimit: Math.round(1.1 * Number(r.changedBytes) + 65536),
      changeWithinLimit: Number(r.changeBytes) <= 1.1 * Number(r.changedBytes) + 65536,
    });
    say(
      `scale ${mb} MB: full ${String(r.full)} s, unchanged ${String(r.unchanged)} s, 1 % change ${String(r.changeBytes)} B of ${String(r.changedBytes)}`,
    );
  }
  out.scale = rows;
}

// 4. several nodes at once from one master (virtual cluster), and a model for bigger fleets
if (ONLY.has('multi')) {
  const rows: Record<string, unknown>[] = [];
  const sr = await sysroot();
  for (const n of values.quick ? [1, 2] : [1, 2, 4]) {
    const dir = mkdtempSync(join(tmpdir(), 'cb-bench-multi-'));
    const vc = new VirtualCluster(dir, nodeSpecs(n), join(sr.root, 'bin/busybox'));
    try {
      await vc.start({ dataMb: 20 });
      vc.blankDisks();
      const b0 = vc.masterBytesSent();
      const t0 = performance.now();
      const results = await Promise.all(vc.nodes.map((s, i) => vc.bootUntilUp(s, i)));
      const cold = { wall: (performance.now() - t0) / 1000, bytes: vc.masterBytesSent() - b0 };
      const b1 = vc.masterBytesSent();
      const t1 = performance.now();
      const warmRuns = await Promise.all(vc.nodes.map((s, i) => vc.bootOnce(s, { tap: i })));
      const warm = { wall: (performance.now() - t1) / 1000, bytes: vc.masterBytesSent() - b1 };
      // power-on -> switch_root of a warm boot: U-Boot (local script, network script, the cache from the disk) + the agent
      const warmSwitchRoot = median(warmRuns.map((r) => r.kernelAtS + (kernelToSwitchRoot(r) ?? Number.NaN)));
      const fromDisk = warmRuns.every((r) => r.raw.includes('loaded from the disk (the announced one'));
      const ok = results.every((r) => r.at(-1)?.ending === 'template');
      rows.push({
        nodes: n,
        ok,
        coldWallS: r2(cold.wall),
        coldMasterBytes: cold.bytes,
        warmWallS: r2(warm.wall),
        warmMasterBytes: warm.bytes,
        coldBytesPerNode: Math.round(cold.bytes / n),
        warmBytesPerNode: Math.round(warm.bytes / n),
        warmPowerOnToSwitchRootS: r2(warmSwitchRoot),
        warmFirstStageFromDisk: fromDisk,
      });
      say(
        `multi ${n}: cold ${cold.wall.toFixed(1)} s ${(cold.bytes / 1e6).toFixed(1)} MB, warm ${warm.wall.toFixed(1)} s ${(warm.bytes / 1e6).toFixed(1)} MB`,
      );
    } finally {
      await vc.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  out.multi = rows;
  // the model: the master's link is the bottleneck for TFTP and rsync; a Pi's own work overlaps with the others' transfers
  const last = rows.at(-1) as { coldBytesPerNode: number; warmBytesPerNode: number } | undefined;
  if (last) {
    const model: Record<string, unknown>[] = [];
    for (const nodes of [15, 100]) {
      for (const [link, bps] of [
        ['100 Mbit/s', 100e6 / 8],
        ['1 Gbit/s', 1e9 / 8],
      ] as const) {
        model.push({
          nodes,
          link,
          coldSeconds: Math.round((nodes * last.coldBytesPerNode) / (bps * 0.9)),
          warmSeconds: Math.round((nodes * last.warmBytesPerNode) / (bps * 0.9)),
          // before the first-stage cache every warm boot TFTPed 93.2 MB (+3 % framing) per node
          warmSecondsWithoutCache: Math.round((nodes * 93.2e6 * 1.03) / (bps * 0.9)),
        });
      }
    }
    // a Pi 4's U-Boot TFTPs at 1.4-1.7 MiB/s (published): what one warm boot's master bytes cost it, at 1.55 MiB/s
    out.pi4 = {
      warmTftpSeconds: r2(last.warmBytesPerNode / (1.55 * 2 ** 20)),
      warmTftpSecondsWithoutCache: r2((93.2e6 * 1.03) / (1.55 * 2 ** 20)),
    };
    out.model = {
      assumptions: `the master link is the bottleneck at 90 % of its rate; bytes per node as measured with ${String((rows.at(-1) as { nodes?: number } | undefined)?.nodes ?? '?')} nodes (cold: the gzip'd kernel and the initramfs by TFTP twice, the partitioning reboot between, then the 20 MiB template and the first-stage cache once by rsync; warm: DHCP, the network script and a little SSH, the first stage from the disk); a node's own CPU and SD card work overlaps with the other nodes' transfers; TFTP with a window of 1 (dnsmasq) may not fill a 1 Gbit/s link from one master`,
      rows: model,
    };
  }
}

out.minutes = Math.round((performance.now() - t0) / 600) / 100;
mkdirSync(join(REPO, 'docs'), { recursive: true });
writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 2)}\n`);
say('wrote docs/bench.json');
console.log(JSON.stringify(out, null, 2));
await import('./bench-report.ts');

// docs/bench.json -> docs/bench.md: the benchmark's tables for people (scripts/bench runs this at the end).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../builder/image/agentbuild.ts';

type Row = Record<string, unknown>;
const j = JSON.parse(readFileSync(join(REPO, 'docs/bench.json'), 'utf8')) as Row;
const mb = (b: unknown) => `${(Number(b) / 1e6).toFixed(1)} MB`;
const s = (x: unknown) => (Number.isFinite(Number(x)) ? `${Number(x).toFixed(2)} s` : '-');
const table = (head: string[], rows: string[][]) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join(
    '\n',
  );
const out: string[] = [
  `# Boot benchmarks`,
  '',
  `Measured ${String(j.measured)} on ${String(j.rig)}; medians of ${String(j.runs)} runs per case unless said.`,
  "Times are kernel uptime (U-Boot's `Starting kernel` is 0). Regenerate: `scripts/bench` (writes docs/bench.json, then this file).",
  '',
];
const prov = j.provenance as Record<string, { commit: string; measured: string }> | undefined;
if (prov)
  out.push(
    `Sections measured (commit, time): ${Object.entries(prov)
      .map(([k, v]) => `${k} ${v.commit} ${v.measured}`)
      .join('; ')}.`,
    '',
  );
const sizes = j.sizes as { agentBinaryBytes: number; rows: Row[] } | undefined;
if (sizes) {
  out.push(
    '## Initramfs size and unpack time',
    '',
    `Agent binary: ${mb(sizes.agentBinaryBytes)}.`,
    '',
    table(
      [
        'initramfs',
        'uImage',
        'cpio (RAM it holds)',
        'kernel unpack',
        'first word of /init',
        'power-on -> Starting kernel (user-net TFTP)',
      ],
      sizes.rows.map((r) => [
        String(r.name),
        mb(r.uimageBytes),
        mb(r.cpioBytes),
        s(r.unpackSeconds),
        r.errors ? `did not boot: ${(r.errors as string[])[0] ?? '?'}` : s(r.firstWordAt),
        s(r.powerOnToKernel),
      ]),
    ),
    '',
    "Kernel unpack: from `Trying to unpack rootfs image as initramfs` to `Freeing initrd memory` (kernel uptime). lz4 is not one of the builder's codecs (builder/image/compress.ts: gzip, zstd, xz, none); bench/lz4.ts makes it from the uncompressed cpio with `lz4 -l -9`. With the first stage cached on the disk only cold boots (and a new first stage) pay for the bytes; every boot pays for the unpack.",
    '',
  );
}
const boot = j.boot as { agent: Row; reference: Row; ratios: Row; pairedRatios?: Row; template: string } | undefined;
if (boot) {
  const cases: Array<[string, string]> = [
    ['blank', 'blank disk: partition, format, fill p1 -> reboot'],
    ['full', 'full sync -> switch_root'],
    ['unchanged', 'unchanged root -> switch_root'],
    ['change', 'one 1 MiB file changed -> switch_root'],
  ];
  out.push(
    '## The boot cases against the reference init',
    '',
    `Template: ${boot.template}. Reference: bench/init.sh (busybox sh, the seed's flow, same tools, kernel and modules).`,
    '',
    "Runs alternate (agent, reference, agent, ...). The last column is the median of the runs' own ratios, each agent run against the reference run measured right after it.",
    '',
    table(
      ['case', 'agent', 'reference', 'agent / reference (medians)', 'paired ratio'],
      cases.map(([k, label]) => [
        label,
        s(boot.agent[k]),
        s(boot.reference[k]),
        `${String(boot.ratios[k])}x`,
        boot.pairedRatios ? `${String(boot.pairedRatios[k])}x` : '-',
      ]),
    ),
    '',
    `Bytes received for the one-file change: agent ${String(boot.agent.changeBytes)}, reference ${String(boot.reference.changeBytes)}.`,
    '',
    '### Where the time goes (unchanged boot)',
    '',
    "Before the first phase: U-Boot, DHCP and TFTP (wall, power-on to `Starting kernel`), then the kernel (uptime at `Run /init`: it unpacks the initramfs while it starts), then /init until its first console line (for the agent, `processMs` is the part after its exec: Bun's own start plus loading the agent).",
    '',
    table(
      ['start of the unchanged boot', 'agent', 'reference'],
      [
        [
          'power-on -> Starting kernel (U-Boot, DHCP, TFTP; wall)',
          s(boot.agent.unchangedKernelAt),
          s(boot.reference.unchangedKernelAt),
        ],
        [
          'Starting kernel -> Run /init (kernel, initramfs unpack)',
          s(boot.agent.unchangedRunInit),
          s(boot.reference.unchangedRunInit),
        ],
        [
          'Run /init -> first word',
          s(Number(boot.agent.unchangedFirstWord) - Number(boot.agent.unchangedRunInit)),
          s(Number(boot.reference.unchangedFirstWord) - Number(boot.reference.unchangedRunInit)),
        ],
        ['of which the agent process (exec -> first word)', s(Number(boot.agent.unchangedProcessMs) / 1000), '-'],
        [
          'first word -> switch_root (the phases)',
          s(Number(boot.agent.unchanged) - Number(boot.agent.unchangedFirstWord)),
          s(Number(boot.reference.unchanged) - Number(boot.reference.unchangedFirstWord)),
        ],
        [
          'power-on -> switch_root',
          s(boot.agent.unchangedPowerOnToSwitchRoot),
          s(boot.reference.unchangedPowerOnToSwitchRoot),
        ],
      ],
    ),
    '',
    'Seconds per phase:',
    '',
    table(
      ['agent phase', 's'],
      Object.entries(boot.agent.phasesUnchanged as Row).map(([k, v]) => [k, String(v)]),
    ),
    '',
    table(
      ['reference step', 's'],
      Object.entries(boot.reference.phasesUnchanged as Row).map(([k, v]) => [k, String(v)]),
    ),
    '',
    `Agent memory at handoff (median): peak ${String(boot.agent.vmHwmMb)} MB (VmHWM); the initramfs and /run hold ${String(boot.agent.shmemMb)} MB (Shmem).`,
    '',
  );
}
const scale = j.scale as Row[] | undefined;
if (scale) {
  out.push(
    '## Scaling with the template size (one run each)',
    '',
    table(
      [
        'template',
        'full sync -> switch_root',
        'root phase (full)',
        'bytes received',
        'unchanged -> switch_root',
        'root phase (unchanged)',
        '1 % change: received / changed',
        'within 1.1x + 64 KiB',
      ],
      scale.map((r) => [
        `${String(r.templateMb)} MiB`,
        s(r.fullSyncToSwitchRoot),
        s(r.rootPhaseFull),
        mb(r.fullBytes),
        s(r.unchangedToSwitchRoot),
        s(r.rootPhaseUnchanged),
        `${String(r.changeBytesReceived)} / ${String(r.changedBytes)}`,
        r.changeWithinLimit ? 'yes' : 'NO',
      ]),
    ),
    '',
  );
}
const multi = j.multi as Row[] | undefined;
if (multi) {
  out.push(
    '## Several nodes from one master (virtual cluster, 20 MiB template)',
    '',
    table(
      [
        'nodes',
        'cold wall',
        'cold bytes per node',
        'warm wall',
        'warm bytes per node',
        'warm power-on -> switch_root',
        'first stage from the disk',
        'all up',
      ],
      multi.map((r) => [
        String(r.nodes),
        s(r.coldWallS),
        mb(r.coldBytesPerNode),
        s(r.warmWallS),
        `${Math.round(Number(r.warmBytesPerNode) / 1024)} KiB`,
        s(r.warmPowerOnToSwitchRootS),
        r.warmFirstStageFromDisk ? 'yes' : 'NO',
        r.ok ? 'yes' : 'NO',
      ]),
    ),
    '',
  );
  const model = j.model as { assumptions: string; rows: Row[] } | undefined;
  if (model) {
    out.push(
      '### Model for bigger fleets',
      '',
      `Assumptions: ${model.assumptions}.`,
      '',
      table(
        ['nodes', 'master link', 'cold (all nodes)', 'warm (all nodes)', 'warm without the first-stage cache'],
        model.rows.map((r) => [
          String(r.nodes),
          String(r.link),
          `${String(r.coldSeconds)} s`,
          `${String(r.warmSeconds)} s`,
          `${String(r.warmSecondsWithoutCache ?? '?')} s`,
        ]),
      ),
      '',
    );
    const pi4 = j.pi4 as { warmTftpSeconds: number; warmTftpSecondsWithoutCache: number } | undefined;
    if (pi4) {
      out.push(
        `On a Pi 4 (U-Boot TFTP at 1.55 MiB/s, published figures), a warm boot's master bytes cost ${pi4.warmTftpSeconds} s of transfer; without the cache the 93.2 MB of TFTP cost ${pi4.warmTftpSecondsWithoutCache} s.`,
        '',
      );
    }
  }
}
const kib = (b: unknown) => `${Math.round(Number(b) / 1024)} KiB`;
const bytes = (b: unknown) => (Number(b) >= 1e6 ? mb(b) : kib(b));
const x = (v: unknown) => (Number.isFinite(Number(v)) ? `${Number(v).toFixed(2)}x` : '-');
/** A first-stage section (`firststage`, `debian`): warm boots agent (first stage from the disk) vs the reference (TFTP). */
function firstStage(f: Row, heading: string): void {
  const a = (f.warm as { agent: Row }).agent;
  const r = (f.warm as { reference: Row }).reference;
  const ratios = f.ratios as Row;
  const paired = f.pairedRatios as Row;
  const cold = f.cold as { agent: Row; reference: Row };
  const change = f.change as { agent: Row; reference: Row; limit: number; changedBytes: number } & Row;
  const ph = f.phases as { agent: Row; reference: Row };
  const met = (b: unknown) => (b ? '**met**' : '**not met**');
  const diff = (row: Row, hi: string, lo: string) => Number(row[hi]) - Number(row[lo]);
  const over = (got: unknown) => {
    const extra = Number(got) - Number(change.changedBytes);
    return `${String(extra)} B (${(extra / Number(f.templateEntries)).toFixed(1)} B)`;
  };
  // the fleet's seconds: whole seconds once they are many
  const secs = (v: unknown) => (Number(v) >= 10 ? `${Math.round(Number(v))} s` : s(v));
  out.push(
    heading,
    '',
    `Template: ${String(f.template)}: ${Number(f.templateFiles).toLocaleString('en')} files (${Number(f.templateEntries).toLocaleString('en')} entries), ${mb(f.templateBytes)}. Reference: ${String(f.reference)}.`,
    '',
    `Virtual cluster (\`scripts/cluster\`'s chain: U-Boot, the master's dnsmasq DHCP + TFTP and sshd on a bridge; one vCPU per node). node1 runs the agent, whose warm boots load the first stage from its disk cache (U-Boot's local script: DHCP, the network script by TFTP, the cache read and CRC-checked); node2 runs the reference, whose TFTP folder is its own (\`tftp/<its IP>/\`, dnsmasq \`tftp-unique-root=ip\`). One boot at a time, alternating agent and reference, ${String(((f.samples as { agent: Record<string, number[]> }).agent.powerOnToSwitchRoot ?? []).length)} runs; the last column is the median of each run's own ratio. Master bytes: the bridge's transmit counter over one boot (TFTP, SSH, DHCP, with their headers).`,
    '',
    table(
      [
        'warm boot (medians)',
        'agent: first stage from the disk',
        'reference: TFTP every boot',
        'agent / reference',
        'paired',
      ],
      [
        ['power-on -> Starting kernel (U-Boot; wall)', s(a.powerOnToKernel), s(r.powerOnToKernel), '', ''],
        ['Starting kernel -> Run /init (kernel, initramfs unpack)', s(a.runInit), s(r.runInit), '', ''],
        ['Run /init -> first word', s(diff(a, 'firstWord', 'runInit')), s(diff(r, 'firstWord', 'runInit')), '', ''],
        [
          'first word -> switch_root',
          s(diff(a, 'kernelToSwitchRoot', 'firstWord')),
          s(diff(r, 'kernelToSwitchRoot', 'firstWord')),
          '',
          '',
        ],
        [
          'Starting kernel -> switch_root',
          s(a.kernelToSwitchRoot),
          s(r.kernelToSwitchRoot),
          x(ratios.kernelToSwitchRoot),
          x(paired.kernelToSwitchRoot),
        ],
        [
          '**power-on -> switch_root (QEMU)**',
          s(a.powerOnToSwitchRoot),
          s(r.powerOnToSwitchRoot),
          x(ratios.powerOnToSwitchRoot),
          `**${x(paired.powerOnToSwitchRoot)}**`,
        ],
        ['master bytes per node', bytes(a.masterBytes), bytes(r.masterBytes), '', ''],
        [
          'TFTP payload (QEMU wall time for it)',
          `${bytes(a.tftpBytes)} (${s(a.tftpSeconds)})`,
          `${bytes(r.tftpBytes)} (${s(r.tftpSeconds)})`,
          '',
          '',
        ],
        [
          "U-Boot's reads from the disk (U-Boot's timer); cache read + CRC-32 checks (wall)",
          `${bytes(a.diskBytes)} (${s(a.diskSeconds)}); ${s(a.cacheLoadSeconds)}`,
          '-',
          '',
          '',
        ],
        [
          `**Pi 4 model: TFTP at ${String(f.pi4TftpMiBps)} MiB/s**`,
          s(a.pi4PowerOnToSwitchRoot),
          s(r.pi4PowerOnToSwitchRoot),
          x(ratios.pi4PowerOnToSwitchRoot),
          `**${x(paired.pi4PowerOnToSwitchRoot)}**`,
        ],
        [
          `Pi 4 model, and U-Boot reading the SD card at ${String(f.sdMBps)} MB/s`,
          s(a.pi4SdPowerOnToSwitchRoot),
          s(r.pi4SdPowerOnToSwitchRoot),
          x(ratios.pi4SdPowerOnToSwitchRoot),
          x(paired.pi4SdPowerOnToSwitchRoot),
        ],
        [
          "the agent's handoff phase (closes SSH, pushes the boot report, moves the mounts)",
          s(a.handoffSeconds),
          '-',
          '',
          '',
        ],
      ],
    ),
    '',
    `**Target ${String(f.target)}x the reference or better** (paired ratios): in QEMU ${x(paired.powerOnToSwitchRoot)}, ${met(f.metInQemu)}; in the Pi 4 model ${x(paired.pi4PowerOnToSwitchRoot)}, ${met(f.metInPi4Model)}; with the SD reads at ${String(f.sdMBps)} MB/s ${x(paired.pi4SdPowerOnToSwitchRoot)}, ${met(f.metInPi4SdModel)}. ${f.breakEvenSdMBps === null ? 'No SD card speed brings the model to the target.' : `The model keeps ${String(f.target)}x as long as U-Boot reads the SD card at ${String(f.breakEvenSdMBps)} MB/s or more.`}`,
    '',
    `The Pi 4 model: each side's measured power-on -> switch_root in QEMU, minus the wall time its U-Boot spent in TFTP transfers (timed on the host from the console: \`Filename '...'\` to \`Bytes transferred\`), plus the same TFTP bytes at ${String(f.pi4TftpMiBps)} MiB/s (published U-Boot TFTP rates on a Pi 4: 1.4-1.7 MiB/s). Everything else stays at QEMU TCG's speed (kernel, unpack, Bun, the phases; a Pi 4's cores are faster for both sides). QEMU serves the agent's ${bytes(a.diskBytes)} of first stage from the host's page cache in ${s(a.diskSeconds)}; on a Pi they come from the SD card, which the last model row prices at ${String(f.sdMBps)} MB/s (an assumption: a Pi 4's DDR50 SD bus carries at most 50 MB/s).`,
    '',
    table(
      ['agent phase (warm)', 's'],
      Object.entries(ph.agent).map(([k, v]) => [k, String(v)]),
    ),
    '',
    table(
      ['reference step (warm)', 's'],
      Object.entries(ph.reference).map(([k, v]) => [k, String(v)]),
    ),
    '',
    'From a blank disk (cold), once each, before the warm runs:',
    '',
    table(
      ['cold: blank disk -> template init', 'agent', 'reference'],
      [
        ['boots (the partitioning reboot, then the sync)', String(cold.agent.boots), String(cold.reference.boots)],
        ['wall (both boots)', s(cold.agent.wallS), s(cold.reference.wallS)],
        ['master bytes', mb(cold.agent.masterBytes), mb(cold.reference.masterBytes)],
        [
          "of which TFTP payload (gzip'd kernel + initramfs, twice)",
          mb(cold.agent.tftpBytes),
          mb(cold.reference.tftpBytes),
        ],
        [
          'root template received by rsync',
          mb(cold.agent.fullSyncBytesReceived),
          mb(cold.reference.fullSyncBytesReceived),
        ],
      ],
    ),
    '',
    `The agent's cold bytes also hold the first-stage cache: one rsync of the raw kernel and the initramfs at the commit point.`,
    '',
    ...(Number(f.templateEntries) > 1000
      ? [
          `A changed file is found by rsync's file list, which travels whole on every sync: the bytes beyond the changed file grow with the template's entries (both sides alike). At ${((Number(change.agent.bytesReceived) - Number(change.changedBytes)) / Number(f.templateEntries)).toFixed(1)} B per entry, the bound's ${String(Number(change.limit) - Number(change.changedBytes))} B of slack for a 1 MiB change covers about ${String(Math.round((Number(change.limit) - Number(change.changedBytes)) / ((Number(change.agent.bytesReceived) - Number(change.changedBytes)) / Number(f.templateEntries)) / 100) * 100)} entries.`,
          '',
        ]
      : []),
    table(
      ['one 1 MiB file changed (medians)', 'agent', 'reference'],
      [
        ['bytes received by rsync', String(change.agent.bytesReceived), String(change.reference.bytesReceived)],
        [
          `within 1.1 x ${String(change.changedBytes)} + 64 KiB = ${String(change.limit)}`,
          change.agentWithinLimit ? 'yes' : 'NO',
          change.referenceWithinLimit ? 'yes' : 'NO',
        ],
        [
          `received beyond the changed bytes (per entry of the template's ${Number(f.templateEntries).toLocaleString('en')})`,
          over(change.agent.bytesReceived),
          over(change.reference.bytesReceived),
        ],
        ['Starting kernel -> switch_root', s(change.agent.kernelToSwitchRoot), s(change.reference.kernelToSwitchRoot)],
        ['master bytes', bytes(change.agent.masterBytes), bytes(change.reference.masterBytes)],
      ],
    ),
    '',
    "Fleet model with these bytes per node (the master link the bottleneck at 90 % of its rate; a node's own work overlaps with the others' transfers; TFTP with a window of 1 may not fill a 1 Gbit/s link):",
    '',
    table(
      ['nodes', 'master link', 'warm: agent', 'warm: reference', 'cold: agent', 'cold: reference'],
      (f.fleet as Row[]).map((m) => [
        String(m.nodes),
        String(m.link),
        secs(m.warmAgentSeconds),
        secs(m.warmReferenceSeconds),
        secs(m.coldAgentSeconds),
        secs(m.coldReferenceSeconds),
      ]),
    ),
    '',
  );
}
const fs = j.firststage as Row | undefined;
if (fs) firstStage(fs, '## Warm boots with the first stage on the disk, against the reference (virtual cluster)');
const deb = j.debian as Row | undefined;
if (deb) firstStage(deb, '## A Debian-size root: thousands of files, a real init (virtual cluster)');
const comp = j.compress as { rows: Row[]; pi4TftpMiBps: number; sdMBps: number } | undefined;
if (comp) {
  out.push(
    '## The compression choice on the warm path (virtual cluster, first stage from the disk)',
    '',
    `One agent node; each round boots every codec's initramfs once warm (from the disk cache), restaging it first: that boot TFTPs the new first stage and caches it ("new first stage" columns). Medians of ${String(j.runs)} rounds. Uncompressed (134 MB) is left out: the network script puts the kernel's decompression buffer 96 MiB above the initramfs.`,
    '',
    table(
      [
        'initramfs',
        'uImage',
        'warm: power-on -> switch_root',
        'warm: Starting kernel -> Run /init (unpack)',
        'warm: first word',
        'warm: cache read + CRC-32 (wall)',
        `warm, Pi 4 model (SD at ${String(comp.sdMBps)} MB/s)`,
        'new first stage: power-on -> switch_root',
        `new first stage, Pi 4 model (TFTP at ${String(comp.pi4TftpMiBps)} MiB/s)`,
      ],
      comp.rows.map((r) => {
        const w = r.warm as Row;
        const f = r.newFirstStage as Row;
        return r.error && !Number.isFinite(Number(w.powerOnToSwitchRoot))
          ? [
              String(r.codec),
              mb(r.uimageBytes),
              `failed: ${String(r.error).split('\n')[0] ?? ''}`,
              '',
              '',
              '',
              '',
              '',
              '',
            ]
          : [
              String(r.codec),
              mb(r.uimageBytes),
              s(w.powerOnToSwitchRoot),
              s(w.runInit),
              s(w.firstWord),
              s(w.cacheLoadSeconds),
              s(w.pi4SdPowerOnToSwitchRoot),
              s(f.powerOnToSwitchRoot),
              s(f.pi4PowerOnToSwitchRoot),
            ];
      }),
    ),
    '',
  );
}
writeFileSync(join(REPO, 'docs/bench.md'), `${out.join('\n')}\n`);
console.error('wrote docs/bench.md');

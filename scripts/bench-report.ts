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
      ['initramfs', 'uImage', 'cpio (RAM it holds)', 'kernel unpack', 'first word of /init'],
      sizes.rows.map((r) => [String(r.name), mb(r.uimageBytes), mb(r.cpioBytes), s(r.unpackSeconds), s(r.firstWordAt)]),
    ),
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
writeFileSync(join(REPO, 'docs/bench.md'), `${out.join('\n')}\n`);
console.error('wrote docs/bench.md');

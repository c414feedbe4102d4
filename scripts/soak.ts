// The long soak: N trials per dangerous phase, each with a seeded cut moment (printed, replayable with
// --seed), and a report of the outcomes per phase in docs/soak.json. The phases: repartition, format, the
// first boot copy, the root rsync, and a bootfs update (judged on p1 itself: see test/rig/soak.ts);
// --phases bootfs,rsync runs some of them (each keeps its seeds). --root debian makes the root a Debian-size one:
// the arm64 sysroot's tree (a real Debian userland, 511 MB in 8768 files) under the template's data, on a
// disk with a 1.5 GiB root partition, so the rsync phase cuts a long sync of many files (--cut-max-ms: how far
// into it, default 3500 ms for the tiny root, 100000 for the Debian one).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO } from '../builder/image/agentbuild.ts';
import { startMasterRig, stopMasterRig } from '../test/rig/master.ts';
import { addDebianTree, DEBIAN_ROOT, GOOD, SOAK_PHASES, Soak, type Trial } from '../test/rig/soak.ts';
import { measuredCommit } from '../bench/commit.ts';

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '20' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    out: { type: 'string', default: join(REPO, 'docs/soak.json') },
    phases: { type: 'string', default: SOAK_PHASES.join(',') },
    root: { type: 'string', default: 'tiny' },
    'cut-max-ms': { type: 'string' },
  },
});
if (values.root !== 'tiny' && values.root !== 'debian') {
  console.error(`soak: --root ${values.root}: expected tiny or debian`);
  process.exit(2);
}
const debian = values.root === 'debian';
// unset for the tiny root: the Soak's own default (the rsync cut of test/rig/soak.ts)
const cutMaxMs = values['cut-max-ms'] ? Number(values['cut-max-ms']) : debian ? DEBIAN_ROOT.cutMaxMs : undefined;
const trials = Number(values.trials);
const seed = Number(values.seed);
const phases = values.phases.split(',').filter(Boolean);
const unknown = phases.filter((p) => !(SOAK_PHASES as readonly string[]).includes(p));
if (unknown.length) {
  console.error(`soak: unknown phase ${unknown.join(', ')} (the phases: ${SOAK_PHASES.join(', ')})`);
  process.exit(2);
}
const only =
  (phases.length === SOAK_PHASES.length ? '' : ` --phases ${phases.join(',')}`) +
  (debian ? ' --root debian' : '') +
  (values['cut-max-ms'] ? ` --cut-max-ms ${cutMaxMs}` : '');
console.error(
  `soak: ${trials} trials per phase (${phases.join(', ')}), seed ${seed} (replay: scripts/soak --trials ${trials} --seed ${seed}${only})`,
);
const rig = await startMasterRig('soak', { dataMb: 20, ...(debian ? { table: DEBIAN_ROOT.table } : {}) });
const { img, work, master } = rig;
const results: Trial[] = [];
let debianSize = '';
let soak: Soak | undefined;
const t0 = performance.now();
const commit = measuredCommit(['agent', 'builder', 'test/rig']);

/** Written after every trial, so a run that is stopped early still leaves what it measured. */
function writeReport(done: boolean) {
  const counts: Record<string, Record<string, number>> = {};
  for (const t of results) {
    const c = (counts[t.phase] ??= {});
    c[t.outcome] = (c[t.outcome] ?? 0) + 1;
  }
  const bad = results.filter((t) => !GOOD.includes(t.outcome));
  const report = {
    measured: new Date().toISOString(),
    commit,
    complete: done,
    seed,
    phases,
    root: debian ? `debian (the arm64 sysroot, ${debianSize})` : 'tiny (20 MiB of data)',
    rsyncCutMaxMs: soak?.rsyncCut.maxDelayMs,
    trialsPerPhase: trials,
    minutes: Math.round((performance.now() - t0) / 600) / 100,
    counts,
    violations: bad,
    trials: results,
  };
  mkdirSync(join(REPO, 'docs'), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(report, null, 2)}\n`);
  return { counts, bad };
}
try {
  soak = new Soak(img, master, work, master.bootargs(), {
    diskMb: debian ? DEBIAN_ROOT.diskMb : 1024,
    ...(cutMaxMs === undefined ? {} : { rsyncMaxDelayMs: cutMaxMs }),
  });
  await soak.prepareGolden();
  if (debian) {
    // after the golden disk: every trial's boot syncs the whole Debian tree to a disk that has the tiny root
    debianSize = addDebianTree(master.root, img.sysroot).text;
    console.error(`soak: Debian-size root: ${debianSize}; cuts up to ${soak.rsyncCut.maxDelayMs} ms into the sync`);
  }
  for (let i = 0; i < trials; i++) {
    for (const [k, phase] of SOAK_PHASES.entries()) {
      if (!phases.includes(phase)) continue;
      const s = seed + i * 10 + k;
      const t = await soak.trial(phase, s);
      results.push(t);
      console.error(
        `soak: ${phase} seed ${s} cut ${t.delayMs} ms after the marker: ${t.outcome} after ${t.boots} boots ${t.detail}`,
      );
      writeReport(false);
    }
  }
} finally {
  await stopMasterRig(rig);
}
const { counts, bad } = writeReport(true);
console.log(JSON.stringify({ seed, commit, counts, violations: bad.length }, null, 2));
if (bad.length) process.exitCode = 1;

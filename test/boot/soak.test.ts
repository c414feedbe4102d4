// The short soak CI runs: one seeded power cut in each dangerous phase (repartition, format, boot copy,
// root rsync), then boots until the node is up on the master's exact root. scripts/soak is the long run.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { images } from '../rig/images.ts';
import { TestMaster, testAccessFiles } from '../rig/master.ts';
import { GOOD, SOAK_PHASES, Soak } from '../rig/soak.ts';

const SEED = Number(process.env.SOAK_SEED ?? 4242);
let soak: Soak;
let master: TestMaster;
let work: string;

beforeAll(async () => {
  const img = await images({ extra: testAccessFiles() });
  work = mkdtempSync(join(tmpdir(), 'cb-soak-'));
  master = new TestMaster(work, join(img.sysroot, 'bin/busybox'));
  await master.layout({ dataMb: 20 });
  await master.start();
  soak = new Soak(img, master, work, master.bootargs());
  await soak.prepareGolden();
}, 20 * 60_000);

afterAll(async () => {
  await master?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

describe(`power cuts (seed ${SEED})`, () => {
  for (const [k, phase] of SOAK_PHASES.entries()) {
    test(`cut during ${phase}: the node comes back on the master's root, or refuses visibly`, async () => {
      const t = await soak.trial(phase, SEED + k);
      console.error(`soak: ${phase} seed ${t.seed} cut ${t.delayMs} ms after the marker: ${t.outcome} after ${t.boots} boots ${t.detail}`);
      expect(GOOD).toContain(t.outcome);
      // these cuts are all recoverable here: the master is up and the disk is big enough
      expect(t.outcome).toBe('up-correct');
    }, 900_000);
  }
});

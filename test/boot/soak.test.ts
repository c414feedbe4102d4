// The short soak CI runs: one seeded power cut in each dangerous phase (repartition, format, boot copy,
// root rsync), then boots until the node is up on the master's exact root. scripts/soak is the long run.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startMasterRig, stopMasterRig, type MasterRig } from '../rig/master.ts';
import { GOOD, SOAK_PHASES, Soak } from '../rig/soak.ts';

const SEED = Number(process.env.SOAK_SEED ?? 4242);
let soak: Soak;
let rig: MasterRig | undefined;

beforeAll(async () => {
  rig = await startMasterRig('soak', { dataMb: 20 });
  soak = new Soak(rig.img, rig.master, rig.work, rig.master.bootargs());
  await soak.prepareGolden();
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

describe(`power cuts (seed ${SEED})`, () => {
  for (const [k, phase] of SOAK_PHASES.entries()) {
    test(`cut during ${phase}: the node comes back on the master's root, or refuses visibly`, async () => {
      const t = await soak.trial(phase, SEED + k);
      console.error(
        `soak: ${phase} seed ${t.seed} cut ${t.delayMs} ms after the marker: ${t.outcome} after ${t.boots} boots ${t.detail}`,
      );
      expect(GOOD).toContain(t.outcome);
      // these cuts are all recoverable here: the master is up and the disk is big enough
      expect(t.outcome).toBe('up-correct');
    }, 900_000);
  }
});

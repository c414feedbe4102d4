// The short soak CI runs: one seeded power cut in each dangerous phase (repartition, format, boot copy,
// bootfs update; the root rsync's is soakroot.test.ts, and this suite's is in the long tier), then boots until
// the node is up on the master's exact root; the bootfs cut is judged on p1 too (what the firmware would boot
// right after the cut, the new set and a clean fsck.fat after the next boot). scripts/soak is the long run.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startMasterRig, stopMasterRig, type MasterRig } from '../rig/master.ts';
import { longTest } from '../rig/tier.ts';
import { fatView, fsckP1, GOOD, judgeCut, judgeRecovered, p1Bytes, SOAK_PHASES, Soak } from '../rig/soak.ts';

const SEED = Number(process.env.SOAK_SEED ?? 4242);
let soak: Soak;
let rig: MasterRig | undefined;

beforeAll(async () => {
  rig = await startMasterRig('soak', { dataMb: 20 });
  soak = new Soak(rig.img, rig.master, rig.work, rig.master.bootargs());
  await soak.prepareGolden();
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

describe('the p1 checks', () => {
  // the checks must see a card the firmware cannot boot, or the bootfs trials prove nothing
  test('see a bricked card: a torn U-Boot, a missing config.txt, a mix without a journal', () => {
    const golden = p1Bytes(soak.goldenDisk);
    const a = soak.bootA;
    const b = new Map(a);
    b.set('config.txt', Buffer.from('kernel=u-boot.bin\narm_64bit=1\n# new\n'));
    expect(judgeCut(golden, a, b)).toEqual({ state: 'old set' });
    expect(judgeRecovered(golden, a, undefined)).toBeNull();
    expect(fsckP1(golden, rig?.work ?? '/tmp').code).toBe(0);
    const view = fatView(golden);
    const at = (bytes: Buffer) => golden.indexOf(bytes.subarray(0, 512)); // where a file's data lies on the card
    // torn: the first 512 bytes of U-Boot zeroed on the card
    const uboot = view.files.get('u-boot.bin') as Buffer;
    const torn = Buffer.from(golden);
    torn.fill(0, at(uboot), at(uboot) + 512);
    expect(judgeCut(torn, a, b).violation).toBe('p1-bricked');
    // config.txt's directory entry deleted (0xE5), as a cut in an in-place rsync --delete could leave it
    const entry = golden.indexOf(Buffer.from('CONFIG  TXT', 'latin1'));
    expect(entry).toBeGreaterThan(0);
    const gone = Buffer.from(golden);
    gone[entry] = 0xe5;
    expect(judgeCut(gone, a, b)).toMatchObject({ violation: 'p1-bricked' });
    // half updated, nothing to finish it: start4.elf of another set in place of the old one
    const other = new Map(b);
    other.set('start4.elf', Buffer.alloc((a.get('start4.elf') as Buffer).length, 1));
    const start = view.files.get('start4.elf') as Buffer;
    const mixed = Buffer.from(golden);
    mixed.fill(1, at(start), at(start) + start.length);
    expect(judgeCut(mixed, a, b).violation).toBe('p1-bricked'); // neither old nor new version
    expect(judgeCut(mixed, a, other)).toMatchObject({ violation: 'p1-mixed' }); // new start4.elf, old config.txt
    expect(judgeRecovered(mixed, a, undefined)).toContain('start4.elf differs');
  });
});

describe(`power cuts (seed ${SEED})`, () => {
  for (const [k, phase] of SOAK_PHASES.entries()) {
    // CI's root-sync cut is soakroot.test.ts (a Debian-size tree, the same code path with more to cut); this
    // 20 MiB one, cut within 3.5 s of the sync's start, is in the long tier
    const run = phase === 'rsync' ? longTest : test;
    run(
      `cut during ${phase}: the node comes back on the master's root, or refuses visibly`,
      async () => {
        const t = await soak.trial(phase, SEED + k);
        console.error(
          `soak: ${phase} seed ${t.seed} cut ${t.delayMs} ms after the marker: ${t.outcome} after ${t.boots} boots ${t.detail}`,
        );
        expect(GOOD).toContain(t.outcome);
        // these cuts are all recoverable here: the master is up and the disk is big enough
        expect(t.outcome).toBe('up-correct');
      },
      900_000,
    );
  }
});

// The short soak of a Debian-size root: one seeded power cut during the sync of a real Debian userland (the
// arm64 sysroot's usr/, 161 MB in 4782 files; the long run takes the whole 511 MB tree) to a provisioned disk,
// then boots until the node is up on the master's exact root with p4 kept and p1 unchanged. The retry reuses
// what the cut sync had finished (the salvage), so it receives less than the whole tree.
// `scripts/soak --root debian --phases rsync` is the long run.
// This suite's cut is not timed against the guest's clock (any moment of a long sync will do), so it runs in
// a lane beside other suites, unlike soak.test.ts.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startMasterRig, stopMasterRig, type MasterRig } from '../rig/master.ts';
import { addDebianTree, DEBIAN_ROOT, GOOD, Soak } from '../rig/soak.ts';

// The sync's speed varies twofold between hosts (2.5-5 MB/s on QEMU TCG, after 10-15 s of file list), so the
// cut counts from a progress line between 40 % and 59 %, not from the sync's start: it falls mid-copy anywhere
const SEED = Number(process.env.SOAK_SEED ?? 4245);
const CUT_ON = /\[\d+\/\d+ root\] syncing: [\d.]+ MB .*\([45]\d%\)/;
const CUT_MAX_MS = 2000;
let soak: Soak;
let rig: MasterRig | undefined;
let tree = { files: 0, bytes: 0, text: '' };

beforeAll(async () => {
  rig = await startMasterRig('soakroot', { dataMb: 20, table: DEBIAN_ROOT.table });
  soak = new Soak(rig.img, rig.master, rig.work, rig.master.bootargs(), {
    diskMb: DEBIAN_ROOT.diskMb,
    rsyncMaxDelayMs: CUT_MAX_MS,
    rsyncCutOn: CUT_ON,
  });
  await soak.prepareGolden();
  tree = addDebianTree(rig.master.root, rig.img.sysroot, 'usr');
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

describe(`a power cut in the sync of a Debian-size root (seed ${SEED})`, () => {
  test("the node comes back on the master's exact root; p4 kept, p1 unchanged; the retry sends less than all", async () => {
    const t = await soak.trial('rsync', SEED);
    console.error(
      `soak: Debian-size root (${tree.text}) seed ${t.seed} cut ${t.delayMs} ms after the marker: ${t.outcome} after ${t.boots} boots ${t.detail}`,
    );
    expect(GOOD).toContain(t.outcome);
    expect(t.outcome).toBe('up-correct');
    expect(t.detail).not.toContain('before the cut'); // the cut fell inside the boot, not after it
    // the sync after the cut: "slot <id> synced: <files> files, <n> transferred, <bytes> bytes received (...)"
    const retry = /boot \d+: (\d+) files, (\d+) transferred, (\d+) bytes received/.exec(t.detail);
    expect(retry).not.toBeNull();
    expect(tree.files).toBeGreaterThan(3000); // a root of thousands of files
    expect(Number(retry?.[1])).toBeGreaterThan(tree.files);
    // a whole sync receives the tree and the trial's 20 MiB of new data; cut at 40 % or more of it, the retry
    // receives only what the cut sync had not finished (the salvage links the rest)
    const whole = tree.bytes + (20 << 20);
    expect(Number(retry?.[3])).toBeLessThan(whole * 0.8);
    expect(Number(retry?.[2])).toBeLessThan(tree.files);
  }, 900_000);
});

// The firmware path's tryboot decisions, on a fake p1: a switch file (clusterboot.config.txt) as text, the set
// records of clusterboot.a/ and clusterboot.b/, the tryboot flag, and a fake bootfs autoboot.txt/config.txt.
import { describe, expect, test } from 'bun:test';
import {
  bootfsProblems,
  BOOTFS_AUTOBOOT,
  BOOTFS_CONFIG,
  parseSwitch,
  renderSwitch,
  type FirmwareAnnouncement,
  type SetName,
  type SwitchState,
} from '../../../../agent/contract/firmware.ts';
import { planTryboot, type TrybootFacts } from '../../../../agent/plans/tryboot.ts';

const ID1 = '1111111111111111';
const ID2 = '2222222222222222';
const ID3 = '3333333333333333';
const ann = (id: string, size = 90e6): FirmwareAnnouncement => ({
  id,
  bootargs: 'console=ttyAMA0',
  files: [
    { path: 'vmlinuz', size: size / 3, sha256: 'a'.repeat(64) },
    { path: 'initramfs.cpio.gz', size: (2 * size) / 3, sha256: 'b'.repeat(64) },
  ],
});

/** A fake p1: the switch goes through its text form, as the phase reads it from the card. */
function facts(o: {
  sw?: SwitchState | null;
  sets?: Partial<Record<SetName, string | null>>;
  booted: TrybootFacts['booted'];
  tryboot?: boolean;
  online?: boolean;
  announced?: string | null;
  free?: number;
}): TrybootFacts {
  const text = o.sw ? renderSwitch(o.sw) : null;
  return {
    online: o.online ?? true,
    announcement: o.announced === null ? null : ann(o.announced ?? ID2),
    booted: o.booted,
    tryboot: o.tryboot ?? false,
    sw: parseSwitch(text),
    sets: { a: o.sets?.a ?? null, b: o.sets?.b ?? null },
    p1Free: o.free ?? 200e6,
    reclaimBytes: () => 0,
    maxTries: 3,
  };
}
const kinds = (p: ReturnType<typeof planTryboot>) => p.actions.map((a) => a.kind);
const switchTo = (p: ReturnType<typeof planTryboot>) =>
  p.actions.filter((a) => a.kind === 'switch').map((a) => (a.kind === 'switch' ? a.state : null));

describe('the switch file', () => {
  test('renders what the firmware reads ([all] current, [tryboot] trial) and parses back', () => {
    const s: SwitchState = { current: 'a', trial: 'b', trialId: ID2, tries: 2, failed: ID3 };
    const t = renderSwitch(s);
    expect(t).toContain('[all]\nkernel=vmlinuz\ninitramfs initramfs.cpio.gz followkernel\nos_prefix=clusterboot.a/\n');
    expect(t).toContain('[tryboot]\nos_prefix=clusterboot.b/\n[all]\n');
    expect(parseSwitch(t)).toEqual(s);
  });
  test('a switch whose os_prefix lines disagree with its comment is not trusted; absent or foreign is null', () => {
    const t = renderSwitch({ current: 'a', trial: 'b', tries: 1 }).replace(
      '[tryboot]\nos_prefix=clusterboot.b/',
      '[tryboot]\nos_prefix=clusterboot.a/',
    );
    expect(parseSwitch(t)).toBeNull();
    expect(parseSwitch(null)).toBeNull();
    expect(parseSwitch('arm_64bit=1\n')).toBeNull();
  });
  test('bootfs/autoboot.txt and config.txt: the documented lines pass; no tryboot_a_b, another partition, no include fail', () => {
    expect(bootfsProblems(BOOTFS_CONFIG, BOOTFS_AUTOBOOT)).toEqual([]);
    expect(bootfsProblems(BOOTFS_CONFIG, '[all]\nboot_partition=1\n')[0]).toContain('tryboot_a_b=1');
    expect(
      bootfsProblems(BOOTFS_CONFIG, '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n')[0],
    ).toContain('another boot_partition');
    expect(bootfsProblems('arm_64bit=1\n', BOOTFS_AUTOBOOT)[0]).toContain('include clusterboot.config.txt');
    expect(bootfsProblems(`${BOOTFS_CONFIG}kernel=u-boot.bin\n`, BOOTFS_AUTOBOOT)[0]).toContain('kernel=');
    expect(bootfsProblems(null, null)).toHaveLength(2);
  });
});

describe('planTryboot', () => {
  test('a blank card booted by TFTP with the announced pair: set a written and made current, no reboot', () => {
    const p = planTryboot(facts({ booted: { id: ID2, set: 'net' } }));
    expect(kinds(p)).toEqual(['write-set', 'switch']);
    expect(p.actions[0]).toMatchObject({ set: 'a', id: ID2 });
    expect(switchTo(p)).toEqual([{ current: 'a', trial: 'a', tries: 0 }]);
    expect(p.actions.every((a) => a.describe().length > 0)).toBe(true);
  });
  test('a blank card booted by TFTP with another pair than the master announces: nothing written', () => {
    expect(kinds(planTryboot(facts({ booted: { id: ID1, set: 'net' } })))).toEqual([]);
  });
  test('booted from the current set, which holds the announced pair: nothing to do', () => {
    const p = planTryboot(
      facts({ sw: { current: 'a', trial: 'a', tries: 0 }, sets: { a: ID2 }, booted: { id: ID2, set: 'a' } }),
    );
    expect(kinds(p)).toEqual([]);
    expect(p.message).toContain('is the current set a');
  });
  test('a new announcement: the other set is written, named under [tryboot], and the node reboots "0 tryboot"', () => {
    const p = planTryboot(
      facts({ sw: { current: 'a', trial: 'a', tries: 0 }, sets: { a: ID1, b: ID3 }, booted: { id: ID1, set: 'a' } }),
    );
    expect(kinds(p)).toEqual(['write-set', 'switch', 'reboot-tryboot']);
    expect(p.actions[0]).toMatchObject({ set: 'b', id: ID2 });
    expect(switchTo(p)).toEqual([{ current: 'a', trial: 'b', trialId: ID2, tries: 1 }]);
    expect(p.actions[2]?.describe()).toContain('"0 tryboot"');
  });
  test('the other set already holds the announced pair (a retry after a cut): no rewrite, just the tryboot', () => {
    const p = planTryboot(
      facts({ sw: { current: 'b', trial: 'b', tries: 0 }, sets: { a: ID2, b: ID1 }, booted: { id: ID1, set: 'b' } }),
    );
    expect(kinds(p)).toEqual(['switch', 'reboot-tryboot']);
    expect(switchTo(p)[0]).toMatchObject({ current: 'b', trial: 'a' });
  });
  test('the tryboot boot reached the master: the trial becomes current (commit)', () => {
    const p = planTryboot(
      facts({
        sw: { current: 'a', trial: 'b', trialId: ID2, tries: 1 },
        sets: { a: ID1, b: ID2 },
        booted: { id: ID2, set: 'b' },
        tryboot: true,
      }),
    );
    expect(switchTo(p)).toEqual([{ current: 'b', trial: 'b', tries: 0 }]);
    expect(p.message).toContain('committed');
  });
  test('the tryboot boot did not reach the master: nothing is committed (the next boot runs set a again)', () => {
    const p = planTryboot(
      facts({
        sw: { current: 'a', trial: 'b', trialId: ID2, tries: 1 },
        sets: { a: ID1, b: ID2 },
        booted: { id: ID2, set: 'b' },
        tryboot: true,
        online: false,
      }),
    );
    expect(kinds(p)).toEqual([]);
    expect(p.message).toContain('not committed');
  });
  test('a failed tryboot fell back to set a by itself: tried again up to 3 times, then abandoned with a warning', () => {
    const base = { sets: { a: ID1, b: ID2 }, booted: { id: ID1, set: 'a' as const } };
    const retry = planTryboot(facts({ ...base, sw: { current: 'a', trial: 'b', trialId: ID2, tries: 1 } }));
    expect(kinds(retry)).toEqual(['switch', 'reboot-tryboot']);
    expect(switchTo(retry)[0]).toMatchObject({ current: 'a', trial: 'b', tries: 2 });
    const give = planTryboot(facts({ ...base, sw: { current: 'a', trial: 'b', trialId: ID2, tries: 3 } }));
    expect(kinds(give)).toEqual(['switch']);
    expect(switchTo(give)[0]).toEqual({ current: 'a', trial: 'a', tries: 0, failed: ID2 });
    expect(give.warnings[0]).toContain('abandoned');
    // abandoned stays abandoned while the master announces it; a newer one is tried
    const stay = planTryboot(facts({ ...base, sw: { current: 'a', trial: 'a', tries: 0, failed: ID2 } }));
    expect(kinds(stay)).toEqual([]);
    const newer = planTryboot(
      facts({ ...base, sw: { current: 'a', trial: 'a', tries: 0, failed: ID2 }, announced: ID3 }),
    );
    expect(kinds(newer)).toEqual(['write-set', 'switch', 'reboot-tryboot']);
  });
  test('a pending trial of an older announcement is folded back before its set is overwritten', () => {
    const p = planTryboot(
      facts({
        sw: { current: 'a', trial: 'b', trialId: ID3, tries: 1 },
        sets: { a: ID1, b: ID3 },
        booted: { id: ID1, set: 'a' },
      }),
    );
    expect(kinds(p)).toEqual(['switch', 'write-set', 'switch', 'reboot-tryboot']);
    expect(switchTo(p)[0]).toEqual({ current: 'a', trial: 'a', tries: 0 });
  });
  test('master offline, or no announcement: the sets stay', () => {
    const sw = { current: 'a' as const, trial: 'a' as const, tries: 0 };
    expect(kinds(planTryboot(facts({ sw, sets: { a: ID1 }, booted: { id: ID1, set: 'a' }, online: false })))).toEqual(
      [],
    );
    expect(kinds(planTryboot(facts({ sw, sets: { a: ID1 }, booted: { id: ID1, set: 'a' }, announced: null })))).toEqual(
      [],
    );
  });
  test('a set that does not fit on p1: nothing written, a warning with the remedy', () => {
    const p = planTryboot(
      facts({
        sw: { current: 'a', trial: 'a', tries: 0 },
        sets: { a: ID1 },
        booted: { id: ID1, set: 'a' },
        free: 10e6,
      }),
    );
    expect(kinds(p)).toEqual([]);
    expect(p.warnings[0]).toContain('enlarge p1');
  });
});

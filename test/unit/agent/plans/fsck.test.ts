// The e2fsck repair ladder and what each role does when it is used up: the writable layer is never formatted.
import { describe, expect, test } from 'bun:test';
import {
  BACKUP_SUPERBLOCKS,
  fsckVerdict,
  nextFsck,
  OPERATIONAL_RETRIES,
  repaired,
  type FsckStep,
} from '../../../../agent/plans/fsck.ts';
import { rng } from '../../../fixtures/rng.ts';

const DEV = '/dev/vda3';

/** Run the ladder against a fake e2fsck that answers `answers` in turn (then keeps answering the last). */
function walk(answers: number[]): { steps: FsckStep[]; exits: number[] } {
  const steps: FsckStep[] = [];
  const exits: number[] = [];
  for (let s = nextFsck(DEV, exits); s !== null; s = nextFsck(DEV, exits)) {
    steps.push(s);
    exits.push(answers[Math.min(exits.length, answers.length - 1)] ?? 0);
    if (steps.length > 50) throw new Error('the ladder does not end');
  }
  return { steps, exits };
}
const cmds = (steps: FsckStep[]) => steps.map((s) => s.describe());

describe('nextFsck', () => {
  test('clean or repaired by -p (exit 0-3): one run', () => {
    for (const code of [0, 1, 2, 3]) expect(cmds(walk([code]).steps)).toEqual([`e2fsck -p ${DEV}`]);
  });

  test('an operational error (exit 8) is retried with -p, waiting longer each time, and may pass', () => {
    const { steps } = walk([8, 8, 0]);
    expect(cmds(steps)).toEqual([`e2fsck -p ${DEV}`, `e2fsck -p ${DEV}`, `e2fsck -p ${DEV}`]);
    expect(steps.map((s) => s.delayMs)).toEqual([0, 1000, 2000]);
    expect(steps[1]?.why).toContain('operational error');
  });

  test('a timeout or a kill (-1) counts as operational', () => {
    expect(cmds(walk([-1, 1]).steps)).toEqual([`e2fsck -p ${DEV}`, `e2fsck -p ${DEV}`]);
  });

  test('damage left by -p (exit 4) goes to -y at once, then the backup superblocks in order, then stops', () => {
    const { steps, exits } = walk([4]);
    expect(cmds(steps)).toEqual([
      `e2fsck -p ${DEV}`,
      `e2fsck -y ${DEV}`,
      ...BACKUP_SUPERBLOCKS.map((b) => `e2fsck -y -b ${b.block} -B ${b.size} ${DEV}`),
    ]);
    expect(exits.every((e) => e === 4)).toBe(true);
  });

  test('operational errors that persist also reach -y and the backups (an unreadable primary superblock)', () => {
    const { steps } = walk([8]);
    expect(steps.length).toBe(1 + OPERATIONAL_RETRIES + 1 + BACKUP_SUPERBLOCKS.length);
    expect(steps[1 + OPERATIONAL_RETRIES]?.args).toEqual(['-y', DEV]);
  });

  test('a backup superblock that works ends the ladder', () => {
    expect(cmds(walk([4, 4, 1]).steps)).toEqual([
      `e2fsck -p ${DEV}`,
      `e2fsck -y ${DEV}`,
      `e2fsck -y -b 32768 -B 4096 ${DEV}`,
    ]);
  });

  test('a tool that cannot start (usage 16, shared library 128) is not run again', () => {
    expect(walk([16]).steps.length).toBe(1);
    expect(walk([128]).steps.length).toBe(1);
    expect(walk([4, 16]).steps.length).toBe(2);
  });

  test('any answers: the ladder ends within its length, runs only e2fsck repairs on the one device, ends on the first repair', () => {
    const r = rng(4242);
    const codes = [-1, 0, 1, 2, 3, 4, 8, 12, 16, 32, 128];
    const longest = 1 + OPERATIONAL_RETRIES + 1 + BACKUP_SUPERBLOCKS.length;
    for (let i = 0; i < 2000; i++) {
      const answers = Array.from({ length: 10 }, () => codes[Math.floor(r() * codes.length)] ?? 0);
      const { steps, exits } = walk(answers);
      expect(steps.length).toBeGreaterThanOrEqual(1);
      expect(steps.length).toBeLessThanOrEqual(longest);
      for (const s of steps) {
        expect(s.args[s.args.length - 1]).toBe(DEV);
        for (const a of s.args.slice(0, -1)) expect(a).toMatch(/^(-p|-y|-b|-B|\d+)$/);
      }
      const firstOk = exits.findIndex(repaired);
      if (firstOk >= 0) expect(exits.length).toBe(firstOk + 1);
    }
  });
});

describe('fsckVerdict', () => {
  const failed = { ok: false as const, exits: [4, 4, 4] };
  test('repaired: mount, whatever the role', () => {
    for (const role of ['root', 'writable'] as const)
      expect(fsckVerdict({ role, device: DEV, result: { ok: true, exits: [1] }, online: false })).toEqual({
        action: 'mount',
      });
  });
  test('the root, whose content lives on the master, is formatted only when the master is there to refill it', () => {
    expect(fsckVerdict({ role: 'root', device: '/dev/vda2', result: failed, online: true }).action).toBe('format');
    const off = fsckVerdict({ role: 'root', device: '/dev/vda2', result: failed, online: false });
    expect(off.action).toBe('fail');
    if (off.action === 'fail') expect(off.remedy).toContain('master');
  });
  test('the writable layer is never formatted: tmpfs, the partition untouched, an alarm with a remedy', () => {
    for (const online of [true, false]) {
      const v = fsckVerdict({ role: 'writable', device: DEV, result: failed, online });
      expect(v.action).toBe('tmpfs');
      if (v.action === 'tmpfs') {
        expect(v.alarm).toContain(DEV);
        expect(v.alarm).toContain('untouched');
        expect(v.alarm).toContain('exits 4, 4, 4');
        expect(v.remedy.length).toBeGreaterThan(20);
      }
    }
  });
});

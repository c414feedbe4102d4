// The e2fsck repair ladder and what each role does when it is used up: the writable layer is never formatted.
import { describe, expect, test } from 'bun:test';
import {
  BACKUP_SUPERBLOCKS,
  fsckVerdict,
  nextFsck,
  OPERATIONAL_RETRIES,
  readErrorIn,
  repaired,
  type FsckRun,
  type FsckStep,
} from '../../../../agent/plans/fsck.ts';
import { rng } from '../../../fixtures/rng.ts';

const DEV = '/dev/vda3';

/** Run the ladder against a fake e2fsck that answers `answers` in turn (then keeps answering the last); a
 * number is an exit without a read error, a run says both. */
function walk(answers: (number | FsckRun)[]): { steps: FsckStep[]; exits: number[] } {
  const steps: FsckStep[] = [];
  const runs: FsckRun[] = [];
  for (let s = nextFsck(DEV, runs); s !== null; s = nextFsck(DEV, runs)) {
    steps.push(s);
    const a = answers[Math.min(runs.length, answers.length - 1)] ?? 0;
    runs.push(typeof a === 'number' ? { exit: a, ioError: false } : a);
    if (steps.length > 50) throw new Error('the ladder does not end');
  }
  return { steps, exits: runs.map((r) => r.exit) };
}
const eio: FsckRun = { exit: 8, ioError: true };
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

  test('read errors (the device fails, not the filesystem): -p is retried, then nothing that writes is tried', () => {
    const { steps } = walk([eio]);
    expect(cmds(steps)).toEqual(Array.from({ length: 1 + OPERATIONAL_RETRIES }, () => `e2fsck -p ${DEV}`));
    // a card that settles passes on a retry
    expect(cmds(walk([eio, 0]).steps)).toEqual([`e2fsck -p ${DEV}`, `e2fsck -p ${DEV}`]);
    // a read error met by -y (or from a backup) stops the ladder there too
    expect(cmds(walk([4, eio]).steps)).toEqual([`e2fsck -p ${DEV}`, `e2fsck -y ${DEV}`]);
    expect(walk([4, 4, eio]).steps.length).toBe(3);
    // and a read error once seen is not forgotten by a retry that happened to read
    expect(cmds(walk([8, eio, 8]).steps)).toEqual(Array.from({ length: 3 }, () => `e2fsck -p ${DEV}`));
  });

  test("e2fsck's words for a failed read are told from a superblock that is only damaged", () => {
    for (const said of [
      '/sbin/e2fsck: Input/output error while trying to open /dev/vda3',
      'Error reading block 1 (Input/output error) while getting next inode from scan.  Ignore error? yes',
      'e2fsck: Attempt to read block from filesystem resulted in short read while trying to open /dev/vda3',
      'e2fsck 1.47.0 (5-Feb-2023)\n/sbin/e2fsck: Input/output error while recovering journal of cb-rw',
    ])
      expect(readErrorIn(said)).toBe(true);
    for (const said of [
      '/sbin/e2fsck: Bad magic number in super-block while trying to open /dev/vda3',
      'The superblock could not be read or does not describe a valid ext2/ext3/ext4 filesystem.',
      '/dev/vda3: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.',
      '',
    ])
      expect(readErrorIn(said)).toBe(false);
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
      const answers = Array.from({ length: 10 }, () => ({
        exit: codes[Math.floor(r() * codes.length)] ?? 0,
        ioError: r() < 0.2,
      }));
      const { steps, exits } = walk(answers);
      // after a read error only -p ever runs again
      const firstEio = answers.findIndex((a, k) => a.ioError && k < steps.length);
      if (firstEio >= 0) for (const s of steps.slice(firstEio + 1)) expect(s.args).toEqual(['-p', DEV]);
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
  test('a writable layer that returns read errors: tmpfs, an alarm that says no repair was tried, copy it off first', () => {
    const v = fsckVerdict({
      role: 'writable',
      device: DEV,
      result: { ok: false, exits: [8, 8, 8], ioError: true },
      online: true,
    });
    expect(v.action).toBe('tmpfs');
    if (v.action === 'tmpfs') {
      expect(v.alarm).toContain('read errors');
      expect(v.alarm).toContain('untouched');
      expect(v.remedy).toContain('ddrescue');
    }
    const root = fsckVerdict({
      role: 'root',
      device: '/dev/vda2',
      result: { ok: false, exits: [8, 8, 8], ioError: true },
      online: true,
    });
    expect(root.action).toBe('format');
    if (root.action === 'format') expect(root.why).toContain('replace the card');
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

// The repair ladder for an ext4 partition: what to run next, given what e2fsck answered so far, and what to do
// when the ladder is used up. Pure: the root and overlay phases run the steps and apply the verdict.
//
// Why a ladder: e2fsck's exit status is a bit set (0 clean, 1 fixed, 2 fixed and reboot, 4 errors left, 8 an
// operational error, 16 usage, 32 cancelled, 128 a shared-library error). Only bit 4 says the filesystem is
// damaged; 8 says e2fsck could not do its job (an I/O error, a device that vanished, no memory, or a primary
// superblock it cannot read as one), which says nothing about the data. So an operational error is retried
// first; damage gets `-y` (every repair, not only the safe ones `-p` makes; -y also looks for a backup
// superblock by itself); then the backup superblocks named here. Nothing in the ladder formats anything: what
// happens to a partition the ladder cannot repair is the role's verdict below, and only the root (whose content
// lives on the master) may ever be formatted.
//
// A device that answers reads with I/O errors is never repaired: a repair reads metadata it cannot trust and
// writes on a failing medium (e2fsck -y from a backup superblock has replayed a journal half-way there and lost
// files it could have kept). After the retries the ladder stops; the data is saved by copying the partition
// off first (ddrescue), then repairing the copy.

/** One e2fsck run of the ladder; describe() is the shell command it stands for. */
export interface FsckStep {
  args: string[];
  /** Wait this long first (an operational error may pass: a slow card, a USB disk still settling). */
  delayMs: number;
  why: string;
  describe(): string;
}

/** Backup superblock locations for the block sizes mke2fs picks (4 KiB from 512 MiB up, 1 KiB for small ones). */
export const BACKUP_SUPERBLOCKS: readonly { block: number; size: number }[] = [
  { block: 32768, size: 4096 },
  { block: 98304, size: 4096 },
  { block: 8193, size: 1024 },
  { block: 16384, size: 2048 },
];

/** Extra `-p` tries after an operational error (exit bit 8) before the ladder moves on. */
export const OPERATIONAL_RETRIES = 2;

/** e2fsck left the filesystem clean or repaired (exit 0-3). */
export const repaired = (exit: number): boolean => exit >= 0 && exit < 4;

/** One e2fsck run as the ladder sees it: its exit (-1: did not run, or killed by its timeout) and whether the
 * device answered a read with an I/O error. */
export interface FsckRun {
  exit: number;
  ioError: boolean;
}

/** e2fsck's words for a read the device failed (EIO while opening, a block it could not read, a short read). */
export function readErrorIn(output: string): boolean {
  return /Input\/output error|Error reading block|short read|Attempt to read block/i.test(output);
}

function step(dev: string, args: string[], delayMs: number, why: string): FsckStep {
  const all = [...args, dev];
  return { args: all, delayMs, why, describe: () => `e2fsck ${all.join(' ')}` };
}

/**
 * The next e2fsck run, or null when the ladder is done: `runs` are the runs so far, in the order this function
 * handed them out.
 */
export function nextFsck(dev: string, runs: readonly FsckRun[]): FsckStep | null {
  let next = step(dev, ['-p'], 0, 'check');
  let stage: 'preen' | 'yes' | number = 'preen';
  let retries = 0;
  let readErrors = false;
  for (const { exit: e, ioError } of runs) {
    readErrors ||= ioError;
    if (repaired(e)) return null;
    // a tool that cannot start (usage, shared library) will not start on the next try either
    if (e >= 0 && e & (16 | 128)) return null;
    const operational = e < 0 || ((e & 8) !== 0 && (e & 4) === 0);
    // once the device has failed a read: only the -p retries (a card or USB disk still settling), never -y
    if (readErrors && !(stage === 'preen' && retries < OPERATIONAL_RETRIES)) return null;
    if (stage === 'preen' && (operational || readErrors) && retries < OPERATIONAL_RETRIES) {
      retries++;
      next = step(
        dev,
        ['-p'],
        1000 * 2 ** (retries - 1),
        readErrors ? `a read error (exit ${e}): trying again, only -p` : `operational error (exit ${e}): trying again`,
      );
      continue;
    }
    if (stage === 'preen') {
      stage = 'yes';
      next = step(dev, ['-y'], 0, `e2fsck -p could not repair it (exit ${e}): repairing with -y`);
      continue;
    }
    stage = stage === 'yes' ? 0 : stage + 1;
    const sb = BACKUP_SUPERBLOCKS[stage];
    if (sb === undefined) return null;
    next = step(
      dev,
      ['-y', '-b', String(sb.block), '-B', String(sb.size)],
      0,
      `still not repaired (exit ${e}): from the backup superblock at ${sb.block} (${sb.size}-byte blocks)`,
    );
  }
  return next;
}

/** What the ladder ended in; ioError: a run met a read error (so nothing that writes was tried after it). */
export type FsckResult = { ok: true; exits: number[] } | { ok: false; exits: number[]; ioError?: boolean };

/** What a role does with a partition the ladder could not repair. */
export type FsckVerdict =
  | { action: 'mount' }
  | { action: 'format'; why: string }
  | { action: 'tmpfs'; alarm: string; remedy: string }
  | { action: 'fail'; error: string; remedy: string };

/**
 * The verdict for a role: the root may be formatted (and copied again) when the master is there to fill it; the
 * writable layer never is: the node runs on a tmpfs layer, leaves the partition as it is and raises the alarm.
 */
export function fsckVerdict(f: {
  role: 'root' | 'writable';
  device: string;
  result: FsckResult;
  online: boolean;
}): FsckVerdict {
  if (f.result.ok) return { action: 'mount' };
  const tried = `e2fsck ran ${f.result.exits.length} times (exits ${f.result.exits.join(', ')})`;
  const eio = f.result.ioError === true;
  if (f.role === 'root') {
    if (f.online)
      return {
        action: 'format',
        why: `the root filesystem on ${f.device} could not be repaired (${tried}${eio ? '; the device returns read errors: replace the card soon' : ''}): its content lives on the master, so it is formatted and copied again`,
      };
    return {
      action: 'fail',
      error: `the root filesystem on ${f.device} could not be repaired (${tried})`,
      remedy: 'bring the master back: the node then formats the root partition and copies the root again',
    };
  }
  if (eio)
    return {
      action: 'tmpfs',
      alarm: `the writable layer ${f.device} returns read errors (${tried}): no repair was tried, since one would write on a failing medium; it is left untouched and this boot's changes live in RAM only`,
      remedy: `copy ${f.device} off first (ddrescue ${f.device} to an image on another disk), repair the copy (e2fsck -y), then replace the card`,
    };
  return {
    action: 'tmpfs',
    alarm: `the writable layer ${f.device} could not be repaired (${tried}); it is left untouched and this boot's changes live in RAM only`,
    remedy: `save what matters from ${f.device} (rescue shell: debugfs, or e2fsck -b 32768 -B 4096 by hand), then format it by hand (mke2fs -t ext4 -L cb-rw ${f.device}) or replace the card`,
  };
}

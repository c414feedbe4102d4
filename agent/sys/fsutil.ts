// Small effects shared by the disk phases: waiting for device nodes, mounting by role, writes confined to a root.
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { run, ToolError } from './exec.ts';
import { info, warn } from '../log.ts';
import { PhaseFailure } from '../errors.ts';
import { fsckNext, type FsckRun as VfatRun } from '../plans/bootfs.ts';
import { mount, MS_RDONLY, umount } from './libc.ts';
import { watchdogProgress } from '../devices/watchdog.ts';
import { resolveInRoot } from '../plans/rootpath.ts';
import { nextFsck, readErrorIn, repaired, type FsckResult, type FsckRun } from '../plans/fsck.ts';
import { readSmallFile } from '../contract/smallread.ts';
import { parseStat } from './reaper.ts';
import { RUN_DIR } from '../paths.ts';

export const MS_NOATIME = 1024;

/** Block device name without /dev/ ("/dev/vda" -> "vda"). */
export function devName(dev: string): string {
  return dev.replace(/^\/dev\//, '');
}

export function sysBlock(dev: string, file: string): string | null {
  const p = `/sys/class/block/${devName(dev)}/${file}`;
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
}

/** lstat for resolveInRoot: whether p exists and, if it is a symlink, its target. */
export function lstatLink(p: string): { link: string | null; exists: boolean } {
  try {
    const st = lstatSync(p);
    return { exists: true, link: st.isSymbolicLink() ? readlinkSync(p) : null };
  } catch {
    return { exists: false, link: null };
  }
}

/** Write root/relPath without leaving root: the template shapes root, so its symlinks must not reach the host. */
export function writeInRoot(root: string, relPath: string, data: string | Uint8Array, mode: number): void {
  const parts = relPath.split('/').filter((p) => p && p !== '.');
  const name = parts.pop();
  if (name === undefined || name === '..') throw new Error(`writeInRoot: ${relPath} names no file`);
  const dir = resolveInRoot(root, parts.join('/'), lstatLink, (p) => mkdirSync(p, { mode: 0o755 }));
  if (dir === null) throw new Error(`${root}: symlinks loop on the way to ${relPath}`);
  const path = `${root}${dir === '/' ? '' : dir}/${name}`;
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st?.isSymbolicLink()) unlinkSync(path);
  else if (st && !st.isFile()) throw new Error(`${path} is not a regular file: refusing to write ${relPath} there`);
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, mode);
  try {
    writeFileSync(fd, data);
    fchmodSync(fd, mode); // an existing file or the umask would keep another mode
  } finally {
    closeSync(fd);
  }
}

export async function waitForPath(path: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > end) return false;
    await Bun.sleep(100);
  }
  return true;
}

export function mountFs(dev: string, target: string, fstype: 'vfat' | 'ext4', readonly = false): void {
  mkdirSync(target, { recursive: true });
  mount(dev, target, fstype, (readonly ? MS_RDONLY : 0) | (fstype === 'ext4' ? MS_NOATIME : 0), '');
}

export function umountQuiet(target: string): void {
  try {
    umount(target);
  } catch {
    // not mounted: nothing to undo
  }
}

/**
 * The repair ladder (plans/fsck.ts) on an unmounted ext4 partition: -p, again after an operational error, -y,
 * the backup superblocks. Formats nothing: the caller applies its role's fsckVerdict to the result.
 */
export async function repairExt4(dev: string, phase: string): Promise<FsckResult> {
  const runs: FsckRun[] = [];
  for (let s = nextFsck(dev, runs); s !== null; s = nextFsck(dev, runs)) {
    if (runs.length) info(phase, `${s.why}: ${s.describe()}`);
    if (s.delayMs) await Bun.sleep(s.delayMs);
    try {
      const r = await run('e2fsck', s.args, {
        okCodes: [0, 1, 2, 3],
        timeoutMs: 30 * 60_000,
        heartbeat: ioHeartbeat(`e2fsck ${dev}`),
        // a line per fix (tens of thousands on a smashed inode table): to a file, never through PID 1's event loop;
        // the booted system finds the last run's in /run/clusterboot
        outputFile: `${RUN_DIR}/e2fsck-${dev.split('/').pop()}.log`,
      });
      runs.push({ exit: r.exitCode, ioError: false });
      if (r.exitCode !== 0) info(phase, `e2fsck repaired ${dev} (exit ${r.exitCode})`);
    } catch (e) {
      const exit = e instanceof ToolError && e.exitCode !== undefined && !e.timedOut ? e.exitCode : -1;
      const ioError = e instanceof ToolError && readErrorIn(`${e.output}\n${e.stderrTail}`);
      runs.push({ exit, ioError });
      info(
        phase,
        `e2fsck could not repair ${dev}: ${e instanceof ToolError ? e.message : String(e)}${ioError ? ' (a read error: the device itself fails)' : ''}`,
      );
    }
  }
  const exits = runs.map((r) => r.exit);
  const last = runs[runs.length - 1];
  if (last !== undefined && repaired(last.exit)) return { ok: true, exits };
  return { ok: false, exits, ioError: runs.some((r) => r.ioError) };
}

/** Bytes a process has read and written on storage so far (from /proc/<pid>/io text), or null. */
export function ioBytes(procIo: string): number | null {
  const r = /^read_bytes:\s*(\d+)/m.exec(procIo);
  const w = /^write_bytes:\s*(\d+)/m.exec(procIo);
  return r || w ? Number(r?.[1] ?? 0) + Number(w?.[1] ?? 0) : null;
}

/** The work a process has done so far: its storage I/O bytes plus its CPU ticks; either growing is progress. */
function pidWork(pid: number): number | null {
  const read = (what: string) => {
    try {
      return readFileSync(`/proc/${pid}/${what}`, 'utf8');
    } catch {
      return '';
    }
  };
  const io = ioBytes(read('io'));
  const cpu = parseStat(read('stat'))?.cpuTicks ?? null;
  return io === null && cpu === null ? null : (io ?? 0) + (cpu ?? 0);
}

/**
 * A silent mkfs or e2fsck is progress for the watchdog while its disk I/O or its CPU time grows; a stuck one
 * (in D state, or asleep) is not. The CPU counts because e2fsck's passes over a damaged filesystem can run for
 * minutes on blocks already in the page cache, which read_bytes does not count (a watchdog reset in the middle
 * of a repair was seen on a loaded rig). A tool that loops for ever is still ended by its own timeout.
 */
export function ioHeartbeat(
  what: string,
  read: (pid: number) => number | null = pidWork,
  tell = watchdogProgress,
): (pid: number) => void {
  let last = -1;
  return (pid) => {
    const now = read(pid);
    if (now !== null && now > last) {
      last = now;
      tell(`${what} busy`);
    }
  };
}

export async function mkfs(dev: string, fs: 'vfat' | 'ext4', label: string): Promise<void> {
  const heartbeat = ioHeartbeat(`mkfs ${dev}`);
  if (fs === 'vfat')
    await run('mkfsVfat', ['-n', label.toUpperCase().slice(0, 11), dev], { timeoutMs: 10 * 60_000, heartbeat });
  else
    await run('mke2fs', ['-t', 'ext4', '-F', '-q', '-L', label, '-E', 'lazy_itable_init=1,lazy_journal_init=1', dev], {
      timeoutMs: 60 * 60_000,
      heartbeat,
    });
}

/**
 * A small file the master sent (a stamp, a table, a flag): null when absent; refused, with the reason, when it is
 * not a regular file (a link to /dev/zero would be read for ever) or larger than `max`. Never reads more than max.
 */
export function readSmall(path: string, max = 64 * 1024): { text: string | null; refused?: string } {
  const r = readSmallFile(path, max);
  switch (r.kind) {
    case 'read':
      return { text: r.data.toString('utf8') };
    case 'gone':
      return { text: null };
    case 'not a file':
      return { text: null, refused: r.what === 'a symbolic link' ? 'a symlink' : 'not a regular file' };
    case 'too large':
      return { text: null, refused: `${r.size} bytes (at most ${max})` };
    case 'failed':
      return { text: null, refused: `unreadable: ${r.message}` };
  }
}

async function fsckVfatRun(p1: string, flag: '-n' | '-a'): Promise<VfatRun> {
  try {
    const r = await run('fsckVfat', [flag, p1], {
      okCodes: [0, 1],
      timeoutMs: 10 * 60_000,
      heartbeat: ioHeartbeat(`fsck.fat ${p1}`),
    });
    return { flag, code: r.exitCode, output: `${r.stdout}\n${r.stderr}` };
  } catch (e) {
    if (e instanceof ToolError) return { flag, code: e.exitCode ?? null, output: e.stderrTail || e.message };
    return { flag, code: null, output: String(e) };
  }
}

/** The boot partitions fsck.fat passed (or repaired) in this boot: PID 1 is their only writer, so once is enough. */
const vfatChecked = new Set<string>();

/**
 * fsck.fat on the unmounted p1 before anything writes to it (the bootfs update, the first-stage cache's script
 * and try counter, the firmware path's sets): clean, repaired, or a PhaseFailure, never a format. Once per boot.
 */
export async function checkVfat(p1: string, phase: string): Promise<'clean' | 'repaired'> {
  if (vfatChecked.has(p1)) return 'clean';
  const done: VfatRun[] = [];
  for (;;) {
    const step = fsckNext(done);
    if ('run' in step) {
      done.push(await fsckVfatRun(p1, step.run));
      continue;
    }
    if (step.verdict === 'clean' || step.verdict === 'repaired') {
      vfatChecked.add(p1);
      if (step.verdict === 'repaired') warn(phase, `fsck.fat repaired the boot partition ${p1}: ${step.findings}`);
      return step.verdict;
    }
    throw new PhaseFailure(
      `the boot partition ${p1} is damaged and fsck.fat cannot repair it: ${step.findings}`,
      "p1 is left as it is, neither written nor formatted: rewrite it by hand (mkfs.fat, then copy the master's bootfs/), " +
        `or zero its start (dd if=/dev/zero of=${p1} bs=64k count=2) and the node formats p1 and fills it from the master at its next boot`,
      'fsck',
    );
  }
}

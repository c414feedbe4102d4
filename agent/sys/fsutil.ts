// Small effects shared by the disk phases: waiting for device nodes, mounting by role, atomic writes.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { run, ToolError } from './exec.ts';
import { info } from '../log.ts';
import { mount, MS_RDONLY, umount } from './libc.ts';
import { watchdogProgress } from '../devices/watchdog.ts';

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

/** e2fsck -p: 'ok' (clean or fixed) or 'broken' (it cannot repair: the caller formats and resyncs). */
export async function fsckExt4(dev: string, phase: string): Promise<'ok' | 'broken'> {
  try {
    const r = await run('e2fsck', ['-p', dev], {
      okCodes: [0, 1, 2, 3],
      timeoutMs: 30 * 60_000,
      heartbeat: ioHeartbeat(`e2fsck ${dev}`),
    });
    if (r.exitCode !== 0) info(phase, `e2fsck repaired ${dev} (exit ${r.exitCode})`);
    return 'ok';
  } catch (e) {
    info(phase, `e2fsck cannot repair ${dev}: ${e instanceof ToolError ? e.message : String(e)}`);
    return 'broken';
  }
}

/** Bytes a process has read and written on storage so far (from /proc/<pid>/io text), or null. */
export function ioBytes(procIo: string): number | null {
  const r = /^read_bytes:\s*(\d+)/m.exec(procIo);
  const w = /^write_bytes:\s*(\d+)/m.exec(procIo);
  return r || w ? Number(r?.[1] ?? 0) + Number(w?.[1] ?? 0) : null;
}

function pidIo(pid: number): number | null {
  try {
    return ioBytes(readFileSync(`/proc/${pid}/io`, 'utf8'));
  } catch {
    return null;
  }
}

/** A silent mkfs or e2fsck is progress for the watchdog while its disk I/O grows; a stuck one is not. */
export function ioHeartbeat(
  what: string,
  read: (pid: number) => number | null = pidIo,
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

// Bun does not reap orphans re-parented to PID 1 (ssh under rsync): collect them without stealing
// the status of children Bun spawned itself (those Bun holds a pidfd for).
import { readdirSync, readFileSync } from 'node:fs';
import { reapPid } from './libc.ts';

/** Parse /proc/<pid>/stat: state and ppid (the command name may hold spaces and parens). */
export function parseStat(text: string): { state: string; ppid: number; cpuTicks: number | null } | null {
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  if (!rest[0] || !Number.isInteger(ppid)) return null;
  // fields 14 and 15, utime and stime (clock ticks); rest[0] is field 3
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const cpuTicks = Number.isSafeInteger(utime) && Number.isSafeInteger(stime) ? utime + stime : null;
  return { state: rest[0], ppid, cpuTicks };
}

/** Pids Bun watches through a pidfd, read from /proc/self/fdinfo. */
export function pidsWithPidfd(fdinfos: string[]): Set<number> {
  const pids = new Set<number>();
  for (const text of fdinfos) {
    const m = /^Pid:\s*(\d+)/m.exec(text);
    if (m) pids.add(Number(m[1]));
  }
  return pids;
}

function readAll(dir: string): string[] {
  const out: string[] = [];
  for (const name of safeList(dir)) {
    try {
      out.push(readFileSync(`${dir}/${name}`, 'utf8'));
    } catch {
      // fd closed while we listed it
    }
  }
  return out;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Reap every zombie child of ours that Bun does not own; returns the pids reaped. */
export function reapOrphans(): number[] {
  const mine = process.pid;
  const owned = pidsWithPidfd(readAll('/proc/self/fdinfo'));
  const reaped: number[] = [];
  for (const name of safeList('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (owned.has(pid)) continue;
    let stat;
    try {
      stat = parseStat(readFileSync(`/proc/${name}/stat`, 'utf8'));
    } catch {
      continue;
    }
    if (stat?.state === 'Z' && stat.ppid === mine && reapPid(pid)) reaped.push(pid);
  }
  return reaped;
}

let timer: ReturnType<typeof setInterval> | null = null;

/** Reap every second from a timer: no SIGCHLD handler, so Bun's own child bookkeeping is never raced. */
export function startReaper(): void {
  if (timer) return;
  timer = setInterval(() => void reapOrphans(), 1000);
  timer.unref?.();
}

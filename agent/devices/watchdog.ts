// The hardware watchdog through fs plus ioctl: armed once the driver is loaded, fed only while the boot
// makes progress (a hung rsync or mount ends in a reset), closed with the magic 'V' at the handoff.
import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
import { clampTimeout, FeedPolicy, WDIOC, WDIOF } from '../plans/watchdog.ts';
import { info, onEvent, warn } from '../log.ts';
import { ioctl } from '../sys/libc.ts';

export const WATCHDOG_DEV = '/dev/watchdog';
const O_CLOEXEC = 0o2000000; // the device is single-open: a leaked fd would stop the booted init from taking it

let fd: number | null = null;
let timer: ReturnType<typeof setInterval> | null = null;
let policy: FeedPolicy | null = null;
let warned = false;

function feed(): void {
  if (fd !== null) writeSync(fd, '\0');
}

/** Arm the watchdog (no-op without a device or with watchdog=0); never throws: a boot goes on without it. */
export function armWatchdog(wantedS: number): void {
  if (fd !== null || wantedS === 0 || !existsSync(WATCHDOG_DEV)) {
    if (wantedS !== 0 && fd === null) info('modules', `no ${WATCHDOG_DEV}: booting without a hardware watchdog`);
    return;
  }
  try {
    fd = openSync(WATCHDOG_DEV, 1 | O_CLOEXEC); // O_WRONLY
    const infoBuf = new Uint8Array(40);
    ioctl(fd, WDIOC.GETSUPPORT, infoBuf);
    const options = new DataView(infoBuf.buffer).getUint32(0, true);
    const identity = Buffer.from(infoBuf.subarray(8)).toString('latin1').replace(/\0.*$/s, '');
    const c = clampTimeout(wantedS, null);
    if (c.note) info('modules', c.note);
    let seconds = c.seconds;
    if (options & WDIOF.SETTIMEOUT) {
      const t = new Int32Array([seconds]);
      try {
        ioctl(fd, WDIOC.SETTIMEOUT, new Uint8Array(t.buffer));
      } catch (e) {
        warn('modules', `watchdog refused a ${seconds} s timeout (${(e as Error).message}); keeping its own`);
      }
      const got = new Int32Array(1);
      ioctl(fd, WDIOC.GETTIMEOUT, new Uint8Array(got.buffer));
      seconds = got[0] ?? seconds;
    }
    policy = new FeedPolicy({ timeoutS: seconds });
    policy.progress(Date.now(), 'armed');
    onEvent((e) => {
      if (e.phase !== 'watchdog') policy?.progress(Date.now(), `${e.phase} ${e.kind}`); // our own warning is not progress
    });
    feed();
    const tickMs = Math.max(1000, (seconds * 1000) / 3);
    let lastTick = performance.now();
    timer = setInterval(() => {
      if (!policy || fd === null) return;
      // a tick far behind its time means PID 1's event loop was blocked: said, since it explains a reset
      const tick = performance.now();
      const late = tick - lastTick - tickMs;
      lastTick = tick;
      if (late > tickMs)
        warn(
          'watchdog',
          `the agent's event loop was blocked for ${(late / 1000).toFixed(1)} s (the watchdog was not fed)`,
        );
      const now = Date.now();
      if (policy.shouldFeed(now)) {
        warned = false;
        feed();
      } else if (!warned) {
        warned = true;
        const last = policy.lastProgress;
        warn(
          'watchdog',
          `no progress for ${Math.round(policy.stalledFor(now) / 1000)} s since "${last?.what ?? '?'}": not feeding, the node resets within ${seconds} s`,
        );
      }
    }, tickMs);
    info(
      'modules',
      `watchdog ${identity || WATCHDOG_DEV} armed: ${seconds} s timeout, fed while the boot makes progress (stall limit ${policy.stallS} s)`,
      { watchdog: { identity, seconds, stallS: policy.stallS } },
    );
  } catch (e) {
    warn('modules', `watchdog not armed: ${(e as Error).message}`);
    if (fd !== null) closeSync(fd);
    fd = null;
  }
}

/** Tell the watchdog the boot is alive (for long work that prints nothing to the console). */
export function watchdogProgress(what: string): void {
  policy?.progress(Date.now(), what);
}

/** At switch_root: magic close (the safe default for a root that does not run a watchdog daemon). */
export function releaseWatchdog(): void {
  if (timer) clearInterval(timer);
  timer = null;
  if (fd === null) return;
  try {
    writeSync(fd, 'V');
    closeSync(fd);
    info('handoff', 'watchdog stopped with the magic close (the booted system may arm it again)');
  } catch (e) {
    warn('handoff', `watchdog close: ${(e as Error).message}`);
  }
  fd = null;
}

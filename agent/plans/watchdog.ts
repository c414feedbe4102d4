// The hardware watchdog (/dev/watchdog) as decisions only: which timeout to ask for, when to feed it, and what to
// leave behind at switch_root. Pure: the ioctls and writes live elsewhere; time is passed in.
// Idea: the agent feeds the watchdog while the boot makes progress. A phase that hangs (rsync stuck on a dead
// link, a mount in D state) stops the progress reports, the agent stops feeding, the board resets itself.
// The bcm2835 driver (all Pis up to the 4) accepts at most 15 s.

// Why: the ioctl request numbers from include/uapi/linux/watchdog.h (asm-generic _IOC layout: arm64 and x86-64).
// GETSUPPORT = _IOR('W', 0, struct watchdog_info /* 40 bytes */), SETTIMEOUT = _IOWR('W', 6, int),
// GETTIMEOUT = _IOR('W', 7, int), KEEPALIVE = _IOR('W', 5, int); the unit test recomputes them from _IOC.
export const WDIOC = {
  GETSUPPORT: 0x80285700,
  SETTIMEOUT: 0xc0045706,
  GETTIMEOUT: 0x80045707,
  KEEPALIVE: 0x80045705,
} as const;

// Why: WDIOF_* bits from struct watchdog_info.options that decide how the agent may use the device.
export const WDIOF = { SETTIMEOUT: 0x0080, MAGICCLOSE: 0x0100, KEEPALIVEPING: 0x8000 } as const;

// Why: the bcm2835 limit, also the cap when the driver does not say its own.
export const DEFAULT_MAX_TIMEOUT_S = 15;

// Why: the timeout asked for on the command line must fit the driver; say so on the console when it was changed.
export function clampTimeout(wanted: number, driverMax: number | null): { seconds: number; note?: string } {
  if (typeof wanted !== 'number' || Number.isNaN(wanted) || wanted < 0) {
    return { seconds: 0, note: `watchdog timeout ${String(wanted)} is not a number of seconds: watchdog disabled` };
  }
  if (wanted === 0) return { seconds: 0, note: 'watchdog disabled (timeout 0)' };
  const known = driverMax !== null && Number.isFinite(driverMax) && driverMax >= 1;
  const max = known ? Math.floor(driverMax) : DEFAULT_MAX_TIMEOUT_S;
  const whole = wanted === Infinity ? Infinity : Math.round(wanted);
  if (whole < 1) return { seconds: 1, note: `watchdog timeout ${wanted} s raised to 1 s` };
  if (whole > max) {
    const why = known
      ? `the driver allows at most ${max} s`
      : `the driver did not report its maximum, capped at ${max} s`;
    return { seconds: max, note: `watchdog timeout ${wanted} s lowered to ${max} s: ${why}` };
  }
  if (!known)
    return { seconds: whole, note: `the driver did not report its maximum; using ${whole} s (at most ${max} s)` };
  if (whole !== wanted) return { seconds: whole, note: `watchdog timeout ${wanted} s rounded to ${whole} s` };
  return { seconds: whole };
}

// Why: feed only while the boot moves; a phase silent for longer than stallS is hung, so let the hardware reset.
// The first call (progress, shouldFeed or stalledFor) starts the clock when no progress was reported yet.
export class FeedPolicy {
  readonly timeoutS: number;
  readonly stallS: number;
  #lastMs: number | null = null;
  #what = 'start';

  constructor(opts: { timeoutS: number; stallS?: number }) {
    if (!(Number.isFinite(opts.timeoutS) && opts.timeoutS > 0))
      throw new RangeError(`timeoutS must be > 0, got ${opts.timeoutS}`);
    const stallS = opts.stallS ?? opts.timeoutS * 4;
    if (!(Number.isFinite(stallS) && stallS > 0)) throw new RangeError(`stallS must be > 0, got ${stallS}`);
    this.timeoutS = opts.timeoutS;
    this.stallS = stallS;
  }

  // Why: every phase step (a line of rsync output, a module loaded) proves the boot is alive.
  progress(nowMs: number, what: string): void {
    this.#lastMs = nowMs;
    this.#what = what;
  }

  // Why: asked on every tick of the feeding loop; false means "let it bite".
  shouldFeed(nowMs: number): boolean {
    return this.stalledFor(nowMs) < this.stallS * 1000;
  }

  // Why: ms since the last progress report, for the console line that explains an imminent reset.
  stalledFor(nowMs: number): number {
    if (this.#lastMs === null) this.#lastMs = nowMs;
    return Math.max(0, nowMs - this.#lastMs);
  }

  // Why: names the last thing that moved, so "stalled 60 s after 'rsync 42%'" can be printed before the reset.
  get lastProgress(): { atMs: number; what: string } | null {
    return this.#lastMs === null ? null : { atMs: this.#lastMs, what: this.#what };
  }
}

// Why: the two ways to leave /dev/watchdog at switch_root.
export type Handoff = 'keep-armed' | 'magic-close';

// Why: at switch_root the agent stops feeding; unless the root takes over (systemd RuntimeWatchdogSec=, or
// clusterboot.watchdog=keep) it must write 'V' and close, else a healthy node would reset timeoutS later.
// Note: with CONFIG_WATCHDOG_NOWAYOUT or a driver without WDIOF_MAGICCLOSE, closing does not stop it (the caller checks).
export function handoffAction(
  param: string | undefined,
  rootConfiguresWatchdog: boolean,
): { action: Handoff; why: string } {
  const p = param?.trim().toLowerCase();
  if (p === 'keep') {
    return {
      action: 'keep-armed',
      why: rootConfiguresWatchdog
        ? 'watchdog kept armed (keep requested); the root configures a watchdog and feeds it'
        : 'watchdog kept armed (keep requested) although the root does not seem to configure one: it must feed /dev/watchdog in time or the node resets',
    };
  }
  if (p === 'close') return { action: 'magic-close', why: 'watchdog disarmed with the magic close (close requested)' };
  const ignored = p === undefined || p === '' ? '' : ` (unknown value '${param}' ignored; use keep or close)`;
  if (rootConfiguresWatchdog) {
    return {
      action: 'keep-armed',
      why: `watchdog kept armed: the root configures its own watchdog and takes over${ignored}`,
    };
  }
  return {
    action: 'magic-close',
    why: `watchdog disarmed with the magic close: nothing in the root feeds it${ignored}`,
  };
}

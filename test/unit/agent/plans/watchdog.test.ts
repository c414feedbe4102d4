// Watchdog decisions: ioctl numbers, timeout clamping, when to feed, what to leave at switch_root.
import { describe, expect, test } from 'bun:test';
import { clampTimeout, FeedPolicy, handoffAction, WDIOC } from '../../../../agent/plans/watchdog.ts';

// include/uapi/asm-generic/ioctl.h (arm64, x86-64): nr 8 bits, type 8 bits, size 14 bits, dir 2 bits.
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = IOC_NRSHIFT + 8;
const IOC_SIZESHIFT = IOC_TYPESHIFT + 8;
const IOC_DIRSHIFT = IOC_SIZESHIFT + 14;
const IOC_WRITE = 1;
const IOC_READ = 2;
// Multiplication rather than << so the 32-bit result stays unsigned in JS.
const IOC = (dir: number, type: string, nr: number, size: number) =>
  dir * 2 ** IOC_DIRSHIFT + size * 2 ** IOC_SIZESHIFT + type.charCodeAt(0) * 2 ** IOC_TYPESHIFT + nr * 2 ** IOC_NRSHIFT;
const IOR = (type: string, nr: number, size: number) => IOC(IOC_READ, type, nr, size);
const IOWR = (type: string, nr: number, size: number) => IOC(IOC_READ | IOC_WRITE, type, nr, size);
const SIZEOF_INT = 4;
const SIZEOF_WATCHDOG_INFO = 4 /* __u32 options */ + 4 /* __u32 firmware_version */ + 32; /* __u8 identity[32] */

describe('ioctl numbers', () => {
  test('equal the _IOC formula of include/uapi/linux/watchdog.h', () => {
    expect(WDIOC.GETSUPPORT as number).toBe(IOR('W', 0, SIZEOF_WATCHDOG_INFO));
    expect(WDIOC.KEEPALIVE as number).toBe(IOR('W', 5, SIZEOF_INT));
    expect(WDIOC.SETTIMEOUT as number).toBe(IOWR('W', 6, SIZEOF_INT));
    expect(WDIOC.GETTIMEOUT as number).toBe(IOR('W', 7, SIZEOF_INT));
  });
});

describe('clampTimeout', () => {
  test('0 disables', () => {
    expect(clampTimeout(0, 15).seconds).toBe(0);
    expect(clampTimeout(0, null).seconds).toBe(0);
  });
  test('within the driver range: unchanged, no note', () => {
    expect(clampTimeout(10, 15)).toEqual({ seconds: 10 });
    expect(clampTimeout(15, 15)).toEqual({ seconds: 15 });
    expect(clampTimeout(1, 15)).toEqual({ seconds: 1 });
  });
  test('above the driver maximum: lowered, with a note', () => {
    const r = clampTimeout(60, 15);
    expect(r.seconds).toBe(15);
    expect(r.note).toContain('15');
    expect(clampTimeout(300, 255).seconds).toBe(255);
  });
  test('unknown maximum: min(wanted, 15), with a note', () => {
    expect(clampTimeout(60, null).seconds).toBe(15);
    expect(clampTimeout(60, null).note).toContain('did not report');
    expect(clampTimeout(10, null).seconds).toBe(10);
    expect(clampTimeout(10, null).note).toBeDefined();
    expect(clampTimeout(60, 0).seconds).toBe(15);
    expect(clampTimeout(60, NaN).seconds).toBe(15);
  });
  test('below 1 s raised, fractions rounded, nonsense disables', () => {
    expect(clampTimeout(0.3, 15).seconds).toBe(1);
    expect(clampTimeout(7.6, 15).seconds).toBe(8);
    expect(clampTimeout(-1, 15).seconds).toBe(0);
    expect(clampTimeout(NaN, 15).seconds).toBe(0);
    expect(clampTimeout(-1, 15).note).toBeDefined();
    expect(clampTimeout(Infinity, 15).seconds).toBe(15);
  });
});

// A fake hardware watchdog: it resets the board when not fed for timeoutS.
function run(policy: FeedPolicy, untilMs: number, progressAt: (t: number) => string | null) {
  let lastFed = 0;
  let lastFeedDecision = true;
  for (let t = 0; t <= untilMs; t += 1000) {
    const what = progressAt(t);
    if (what !== null) policy.progress(t, what);
    lastFeedDecision = policy.shouldFeed(t);
    if (lastFeedDecision) lastFed = t;
    if (t - lastFed > policy.timeoutS * 1000) return { resetAt: t, lastFeedDecision };
  }
  return { resetAt: null, lastFeedDecision };
}

describe('FeedPolicy', () => {
  test('stallS defaults to 4 × timeoutS', () => {
    expect(new FeedPolicy({ timeoutS: 15 }).stallS).toBe(60);
    expect(new FeedPolicy({ timeoutS: 15, stallS: 120 }).stallS).toBe(120);
    expect(() => new FeedPolicy({ timeoutS: 0 })).toThrow();
    expect(() => new FeedPolicy({ timeoutS: 15, stallS: -1 })).toThrow();
  });
  test('progress stops: feeding stops after stallS and not before', () => {
    const p = new FeedPolicy({ timeoutS: 15, stallS: 60 });
    const t0 = 1_000_000;
    p.progress(t0, 'modules: loaded genet');
    for (let t = t0; t < t0 + 60_000; t += 50) expect(p.shouldFeed(t)).toBe(true);
    expect(p.shouldFeed(t0 + 59_999)).toBe(true);
    expect(p.shouldFeed(t0 + 60_000)).toBe(false);
    expect(p.shouldFeed(t0 + 61_000)).toBe(false);
    expect(p.stalledFor(t0 + 61_000)).toBe(61_000);
    expect(p.lastProgress).toEqual({ atMs: t0, what: 'modules: loaded genet' });
    // Progress that comes back before the hardware bites resumes feeding.
    p.progress(t0 + 62_000, 'mount done');
    expect(p.shouldFeed(t0 + 62_000)).toBe(true);
  });
  test('the first call starts the clock when nothing reported progress yet', () => {
    const p = new FeedPolicy({ timeoutS: 15 });
    expect(p.lastProgress).toBeNull();
    expect(p.shouldFeed(5000)).toBe(true);
    expect(p.stalledFor(64_999)).toBe(59_999);
    expect(p.shouldFeed(65_000)).toBe(false);
  });
  test('a clock that goes backwards counts as no stall', () => {
    const p = new FeedPolicy({ timeoutS: 15 });
    p.progress(10_000, 'x');
    expect(p.stalledFor(9_000)).toBe(0);
    expect(p.shouldFeed(9_000)).toBe(true);
  });
  test('a hung phase ends in a reset: stallS of silence plus at most timeoutS', () => {
    const p = new FeedPolicy({ timeoutS: 15 });
    const r = run(p, 10 * 60_000, (t) => (t <= 30_000 && t % 5000 === 0 ? `rsync ${t / 1000}` : null));
    expect(r.resetAt).not.toBeNull();
    expect(r.resetAt!).toBeGreaterThan(30_000 + 60_000);
    expect(r.resetAt!).toBeLessThanOrEqual(30_000 + 60_000 + 15_000 + 1000);
  });
  test('a long rsync reporting progress every 5 s keeps feeding for 10 minutes', () => {
    const p = new FeedPolicy({ timeoutS: 15 });
    const r = run(p, 10 * 60_000, (t) => (t % 5000 === 0 ? `rsync ${Math.floor(t / 6000)}%` : null));
    expect(r).toEqual({ resetAt: null, lastFeedDecision: true });
  });
});

describe('handoffAction', () => {
  test('default: magic close', () => {
    expect(handoffAction(undefined, false).action).toBe('magic-close');
    expect(handoffAction('', false).action).toBe('magic-close');
  });
  test('the root takes over: keep armed', () => {
    expect(handoffAction(undefined, true).action).toBe('keep-armed');
  });
  test('keep and close on the command line win', () => {
    const keep = handoffAction('keep', false);
    expect(keep.action).toBe('keep-armed');
    expect(keep.why).toContain('must feed');
    expect(handoffAction('keep', true).action).toBe('keep-armed');
    expect(handoffAction('close', true).action).toBe('magic-close');
  });
  test('unknown values fall back to the default and say so', () => {
    const r = handoffAction('maybe', false);
    expect(r.action).toBe('magic-close');
    expect(r.why).toContain("'maybe'");
    expect(handoffAction('maybe', true).action).toBe('keep-armed');
  });
});

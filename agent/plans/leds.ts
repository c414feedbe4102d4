// The three status LEDs (red, green, yellow): with no screen on the node they are, with the console, the admin's
// only view of a boot. Pure: this file only says which LED is lit when; the GPIO writes live elsewhere.
// The code a person at the rack reads:
//   - red means trouble: steady = fatal, N short blinks then a pause = error number N (see ERROR_PATTERNS);
//     red + yellow alternating = recovery was requested with the button.
//   - yellow alone = reaching the master (early, modules, network, master).
//   - green alone = working on the local disk (disk, partitions, bootfs).
//   - green and yellow together = preparing and entering the root; green steady + yellow blinking = syncing,
//     the yellow blinks faster as the sync progresses.
//   - green steady alone = booted (left on after switch_root).
//
// A pattern has one frame list per LED: durations in ms, alternately on and off, starting with on, repeating.
// [] = off, [Infinity] = steady on. A leading 0 starts an LED in its off frame (used for "alternating").

// Why: the three LEDs wired on every node (GPIO 22, 23, 24 by default).
export type LedName = 'red' | 'green' | 'yellow';
// Why: one snapshot of the LEDs, what the GPIO writer applies.
export type LedState = Record<LedName, boolean>;

// Why: a named, documented blink pattern; the data both the agent and the README legend use.
export interface Pattern {
  name: string;
  meaning: string;
  red: number[];
  green: number[];
  yellow: number[];
}

// Why: iteration order for the writer and the table (matches the leds= line order).
export const LED_NAMES: readonly LedName[] = ['red', 'green', 'yellow'];

const OFF: number[] = [];
const STEADY: number[] = [Infinity];
const BLINK_1HZ = [500, 500];
const BLINK_1HZ_INVERTED = [0, 500, 500, 0];
const SHORT_ON = 250;
const SHORT_GAP = 250;
const PAUSE = 1500;

// N short blinks then a pause: countable at a glance, up to 5.
function counted(n: number): number[] {
  const frames: number[] = [];
  for (let i = 0; i < n; i++) frames.push(SHORT_ON, i === n - 1 ? PAUSE : SHORT_GAP);
  return frames;
}

function pattern(name: string, meaning: string, leds: Partial<Record<LedName, number[]>>): Pattern {
  return { name, meaning, red: leds.red ?? OFF, green: leds.green ?? OFF, yellow: leds.yellow ?? OFF };
}

const SYNC_SLOW_MS = 2000;
const SYNC_FAST_MS = 250;

// Why: rsync progress becomes something visible from across the room: yellow speeds up from 0.5 Hz to 4 Hz.
// The period shrinks geometrically (the rate doubles every third of the way), which the eye reads as even steps.
export function syncPattern(percent: number): Pattern {
  const p = Number.isNaN(percent) ? 0 : Math.min(100, Math.max(0, percent));
  const period = SYNC_SLOW_MS * (SYNC_FAST_MS / SYNC_SLOW_MS) ** (p / 100);
  const half = Math.round(period / 2);
  return pattern('syncing', 'rsync from the master running (bootfs or root)', {
    green: STEADY,
    yellow: [half, half],
  });
}

// Why: one pattern per boot phase (same names as agent/sequence.ts), shown while that phase runs.
export const PHASE_PATTERNS: Record<string, Pattern> = {
  early: pattern('early', 'agent started: kernel filesystems, command line', { yellow: STEADY }),
  modules: pattern('modules', 'loading drivers', { yellow: BLINK_1HZ }),
  network: pattern('network', 'waiting for a DHCP lease', { yellow: counted(2) }),
  master: pattern('master', 'connecting to the master', { yellow: counted(3) }),
  disk: pattern('disk', 'checking the local disk is ours', { green: BLINK_1HZ }),
  partitions: pattern('partitions', 'checking / writing the partition table', { green: counted(2) }),
  bootfs: pattern('bootfs', 'checking / updating the boot firmware partition', { green: counted(3) }),
  root: pattern('root', 'comparing the root stamp, choosing the root slot', {
    green: BLINK_1HZ,
    yellow: BLINK_1HZ_INVERTED,
  }),
  firststage: pattern('firststage', 'keeping the first stage that booted (kernel, initramfs) on the disk', {
    green: STEADY,
    yellow: counted(3),
  }),
  overlay: pattern('overlay', 'mounting the root read-only under its writable layer', {
    green: BLINK_1HZ,
    yellow: BLINK_1HZ,
  }),
  identity: pattern('identity', "laying this node's own files (hostname, machine-id, host keys)", {
    green: STEADY,
    yellow: counted(2),
  }),
  handoff: pattern('handoff', "switching to the root's init", { green: STEADY, yellow: STEADY }),
  syncing: syncPattern(0),
};

// Why: the failures the admin must tell apart at the rack.
export type ErrorName =
  'master-unreachable' | 'disk-refused' | 'sync-failed' | 'fsck-failed' | 'hostkey' | 'recovery' | 'fatal';

// Why: failures must be told apart without a console: red, and the number of blinks names the error.
export const ERROR_PATTERNS: Record<ErrorName, Pattern> = {
  'master-unreachable': pattern('master-unreachable', 'error 1: master unreachable', { red: counted(1) }),
  'disk-refused': pattern('disk-refused', 'error 2: disk refused (not ours, or the table is in doubt)', {
    red: counted(2),
  }),
  'sync-failed': pattern('sync-failed', 'error 3: sync from the master failed', { red: counted(3) }),
  'fsck-failed': pattern('fsck-failed', 'error 4: filesystem check failed', { red: counted(4) }),
  hostkey: pattern('hostkey', 'error 5: master host key does not match', { red: counted(5) }),
  recovery: pattern('recovery', 'button held: writable layer wiped, full root resync', {
    red: BLINK_1HZ,
    yellow: BLINK_1HZ_INVERTED,
  }),
  fatal: pattern('fatal', 'fatal error: read the console', { red: STEADY }),
};

// Why: after switch_root the agent is gone, so the last state written must mean "booted" on its own.
export const FINAL_PATTERN: Pattern = pattern('booted', "booted: the root's init is running", { green: STEADY });

// Why: the same static rule, for a boot that handed over with an alarm (the writable layer left unused): green and
// red both steady, which no running phase and no failure shows (a failure is red without green).
export const ALARM_FINAL_PATTERN: Pattern = pattern(
  'booted-alarm',
  "booted with an alarm: the root's init is running, but read the console or the report (builder status)",
  { green: STEADY, red: STEADY },
);

// A frame's usable length: Infinity stays (steady), anything negative or NaN counts as 0.
function frameMs(d: number | undefined): number {
  return d === Infinity ? Infinity : d !== undefined && Number.isFinite(d) && d > 0 ? d : 0;
}

function litAt(frames: readonly number[], elapsedMs: number): boolean {
  let total = 0;
  for (const d of frames) total += frameMs(d);
  if (total === 0) return false;
  const t0 = Number.isFinite(elapsedMs) && elapsedMs > 0 ? elapsedMs : 0;
  const t = total === Infinity ? t0 : t0 % total;
  let acc = 0;
  for (let i = 0; i < frames.length; i++) {
    const d = frameMs(frames[i]);
    if (t < acc + d) return i % 2 === 0;
    acc += d;
  }
  return false;
}

// Why: the GPIO loop asks "what now?" with the time since the pattern started; the clock stays outside.
export function ledsAt(p: Pattern, elapsedMs: number): LedState {
  return { red: litAt(p.red, elapsedMs), green: litAt(p.green, elapsedMs), yellow: litAt(p.yellow, elapsedMs) };
}

// Cyclic on/off segments of a frame list: zero frames dropped, neighbours of the same state merged, wrap-around too.
function segments(frames: readonly number[]): Array<{ on: boolean; ms: number }> {
  const out: Array<{ on: boolean; ms: number }> = [];
  frames.forEach((raw, i) => {
    const d = frameMs(raw);
    if (d === 0) return;
    const on = i % 2 === 0;
    const last = out[out.length - 1];
    if (last && last.on === on) last.ms += d;
    else out.push({ on, ms: d });
  });
  const first = out[0];
  const last = out[out.length - 1];
  if (out.length > 1 && first && last && first.on === last.on) {
    first.ms += last.ms;
    out.pop();
  }
  return out;
}

function hz(periodMs: number): string {
  return `${Number((1000 / periodMs).toFixed(2))} Hz`;
}

function describe(frames: readonly number[]): string {
  const segs = segments(frames);
  if (!segs.some((s) => s.on)) return 'off';
  if (segs.some((s) => s.on && s.ms === Infinity) || !segs.some((s) => !s.on)) return 'steady';
  const ons = segs.filter((s) => s.on).map((s) => s.ms);
  const offs = segs.filter((s) => !s.on).map((s) => s.ms);
  const on = ons[0] ?? 0;
  const allOnSame = ons.every((d) => d === on);
  const maxOff = Math.max(...offs);
  const minOff = Math.min(...offs);
  if (allOnSame && minOff === maxOff && on === minOff) return `blinks ${hz(on + minOff)}`;
  const pauses = offs.filter((d) => d === maxOff).length;
  const gaps = offs.filter((d) => d !== maxOff);
  if (allOnSame && pauses === 1 && gaps.every((d) => d === gaps[0]) && maxOff > on) {
    return ons.length === 1 ? '1 short blink, pause' : `${ons.length} short blinks, pause`;
  }
  return segs.map((s) => `${s.on ? 'on' : 'off'} ${s.ms} ms`).join(', ');
}

// True when two blinking LEDs of one pattern are lit exactly when the other is dark (sampled every 10 ms).
function relation(a: readonly number[], b: readonly number[]): 'together' | 'alternating' | null {
  const blinking = (f: readonly number[]) => {
    const d = describe(f);
    return d !== 'off' && d !== 'steady';
  };
  if (!blinking(a) || !blinking(b)) return null;
  let same = true;
  let opposite = true;
  for (let t = 0; t < 8000; t += 10) {
    const x = litAt(a, t);
    const y = litAt(b, t);
    if (x === y) opposite = false;
    else same = false;
  }
  return same ? 'together' : opposite ? 'alternating' : null;
}

function cells(p: Pattern): Record<LedName, string> {
  const out = { red: describe(p.red), green: describe(p.green), yellow: describe(p.yellow) };
  for (const led of LED_NAMES) {
    for (const other of LED_NAMES) {
      if (other === led) continue;
      const r = relation(p[led], p[other]);
      if (r) {
        out[led] += ` (${r})`;
        break;
      }
    }
  }
  return out;
}

// Why: the README's LED legend is generated from the same data the agent blinks, so they cannot drift apart.
export function renderTable(): string {
  const rows: Array<[string, Record<LedName, string>, string]> = [];
  for (const p of Object.values(PHASE_PATTERNS)) {
    const c = cells(p);
    if (p.name === 'syncing') {
      c.yellow = `blinks ${hz(sum(syncPattern(0).yellow))} → ${hz(sum(syncPattern(100).yellow))} as the sync progresses`;
    }
    rows.push([p.name, c, p.meaning]);
  }
  for (const p of Object.values(ERROR_PATTERNS)) rows.push([p.name, cells(p), p.meaning]);
  for (const p of [FINAL_PATTERN, ALARM_FINAL_PATTERN]) rows.push([p.name, cells(p), p.meaning]);
  const lines = ['| pattern | red | green | yellow | meaning |', '|---|---|---|---|---|'];
  for (const [name, c, meaning] of rows) lines.push(`| ${name} | ${c.red} | ${c.green} | ${c.yellow} | ${meaning} |`);
  return lines.join('\n') + '\n';
}

function sum(frames: readonly number[]): number {
  return frames.reduce((a, b) => a + b, 0);
}

// Why: upper bound for a line number in leds= / button= (no Pi chip has more lines).
export const MAX_GPIO_LINE = 511;
const CHIP = /^[A-Za-z0-9_.-]{1,64}$/;

// Why: the `leds=` kernel parameter: 'off', or '<chip>:<red>,<green>,<yellow>' (default wiring gpiochip0:22,23,24).
export function parseLedsParam(
  v: string,
): { off: true } | { off: false; chip: string; lines: [number, number, number] } | { error: string } {
  if (typeof v !== 'string') return { error: 'leds= is not text' };
  const s = v.trim();
  if (s === 'off') return { off: true };
  const colon = s.lastIndexOf(':');
  if (colon < 0) return { error: `leds=${s}: expected 'off' or <chip>:<red>,<green>,<yellow> like gpiochip0:22,23,24` };
  const chip = s.slice(0, colon);
  if (!CHIP.test(chip)) return { error: `leds=${s}: bad chip name '${chip}' (letters, digits, . _ - only)` };
  const parts = s.slice(colon + 1).split(',');
  if (parts.length !== 3) return { error: `leds=${s}: expected 3 lines (red,green,yellow), got ${parts.length}` };
  const lines: number[] = [];
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return { error: `leds=${s}: '${part}' is not a line number` };
    const n = Number(part);
    if (n > MAX_GPIO_LINE) return { error: `leds=${s}: line ${n} is above ${MAX_GPIO_LINE}` };
    lines.push(n);
  }
  if (new Set(lines).size !== 3) return { error: `leds=${s}: the three lines must differ` };
  const [r = 0, g = 0, y = 0] = lines;
  return { off: false, chip, lines: [r, g, y] };
}

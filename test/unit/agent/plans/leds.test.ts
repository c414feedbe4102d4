// LED patterns: complete, told apart by eye, periodic; the leds= parameter.
import { describe, expect, test } from 'bun:test';
import {
  ERROR_PATTERNS,
  FINAL_PATTERN,
  ALARM_FINAL_PATTERN,
  LED_NAMES,
  ledsAt,
  parseLedsParam,
  PHASE_PATTERNS,
  renderTable,
  syncPattern,
} from '../../../../agent/plans/leds.ts';
import type { Pattern } from '../../../../agent/plans/leds.ts';
import { PHASE_NAMES } from '../../../../agent/sequence.ts';

const PHASES = [
  'early',
  'modules',
  'network',
  'master',
  'disk',
  'partitions',
  'bootfs',
  'root',
  'firststage',
  'overlay',
  'identity',
  'handoff',
];
const ERRORS = ['master-unreachable', 'disk-refused', 'sync-failed', 'fsck-failed', 'hostkey', 'recovery', 'fatal'];
const ALL: Pattern[] = [
  ...Object.values(PHASE_PATTERNS),
  ...Object.values(ERROR_PATTERNS),
  FINAL_PATTERN,
  ALARM_FINAL_PATTERN,
];

// What a person sees during `windowMs`, sampled every 50 ms by a fake clock starting at `shiftMs`.
function film(p: Pattern, shiftMs = 0, windowMs = 4000): string {
  let s = '';
  for (let t = 0; t < windowMs; t += 50) {
    const l = ledsAt(p, shiftMs + t);
    s += `${+l.red}${+l.green}${+l.yellow} `;
  }
  return s;
}
const period = (p: Pattern) =>
  Math.max(...LED_NAMES.map((n) => p[n].reduce((a, b) => a + b, 0)).filter(Number.isFinite), 1);

describe('patterns', () => {
  test('every phase and every error has a pattern named after it', () => {
    expect(Object.keys(PHASE_PATTERNS).sort()).toEqual([...PHASES, 'syncing'].sort());
    expect(Object.keys(ERROR_PATTERNS).sort()).toEqual([...ERRORS].sort());
    for (const [k, p] of Object.entries({ ...PHASE_PATTERNS, ...ERROR_PATTERNS })) {
      expect(p.name).toBe(k);
      expect(p.meaning.length).toBeGreaterThan(0);
    }
  });
  test('the boot sequence has no phase without a pattern', () => {
    for (const name of PHASE_NAMES) expect(PHASE_PATTERNS[name]).toBeDefined();
  });
  test('pairwise distinguishable: on/off sequences over 4 s from the start differ', () => {
    const films = ALL.map((p) => film(p));
    expect(new Set(films).size).toBe(ALL.length);
  });
  test('pairwise distinguishable from any moment a person starts looking, given one full cycle plus a pause', () => {
    // Counted blinks need a whole count between two pauses: 4 s is not enough for "4 blinks" seen from its 2nd blink.
    const window = 2 * Math.max(...ALL.map(period));
    for (let i = 0; i < ALL.length; i++) {
      for (let j = 0; j < ALL.length; j++) {
        if (i === j) continue;
        const a = ALL[i]!;
        const b = ALL[j]!;
        const seen = film(a, 0, window);
        for (let shift = 0; shift < period(b); shift += 50) {
          if (film(b, shift, window) === seen) throw new Error(`${a.name} looks like ${b.name} shifted by ${shift} ms`);
        }
      }
    }
  });
  test('syncing at any progress looks like no other pattern', () => {
    const others = ALL.filter((p) => p.name !== 'syncing');
    for (const pct of [0, 10, 33, 50, 67, 90, 100]) {
      const seen = film(syncPattern(pct));
      for (const b of others) for (let s = 0; s < period(b); s += 50) expect(film(b, s)).not.toBe(seen);
    }
  });
  test('errors use red; phases do not; booted is green alone', () => {
    for (const p of Object.values(ERROR_PATTERNS)) expect(p.red.length).toBeGreaterThan(0);
    for (const p of Object.values(PHASE_PATTERNS)) expect(p.red).toEqual([]);
    expect(FINAL_PATTERN).toMatchObject({ name: 'booted', red: [], green: [Infinity], yellow: [] });
    for (let t = 0; t < 10_000; t += 333)
      expect(ledsAt(FINAL_PATTERN, t)).toEqual({ red: false, green: true, yellow: false });
  });
  test('booted with an alarm is static (the agent is gone) and unlike every running phase, failure or plain boot', () => {
    for (let t = 0; t < 10_000; t += 333)
      expect(ledsAt(ALARM_FINAL_PATTERN, t)).toEqual({ red: true, green: true, yellow: false });
    for (const p of [...Object.values(PHASE_PATTERNS), ...Object.values(ERROR_PATTERNS), FINAL_PATTERN])
      for (let t = 0; t < period(p); t += 50) expect(ledsAt(p, t)).not.toEqual(ledsAt(ALARM_FINAL_PATTERN, 0));
  });
  test('error N blinks red N times per cycle', () => {
    const counts = {
      'master-unreachable': 1,
      'disk-refused': 2,
      'sync-failed': 3,
      'fsck-failed': 4,
      hostkey: 5,
    } as const;
    for (const [name, n] of Object.entries(counts)) {
      const p = ERROR_PATTERNS[name as keyof typeof counts];
      let rises = 0;
      let prev = false;
      for (let t = 0; t < period(p); t += 10) {
        const on = ledsAt(p, t).red;
        if (on && !prev) rises++;
        prev = on;
      }
      expect(rises).toBe(n);
    }
  });
});

describe('ledsAt', () => {
  test('periodic: the state at t equals the state at t + period', () => {
    for (const p of [...ALL, syncPattern(42)]) {
      const T = period(p);
      for (let t = 0; t < 3 * T; t += 37) expect(ledsAt(p, t + T)).toEqual(ledsAt(p, t));
    }
  });
  test('frames: on first, then off; boundaries belong to the next frame', () => {
    const p: Pattern = { name: 'x', meaning: 'x', red: [100, 300], green: [0, 200, 200, 0], yellow: [] };
    expect(ledsAt(p, 0)).toEqual({ red: true, green: false, yellow: false });
    expect(ledsAt(p, 99).red).toBe(true);
    expect(ledsAt(p, 100).red).toBe(false);
    expect(ledsAt(p, 399).red).toBe(false);
    expect(ledsAt(p, 400).red).toBe(true);
    expect(ledsAt(p, 199).green).toBe(false);
    expect(ledsAt(p, 200).green).toBe(true);
  });
  test('steady, off, and bad times', () => {
    const p = PHASE_PATTERNS.handoff!;
    expect(ledsAt(p, 1e12)).toEqual({ red: false, green: true, yellow: true });
    expect(ledsAt(PHASE_PATTERNS.modules!, -5)).toEqual(ledsAt(PHASE_PATTERNS.modules!, 0));
    expect(ledsAt(PHASE_PATTERNS.modules!, NaN)).toEqual(ledsAt(PHASE_PATTERNS.modules!, 0));
  });
});

describe('syncPattern', () => {
  const yPeriod = (pct: number) => syncPattern(pct).yellow.reduce((a, b) => a + b, 0);
  test('yellow period shrinks from 2000 ms to 250 ms, monotonic; green steady, red off', () => {
    expect(yPeriod(0)).toBe(2000);
    expect(yPeriod(100)).toBe(250);
    for (let p = 1; p <= 100; p += 0.5) expect(yPeriod(p)).toBeLessThanOrEqual(yPeriod(p - 0.5));
    for (let p = 1; p <= 100; p++) expect(yPeriod(p)).toBeLessThan(yPeriod(p - 1));
    expect(syncPattern(50)).toMatchObject({ name: 'syncing', red: [], green: [Infinity] });
  });
  test('clamped, NaN is 0', () => {
    expect(syncPattern(-10)).toEqual(syncPattern(0));
    expect(syncPattern(250)).toEqual(syncPattern(100));
    expect(syncPattern(NaN)).toEqual(syncPattern(0));
    expect(syncPattern(Infinity)).toEqual(syncPattern(100));
    expect(PHASE_PATTERNS.syncing).toEqual(syncPattern(0));
  });
});

describe('renderTable', () => {
  const table = renderTable();
  test('one row per pattern, with words', () => {
    const rows = table.trim().split('\n');
    expect(rows[0]).toBe('| pattern | red | green | yellow | meaning |');
    expect(rows.length).toBe(2 + ALL.length);
    expect(table).toContain('| early | off | off | steady |');
    expect(table).toContain('| modules | off | off | blinks 1 Hz |');
    expect(table).toContain('| network | off | off | 2 short blinks, pause |');
    expect(table).toContain('| master-unreachable | 1 short blink, pause | off | off |');
    expect(table).toContain('| hostkey | 5 short blinks, pause | off | off |');
    expect(table).toContain('| root | off | blinks 1 Hz (alternating) | blinks 1 Hz (alternating) |');
    expect(table).toContain('| overlay | off | blinks 1 Hz (together) | blinks 1 Hz (together) |');
    expect(table).toContain('| syncing | off | steady | blinks 0.5 Hz → 4 Hz as the sync progresses |');
    expect(table).toContain('| booted | off | steady | off |');
    expect(table).not.toContain(' ms');
  });
});

describe('parseLedsParam', () => {
  test('off and the default wiring', () => {
    expect(parseLedsParam('off')).toEqual({ off: true });
    expect(parseLedsParam('gpiochip0:22,23,24')).toEqual({ off: false, chip: 'gpiochip0', lines: [22, 23, 24] });
    expect(parseLedsParam(' gpiochip4:0,1,511 ')).toEqual({ off: false, chip: 'gpiochip4', lines: [0, 1, 511] });
    expect(parseLedsParam('pinctrl-rp1:5,6,7')).toEqual({ off: false, chip: 'pinctrl-rp1', lines: [5, 6, 7] });
  });
  test('errors', () => {
    for (const bad of [
      '',
      'on',
      'gpiochip0',
      'gpiochip0:22,23',
      'gpiochip0:22,23,24,25',
      'gpiochip0:22,23,512',
      'gpiochip0:22,-1,24',
      'gpiochip0:22,x,24',
      'gpiochip0:22,22,24',
      ':22,23,24',
      '/dev/gpiochip0:22,23,24',
      '../x:1,2,3',
      'gpiochip0:22, 23,24',
      'gpiochip0:1.5,2,3',
    ]) {
      expect(parseLedsParam(bad)).toHaveProperty('error');
    }
  });
});

// Recovery button: only a deliberate hold counts; the button= parameter.
import { describe, expect, test } from 'bun:test';
import { parseButtonParam, recoveryRequested, SAMPLE_MS, WINDOW_MS } from '../../../../agent/plans/button.ts';

const N = WINDOW_MS / SAMPLE_MS; // 30 samples
// Samples from a string: '#' pressed, '.' released, one character per 100 ms.
const s = (text: string) => [...text].map((c) => c === '#');
const held = (from: number, to: number) => Array.from({ length: N }, (_, i) => i >= from && i < to);

describe('recoveryRequested', () => {
  test('held for 2 s or more: yes', () => {
    expect(recoveryRequested(held(0, 20))).toBe(true);
    expect(recoveryRequested(held(0, 30))).toBe(true);
    expect(recoveryRequested(held(10, 30))).toBe(true);
    expect(recoveryRequested(held(3, 25))).toBe(true);
  });
  test('released early, or too short: no', () => {
    expect(recoveryRequested(held(0, 19))).toBe(false);
    expect(recoveryRequested(held(0, 0))).toBe(false);
    expect(recoveryRequested(held(12, 30))).toBe(false);
    expect(recoveryRequested(s('##########..##########........'))).toBe(false); // two 1 s presses
    expect(recoveryRequested([])).toBe(false);
  });
  test('bounces shorter than 200 ms inside the hold are tolerated', () => {
    expect(recoveryRequested(s('#####.##############..........'))).toBe(true);
    expect(recoveryRequested(s('#####.#########.####..........'))).toBe(true);
    expect(recoveryRequested(s('####..##############..........'))).toBe(false); // 200 ms release ends the hold
  });
  test('minHeldMs', () => {
    expect(recoveryRequested(held(0, 10), 1000)).toBe(true);
    expect(recoveryRequested(held(0, 9), 1000)).toBe(false);
    expect(recoveryRequested(held(0, 30), 3000)).toBe(true);
    expect(recoveryRequested(held(0, 30), 3100)).toBe(false);
  });
  test('noise never triggers', () => {
    expect(recoveryRequested(s('#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.'))).toBe(false);
    expect(recoveryRequested(s('##.##.##.##.##.##.##.##.##.##.'))).toBe(false);
    expect(recoveryRequested(s('###.###.###.###.###.###.###.##'))).toBe(false);
    expect(recoveryRequested(s('#..#..#..#..#..#..#..#..#..#..'))).toBe(false);
    // A floating line: fair coin flips from a fixed-seed generator.
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x / 2 ** 31);
    for (let k = 0; k < 200; k++) {
      expect(recoveryRequested(Array.from({ length: N }, () => rnd() < 0.5))).toBe(false);
    }
  });
});

describe('parseButtonParam', () => {
  test('absent or off: disabled', () => {
    expect(parseButtonParam(undefined)).toEqual({ enabled: false });
    expect(parseButtonParam('off')).toEqual({ enabled: false });
  });
  test('chip:line, active low by default', () => {
    expect(parseButtonParam('gpiochip0:27')).toEqual({ enabled: true, chip: 'gpiochip0', line: 27, activeLow: true });
    expect(parseButtonParam('gpiochip0:27:low')).toEqual({
      enabled: true,
      chip: 'gpiochip0',
      line: 27,
      activeLow: true,
    });
    expect(parseButtonParam('gpiochip0:27:high')).toEqual({
      enabled: true,
      chip: 'gpiochip0',
      line: 27,
      activeLow: false,
    });
    expect(parseButtonParam('gpiochip4:511')).toEqual({ enabled: true, chip: 'gpiochip4', line: 511, activeLow: true });
  });
  test('errors', () => {
    for (const bad of [
      '',
      'on',
      'gpiochip0',
      'gpiochip0:',
      'gpiochip0:512',
      'gpiochip0:-1',
      'gpiochip0:x',
      'gpiochip0:27:up',
      'gpiochip0:27:high:x',
      ':27',
      '/dev/gpiochip0:27',
      'gpiochip0:2.5',
    ]) {
      expect(parseButtonParam(bad)).toHaveProperty('error');
    }
  });
});

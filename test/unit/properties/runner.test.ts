// The property runner's own checks: the seeded draws every property depends on.
import { describe, expect, test } from 'bun:test';
import { caseSeed, Rng } from './runner.ts';

describe('the property runner', () => {
  test('the PRNG is deterministic and spreads', () => {
    const a = new Rng(caseSeed('x', 1));
    const b = new Rng(caseSeed('x', 1));
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(new Rng(caseSeed('x', 2)).next()).not.toBe(xs[0]);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });
});

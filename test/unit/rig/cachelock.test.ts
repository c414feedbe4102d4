import { describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withCacheLock } from '../../rig/cachelock.ts';

describe('the .cache build lock (two boot-test lanes at once)', () => {
  test('builds under it never overlap, in one process or across processes, and it is gone after', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cb-lock-'));
    try {
      const spans: Array<[number, number]> = [];
      const build = (ms: number) =>
        withCacheLock(dir, 'test', async () => {
          const t0 = performance.now();
          await Bun.sleep(ms);
          spans.push([t0, performance.now()]);
        });
      // another process holds it for 400 ms, written as this lock's own protocol would
      const other = Bun.spawn(
        [
          process.execPath,
          '-e',
          `const { withCacheLock } = await import(${JSON.stringify(join(import.meta.dir, '../../rig/cachelock.ts'))});
           await withCacheLock(${JSON.stringify(dir)}, 'other', async () => { await Bun.write(${JSON.stringify(join(dir, 'held'))}, '1'); await Bun.sleep(400); });`,
        ],
        { stdout: 'ignore', stderr: 'ignore' },
      );
      for (let i = 0; i < 100 && !existsSync(join(dir, 'held')); i++) await Bun.sleep(20);
      expect(existsSync(join(dir, 'held'))).toBe(true);
      const t = performance.now();
      await Promise.all([build(100), build(100)]);
      expect(await other.exited).toBe(0);
      spans.sort((a, b) => a[0] - b[0]);
      const [first, second] = spans as [[number, number], [number, number]];
      expect(first[0] - t).toBeGreaterThan(150); // waited for the other process
      expect(second[0]).toBeGreaterThanOrEqual(first[1]); // and for each other
      expect(existsSync(join(dir, '.build.lock'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a lock whose owner is gone is taken over; a failing build releases it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cb-lock-'));
    try {
      const dead = Bun.spawnSync(['true']).pid;
      mkdirSync(join(dir, '.build.lock'));
      writeFileSync(join(dir, '.build.lock', 'pid'), String(dead));
      expect(await withCacheLock(dir, 'test', async () => 42)).toBe(42);
      await expect(
        withCacheLock(dir, 'test', async () => {
          throw new Error('pack failed');
        }),
      ).rejects.toThrow('pack failed');
      expect(existsSync(join(dir, '.build.lock'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

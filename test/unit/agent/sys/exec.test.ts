// run() with outputFile: the tool's output reaches a file, not PID 1, and the result still carries it.
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, ToolError } from '../../../../agent/sys/exec.ts';

const dir = mkdtempSync(join(tmpdir(), 'cb-exec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('run with outputFile', () => {
  test('stdout lands in the file and comes back as stdout; stderr comes back apart', async () => {
    const out = join(dir, 'sub/one.log');
    const r = await run('/bin/sh', ['-c', 'echo first; echo second >&2; echo third; exit 1'], {
      okCodes: [0, 1],
      outputFile: out,
    });
    expect(r).toEqual({ stdout: 'first\nthird\n', stderr: 'second\n', exitCode: 1 });
    expect(readFileSync(out, 'utf8')).toBe('first\nthird\n');
  });

  test('an exit code not in okCodes is a ToolError with the code, stderr first, and the whole output', async () => {
    const e = await run('/bin/sh', ['-c', 'echo Error reading block 42; echo e2fsck: Bad magic >&2; exit 8'], {
      outputFile: join(dir, 'two.log'),
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ToolError);
    const t = e as ToolError;
    expect([t.exitCode, t.timedOut, t.output, t.stderrTail]).toEqual([
      8,
      false,
      'Error reading block 42\n\ne2fsck: Bad magic\n',
      'e2fsck: Bad magic',
    ]);
  });

  test('the file is made anew each run, and only its last 64 KiB are read back', async () => {
    const out = join(dir, 'three.log');
    await run('/bin/sh', ['-c', 'echo old'], { outputFile: out });
    const r = await run('/bin/sh', ['-c', 'head -c 200000 /dev/zero | tr "\\0" a; echo; echo END'], {
      outputFile: out,
    });
    expect(readFileSync(out).length).toBe(200005);
    expect(r.stdout.length).toBe(64 * 1024);
    expect(r.stdout.endsWith('a\nEND\n')).toBe(true);
  });

  test('a tool past its timeout is killed and reported as timed out', async () => {
    const t0 = performance.now();
    const e = await run('/bin/sh', ['-c', 'echo started; exec sleep 30'], {
      outputFile: join(dir, 'four.log'),
      timeoutMs: 300,
    }).catch((x: unknown) => x);
    expect(performance.now() - t0).toBeLessThan(20_000);
    expect(e).toBeInstanceOf(ToolError);
    expect([(e as ToolError).timedOut, (e as ToolError).output]).toEqual([true, 'started\n\n']);
  });

  test('the heartbeat is called with the running tool’s pid', async () => {
    const pids: number[] = [];
    await run('/bin/sh', ['-c', 'sleep 2.5'], { outputFile: join(dir, 'five.log'), heartbeat: (p) => pids.push(p) });
    expect(pids.length).toBeGreaterThanOrEqual(1);
    expect(pids.every((p) => p === pids[0] && p > 1)).toBe(true);
  });
});

// `builder --help` and every command's help: a man page with examples whose options the command really has.
import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { epilogue, MAN } from '../../../builder/help.ts';

const REPO = join(import.meta.dir, '../../..');
const BUN = join(REPO, 'node_modules/.bin/bun');

function help(...args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync([BUN, join(REPO, 'builder/cli.ts'), ...args, '--help'], { stdout: 'pipe', stderr: 'pipe' });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

/** The command names the top-level help lists ("  builder <name> ..."). */
function commandsIn(out: string): string[] {
  const section = out.split('\nCommands:\n')[1]?.split('\n\n')[0] ?? '';
  return [...section.matchAll(/^ {2}builder ([a-z-]+)/gm)].map((m) => m[1] ?? '');
}

/** The long options a command's help lists, negations included (--no-x for a boolean --x). */
function optionsIn(out: string): Set<string> {
  const section = out.split('\nOptions:\n')[1]?.split('\n\n')[0] ?? '';
  const names = [...section.matchAll(/^ {2}(--[a-z0-9-]+)/gm)].map((m) => m[1] ?? '');
  return new Set(names.flatMap((n) => [n, n.replace(/^--/, '--no-')]));
}

const top = help();

test('the top-level help lists exactly the commands that have a page, and the overview', () => {
  expect(top.code).toBe(0);
  expect(commandsIn(top.out).sort()).toEqual(Object.keys(MAN).sort());
  for (const part of ['builder init --nodes', 'builder publish rootfs', 'FILES', 'EXIT STATUS', 'SEE ALSO'])
    expect(top.out).toContain(part);
});

for (const name of Object.keys(MAN)) {
  test(`builder ${name} --help: examples with the command's own options, FILES/EXIT STATUS/NOTES`, () => {
    const h = help(name);
    expect(h.code).toBe(0);
    const page = MAN[name]!;
    // the epilogue as yargs prints it (it may re-wrap long lines: compare words)
    const words = (t: string) => t.split(/\s+/).filter(Boolean).join(' ');
    expect(words(h.out)).toContain(words(epilogue(page)));
    expect(h.out).toContain('EXIT STATUS');
    const examples = [
      ...(h.out
        .split('\nExamples:\n')[1]
        ?.split('\n\n')[0]
        ?.matchAll(/^ {2}builder /gm) ?? []),
    ];
    // init and known-hosts carry their examples in their own builders; every other page brings at least one
    expect(examples.length).toBeGreaterThanOrEqual(Math.max(1, page.examples.length));
    const opts = optionsIn(h.out);
    expect(opts.has('--help')).toBe(true);
    for (const [cmd] of page.examples) {
      const argv = cmd.split(/\s+/);
      expect(argv[0]).toBe('$0');
      expect(argv[1]).toBe(name);
      for (const flag of argv.filter((a) => a.startsWith('--')))
        expect({ example: cmd, flag, known: opts.has(flag) }).toEqual({ example: cmd, flag, known: true });
    }
  });
}

test('the option check can fail: an option a page names but the command lacks is caught', () => {
  const opts = optionsIn(help('publish').out);
  expect(opts.has('--sign')).toBe(true);
  expect(opts.has('--no-such-option')).toBe(false);
});

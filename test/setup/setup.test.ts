// scripts/setup is idempotent (#18): in a fresh clone of the committed HEAD the first run installs everything
// (it may reach the registry, as a real first run does); later runs with the registry unreachable and apt-get
// not allowed do nothing, fast, and still notice a real change.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dir, '../..');
const TIMEOUT = 300_000;
const RUNTIME = 'node_modules/@oven/bun-linux-aarch64';
let tmp = '';
let repo = '';
let fakeBin = '';
let calls = '';

type Run = { status: number | null; stderr: string; ms: number };

/** Runs scripts/setup in the clone; offline: the registry is a closed local port, and apt-get and npm are wrappers that log their calls (apt-get also fails). */
function setup(offline: boolean): Run {
  const env: Record<string, string | undefined> = { ...process.env };
  if (offline) {
    env.npm_config_registry = 'http://127.0.0.1:9/';
    env.npm_config_fetch_retries = '0';
    env.PATH = `${fakeBin}:${process.env.PATH}`;
  }
  const t0 = performance.now();
  const r = spawnSync('scripts/setup', [], { cwd: repo, env, encoding: 'utf8', timeout: TIMEOUT });
  const ms = performance.now() - t0;
  if (r.status !== 0) console.error(`scripts/setup exited ${r.status}:\n${r.stderr}`);
  return { status: r.status, stderr: r.stderr, ms };
}

/** Every entry under dir with its type, size, mode and mtime: any change by setup shows here. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      const s = lstatSync(join(dir, p));
      out.push(`${p} ${s.mode.toString(8)} ${s.size} ${s.mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk('');
  return out.sort();
}

const loggedCalls = () => (existsSync(calls) ? readFileSync(calls, 'utf8') : '');

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'setup-test-'));
  repo = join(tmp, 'repo');
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  for (const args of [
    ['clone', '-q', '--no-checkout', ROOT, repo],
    ['-C', repo, 'checkout', '-q', '--detach', head],
  ]) {
    const r = spawnSync('git', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  }
  fakeBin = join(tmp, 'bin');
  calls = join(tmp, 'calls');
  mkdirSync(fakeBin);
  const npm = spawnSync('bash', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  const fake = {
    'apt-get': `#!/bin/sh\necho "apt-get $*" >> '${calls}'\necho "fake apt-get: setup must not call apt-get here" >&2\nexit 1\n`,
    npm: `#!/bin/sh\necho "npm $*" >> '${calls}'\nexec '${npm}' "$@"\n`,
  };
  for (const [name, text] of Object.entries(fake)) {
    writeFileSync(join(fakeBin, name), text);
    chmodSync(join(fakeBin, name), 0o755);
  }
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('scripts/setup in a fresh clone', () => {
  test(
    'first run installs the npm packages and the arm64 runtime',
    () => {
      const r = setup(false);
      expect(r.status).toBe(0);
      expect(r.stderr).toContain('setup: npm ci (no record of an install in node_modules)\n');
      expect(r.stderr).toMatch(/setup: ready \(installed: .*npm.*\)\n$/);
      expect(existsSync(join(repo, 'node_modules/.clusterboot-setup'))).toBe(true);
      expect(existsSync(join(repo, RUNTIME, 'bin/bun'))).toBe(true);
      console.log(`first run: ${(r.ms / 1000).toFixed(1)} s`);
    },
    TIMEOUT,
  );

  test(
    'second run, registry unreachable: nothing installed, nothing changed, no apt-get or npm',
    () => {
      const before = listing(join(repo, 'node_modules'));
      const r = setup(true);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe('setup: ready (nothing to install)\n');
      expect(loggedCalls()).toBe('');
      expect(listing(join(repo, 'node_modules'))).toEqual(before);
      console.log(`second run: ${(r.ms / 1000).toFixed(2)} s`);
    },
    TIMEOUT,
  );

  test.skipIf(process.arch === 'arm64')(
    'a removed arm64 runtime is extracted again from .cache/npm-pack, without the registry',
    () => {
      const files = (l: string[]) => l.map((e) => e.split(' ').slice(0, 3).join(' '));
      const before = files(listing(join(repo, RUNTIME)));
      rmSync(join(repo, RUNTIME), { recursive: true });
      const r = setup(true);
      expect(r.status).toBe(0);
      expect(r.stderr).toContain(
        'setup: Bun arm64 runtime 1.4.5 from .cache/npm-pack/oven-bun-linux-aarch64-1.4.5.tgz (not installed)\n',
      );
      expect(loggedCalls()).toBe('');
      expect(files(listing(join(repo, RUNTIME)))).toEqual(before);
      expect(setup(true).stderr).toBe('setup: ready (nothing to install)\n');
    },
    TIMEOUT,
  );

  test(
    'a package missing from node_modules is noticed: npm ci is tried, fails without the registry, node_modules is kept',
    () => {
      rmSync(join(repo, 'node_modules/yoctocolors'), { recursive: true });
      const before = listing(join(repo, 'node_modules'));
      const r = setup(true);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('setup: npm ci (node_modules/yoctocolors is missing)\n');
      expect(r.stderr).toContain(
        'setup: npm ci failed (is the npm registry reachable?); node_modules is left as it was\n',
      );
      expect(loggedCalls()).toStartWith('npm ci ');
      expect(loggedCalls()).not.toContain('apt-get');
      expect(listing(join(repo, 'node_modules'))).toEqual(before);
      rmSync(calls, { force: true });
    },
    TIMEOUT,
  );

  test(
    'with the registry reachable, that change is installed, and the next offline run is quiet again',
    () => {
      const r = setup(false);
      expect(r.status).toBe(0);
      expect(r.stderr).toContain('setup: npm ci (node_modules/yoctocolors is missing)\n');
      expect(r.stderr).not.toContain('npm pack');
      expect(existsSync(join(repo, 'node_modules/yoctocolors/package.json'))).toBe(true);
      const again = setup(true);
      expect(again.stderr).toBe('setup: ready (nothing to install)\n');
      expect(loggedCalls()).toBe('');
    },
    TIMEOUT,
  );

  test(
    'an edited package-lock.json (here: its hash in the stamp) is noticed',
    () => {
      const stamp = join(repo, 'node_modules/.clusterboot-setup');
      writeFileSync(stamp, readFileSync(stamp, 'utf8').replace(/^package-lock\.json \w+/m, 'package-lock.json 0000'));
      const r = setup(true);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('setup: npm ci (package-lock.json changed since the last install)\n');
      expect(loggedCalls()).toStartWith('npm ci ');
    },
    TIMEOUT,
  );
});

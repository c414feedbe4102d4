// scripts/install: `builder` on PATH as a wrapper around this checkout's builder/cli.ts, rewritten only when it differs.
import { afterAll, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../../builder/image/agentbuild.ts';

const prefix = mkdtempSync(join(tmpdir(), 'cb-install-'));
afterAll(() => rmSync(prefix, { recursive: true, force: true }));
const install = () => spawnSync(join(REPO, 'scripts/install'), ['--prefix', prefix], { encoding: 'utf8' });

test('installs a builder that runs from anywhere, and a second run changes nothing', () => {
  const first = install();
  expect(first.status).toBe(0);
  expect(first.stdout).toContain(`${prefix}/bin/builder -> ${REPO}/builder/cli.ts`);
  const wrapper = join(prefix, 'bin/builder');
  expect(statSync(wrapper).mode & 0o777).toBe(0o755);
  const help = spawnSync(wrapper, ['--help'], { encoding: 'utf8', cwd: '/' });
  expect(help.status).toBe(0);
  for (const cmd of ['builder stage', 'builder status', 'builder known-hosts', 'builder publish'])
    expect(help.stdout).toContain(cmd);
  const before = readFileSync(wrapper, 'utf8');
  const mtime = statSync(wrapper).mtimeMs;
  const second = install();
  expect(second.status).toBe(0);
  expect(second.stdout).toContain('is up to date');
  expect(readFileSync(wrapper, 'utf8')).toBe(before);
  expect(statSync(wrapper).mtimeMs).toBe(mtime);
  expect(spawnSync(join(REPO, 'scripts/install'), ['--bogus'], { encoding: 'utf8' }).status).toBe(64);
}, 120_000);

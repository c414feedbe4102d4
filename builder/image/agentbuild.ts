// Compiles the agent into one executable per architecture, offline, from the runtimes npm installed.
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { execa } from 'execa';

export type AgentArch = 'arm64' | 'x64';
export const REPO = resolve(import.meta.dir, '../..');

/** Where the pinned Bun runtime for a target lives inside node_modules. */
export function runtimePath(arch: AgentArch, repo = REPO): string {
  if (arch === 'arm64') return join(repo, 'node_modules/@oven/bun-linux-aarch64/bin/bun');
  const pkg = join(repo, 'node_modules/@oven/bun-linux-x64/bin/bun');
  return existsSync(pkg) ? pkg : join(repo, 'node_modules/bun/bin/bun.exe');
}

function pinnedVersion(repo: string): string {
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
    devDependencies: Record<string, string>;
  };
  return pkg.devDependencies.bun ?? '';
}

/** Bun does not check that the embedded runtime matches: we do. */
export function checkRuntime(arch: AgentArch, repo = REPO): string {
  const path = runtimePath(arch, repo);
  if (!existsSync(path)) {
    throw new Error(
      `no Bun runtime for ${arch} at ${path}: run scripts/setup (npm ci, then npm install --no-save --cpu=arm64 --os=linux --libc=glibc)`,
    );
  }
  const want = pinnedVersion(repo);
  const pkgJson = join(dirname(dirname(path)), 'package.json');
  const have = existsSync(pkgJson) ? (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version : want;
  if (have !== want)
    throw new Error(`Bun runtime for ${arch} is ${have}, package.json pins ${want}: run scripts/setup`);
  return path;
}

export async function buildAgent(
  arch: AgentArch,
  outDir: string,
  repo = REPO,
): Promise<{ path: string; bytes: number }> {
  const runtime = checkRuntime(arch, repo);
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `clusterboot-agent-${arch}`);
  await execa(
    process.execPath,
    [
      'build',
      '--compile',
      `--target=bun-linux-${arch}`,
      `--compile-executable-path=${runtime}`,
      '--no-compile-autoload-dotenv',
      '--no-compile-autoload-bunfig',
      '--format=esm',
      '--bytecode',
      '--minify',
      join(repo, 'agent/main.ts'),
      '--outfile',
      out,
    ],
    { cwd: repo, env: { BUN_INSTALL_CACHE_DIR: join(repo, '.cache/bun') } },
  );
  return { path: out, bytes: statSync(out).size };
}

// A sysroot of Debian packages for the nodes' architecture, fetched with apt into a private cache:
// apt runs with its own state, lists, cache and sources, so the host's apt and dpkg stay untouched.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

export const DEFAULT_PACKAGES = [
  'busybox-static',
  'rsync',
  'openssh-client',
  'fdisk',
  'e2fsprogs',
  'dosfstools',
  'libc6',
] as const;
export const TEST_KERNEL_PACKAGE = 'linux-image-arm64';
/** Debian's kernel package per node architecture (QEMU tests; an x86-64 node boots linux-image-amd64). */
export const KERNEL_PACKAGES = {
  arm64: TEST_KERNEL_PACKAGE,
  armhf: 'linux-image-armmp',
  amd64: 'linux-image-amd64',
} as const;

export interface SysrootOptions {
  cache: string;
  packages: string[];
  arch: 'arm64' | 'armhf' | 'amd64';
  mirror?: string;
  suite?: string;
  keyring?: string;
  log?: (line: string) => void;
}

/** The host's Debian mirror and suite, so the sysroot matches what the host's apt reaches. */
export function hostSource(sourcesText: string, osRelease: string): { mirror: string; suite: string } {
  const deb822Uri = /^URIs:\s*(\S+)/m.exec(sourcesText)?.[1];
  const deb822Suite = /^Suites:\s*(\S+)/m.exec(sourcesText)?.[1];
  const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/m.exec(sourcesText);
  const codename = /^VERSION_CODENAME=(\S+)/m.exec(osRelease)?.[1] ?? 'bookworm';
  return {
    mirror: deb822Uri ?? oneLine?.[1] ?? 'http://deb.debian.org/debian',
    suite: deb822Suite ?? oneLine?.[2] ?? codename,
  };
}

function readIf(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** The -o options that give apt a private world inside the cache directory. */
export function aptOptions(cache: string, arch: string): string[] {
  const o = (k: string, v: string) => ['-o', `${k}=${v}`];
  return [
    ...o('APT::Architecture', arch),
    ...o('APT::Architectures::', arch),
    ...o('Dir::State', join(cache, 'apt/state')),
    ...o('Dir::State::Lists', join(cache, 'apt/lists')),
    ...o('Dir::State::status', join(cache, 'apt/status')),
    ...o('Dir::Cache', join(cache, 'apt/cache')),
    ...o('Dir::Etc::SourceList', join(cache, 'apt/sources.list')),
    ...o('Dir::Etc::SourceParts', join(cache, 'apt/empty')),
    ...o('Dir::Etc::Preferences', join(cache, 'apt/empty/none')),
    ...o('Dir::Etc::PreferencesParts', join(cache, 'apt/empty')),
    ...o('Dir::Log', join(cache, 'apt/log')),
    ...o('Debug::NoLocking', '1'),
    ...o('APT::Sandbox::User', 'root'),
    ...o('APT::Install-Recommends', '0'),
    ...o('APT::Get::AllowUnauthenticated', '0'),
  ];
}

/** Fetch and unpack the packages into <cache>/root; a second call with the same list is offline. */
export async function fetchSysroot(opts: SysrootOptions): Promise<{ root: string; debs: string[]; kernels: string[] }> {
  const log = opts.log ?? (() => undefined);
  const cache = opts.cache;
  const root = join(cache, 'root');
  const stampPath = join(root, '.clusterboot-sysroot.json');
  const want = [...new Set(opts.packages)].sort();
  const host = hostSource(
    readIf('/etc/apt/sources.list.d/debian.sources') || readIf('/etc/apt/sources.list'),
    readIf('/etc/os-release'),
  );
  const mirror = opts.mirror ?? host.mirror;
  const suite = opts.suite ?? host.suite;
  const stampWanted = JSON.stringify({ arch: opts.arch, mirror, suite, packages: want });
  if (existsSync(stampPath) && readIf(stampPath).startsWith(stampWanted.slice(0, -1))) {
    const s = JSON.parse(readIf(stampPath)) as { debs: string[] };
    log(`sysroot: up to date in ${root} (${s.debs.length} packages)`);
    return { root, debs: s.debs, kernels: kernelsIn(root) };
  }
  for (const d of ['apt/state', 'apt/lists/partial', 'apt/cache/archives/partial', 'apt/empty', 'apt/log'])
    mkdirSync(join(cache, d), { recursive: true });
  writeFileSync(join(cache, 'apt/status'), '');
  const keyring = opts.keyring ?? '/usr/share/keyrings/debian-archive-keyring.gpg';
  writeFileSync(
    join(cache, 'apt/sources.list'),
    `deb [arch=${opts.arch} signed-by=${keyring}] ${mirror} ${suite} main\n`,
  );
  const aptOpts = aptOptions(cache, opts.arch);
  log(`sysroot: apt-get update (${opts.arch}, ${mirror} ${suite})`);
  await execa('apt-get', [...aptOpts, '-q', 'update'], { stdio: 'pipe' });
  log(`sysroot: downloading ${want.join(' ')} and their dependencies`);
  await execa('apt-get', [...aptOpts, '-q', '-y', '--download-only', 'install', ...want], {
    stdio: 'pipe',
    env: { DEBIAN_FRONTEND: 'noninteractive' },
  });
  const archives = join(cache, 'apt/cache/archives');
  const debs = readdirSync(archives)
    .filter((f) => f.endsWith('.deb'))
    .sort();
  await execa('rm', ['-rf', root]);
  mkdirSync(root, { recursive: true });
  log(`sysroot: unpacking ${debs.length} packages into ${root}`);
  for (const deb of debs) await execa('dpkg-deb', ['-x', join(archives, deb), root]);
  for (const k of kernelsIn(root)) {
    if (!existsSync(join(root, 'lib/modules', k, 'modules.dep'))) {
      log(`sysroot: depmod ${k} (the package ships no modules.dep)`);
      await execa('depmod', ['-b', root, k]);
    }
  }
  writeFileSync(stampPath, JSON.stringify({ arch: opts.arch, mirror, suite, packages: want, debs }));
  return { root, debs, kernels: kernelsIn(root) };
}

export function kernelsIn(root: string): string[] {
  const dir = join(root, 'lib/modules');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

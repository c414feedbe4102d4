#!/usr/bin/env bun
// `builder`: a thin command line over the builder's functions; every option maps to one field.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { buildAgent, REPO, type AgentArch } from './agentbuild.ts';
import { bootScript, DEFAULT_BOOTARGS } from './bootscript.ts';
import type { Compression } from './compress.ts';
import { pack, type ExtraFile } from './pack.ts';
import { DEFAULT_PACKAGES, fetchSysroot, kernelsIn, TEST_KERNEL_PACKAGE } from './sysroot.ts';
import { scriptImage, type UArch } from './uimage.ts';

const say = (s: string) => console.error(`builder: ${s}`);
const epoch = () => Number(process.env.SOURCE_DATE_EPOCH ?? 0);
const list = (v: unknown): string[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]).flatMap((x) => String(x).split(',')).map((s) => s.trim()).filter(Boolean);

function parseAdd(spec: string): ExtraFile {
  const i = spec.lastIndexOf(':');
  if (i <= 0) throw new Error(`--add ${spec}: expected SRC:DEST[:MODE]`);
  const parts = spec.split(':');
  const mode = parts.length === 3 ? Number.parseInt(parts[2] ?? '', 8) : undefined;
  return { path: parts[1] ?? '', data: readFileSync(parts[0] ?? ''), ...(mode ? { mode } : {}) };
}

await yargs(hideBin(process.argv))
  .scriptName('builder')
  .strict()
  .demandCommand(1)
  .command('sysroot', 'fetch Debian packages for the nodes into a private apt cache and unpack them', (y) => y
    .option('cache', { type: 'string', default: join(REPO, '.cache/sysroot-arm64'), describe: 'cache directory (apt state, debs, root/)' })
    .option('arch', { choices: ['arm64', 'armhf', 'amd64'] as const, default: 'arm64' as const })
    .option('kernel', { type: 'boolean', default: false, describe: `also fetch ${TEST_KERNEL_PACKAGE} (for QEMU tests)` })
    .option('packages', { type: 'string', array: true, describe: 'extra packages' }),
  async (a) => {
    const pkgs = [...DEFAULT_PACKAGES, ...list(a.packages), ...(a.kernel ? [TEST_KERNEL_PACKAGE] : [])];
    const r = await fetchSysroot({ cache: resolve(a.cache), packages: pkgs, arch: a.arch, log: say });
    console.log(JSON.stringify({ root: r.root, packages: r.debs.length, kernels: r.kernels }));
  })
  .command('agent', 'compile the agent into one executable', (y) => y
    .option('arch', { choices: ['arm64', 'x64'] as const, default: 'arm64' as const })
    .option('out', { type: 'string', default: join(REPO, 'build') }),
  async (a) => {
    const r = await buildAgent(a.arch as AgentArch, resolve(a.out));
    say(`agent ${r.path}: ${(r.bytes / 1e6).toFixed(1)} MB`);
    console.log(r.path);
  })
  .command('pack', 'write initramfs.igz and initramfs.igz.uimg', (y) => y
    .option('sysroot', { type: 'string', demandOption: true, describe: 'arm64 root: the slaves\' template on a master, or `builder sysroot` output' })
    .option('agent', { type: 'string', describe: 'agent executable (default: compile it now)' })
    .option('arch', { choices: ['arm64', 'arm'] as const, default: 'arm64' as const })
    .option('kernel-modules', { type: 'string', describe: 'DIR holding modules.dep (default: the sysroot\'s only /lib/modules/<version>)' })
    .option('modules', { type: 'string', array: true, describe: 'extra modules, comma separated' })
    .option('compress', { choices: ['gzip', 'zstd', 'xz', 'none'] as const, default: 'gzip' as const })
    .option('skel', { type: 'string', default: join(REPO, 'initramfs-skel') })
    .option('add', { type: 'string', array: true, describe: 'SRC:DEST[:MODE] extra file' })
    .option('out', { type: 'string', default: join(REPO, 'build/tftp') }),
  async (a) => {
    const sysroot = resolve(a.sysroot);
    const agent = a.agent ? resolve(a.agent) : (await buildAgent(a.arch === 'arm' ? 'arm64' : 'arm64', join(REPO, 'build'))).path;
    let km = a['kernel-modules'];
    if (!km) {
      const ks = kernelsIn(sysroot);
      if (ks.length === 1) km = join(sysroot, 'lib/modules', ks[0] ?? '');
      else if (ks.length > 1) throw new Error(`the sysroot has kernels ${ks.join(', ')}: choose with --kernel-modules`);
    }
    const r = await pack({
      sysroot, agent, skel: resolve(a.skel), out: resolve(a.out), modules: list(a.modules),
      compress: a.compress as Compression, arch: a.arch as UArch, sourceDateEpoch: epoch(),
      ...(km ? { kernelModules: resolve(km) } : {}), extra: (a.add ?? []).map(String).map(parseAdd),
    });
    for (const m of r.missingLibraries) say(`warning: ${m.neededBy} needs ${m.lib}, not found in the sysroot`);
    for (const m of r.missingModules) say(`warning: module ${m} not found in ${km}`);
    say(`${r.uimagePath}: ${(r.compressedBytes / 1e6).toFixed(1)} MB ${a.compress} (${(r.cpioBytes / 1e6).toFixed(1)} MB cpio, ${r.files} entries, ${r.modules.length} modules)`);
    if (r.compressedBytes > 64e6) say('warning: over 64 MB: Raspberry Pi HTTP boot truncates ramdisks this large');
  })
  .command('bootscript', 'write boot.scr.uimg for U-Boot', (y) => y
    .option('out', { type: 'string', default: join(REPO, 'build/tftp/boot.scr.uimg') })
    .option('arch', { choices: ['arm64', 'arm'] as const, default: 'arm64' as const })
    .option('kernel', { type: 'string', default: 'vmlinuz' })
    .option('initramfs', { type: 'string', default: 'initramfs.igz.uimg' })
    .option('bootargs', { type: 'string', default: DEFAULT_BOOTARGS })
    .option('master', { type: 'string', describe: 'adds masterip=' })
    .option('fdt', { type: 'string' }),
  (a) => {
    const bootargs = a.master ? `${a.bootargs} masterip=${a.master}` : a.bootargs;
    const text = bootScript({ arch: a.arch as UArch, kernel: a.kernel, initramfs: a.initramfs, bootargs, ...(a.fdt ? { fdt: a.fdt } : {}) });
    mkdirSync(dirname(resolve(a.out)), { recursive: true });
    writeFileSync(resolve(a.out), scriptImage(text, { arch: a.arch as UArch, name: 'clusterboot boot script', time: epoch() }));
    say(`${a.out}: ${bootargs}`);
  })
  .fail((msg, err) => {
    say(`error: ${err?.message ?? msg}`);
    process.exit(1);
  })
  .parseAsync();

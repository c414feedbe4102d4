// A Debian-size root template for the benchmark: the rig's Debian arm64 sysroot (test/rig/images.ts sysroot():
// the packages the initramfs is built from, unpacked by apt: glibc, coreutils, OpenSSH, rsync, e2fsprogs, udev,
// perl-base, the kernel's modules, ... about 8,800 files) laid over the rig's small template, minus /boot (the
// first stage carries the kernel). /sbin/init is busybox init reading /etc/inittab, whose sysinit entry is the
// rig's template script (its TEMPLATE-* lines, then poweroff), so the rig sees the boot end as usual.
import { execFileSync } from 'node:child_process';
import { rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TEMPLATE_INIT } from '../test/rig/master.ts';

export const DEBIAN_SYSINIT = 'etc/init.d/clusterboot-bench';

/** Lay the sysroot into `rootfs` (the master's template, laid out by TestMaster.layout first). */
export function debianTemplate(rootfs: string, sysroot: string): { files: number; entries: number; bytes: number } {
  execFileSync('rsync', ['-aHAX', '--numeric-ids', '--exclude=/boot', `${sysroot}/`, `${rootfs}/`]);
  rmSync(join(rootfs, 'sbin/init'), { force: true });
  symlinkSync('../bin/busybox', join(rootfs, 'sbin/init'));
  writeFileSync(
    join(rootfs, 'etc/inittab'),
    `# busybox init: the benchmark's template reports and powers off\n::sysinit:/${DEBIAN_SYSINIT}\n`,
  );
  writeFileSync(join(rootfs, DEBIAN_SYSINIT), TEMPLATE_INIT, { mode: 0o755 });
  return treeStats(rootfs);
}

/** Regular files, all entries (files, directories, links) and apparent bytes of a tree. */
export function treeStats(dir: string): { files: number; entries: number; bytes: number } {
  const count = (args: string[]) =>
    execFileSync('find', [dir, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .split('\n')
      .filter(Boolean).length;
  const bytes = Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
  return { files: count(['-type', 'f']), entries: count([]), bytes };
}

import { copyFileSync, mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from '../builder/pack.ts';
import { sysroot, tftpFolder } from '../test/rig/images.ts';
import { testAccessFiles } from '../test/rig/master.ts';
import { blankDisk, QemuNode } from '../test/rig/qemu.ts';
const sr = await sysroot();
const dir = '/tmp/hello/img'; mkdirSync(dir, { recursive: true });
const r = await pack({ sysroot: sr.root, agent: process.argv[2] ?? '/tmp/hello/hello-arm64', skel: 'initramfs-skel', out: dir, arch: 'arm64',
  kernelModules: join(sr.root, 'lib/modules', sr.kernelVersion), modules: ['i6300esb'], compress: (process.argv[3] ?? 'gzip') as any, sourceDateEpoch: 0, extra: testAccessFiles() });
copyFileSync(join(sr.root, 'boot', `vmlinuz-${sr.kernelVersion}`), join(dir, 'vmlinuz'));
const img = { dir, kernel: join(dir, 'vmlinuz'), initramfs: join(dir, 'initramfs.igz.uimg'), sysroot: sr.root, kernelVersion: sr.kernelVersion, pack: r };
for (let i = 0; i < 2; i++) {
  const work = mkdtempSync(join(tmpdir(), 'cb-exp3-'));
  const tftp = tftpFolder(join(work, 'tftp'), img as any, 'console=ttyAMA0 panic=10');
  blankDisk(join(work, 'disk.img'), 64);
  const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img') });
  try {
    await node.waitFor(/HELLO.*|@@clusterboot/, 120_000); if (i===0) console.log(node.console.split("\n").filter(l=>/^\[/.test(l)).slice(-40).join("\n"));
    console.log(node.console.split('\n').filter((l) => /Run \/init|HELLO|Freeing initrd|unpack rootfs/.test(l)).join('\n'));
  } finally { await node.kill(); rmSync(work, { recursive: true, force: true }); }
}
process.exit(0);

// The main job on one machine: a master on loopback (seed layout, sshd + rrsync) and one virtual arm64
// node booting the real chain three times: blank disk -> partitioned; full root sync; the fast path.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../builder/image/agentbuild.ts';
import { boot } from '../test/rig/boot.ts';
import { images } from '../test/rig/images.ts';
import { TestMaster, testAccessFiles } from '../test/rig/master.ts';
import { blankDisk } from '../test/rig/qemu.ts';

const work = join(REPO, '.cache/demo');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const say = (s: string) => console.error(`\x1b[1mdemo:\x1b[0m ${s}`);
say('building the sysroot, the agent and the initramfs (cached after the first run)');
const img = await images({ extra: testAccessFiles() });
say(`initramfs ${(img.pack.compressedBytes / 1e6).toFixed(1)} MB gzip, kernel ${img.kernelVersion}`);
const master = new TestMaster(work, join(img.sysroot, 'bin/busybox'));
await master.layout();
await master.start();
say(`master on 127.0.0.1:${master.port} (the node sees 10.0.2.2), tree ${master.root}`);
blankDisk(join(work, 'disk.img'), 1024);
const stages = [
  'blank disk: partition, format, fill the boot partition, reboot',
  'full root sync, overlay, switch_root',
  'unchanged root: the fast path',
];
try {
  for (const [i, what] of stages.entries()) {
    say(`boot ${i + 1}: ${what}`);
    const r = await boot(img, work, {
      disk: join(work, 'disk.img'),
      bootargs: master.bootargs('hostname=node1'),
      echo: process.argv.includes('--verbose'),
    });
    for (const l of r.console.split('\n'))
      if (/phase-done|\] done in|TEMPLATE-INIT|TEMPLATE-ROOT|rebooting|FATAL/.test(l)) console.error(`  ${l}`);
    say(`boot ${i + 1} ended: ${r.ending} after ${r.seconds.toFixed(1)} s (wall, QEMU emulating arm64)`);
  }
  say(`console log: ${join(work, 'console.log')}`);
} finally {
  await master.stop();
}

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { images, tftpFolder } from '/work/main/test/rig/images.ts';
import { testAccessFiles } from '/work/main/test/rig/master.ts';
import { blankDisk, QemuNode } from '/work/main/test/rig/qemu.ts';
const extra = testAccessFiles();
for (const c of (process.argv[2] ?? 'gzip,lz4,none').split(',')) {
  const t0 = performance.now();
  const img = await images({ extra, compress: c as any });
  const packS = (performance.now() - t0) / 1000;
  for (let i = 0; i < Number(process.argv[3] ?? 2); i++) {
    const work = mkdtempSync(join(tmpdir(), 'cb-exp-'));
    const tftp = tftpFolder(join(work, 'tftp'), img, 'console=ttyAMA0 panic=10 disk=/dev/vda masterip=10.0.2.99 retries=1');
    blankDisk(join(work, 'disk.img'), 64);
    const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img') });
    const w0 = performance.now();
    try {
      await node.waitFor(/Starting kernel/, 300_000);
      const tk = performance.now();
      await node.waitFor(/@@clusterboot \{"kind":"phase-start"/m, 300_000);
      const at = (re: RegExp) => Number(re.exec(node.console)?.[1] ?? NaN);
      const us = at(/\[\s*([\d.]+)\] Trying to unpack rootfs/), ue = at(/\[\s*([\d.]+)\] Freeing initrd memory/);
      const fw = at(/@@clusterboot \{"kind":"[^"]+".*"t":([\d.]+)\}/);
      const run = at(/\[\s*([\d.]+)\] Run \/init as init process/);
      console.log(`${c}: ${(statSync(img.initramfs).size/1e6).toFixed(1)} MB pack ${packS.toFixed(1)}s; u-boot->kernel ${((tk-w0)/1000).toFixed(2)}s; unpack ${us}..${ue} = ${(ue-us).toFixed(2)}s; run init ${run}; first word ${fw}`);
    } finally { await node.kill(); rmSync(work, { recursive: true, force: true }); }
  }
}
process.exit(0);

// experiment: blank, full, then N unchanged boots; print the timeline of the last unchanged boot
import { join } from 'node:path';
import { boot } from '../test/rig/boot.ts';
import { images } from '../test/rig/images.ts';
import { startMasterRig, stopMasterRig, testAccessFiles } from '../test/rig/master.ts';
import { blankDisk } from '../test/rig/qemu.ts';
const compress = (process.argv[2] ?? 'gzip') as any;
const n = Number(process.argv[3] ?? 2);
const rig = await startMasterRig('exp', { dataMb: 20 });
const img = compress === 'gzip' ? rig.img : await images({ extra: testAccessFiles(), compress });
const disk = join(rig.work, 'disk.img');
blankDisk(disk, 1024);
const go = () => boot(img, rig.work, { disk, bootargs: rig.master.bootargs(), timeoutMs: 600_000 });
try {
  await go(); await go();
  for (let i = 0; i < n; i++) {
    const r = await go();
    const sw = r.events.find((e) => e.phase === 'handoff' && String(e.message ?? '').startsWith('switch_root'))?.t;
    const run = /\[\s*([\d.]+)\] Run \/init/.exec(r.raw)?.[1];
    console.log(`unchanged ${i}: run /init ${run}, first ${r.events[0]?.t}, switch_root ${sw}, wall ${r.seconds.toFixed(1)}`);
    if (i === n - 1) console.log(r.raw.split('\n').filter((l) => /^clusterboot:|Run \/init|unpack|Freeing initrd/.test(l)).join('\n'));
  }
} finally { await stopMasterRig(rig); }
process.exit(0);

// Benchmark: initramfs size per compression, and the time from `Starting kernel` to the agent's first
// line (kernel uptime stamps) for each, on the QEMU rig. Prints a table and writes docs/pack-sizes.json.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../builder/image/agentbuild.ts';
import type { Compression } from '../builder/image/compress.ts';
import { agentBinary, images, tftpFolder } from '../test/rig/images.ts';
import { blankDisk, QemuNode } from '../test/rig/qemu.ts';

const rows: Record<string, unknown>[] = [];
const agent = await agentBinary();
for (const c of ['gzip', 'zstd', 'xz'] as Compression[]) {
  const t0 = performance.now();
  const img = await images({ compress: c });
  const packS = (performance.now() - t0) / 1000;
  const work = mkdtempSync(join(tmpdir(), 'cb-sizes-'));
  const tftp = tftpFolder(join(work, 'tftp'), img, 'console=ttyAMA0 panic=10 disk=/dev/vda');
  blankDisk(join(work, 'disk.img'), 64);
  const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img') });
  try {
    await node.waitFor(/"kind":"phase-start","phase":"early"/, 300_000);
    const unpack = /\[\s*([\d.]+)\] Freeing initrd memory/.exec(node.console)?.[1];
    const first = node.events()[0]?.t;
    rows.push({
      compression: c,
      agentBytes: statSync(agent).size,
      cpioBytes: img.pack.cpioBytes,
      uimageBytes: statSync(img.initramfs).size,
      packSeconds: Number(packS.toFixed(1)),
      initrdFreedAt: Number(unpack),
      agentFirstLineAt: first,
    });
  } finally {
    await node.kill();
    rmSync(work, { recursive: true, force: true });
  }
}
console.table(rows);
mkdirSync(join(REPO, 'docs'), { recursive: true });
writeFileSync(
  join(REPO, 'docs/pack-sizes.json'),
  JSON.stringify({ measured: new Date().toISOString(), rig: 'QEMU TCG cortex-a72, 2 host cores', rows }, null, 2) +
    '\n',
);

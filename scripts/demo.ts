// Boots one virtual node on the real chain and shows its console; Ctrl-C stops it.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../builder/agentbuild.ts';
import { images, tftpFolder } from '../test/rig/images.ts';
import { blankDisk, QemuNode } from '../test/rig/qemu.ts';

const work = join(REPO, '.cache/demo');
mkdirSync(work, { recursive: true });
console.error('demo: building the sysroot, the agent and the initramfs (cached after the first run)');
const img = await images();
console.error(`demo: initramfs ${(img.pack.compressedBytes / 1e6).toFixed(1)} MB, kernel ${img.kernelVersion}`);
const tftp = tftpFolder(join(work, 'tftp'), img, 'console=ttyAMA0 panic=10 disk=/dev/vda');
blankDisk(join(work, 'disk.img'), 512);
const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img'), echo: true, logFile: join(work, 'console.log') });
process.on('SIGINT', () => void node.kill().then(() => process.exit(130)));
await node.waitFor(/"kind":"phase-done","phase":"network"/, 300_000);
console.error('\ndemo: the agent is PID 1 and has its lease; stopping the node');
await node.kill();

// The foundation: U-Boot DHCP + TFTP loads our kernel and initramfs, and the agent runs as PID 1.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { images, tftpFolder, type Images } from '../rig/images.ts';
import { blankDisk, QemuNode } from '../rig/qemu.ts';

let img: Images;
let work: string;

beforeAll(async () => {
  img = await images();
  work = mkdtempSync(join(tmpdir(), 'cb-netboot-'));
}, 20 * 60_000);

afterAll(() => (process.env.KEEP ? console.error(`kept ${work}`) : rmSync(work, { recursive: true, force: true })));

describe('netboot through U-Boot', () => {
  test('the agent runs as PID 1 and reports parameters, modules and the DHCP lease', async () => {
    const tftp = tftpFolder(
      join(work, 'tftp'),
      img,
      'console=ttyAMA0 panic=10 masterip=10.0.2.2 disk=/dev/vda aufs=bogus frobnicate=1',
    );
    blankDisk(join(work, 'disk.img'), 64);
    const node = new QemuNode({ tftpDir: tftp, disk: join(work, 'disk.img'), logFile: join(work, 'console.log') });
    try {
      await node.waitFor(/@@clusterboot .*"kind":"phase-done","phase":"network"/, 240_000);
      const ev = node.events();
      const pid = ev.find(
        (e) =>
          e.kind === 'info' && e.phase === 'early' && typeof e.data === 'object' && e.data !== null && 'pid' in e.data,
      );
      expect((pid?.data as { pid: number }).pid).toBe(1);
      expect(node.console).toContain('aufs=bogus: expected disk|tmpfs|none; using disk');
      expect(node.console).toMatch(/unknown parameters ignored: frobnicate=1/);
      const params = ev.find((e) => e.kind === 'info' && (e.data as { params?: unknown } | undefined)?.params);
      expect((params?.data as { params: { master: string; disk: string } }).params).toMatchObject({
        master: '10.0.2.2',
        disk: '/dev/vda',
      });
      const mods = ev.find(
        (e) =>
          e.phase === 'modules' &&
          e.kind === 'info' &&
          Array.isArray((e.data as { loaded?: unknown } | undefined)?.loaded),
      );
      const { loaded, viaInsmod } = mods?.data as { loaded: string[]; viaInsmod: string[] };
      for (const m of ['virtio_net', 'virtio_blk', 'ext4', 'overlay']) expect(loaded).toContain(m);
      // Debian's modules are plain .ko: every one goes through init_module from the agent, none through insmod.
      expect(viaInsmod).toEqual([]);
      const lease = ev.find(
        (e) => e.phase === 'network' && e.kind === 'info' && (e.data as { lease?: unknown } | undefined)?.lease,
      );
      expect((lease?.data as { lease: { ip: string; serverid: string } }).lease).toMatchObject({
        ip: expect.stringMatching(/^10\.0\.2\.\d+$/),
        serverid: '10.0.2.2',
        router: '10.0.2.2',
      });
      expect((lease?.data as { master: { hosts: string[]; from: string } }).master).toEqual({
        hosts: ['10.0.2.2'],
        from: 'masterip=',
      });
      // the rig's flash environment (ubootenv.ts) is U-Boot's own default with bootdelay=0: no idle countdown
      expect(node.console).toContain('Loading Environment from Flash... OK');
      expect(node.console).toMatch(/Hit any key to stop autoboot: +0/);
      const kernelAt = node.console.indexOf('Starting kernel');
      expect(kernelAt).toBeGreaterThan(0);
    } finally {
      await node.kill();
    }
  }, 300_000);
});

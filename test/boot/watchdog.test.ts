// The hardware watchdog (QEMU's i6300esb): a hung phase ends in a reset; a long sync never trips it.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { join } from 'node:path';
import { boot } from '../rig/boot.ts';
import type { Images } from '../rig/images.ts';
import { startMasterRig, stopMasterRig, TestMaster, type MasterRig } from '../rig/master.ts';
import { blankDisk } from '../rig/qemu.ts';

let img: Images;
let work: string;
let master: TestMaster;
let rig: MasterRig | undefined;

beforeAll(async () => {
  rig = await startMasterRig('watchdog', { dataMb: 48 });
  ({ img, work, master } = rig);
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

describe('watchdog', () => {
  test('a phase that hangs (clusterboot.hang=master) is reset by the watchdog, the disk untouched', async () => {
    const d = join(work, 'hang.img');
    blankDisk(d, 1024);
    const t0 = performance.now();
    const r = await boot(img, work, {
      disk: d,
      bootargs: master.bootargs('watchdog=3 clusterboot.hang=master'),
      timeoutMs: 180_000,
    });
    expect(r.console).toMatch(/watchdog .* armed: 3 s timeout/);
    expect(r.console).toContain('hanging here on purpose');
    expect(r.console).toMatch(/not feeding, the node resets within 3 s/);
    expect(r.ending).not.toBe('template');
    expect(r.console).not.toContain('rebooting:');
    console.error(
      `measure: hang to reset ${((performance.now() - t0) / 1000).toFixed(0)} s wall (stall limit 12 s + timeout 3 s)`,
    );
  }, 240_000);

  test('armed at 2 s, the watchdog is fed through a 48 MB sync longer than its timeout; the LEDs end in the booted state', async () => {
    const d = join(work, 'sync.img');
    blankDisk(d, 1024);
    expect((await boot(img, work, { disk: d, bootargs: master.bootargs('watchdog=2') })).ending).toBe('reboot');
    const r = await boot(img, work, { disk: d, bootargs: master.bootargs('watchdog=2 leds=gpiochip0:4,5,6') });
    expect(r.console).toContain('LEDs on gpiochip0 lines 4,5,6');
    // documented final state after switch_root: green steady, red and yellow off (read back through sysfs)
    expect(r.console.split('\n').filter((l) => l.startsWith('TEMPLATE-GPIO'))).toEqual([
      'TEMPLATE-GPIO 4 out 0',
      'TEMPLATE-GPIO 5 out 1',
      'TEMPLATE-GPIO 6 out 0',
    ]);
    expect(r.console).toMatch(/armed: 2 s timeout/);
    const started = r.events.find((e) => e.phase === 'root' && e.kind === 'progress');
    const synced = r.events.find((e) => e.phase === 'root' && (e.data as { rsync?: unknown } | undefined)?.rsync);
    expect(synced && started ? synced.t - started.t : 0).toBeGreaterThan(2);
    expect(r.console).not.toContain('not feeding');
    expect(r.ending).toBe('template');
    expect(r.console).toContain('watchdog stopped with the magic close');
  }, 400_000);

  test('the recovery button held at boot wipes the writable layer and copies the root again in full', async () => {
    const d = join(work, 'sync.img'); // provisioned by the test above; its writable layer holds the probe
    // QEMU's PL061 inputs read low: active-high means "not pressed", the default active-low means "held"
    const normal = await boot(img, work, { disk: d, bootargs: master.bootargs('button=gpiochip0:4:high') });
    expect(normal.console).toMatch(/TEMPLATE-PERSIST before=yes/);
    expect(normal.console).not.toContain('recovery requested');
    const held = await boot(img, work, {
      disk: d,
      bootargs: master.bootargs('button=gpiochip0:4 leds=gpiochip0:5,6,7'),
    });
    expect(held.console).toContain('recovery requested by the button');
    expect(held.console).toMatch(/resetting the writable layer \(recovery button\)/);
    expect(held.console).toMatch(/\(full copy\)/);
    expect(held.console).toMatch(/TEMPLATE-PERSIST before=no/);
    expect(held.ending).toBe('template');
  }, 400_000);
});

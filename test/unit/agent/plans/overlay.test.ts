import { describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { OVERLAY_PATHS, planOverlay } from '../../../../agent/plans/overlay.ts';
import type { MountStep, OverlayFacts, OverlayPlan } from '../../../../agent/plans/overlay.ts';

const SLOT = '/run/clusterboot/rootdisk/slots/17-20261125T110000Z';
// /proc/filesystems of a Pi kernel with overlay built in (tab-separated, "nodev" for virtual filesystems).
const FS_OVERLAY = 'nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\tvfat\nnodev\toverlay\n';
const FS_AUFS = 'nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\taufs\n';
const FS_NONE = 'nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\n';

const facts = (over: Partial<OverlayFacts>): OverlayFacts => ({
  mode: 'disk',
  kernelFilesystems: FS_OVERLAY,
  writablePartition: '/dev/mmcblk0p3',
  reset: false,
  slotPath: SLOT,
  ...over,
});

// The plan as data with each step's describe() rendered, message left out (checked separately).
function shape(p: OverlayPlan): unknown {
  if (!p.ok) return p;
  const { message: _m, steps, ...rest } = p;
  return { ...rest, steps: steps.map((s: MountStep) => ({ ...s, describe: s.describe() })) };
}

const LOWER_STEPS = [
  { kind: 'mkdir', path: '/run/clusterboot/lower', describe: 'mkdir -p /run/clusterboot/lower' },
  {
    kind: 'bind',
    source: SLOT,
    target: '/run/clusterboot/lower',
    readonly: true,
    describe: `mount --bind ${SLOT} /run/clusterboot/lower && mount -o remount,bind,ro /run/clusterboot/lower`,
  },
  { kind: 'mkdir', path: '/run/clusterboot/rw', describe: 'mkdir -p /run/clusterboot/rw' },
];
const DISK_MOUNT = {
  kind: 'mount',
  source: '/dev/mmcblk0p3',
  target: '/run/clusterboot/rw',
  fstype: 'ext4',
  flags: ['noatime'],
  data: '',
  describe: 'mount -t ext4 -o noatime /dev/mmcblk0p3 /run/clusterboot/rw',
};
const TMPFS_MOUNT = {
  kind: 'mount',
  source: 'tmpfs',
  target: '/run/clusterboot/rw',
  fstype: 'tmpfs',
  flags: [],
  data: 'mode=0755',
  describe: 'mount -t tmpfs -o mode=0755 tmpfs /run/clusterboot/rw',
};
const UPPER_WORK = [
  { kind: 'mkdir', path: '/run/clusterboot/rw/upper', describe: 'mkdir -p /run/clusterboot/rw/upper' },
  { kind: 'mkdir', path: '/run/clusterboot/rw/work', describe: 'mkdir -p /run/clusterboot/rw/work' },
  { kind: 'mkdir', path: '/newroot', describe: 'mkdir -p /newroot' },
];
const OVERLAY_MOUNT = {
  kind: 'mount',
  source: 'overlay',
  target: '/newroot',
  fstype: 'overlay',
  flags: [],
  data: 'lowerdir=/run/clusterboot/lower,upperdir=/run/clusterboot/rw/upper,workdir=/run/clusterboot/rw/work',
  describe:
    'mount -t overlay -o lowerdir=/run/clusterboot/lower,upperdir=/run/clusterboot/rw/upper,workdir=/run/clusterboot/rw/work overlay /newroot',
};

describe('planOverlay', () => {
  test('disk + overlay', () => {
    const p = planOverlay(facts({}));
    expect(shape(p)).toEqual({
      ok: true,
      driver: 'overlay',
      newRoot: '/newroot',
      lower: '/run/clusterboot/lower',
      upper: '/run/clusterboot/rw/upper',
      steps: [...LOWER_STEPS, DISK_MOUNT, ...UPPER_WORK, OVERLAY_MOUNT],
    });
    expect(p.ok && p.message).toBe(
      `overlay: ${SLOT} read-only at /run/clusterboot/lower under a writable layer on /dev/mmcblk0p3 (kept across reboots), ` +
        'assembled at /newroot; /run moves into the new root at the handoff, so /run/clusterboot/lower and ' +
        '/run/clusterboot/rw/upper stay visible there under /run/clusterboot',
    );
  });

  test('disk + reset wipes upper and work after mounting the partition, before the overlay', () => {
    const p = planOverlay(facts({ reset: true }));
    expect(shape(p)).toEqual({
      ok: true,
      driver: 'overlay',
      newRoot: '/newroot',
      lower: '/run/clusterboot/lower',
      upper: '/run/clusterboot/rw/upper',
      steps: [
        ...LOWER_STEPS,
        DISK_MOUNT,
        {
          kind: 'wipe',
          path: '/run/clusterboot/rw/upper',
          describe:
            'rm -rf -- /run/clusterboot/rw/upper/* /run/clusterboot/rw/upper/.[!.]* /run/clusterboot/rw/upper/..?*',
        },
        {
          kind: 'wipe',
          path: '/run/clusterboot/rw/work',
          describe:
            'rm -rf -- /run/clusterboot/rw/work/* /run/clusterboot/rw/work/.[!.]* /run/clusterboot/rw/work/..?*',
        },
        ...UPPER_WORK,
        OVERLAY_MOUNT,
      ],
    });
    expect(p.ok && p.message).toContain('/dev/mmcblk0p3 (kept across reboots, wiped now: reset)');
  });

  test('tmpfs + overlay; reset adds nothing (a tmpfs starts empty)', () => {
    const p = planOverlay(facts({ mode: 'tmpfs', writablePartition: null }));
    const expected = {
      ok: true,
      driver: 'overlay',
      newRoot: '/newroot',
      lower: '/run/clusterboot/lower',
      upper: '/run/clusterboot/rw/upper',
      steps: [...LOWER_STEPS, TMPFS_MOUNT, ...UPPER_WORK, OVERLAY_MOUNT],
    };
    expect(shape(p)).toEqual(expected);
    expect(p.ok && p.message).toContain('tmpfs (in RAM, lost at reboot)');
    const r = planOverlay(facts({ mode: 'tmpfs', reset: true }));
    expect(shape(r)).toEqual(expected);
    expect(r.ok && r.message).toContain('reset needs no wipe');
  });

  test('aufs when the kernel has no overlay: br= option, no work dir', () => {
    const p = planOverlay(facts({ kernelFilesystems: FS_AUFS, reset: true }));
    expect(shape(p)).toEqual({
      ok: true,
      driver: 'aufs',
      newRoot: '/newroot',
      lower: '/run/clusterboot/lower',
      upper: '/run/clusterboot/rw/upper',
      steps: [
        ...LOWER_STEPS,
        DISK_MOUNT,
        {
          kind: 'wipe',
          path: '/run/clusterboot/rw/upper',
          describe:
            'rm -rf -- /run/clusterboot/rw/upper/* /run/clusterboot/rw/upper/.[!.]* /run/clusterboot/rw/upper/..?*',
        },
        { kind: 'mkdir', path: '/run/clusterboot/rw/upper', describe: 'mkdir -p /run/clusterboot/rw/upper' },
        { kind: 'mkdir', path: '/newroot', describe: 'mkdir -p /newroot' },
        {
          kind: 'mount',
          source: 'none',
          target: '/newroot',
          fstype: 'aufs',
          flags: [],
          data: 'br=/run/clusterboot/rw/upper=rw:/run/clusterboot/lower=ro',
          describe: 'mount -t aufs -o br=/run/clusterboot/rw/upper=rw:/run/clusterboot/lower=ro none /newroot',
        },
      ],
    });
    expect(p.ok && p.message.startsWith('aufs: ')).toBe(true);
  });

  test('overlay is preferred when both are listed', () => {
    const p = planOverlay(facts({ kernelFilesystems: FS_AUFS + FS_OVERLAY }));
    expect(p.ok && p.driver).toBe('overlay');
  });

  test('none: read-write bind of the slot, whatever the kernel offers', () => {
    const p = planOverlay(facts({ mode: 'none', kernelFilesystems: FS_NONE, writablePartition: null, reset: true }));
    expect(shape(p)).toEqual({
      ok: true,
      driver: 'none',
      newRoot: '/newroot',
      lower: SLOT,
      upper: null,
      steps: [
        { kind: 'mkdir', path: '/newroot', describe: 'mkdir -p /newroot' },
        { kind: 'bind', source: SLOT, target: '/newroot', readonly: false, describe: `mount --bind ${SLOT} /newroot` },
      ],
    });
    expect(p.ok && p.message).toBe(
      `aufs=none: ${SLOT} is bound read-write at /newroot without a union; changes go straight into the slot and are ` +
        'lost at the next sync (reset ignored: there is no writable layer to wipe)',
    );
  });

  test('errors: no union driver, disk without a writable partition, relative slot path', () => {
    expect(planOverlay(facts({ kernelFilesystems: FS_NONE }))).toEqual({
      ok: false,
      error: 'the kernel offers neither overlay nor aufs (not in /proc/filesystems)',
      remedy:
        'pack the overlay module (overlay.ko) into the initramfs and load it before this step, or use a kernel built ' +
        'with CONFIG_OVERLAY_FS=y; or boot with aufs=none to run the slot without a writable layer',
    });
    const old = planOverlay(facts({ kernelFilesystems: `${FS_NONE}nodev\toverlayfs\n` }));
    expect(!old.ok && old.error).toContain("old pre-3.18 'overlayfs'");
    expect(planOverlay(facts({ writablePartition: null }))).toEqual({
      ok: false,
      error: 'aufs=disk but the partition table has no writable (p3) partition',
      remedy: 'the partition table has no writable (p3) partition: add one or boot with aufs=tmpfs',
    });
    // tmpfs needs no partition.
    expect(planOverlay(facts({ mode: 'tmpfs', writablePartition: null })).ok).toBe(true);
    expect(planOverlay(facts({ slotPath: 'slots/17-x' })).ok).toBe(false);
  });

  test('the layout constants match the plan', () => {
    const p = planOverlay(facts({}));
    expect(p.ok && [p.lower, p.upper, p.newRoot]).toEqual([
      OVERLAY_PATHS.lower,
      OVERLAY_PATHS.upper,
      OVERLAY_PATHS.newRoot,
    ]);
  });

  test('describe() renders valid shell, quoting odd paths', () => {
    const odd = planOverlay(facts({ slotPath: "/run/clusterboot/rootdisk/slots/it's here", mode: 'none' }));
    expect(odd.ok && odd.steps[1]?.describe()).toBe(
      `mount --bind '/run/clusterboot/rootdisk/slots/it'\\''s here' /newroot`,
    );
    const plans = [
      planOverlay(facts({ reset: true })),
      planOverlay(facts({ kernelFilesystems: FS_AUFS })),
      planOverlay(facts({ mode: 'tmpfs' })),
      odd,
    ];
    for (const p of plans) {
      if (!p.ok) throw new Error('expected a plan');
      const r = spawnSync('sh', ['-n'], { input: p.steps.map((s) => s.describe()).join('\n') });
      expect(r.status).toBe(0);
    }
  });
});

// The bad-input matrix on the real chain: each bad thing the master, the command line or the disk can
// hand a provisioned node, with the outcome the README promises. Every case starts from a copy of the
// same provisioned disk and puts the master back afterwards.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import {
  copyFileSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  closeSync,
  renameSync,
  existsSync,
} from 'node:fs';
import { join } from 'node:path';
import { boot, sfdiskDump, type BootResult } from '../rig/boot.ts';
import type { Images } from '../rig/images.ts';
import { startMasterRig, stopMasterRig, templateSum, TestMaster, type MasterRig } from '../rig/master.ts';
import { blankDisk } from '../rig/qemu.ts';
import { longTest } from '../rig/tier.ts';

let img: Images;
let work: string;
let master: TestMaster;
let rig: MasterRig | undefined;
const golden = () => join(work, 'golden.img');
const disk = () => join(work, 'case.img');

beforeAll(async () => {
  rig = await startMasterRig('bad');
  ({ img, work, master } = rig);
  blankDisk(golden(), 1024);
  for (let i = 0; i < 3; i++) if ((await go(golden())).ending === 'template') break;
}, 20 * 60_000);

afterAll(() => stopMasterRig(rig));

function go(d: string, extra = ''): Promise<BootResult> {
  return boot(img, work, { disk: d, bootargs: master.bootargs(`disktimeout=5 ${extra}`), timeoutMs: 300_000 });
}

/** Run a case on a fresh copy of the provisioned disk with a master file changed, then restore it. */
async function withMasterFile(rel: string, content: string | null, f: () => Promise<void>): Promise<void> {
  const p = join(master.root, rel);
  const saved = existsSync(p) ? readFileSync(p) : null;
  copyFileSync(golden(), disk());
  if (content === null) rmSync(p, { force: true });
  else writeFileSync(p, content);
  try {
    await f();
  } finally {
    if (saved === null) rmSync(p, { force: true });
    else writeFileSync(p, saved);
  }
}

/** Overwrite bytes of a partition (p2 starts at sector 67584, p3 at 854016 in the test table). */
function smash(d: string, sector: number, offset: number, bytes: number): void {
  const fd = openSync(d, 'r+');
  try {
    writeSync(fd, Buffer.alloc(bytes, 0xa5), 0, bytes, sector * 512 + offset);
  } finally {
    closeSync(fd);
  }
}

const upOnMastersRoot = (r: BootResult) => {
  expect(r.ending).toBe('template');
  expect(/TEMPLATE-SUM (\S+)/.exec(r.console)?.[1]).toBe(templateSum(master.root));
};

describe('bad input from the master', () => {
  test('an empty table is refused; the node keeps its table and boots', async () => {
    await withMasterFile('partitions.sfdisk', '', async () => {
      const before = sfdiskDump(disk());
      const r = await go(disk());
      expect(r.ending).toBe('template');
      expect(r.console).toMatch(/refused the master's table|no table from the master|MISSING/);
      expect(sfdiskDump(disk())).toBe(before);
    });
  }, 300_000);

  test('a garbage root stamp is refused; the node boots the root it has and says it may be stale', async () => {
    await withMasterFile('stamps/rootfs.stamp', 'garbage\u0000\n', async () => {
      const r = await go(disk());
      upOnMastersRoot(r);
      expect(r.console).toMatch(/\[\d+\/\d+ root\] warning: .*stamp/);
      expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    });
  }, 300_000);

  test('a root stamp that is a symlink to /dev/zero, or 10 MB long: the link refused unread, the big one never fetched (--max-size=64K); the node boots the root it has', async () => {
    const stamp = join(master.root, 'stamps/rootfs.stamp');
    const saved = readFileSync(stamp);
    copyFileSync(golden(), disk());
    try {
      rmSync(stamp);
      symlinkSync('/dev/zero', stamp);
      const linked = await go(disk());
      expect(linked.ending).toBe('template');
      expect(linked.console).toContain('stamps/rootfs.stamp from the master is a symlink: refused');
      expect(linked.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
      rmSync(stamp);
      writeFileSync(stamp, Buffer.alloc(10 << 20, 0x41));
      const huge = await go(disk());
      expect(huge.ending).toBe('template');
      expect(huge.console).toContain('stamps/rootfs.stamp from the master is over 64 KiB: refused (not fetched)');
      expect(huge.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    } finally {
      rmSync(stamp, { force: true });
      writeFileSync(stamp, saved);
    }
  }, 600_000);

  // the root plan keeps the local root without a stamp (test/unit/agent/plans/slots.test.ts); the garbage stamp above boots that path
  longTest(
    'a missing root stamp: no sync, the root it has',
    async () => {
      await withMasterFile('stamps/rootfs.stamp', null, async () => {
        const r = await go(disk());
        expect(r.ending).toBe('template');
        expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
      });
    },
    300_000,
  );

  test("a stamp from the future (the master's clock ahead) is just a newer stamp: the node never uses its own clock", async () => {
    copyFileSync(golden(), disk());
    writeFileSync(join(master.root, 'rootfs/etc/template-version'), '7\n');
    const { publish } = await import('../../builder/master/publish.ts');
    await publish({ masterRoot: master.root, name: 'rootfs', now: new Date('2099-01-01T00:00:00Z') });
    const r = await go(disk());
    upOnMastersRoot(r);
    expect(r.console).toContain('TEMPLATE-INIT pid=1 version=7');
  }, 300_000);

  test('rsync refused by the master (forced command fails): offline, the node boots what it has, the disk is not changed', async () => {
    const keys = join(work, 'sshd/authorized_keys');
    const saved = readFileSync(keys, 'utf8');
    copyFileSync(golden(), disk());
    writeFileSync(keys, saved.replace(/command="[^"]*"/, 'command="echo rsync refused by policy >&2; exit 1"'));
    try {
      const before = sfdiskDump(disk());
      const r = await go(disk());
      expect(r.ending).toBe('template');
      expect(r.console).toMatch(/continuing offline/);
      expect(sfdiskDump(disk())).toBe(before);
    } finally {
      writeFileSync(keys, saved);
    }
  }, 300_000);

  test('a template too big for the root partition is refused before copying; the node boots its last root', async () => {
    copyFileSync(golden(), disk());
    const big = join(master.root, 'rootfs/usr/share/data/huge');
    Bun.spawnSync(['truncate', '-s', '600M', big]);
    await master.publish('rootfs');
    try {
      const r = await go(disk());
      expect(r.ending).toBe('template');
      expect(r.console).toMatch(/root partition too small: the new root needs \d+ MB/);
      expect(r.console).toMatch(/booting the last complete root/);
    } finally {
      unlinkSync(big);
      await master.publish('rootfs');
    }
  }, 300_000);

  test('a template without its init: a visible failure with the remedy, never a handoff into nothing', async () => {
    copyFileSync(golden(), disk());
    const init = join(master.root, 'rootfs/sbin/init');
    // `builder publish` refuses a template without /sbin/init; an admin who then edits rootfs/ in place changes
    // nothing a node gets, since nodes sync the snapshot publish froze (the signed manifest's tree)
    writeFileSync(join(master.root, 'rootfs/etc/template-version'), '8\n');
    await master.publish('rootfs');
    renameSync(init, `${init}.away`);
    try {
      const live = await go(disk(), 'rescue=0');
      expect(live.ending).toBe('template');
      expect(live.console).toContain('TEMPLATE-INIT pid=1 version=8');
      // an init the root does not have (init= names another program): stopped before switch_root, with the remedy
      const r = await go(disk(), 'rescue=0 init=/sbin/no-such-init');
      expect(r.ending).toBe('fatal');
      expect(r.console).toContain('the root has no /sbin/no-such-init');
      expect(r.console).toMatch(/remedy: the template must contain \/sbin\/no-such-init/);
    } finally {
      renameSync(`${init}.away`, init);
      await master.publish('rootfs');
    }
  }, 400_000);
});

describe('bad input on the node', () => {
  test('unknown and malformed kernel parameters are reported and the defaults kept; the boot goes on', async () => {
    copyFileSync(golden(), disk());
    const r = await go(disk(), 'watchdog=soon retries=-3 leds=purple frobnicate=1 aufs=maybe');
    upOnMastersRoot(r);
    expect(r.console).toMatch(/unknown parameters ignored: .*frobnicate=1/);
    expect(r.console).toMatch(/watchdog=soon/);
    expect(r.console).toMatch(/aufs=maybe/);
  }, 300_000);

  test('no disk: a visible failure that says which disk and what to check', async () => {
    copyFileSync(golden(), disk());
    const r = await boot(img, work, {
      disk: disk(),
      bootargs: master.bootargs('disk=/dev/vdz disktimeout=3'),
      timeoutMs: 300_000,
    });
    expect(r.ending).toBe('fatal');
    expect(r.console).toContain('disk /dev/vdz did not appear within 3s');
    expect(r.console).toMatch(/remedy: /);
  }, 300_000);

  // e2fsck repairs what it can from the backup superblocks; what it cannot is formatted and (the root)
  // copied again. Either way the console says which, and the node comes up on the master's exact root.
  test("a damaged root filesystem is repaired or formatted and copied again; the node comes up on the master's root", async () => {
    copyFileSync(golden(), disk());
    smash(disk(), 67584, 0, 4 << 20); // p2's superblock, group descriptors and the first inode tables
    const r = await go(disk());
    upOnMastersRoot(r);
    expect(r.console).toMatch(/e2fsck repaired \/dev\/vda2|e2fsck cannot repair \/dev\/vda2/);
  }, 300_000);

  // #15: the writable layer (p3) and the data partition (p4) are this node's own: repaired, never formatted
  test("a writable layer with a smashed superblock is repaired from a backup; p3's and p4's files survive", async () => {
    copyFileSync(golden(), disk());
    smash(disk(), 854016, 1024, 1024); // p3's primary superblock only
    const r = await go(disk());
    upOnMastersRoot(r);
    expect(r.console).toMatch(/e2fsck repaired \/dev\/vda3/);
    expect(r.console).not.toContain('ALARM');
    expect(r.console).toContain('TEMPLATE-PERSIST before=yes');
    expect(r.console).toContain('TEMPLATE-P4 before=yes');
  }, 300_000);

  // A device that fails reads gets no repair at all: e2fsck -y from a backup superblock once replayed p3's
  // journal half-way through the read errors and lost the probe file (CI, stop 21).
  test('I/O errors reading the writable layer (QEMU blkdebug): no repair tried, booted on tmpfs with an ALARM, p3 and p4 untouched', async () => {
    copyFileSync(golden(), disk());
    const conf = join(work, 'blkdebug-p3.conf');
    // every read of the 4 KiB block holding p3's primary superblock fails with EIO; writes still land
    writeFileSync(
      conf,
      '[inject-error]\nevent = "read_aio"\niotype = "read"\nerrno = "5"\nsector = "854018"\nonce = "off"\n',
    );
    const r = await boot(img, work, {
      disk: disk(),
      blkdebug: conf,
      bootargs: master.bootargs('disktimeout=5'),
      timeoutMs: 400_000,
    });
    upOnMastersRoot(r);
    expect(r.console).toMatch(/ALARM: the writable layer \/dev\/vda3 returns read errors .*no repair was tried/);
    expect(r.console).toMatch(/a read error: the device itself fails/);
    expect(r.console).toContain('ddrescue');
    expect(r.console).not.toMatch(/e2fsck -y /);
    expect(r.console).not.toMatch(/formatting (it|\/dev\/vda3)|mkfs \/dev\/vda3/);
    expect(r.console).toContain('TEMPLATE-PERSIST before=no');
    expect(r.console).toContain('TEMPLATE-P4 before=yes');
    // the disk without the fault: the writable layer's old content is all still there
    const again = await go(disk());
    upOnMastersRoot(again);
    expect(again.console).toContain('TEMPLATE-PERSIST before=yes');
    expect(again.console).not.toContain('ALARM');
  }, 800_000);
});

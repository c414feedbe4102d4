// What a node does when things change or go wrong: layers, a moved partition, bad input, a master
// that is down or not itself, a power cut mid-sync, rollback, and signed stamps.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { sign } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newStamp, renderStamp } from '../../agent/contract/stamp.ts';
import { boot, diskHash, sfdiskDump, type BootResult } from '../rig/boot.ts';
import { images, type Images } from '../rig/images.ts';
import {
  randomBytes,
  startMasterRig,
  templateSum,
  stopMasterRig,
  TEST_TABLE,
  TestMaster,
  testAccessFiles,
  testKeys,
  type MasterRig,
} from '../rig/master.ts';
import { blankDisk } from '../rig/qemu.ts';
import { longTest } from '../rig/tier.ts';

let img: Images;
let work: string;
let master: TestMaster;
let rig: MasterRig | undefined;
const disk = () => join(work, 'disk.img');
const T = 400_000;

const persist = (r: BootResult) => /TEMPLATE-PERSIST before=(\w+)/.exec(r.console)?.[1];
const version = (r: BootResult) => /TEMPLATE-INIT pid=1 version=(\d+)/.exec(r.console)?.[1];

async function provision(m: TestMaster, path: string, args = ''): Promise<void> {
  blankDisk(path, 1024);
  const b1 = await boot(img, work, { disk: path, bootargs: m.bootargs(args) });
  if (b1.ending !== 'reboot') throw new Error(`provisioning boot 1 ended ${b1.ending}`);
  const b2 = await boot(img, work, { disk: path, bootargs: m.bootargs(args) });
  if (b2.ending !== 'template') throw new Error(`provisioning boot 2 ended ${b2.ending}`);
}

beforeAll(async () => {
  rig = await startMasterRig('recovery', { dataMb: 4 });
  ({ img, work, master } = rig);
  await provision(master, disk(), 'hostname=node1');
}, 30 * 60_000);

afterAll(() => stopMasterRig(rig));

describe('writable layer', () => {
  test(
    'aufs=disk keeps what the booted system wrote; the reset parameter and the master flag wipe it',
    async () => {
      expect(
        persist(await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1 aufs=disk') })),
      ).toBe('yes');
      expect(
        persist(await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1 aufs=disk reset') })),
      ).toBe('no');
      mkdirSync(join(master.root, 'nodes/node1'), { recursive: true });
      writeFileSync(join(master.root, 'nodes/node1/reset'), '');
      const flagged = await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1 aufs=disk') });
      expect(flagged.console).toContain('reset flag set for this node');
      expect(persist(flagged)).toBe('no');
      rmSync(join(master.root, 'nodes/node1'), { recursive: true });
      expect(
        persist(await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1 aufs=disk') })),
      ).toBe('yes');
    },
    4 * T,
  );

  test(
    'aufs=tmpfs forgets what the booted system wrote at every boot',
    async () => {
      for (let i = 0; i < 2; i++) {
        const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs('aufs=tmpfs') });
        expect(r.console).toMatch(/TEMPLATE-ROOT overlay overlay/);
        expect(persist(r)).toBe('no');
      }
    },
    2 * T,
  );
});

describe('partition changes', () => {
  test(
    'changing only p4 keeps p1-p3 and the root, and reformats p4 (seed dialect table)',
    async () => {
      const seedTable = `# partition table of /dev/mmcblk0
unit: sectors

/dev/mmcblk0p1 : start=     2048, size=    65536, Id= c, bootable
/dev/mmcblk0p2 : start=    67584, size=   786432, Id=83
/dev/mmcblk0p3 : start=   854016, size=   524288, Id=83
/dev/mmcblk0p4 : start=  1378304, size=   307200, Id=83
`;
      writeFileSync(join(master.root, 'partitions.sfdisk'), seedTable);
      const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1') });
      expect(r.ending).toBe('reboot');
      expect(r.console).toMatch(/formatting p4 \(data\); keeping p1, p2, p3/);
      expect(sfdiskDump(disk())).toMatch(/disk\.img4 : start=\s*1378304, size=\s*307200/);
      const after = await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1') });
      expect(after.console).toContain('TEMPLATE-P4 before=no');
      expect(persist(after)).toBe('yes');
      expect(after.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
      writeFileSync(join(master.root, 'partitions.sfdisk'), TEST_TABLE);
      expect((await boot(img, work, { disk: disk(), bootargs: master.bootargs('hostname=node1') })).ending).toBe(
        'reboot',
      );
    },
    3 * T,
  );

  for (const [name, table, says] of [
    ['malformed', 'label: dos\n/dev/mmcblk0p1 : start=banana, size=10, type=c\n', "refused the master's table"],
    [
      'larger than the disk',
      TEST_TABLE.replace('size=      409600', 'size=    99409600'),
      "refused the master's table",
    ],
    ['overlapping', TEST_TABLE.replace('start=      854016', 'start=      800000'), "refused the master's table"],
  ] as const) {
    // the plan refuses all three (test/unit/agent/plans/sfdisk.test.ts); CI boots the malformed one through the effects
    (name === 'malformed' ? test : longTest)(
      `a ${name} table is refused: a blank disk stays blank, a provisioned one keeps its table and boots`,
      async () => {
        writeFileSync(join(master.root, 'partitions.sfdisk'), table);
        try {
          const blank = join(work, 'blank.img');
          blankDisk(blank, 1024);
          const h = diskHash(blank);
          const r = await boot(img, work, { disk: blank, bootargs: master.bootargs() });
          expect(r.ending).toBe('fatal');
          expect(r.console).toContain(says);
          expect(diskHash(blank)).toBe(h);
          const before = sfdiskDump(disk());
          const p = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
          expect(p.ending).toBe('template');
          expect(p.console).toContain(says);
          expect(sfdiskDump(disk())).toBe(before);
        } finally {
          writeFileSync(join(master.root, 'partitions.sfdisk'), TEST_TABLE);
        }
      },
      2 * T,
    );
  }
});

describe('master trouble', () => {
  test(
    'a master with the wrong host key is refused and the disk is not touched',
    async () => {
      await master.stop();
      await master.start(testKeys().wrongHostKey);
      try {
        const h = diskHash(disk());
        const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
        expect(r.ending).toBe('fatal');
        expect(r.console).toContain('host key does not match');
        expect(diskHash(disk())).toBe(h);
      } finally {
        await master.stop();
        await master.start();
      }
    },
    T,
  );

  // #19 item 2: masterip=a,b,c. 10.0.2.9 is on QEMU's user network, where nothing answers it (no ARP reply):
  // the guest's connect fails inside QEMU and nothing leaves this machine
  test(
    'a dead first master in masterip=: the node fails over to the next one, boots its root and says which served it',
    async () => {
      const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs('masterip=10.0.2.9,10.0.2.2') });
      expect(r.ending).toBe('template');
      expect(/TEMPLATE-SUM (\S+)/.exec(r.console)?.[1]).toBe(templateSum(master.root));
      expect(r.console).toMatch(/\[\d+\/\d+ network\] .*master 10\.0\.2\.9, 10\.0\.2\.2 \(masterip=\)/);
      expect(r.console).toMatch(/master 10\.0\.2\.9: master unreachable: .*; failing over to 10\.0\.2\.2/);
      expect(r.console).toMatch(/connected to 10\.0\.2\.2:\d+/);
      expect(r.console).toMatch(/served by 10\.0\.2\.2 after failing over from 10\.0\.2\.9: master unreachable/);
      expect(r.console).not.toMatch(/continuing offline/);
    },
    T,
  );

  test(
    'master down: the node boots its last complete root; a blank disk is not written',
    async () => {
      await master.stop();
      try {
        const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
        expect(r.ending).toBe('template');
        expect(r.console).toMatch(/may be stale/);
        const blank = join(work, 'blank-down.img');
        blankDisk(blank, 1024);
        const h = diskHash(blank);
        const b = await boot(img, work, { disk: blank, bootargs: master.bootargs() });
        expect(b.ending).toBe('fatal');
        expect(diskHash(blank)).toBe(h);
      } finally {
        await master.start();
      }
    },
    2 * T,
  );
});

describe('crash safety', () => {
  test(
    'a power cut mid-sync leaves a partial slot that the next boot reuses for its sync, then deletes; rollback boots the previous slot',
    async () => {
      const v1 = version(await boot(img, work, { disk: disk(), bootargs: master.bootargs() }));
      writeFileSync(join(master.root, 'rootfs/usr/share/data/big'), randomBytes(48 << 20, 7));
      writeFileSync(join(master.root, 'rootfs/etc/template-version'), '7\n');
      const id = await master.publish('rootfs');
      const cut = await boot(img, work, {
        disk: disk(),
        bootargs: master.bootargs(),
        killOn: /syncing: [\d.]+ MB at .*\((?:[2-9]\d)%\)/,
      });
      expect(cut.ending).not.toBe('template');
      const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
      // the partial slot leaves slots/ (as salvage/ it serves this sync's --link-dest, then it is removed)
      expect(r.console).toContain(`mv slots/${id} salvage`);
      expect(r.console).toContain('rm -rf salvage');
      expect(version(r)).toBe('7');
      const rb = await boot(img, work, { disk: disk(), bootargs: master.bootargs('rollback') });
      expect(version(rb)).toBe(v1);
      expect(rb.console).toMatch(/rollback/i);
    },
    3 * T,
  );
});

// #15 item 6: the interrupted slot is still deleted, but its finished files are linked, not fetched again
describe('a cut sync does not send its finished part again', () => {
  test(
    "after a cut late in a sync of many files, the retry links the finished ones: fewer bytes, the master's exact root",
    async () => {
      rmSync(join(master.root, 'rootfs/usr/share/data/big'), { force: true });
      const dir = join(master.root, 'rootfs/usr/share/data/many');
      mkdirSync(dir, { recursive: true });
      for (let i = 0; i < 160; i++)
        writeFileSync(join(dir, `f${String(i).padStart(3, '0')}`), randomBytes(1 << 20, 100 + i));
      writeFileSync(join(master.root, 'rootfs/etc/template-version'), '6\n');
      const id = await master.publish('rootfs');
      const cut = await boot(img, work, {
        disk: disk(),
        bootargs: master.bootargs(),
        // late enough that the sync's 3-s flushes have put most finished files on the card
        killOn: /syncing: [\d.]+ MB at .*\((?:9\d)%\)/,
      });
      expect(cut.ending).not.toBe('template');
      const r = await boot(img, work, { disk: disk(), bootargs: master.bootargs() });
      expect(version(r)).toBe('6');
      expect(/TEMPLATE-SUM (\S+)/.exec(r.console)?.[1]).toBe(templateSum(master.root));
      const kept = Number(/the interrupted slot \S+ left (\d+) finished files/.exec(r.console)?.[1] ?? 0);
      const received = Number(
        new RegExp(`slot ${id}\\S* synced: .* (\\d+) bytes received`).exec(r.console)?.[1] ?? NaN,
      );
      const total = Number(
        execFileSync('du', ['-sb', '--apparent-size', join(master.root, 'rootfs')], { encoding: 'utf8' }).split(
          '\t',
        )[0],
      );
      console.error(
        `measure: retry after a cut at >=90% of a ${total}-byte root of 160 x 1 MiB files: ${kept} files salvaged, ${received} bytes received (${((100 * received) / total).toFixed(0)} %)`,
      );
      expect(r.console).toContain(`mv slots/${id} salvage`);
      expect(r.console).toContain('rm -rf salvage');
      expect(kept).toBeGreaterThan(10);
      // a fresh copy receives the whole root; the finished files' bytes stay on the node. (Files whose data was
      // still in the guest's page cache at the cut come back short, fail rsync's size check and travel again.)
      expect(received).toBeLessThan(0.9 * total);
      expect(received).toBeGreaterThan(0);
      rmSync(dir, { recursive: true, force: true }); // the later cases sync small roots again
    },
    3 * T,
  );
});

describe('signed stamps', () => {
  test(
    'with signing on, stamps signed by another key, unsigned or older are refused',
    async () => {
      const signed = await images({ extra: testAccessFiles(true) });
      const k = testKeys();
      const good = join(k.dir, 'stamp_ed25519.pem');
      const bootS = () => boot(signed, work, { disk: disk(), bootargs: master.bootargs() });
      writeFileSync(join(master.root, 'rootfs/etc/template-version'), '8\n');
      await master.publish('rootfs', good);
      await master.publish('bootfs', good);
      expect((await bootS()).ending).toBe('reboot'); // the newly signed bootfs stamp refreshes p1 first
      const ok = await bootS();
      expect(version(ok)).toBe('8');

      writeFileSync(join(master.root, 'rootfs/etc/template-version'), '9\n');
      await master.publish('rootfs', k.otherSignKey);
      const other = await bootS();
      expect(other.console).toContain('does not verify');
      expect(version(other)).toBe('8');

      await master.publish('rootfs');
      const unsigned = await bootS();
      expect(unsigned.console).toContain('unsigned stamp');
      expect(version(unsigned)).toBe('8');

      const old = renderStamp(newStamp('rootfs', 1, new Date('2026-01-01T00:00:00Z')));
      const sig = sign(null, Buffer.from(old), readFileSync(good, 'utf8')).toString('base64');
      writeFileSync(join(master.root, 'stamps/rootfs.stamp.sig'), `${sig}\n`);
      writeFileSync(join(master.root, 'stamps/rootfs.stamp'), old);
      const down = await bootS();
      expect(down.console).toMatch(/older than the local root/);
      expect(version(down)).toBe('8');
    },
    5 * T,
  );
});

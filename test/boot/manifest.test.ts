// The signed content manifest on the real chain: served with the same (validly signed) stamp, a snapshot file
// changed on the master, a hostile rsync daemon, and a table change or reset flag the manifest does not carry are
// each refused before the flip, and the node boots its last root.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { boot, sfdiskDump, type BootResult } from '../rig/boot.ts';
import { images, type Images } from '../rig/images.ts';
import { TEST_TABLE, TestMaster, testAccessFiles, testKeys } from '../rig/master.ts';
import { blankDisk } from '../rig/qemu.ts';
import { snapshotPath } from '../../agent/contract/manifest.ts';

let img: Images;
let work: string;
let master: TestMaster;
let hostile: TestMaster | undefined;
const disk = () => join(work, 'disk.img');
const key = () => join(testKeys().dir, 'stamp_ed25519.pem');
const T = 400_000;
const ARGS = 'hostname=node1 aufs=disk';

const version = (r: BootResult) => /TEMPLATE-INIT pid=1 version=(\d+)/.exec(r.console)?.[1];
const persist = (r: BootResult) => /TEMPLATE-PERSIST before=(\w+)/.exec(r.console)?.[1];
const bootM = (args = ARGS) => boot(img, work, { disk: disk(), bootargs: master.bootargs(args) });

/** Write a new template version and publish it signed; returns the stamp id. */
async function release(v: string): Promise<string> {
  writeFileSync(join(master.root, 'rootfs/etc/template-version'), `${v}\n`);
  return master.publish('rootfs', key());
}

beforeAll(async () => {
  img = await images({ extra: testAccessFiles(true) });
  work = mkdtempSync(join(tmpdir(), 'cb-manifest-'));
  master = new TestMaster(work, join(img.sysroot, 'bin/busybox'));
  await master.layout({ dataMb: 2 });
  await master.publish('bootfs', key());
  await release('1');
  await master.start();
  blankDisk(disk(), 1024);
  expect((await bootM()).ending).toBe('reboot');
  const b = await bootM();
  expect(b.ending).toBe('template');
  expect(version(b)).toBe('1');
  expect(b.console).toMatch(/matches the manifest: \d+ files hashed/);
}, 20 * 60_000);

afterAll(async () => {
  await hostile?.stop();
  await master?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else if (work) rmSync(work, { recursive: true, force: true });
});

describe('served with the same stamp, refused before the flip', () => {
  test(
    'a file changed in the snapshot after publishing; once it is restored, only the changed file is hashed',
    async () => {
      const id = await release('2');
      const f = join(master.root, snapshotPath('rootfs', id), 'etc/template-version');
      writeFileSync(f, '6\n'); // same size: rsync's and the size check pass, the sha256 does not
      const r = await bootM();
      expect(r.console).toContain('refused the new root before the flip');
      expect(r.console).toMatch(/"etc\/template-version" has sha256 [0-9a-f]{12}…, the manifest says/);
      expect(r.console).toContain('run `builder publish rootfs` again');
      expect(r.console).toMatch(/booting the last complete root 2-/);
      expect(version(r)).toBe('1');

      writeFileSync(f, '2\n');
      const ok = await bootM();
      expect(version(ok)).toBe('2');
      // the blobs came as hard links from the verified slot: not read again
      const m = /matches the manifest: (\d+) files hashed .* (\d+) hard-linked from the verified/.exec(ok.console);
      expect(m).not.toBeNull();
      expect(Number(m?.[2])).toBeGreaterThanOrEqual(2);
      expect(Number(m?.[1])).toBeLessThan(Number(m?.[2]));
      // the --files-from delta: only the directories and the changed file are asked for
      const d =
        /delta against slots\/\S+: (\d+) paths to fetch \((\d+) bytes of changed files\), (\d+) linked here/.exec(
          ok.console,
        );
      expect(d).not.toBeNull();
      expect(Number(d?.[2])).toBe(2); // "2\n"
      expect(Number(d?.[3])).toBeGreaterThanOrEqual(5); // busybox, its links, init, the blobs: not asked for
      const got = /(\d+) bytes received \((\d+) of them the file list\)/.exec(ok.console);
      console.log(
        `measure: delta of one 2-byte file: ${got?.[1]} B received (${got?.[2]} B file list), ${d?.[1]} paths asked`,
      );
      expect(Number(got?.[1])).toBeLessThan(64 * 1024);
    },
    3 * T,
  );

  test(
    'a hostile rsync daemon (transport=rsyncd) serving the signed stamp and manifest with its own root',
    async () => {
      await release('3');
      const evil = join(work, 'evil');
      mkdirSync(evil, { recursive: true });
      hostile = new TestMaster(evil, join(img.sysroot, 'bin/busybox'));
      cpSync(master.root, hostile.root, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      const id = /^id (\S+)/m.exec(readFileSync(join(master.root, 'stamps/rootfs.stamp'), 'utf8'))?.[1] as string;
      writeFileSync(join(hostile.root, snapshotPath('rootfs', id), 'sbin/init'), '#!/bin/sh\necho OWNED\n', {
        mode: 0o755,
      });
      await hostile.startRsyncd();
      const r = await boot(img, work, {
        disk: disk(),
        bootargs: `console=ttyAMA0 panic=10 masterip=10.0.2.2 transport=rsyncd masterport=${hostile.rsyncdPort} disk=/dev/vda retries=2 ${ARGS}`,
      });
      expect(r.console).toContain('refused the new root before the flip');
      expect(r.console).toMatch(/"sbin\/init" (is \d+ bytes|has sha256)/);
      expect(r.console).not.toContain('OWNED');
      expect(version(r)).toBe('2');
      await hostile.stop();
      hostile = undefined;
    },
    2 * T,
  );

  test(
    'a table change the manifest does not carry: disk and root stay as they are',
    async () => {
      const before = sfdiskDump(disk());
      writeFileSync(
        join(master.root, 'partitions.sfdisk'),
        TEST_TABLE.replace('size=      409600', 'size=      204800'),
      );
      try {
        const r = await bootM();
        expect(r.console).toContain("refused the master's table, approval switch and reset flag");
        expect(r.console).toMatch(/partitions\.sfdisk has sha256 [0-9a-f]{12}…, the manifest carries/);
        expect(r.console).toContain('Remedy: run `builder publish rootfs --sign <stamp key>`');
        expect(r.ending).toBe('template');
        expect(version(r)).toBe('2'); // the sync to 3 is refused with it
        expect(sfdiskDump(disk())).toBe(before);
      } finally {
        writeFileSync(join(master.root, 'partitions.sfdisk'), TEST_TABLE);
      }
    },
    2 * T,
  );

  test(
    'a reset flag the manifest does not carry is ignored; published with it, it wipes the layer',
    async () => {
      const flag = join(master.root, 'nodes/node1/reset');
      mkdirSync(join(master.root, 'nodes/node1'), { recursive: true });
      writeFileSync(flag, '');
      try {
        const r = await bootM();
        expect(r.console).toContain('the reset flag for node1 is set, the manifest does not carry it');
        expect(r.console).not.toContain('resetting the writable layer');
        expect(persist(r)).toBe('yes');
        expect(version(r)).toBe('2');

        await release('4');
        const ok = await bootM();
        expect(ok.console).toContain('resetting the writable layer (flag nodes/<host>/reset on the master)');
        expect(persist(ok)).toBe('no');
        expect(version(ok)).toBe('4');
      } finally {
        rmSync(flag, { force: true });
      }
    },
    3 * T,
  );
});

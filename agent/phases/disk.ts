// Phase "disk": find the disk, read its table, and make sure it is ours before anything writes to it.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { partName } from '../plans/sfdisk.ts';
import { info, warn } from '../log.ts';
import { mountFs, sysBlock, umountQuiet, waitForPath } from '../sys/fsutil.ts';
import { lookaheadResult, type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { MARKER, P1_PROBE } from '../paths.ts';
import { writeAtomic } from '../contract/atomic.ts';
import { syncDisks } from '../sys/libc.ts';
import { diskVerdict, findDisk, hasOurLabelId, type DiskCandidate } from '../plans/disk.ts';

function startIsZero(dev: string, bytes = 1 << 20): boolean {
  const fd = openSync(dev, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const n = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, n).every((b) => b === 0);
  } finally {
    closeSync(fd);
  }
}

async function p1Listing(dev: string): Promise<string[] | null> {
  const p1 = partName(dev, 1);
  if (!existsSync(p1)) return null;
  try {
    mountFs(p1, P1_PROBE, 'vfat', true);
  } catch {
    return null;
  }
  try {
    return readdirSync(P1_PROBE);
  } finally {
    umountQuiet(P1_PROBE);
  }
}

/** What the disk looks like, read without changing anything (the look-ahead and the phase share it). */
interface DiskProbe {
  device: string;
  sectors: number;
  serial: string;
  currentTable: string | null;
  blank: boolean;
  p1Files: string[] | null;
}

/** Whole disks as sysfs lists them (a partition has a `partition` file), with their serial and WWID. */
function listDisks(): DiskCandidate[] {
  const read = (n: string, f: string) => {
    try {
      return readFileSync(`/sys/class/block/${n}/${f}`, 'utf8').trim() || null;
    } catch {
      return null;
    }
  };
  let names: string[] = [];
  try {
    names = readdirSync('/sys/class/block');
  } catch {
    // no sysfs yet: no disks
  }
  return names
    .filter((n) => !existsSync(`/sys/class/block/${n}/partition`))
    .map((n) => ({
      name: n,
      serial: read(n, 'serial') ?? read(n, 'device/serial'),
      wwid: read(n, 'wwid') ?? read(n, 'device/wwid'),
    }));
}

/** disk= as a device: a path at once, serial:/wwid: once a disk reporting it appears (null: none in time). */
async function resolveDisk(spec: string, timeoutMs: number): Promise<string | null> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = findDisk(spec, listDisks());
    if (r && 'error' in r) throw new PhaseFailure(`disk=${spec}: ${r.error}`, 'name the disk by its /dev path', 'disk');
    if (r) return r.device;
    if (Date.now() >= until) return null;
    await Bun.sleep(250);
  }
}

async function probeDisk(ctx: Ctx): Promise<DiskProbe> {
  const spec = ctx.params.disk;
  const timeoutMs = ctx.params.diskTimeout * 1000;
  const dev = await resolveDisk(spec, timeoutMs);
  if (dev === null || !(await waitForPath(dev, timeoutMs))) {
    const seen = listDisks()
      .map((d) => `${d.name}${d.serial ? ` (serial ${d.serial})` : ''}`)
      .join(' ');
    throw new PhaseFailure(
      `disk ${spec} did not appear within ${ctx.params.diskTimeout}s`,
      `check the card or disk, or name the right one with disk= (seen: ${seen || 'none'})`,
      'disk',
    );
  }
  const sectors = Number(sysBlock(dev, 'size') ?? '0');
  const serial = sysBlock(dev, 'serial') ?? sysBlock(dev, 'device/serial') ?? '';
  const dump = await run('sfdisk', ['-d', dev], { okCodes: [0, 1] });
  const currentTable = dump.exitCode === 0 && dump.stdout.trim() ? dump.stdout : null;
  const blank = currentTable === null && startIsZero(dev);
  const p1Files = currentTable ? await p1Listing(dev) : null;
  return { device: dev, sectors, serial, currentTable, blank, p1Files };
}

// Adopted: the marker on p1 makes the disk ours from the next boot on, without the parameter. A p1 that does not
// mount as vfat gets none; the repartition the master's table then calls for writes our label-id instead.
function markAdopted(dev: string): void {
  const p1 = partName(dev, 1);
  try {
    mountFs(p1, P1_PROBE, 'vfat');
  } catch (e) {
    warn('disk', `adopted ${dev}, but its p1 does not mount as vfat (${(e as Error).message}): no marker written`);
    return;
  }
  try {
    writeAtomic(`${P1_PROBE}/${MARKER}`, "clusterboot boot partition: its contents follow the master's bootfs/\n");
    syncDisks();
    info('disk', `adopted ${dev}: wrote the clusterboot marker on ${p1}`);
  } finally {
    umountQuiet(P1_PROBE);
  }
}

export const disk: Phase = {
  name: 'disk',
  needs: { tools: ['sfdisk'], modules: ['virtio_blk', 'vfat', 'nls_cp437', 'nls_iso8859_1'] },
  // a USB disk can take seconds to appear: wait for it and read it while DHCP and SSH are under way
  lookahead: { after: 'modules', run: probeDisk },
  async run(ctx) {
    const {
      device: dev,
      sectors,
      serial,
      currentTable,
      blank,
      p1Files,
    } = await lookaheadResult(ctx, 'disk', () => probeDisk(ctx));
    const v = diskVerdict({
      blank,
      hasTable: currentTable !== null,
      ourLabel: hasOurLabelId(currentTable),
      p1Files,
      serial,
      ...(ctx.params.wipe ? { wipe: ctx.params.wipe } : {}),
      ...(ctx.params.adopt ? { adopt: ctx.params.adopt } : {}),
    });
    info(
      'disk',
      `${dev}: ${((sectors * 512) / 1e9).toFixed(2)} GB, serial ${serial || '(none)'}, ${currentTable ? 'has a partition table' : 'no partition table'}; ${v.why}`,
      { device: dev, sectors, serial, blank, table: currentTable },
    );
    if (!v.ours) {
      throw new PhaseFailure(
        `disk ${dev} (serial ${serial || 'none'}) is not a clusterboot disk: ${v.why}; left untouched`,
        v.remedy,
        'disk-refused',
      );
    }
    if (v.ours && v.adopt && !ctx.params.dryRun) markAdopted(dev);
    ctx.facts.disk = { device: dev, sectors, serial, blank, currentTable: v.wipe ? null : currentTable };
    return `${dev} ${((sectors * 512) / 1e9).toFixed(1)} GB (${v.why})`;
  },
};

// Phase "disk": find the disk, read its table, and make sure it is ours before anything writes to it.
import { closeSync, existsSync, openSync, readdirSync, readSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { partName } from '../plans/sfdisk.ts';
import { info } from '../log.ts';
import { mountFs, sysBlock, umountQuiet, waitForPath } from '../sys/fsutil.ts';
import { lookaheadResult, type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { P1_PROBE } from '../paths.ts';
import { diskVerdict, hasOurLabelId } from '../plans/disk.ts';

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
  sectors: number;
  serial: string;
  currentTable: string | null;
  blank: boolean;
  p1Files: string[] | null;
}

async function probeDisk(ctx: Ctx): Promise<DiskProbe> {
  const dev = ctx.params.disk;
  if (!(await waitForPath(dev, ctx.params.diskTimeout * 1000))) {
    throw new PhaseFailure(
      `disk ${dev} did not appear within ${ctx.params.diskTimeout}s`,
      `check the card or disk, or name the right one with disk= (seen: ${readdirSync('/sys/class/block').join(' ') || 'none'})`,
      'disk',
    );
  }
  const sectors = Number(sysBlock(dev, 'size') ?? '0');
  const serial = sysBlock(dev, 'serial') ?? sysBlock(dev, 'device/serial') ?? '';
  const dump = await run('sfdisk', ['-d', dev], { okCodes: [0, 1] });
  const currentTable = dump.exitCode === 0 && dump.stdout.trim() ? dump.stdout : null;
  const blank = currentTable === null && startIsZero(dev);
  const p1Files = currentTable ? await p1Listing(dev) : null;
  return { sectors, serial, currentTable, blank, p1Files };
}

export const disk: Phase = {
  name: 'disk',
  needs: { tools: ['sfdisk'], modules: ['virtio_blk', 'vfat', 'nls_cp437', 'nls_iso8859_1'] },
  // a USB disk can take seconds to appear: wait for it and read it while DHCP and SSH are under way
  lookahead: { after: 'modules', run: probeDisk },
  async run(ctx) {
    const dev = ctx.params.disk;
    const { sectors, serial, currentTable, blank, p1Files } = await lookaheadResult(ctx, 'disk', () => probeDisk(ctx));
    const v = diskVerdict({
      blank,
      hasTable: currentTable !== null,
      ourLabel: hasOurLabelId(currentTable),
      p1Files,
      serial,
      ...(ctx.params.wipe ? { wipe: ctx.params.wipe } : {}),
    });
    info(
      'disk',
      `${dev}: ${((sectors * 512) / 1e9).toFixed(2)} GB, serial ${serial || '(none)'}, ${currentTable ? 'has a partition table' : 'no partition table'}; ${v.why}`,
      { device: dev, sectors, serial, blank, table: currentTable },
    );
    if (!v.ours) {
      throw new PhaseFailure(
        `disk ${dev} (serial ${serial || 'none'}) is not a clusterboot disk: ${v.why}; left untouched`,
        serial
          ? `to let clusterboot take (and erase) it, boot once with wipe=${serial}`
          : 'to take it, erase its first MiB by hand',
        'disk-refused',
      );
    }
    ctx.facts.disk = { device: dev, sectors, serial, blank, currentTable: v.wipe ? null : currentTable };
    return `${dev} ${((sectors * 512) / 1e9).toFixed(1)} GB (${v.why})`;
  },
};

// Phase "disk": find the disk, read its table, and make sure it is ours before anything writes to it.
import { closeSync, existsSync, openSync, readdirSync, readSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { partName } from '../plans/sfdisk.ts';
import { info } from '../log.ts';
import { mountFs, sysBlock, umountQuiet, waitForPath } from '../sys/fsutil.ts';
import { lookaheadResult, PhaseFailure, type Ctx, type Phase } from '../phase.ts';
import { RUN_DIR } from './early.ts';

export const MARKER = 'clusterboot.marker';
/** The disk identifier clusterboot writes with every table: marks the disk ours from the first write on. */
export const LABEL_ID = { dos: '0xc10b0070', gpt: 'C10B0070-0000-4000-8000-C10B00700000' } as const;

/** Our label-id in an sfdisk dump. */
export function hasOurLabelId(dump: string | null): boolean {
  const id = dump ? /^label-id:\s*(\S+)/m.exec(dump)?.[1]?.toLowerCase() : undefined;
  return id === LABEL_ID.dos || id === LABEL_ID.gpt.toLowerCase();
}
const PROBE = `${RUN_DIR}/p1probe`;

/** Whose disk is it: blank and firmware/marker disks are ours; anything else only with wipe=<its serial>. */
export function diskVerdict(f: { blank: boolean; hasTable: boolean; ourLabel?: boolean; p1Files: string[] | null; serial: string; wipe?: string }):
  { ours: true; why: string; wipe: boolean } | { ours: false; why: string } {
  if (f.wipe !== undefined && f.wipe !== '' && f.wipe === f.serial) return { ours: true, why: `wipe=${f.wipe} names this disk`, wipe: true };
  if (f.blank) return { ours: true, why: 'blank disk', wipe: false };
  if (f.ourLabel) return { ours: true, why: 'clusterboot disk identifier in the table', wipe: false };
  const files = (f.p1Files ?? []).map((x) => x.toLowerCase());
  if (files.includes(MARKER)) return { ours: true, why: 'clusterboot marker on p1', wipe: false };
  if (files.includes('config.txt') || files.some((x) => x.startsWith('u-boot'))) return { ours: true, why: 'boot firmware on p1', wipe: false };
  return { ours: false, why: f.hasTable ? 'p1 holds neither the clusterboot marker nor boot firmware' : 'no partition table but data at the start of the disk' };
}

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
    mountFs(p1, PROBE, 'vfat', true);
  } catch {
    return null;
  }
  try {
    return readdirSync(PROBE);
  } finally {
    umountQuiet(PROBE);
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
    throw new PhaseFailure(`disk ${dev} did not appear within ${ctx.params.diskTimeout}s`,
      `check the card or disk, or name the right one with disk= (seen: ${readdirSync('/sys/class/block').join(' ') || 'none'})`, 'disk');
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
    const v = diskVerdict({ blank, hasTable: currentTable !== null, ourLabel: hasOurLabelId(currentTable), p1Files, serial, ...(ctx.params.wipe ? { wipe: ctx.params.wipe } : {}) });
    info('disk', `${dev}: ${(sectors * 512 / 1e9).toFixed(2)} GB, serial ${serial || '(none)'}, ${currentTable ? 'has a partition table' : 'no partition table'}; ${v.why}`,
      { device: dev, sectors, serial, blank, table: currentTable });
    if (!v.ours) {
      throw new PhaseFailure(`disk ${dev} (serial ${serial || 'none'}) is not a clusterboot disk: ${v.why}; left untouched`,
        serial ? `to let clusterboot take (and erase) it, boot once with wipe=${serial}` : 'to take it, erase its first MiB by hand', 'disk-refused');
    }
    ctx.facts.disk = { device: dev, sectors, serial, blank, currentTable: v.wipe ? null : currentTable };
    return `${dev} ${(sectors * 512 / 1e9).toFixed(1)} GB (${v.why})`;
  },
};

// Whose disk is it: the facts read off the disk (blank, its table's identifier, what p1 holds, its serial) to a
// verdict. Pure: a disk that is not clusterboot's is never written without wipe=<its serial>.
import { MARKER } from '../paths.ts';

/** The disk identifier clusterboot writes with every table: marks the disk ours from the first write on. */
export const LABEL_ID = { dos: '0xc10b0070', gpt: 'C10B0070-0000-4000-8000-C10B00700000' } as const;

/** Our label-id in an sfdisk dump. */
export function hasOurLabelId(dump: string | null): boolean {
  const id = dump ? /^label-id:\s*(\S+)/m.exec(dump)?.[1]?.toLowerCase() : undefined;
  return id === LABEL_ID.dos || id === LABEL_ID.gpt.toLowerCase();
}

/** The verdict: ours (and whether to erase it, or to adopt it by writing the marker), or not, with why. */
export type DiskVerdict =
  { ours: true; why: string; wipe: boolean; adopt?: true } | { ours: false; why: string; remedy: string };

const names = (v: string | undefined, serial: string) => v !== undefined && v !== '' && v === serial;

/**
 * Whose disk is it. Ours: blank, our label-id in the table, or our marker on p1. Boot firmware on p1 is not enough:
 * every Raspberry Pi OS or Ubuntu card has it. Such a disk (a seed-era card, or anyone's) is taken only by name:
 * adopt=<serial> keeps its partitions and marks it ours (once: the marker decides from then on), wipe=<serial>
 * erases it. The serial, not the device name, because device names move between boots.
 */
export function diskVerdict(f: {
  blank: boolean;
  hasTable: boolean;
  ourLabel?: boolean;
  p1Files: string[] | null;
  serial: string;
  wipe?: string;
  adopt?: string;
}): DiskVerdict {
  if (names(f.wipe, f.serial)) return { ours: true, why: `wipe=${f.wipe} names this disk`, wipe: true };
  if (f.blank) return { ours: true, why: 'blank disk', wipe: false };
  if (f.ourLabel) return { ours: true, why: 'clusterboot disk identifier in the table', wipe: false };
  const files = (f.p1Files ?? []).map((x) => x.toLowerCase());
  if (files.includes(MARKER)) return { ours: true, why: 'clusterboot marker on p1', wipe: false };
  const firmware = files.includes('config.txt') || files.some((x) => x.startsWith('u-boot'));
  if (names(f.adopt, f.serial) && f.hasTable)
    return {
      ours: true,
      why: `adopt=${f.adopt} names this disk: adopting it with its partitions as they are (${firmware ? 'boot firmware' : 'no clusterboot marker'} on p1); the marker written now makes it ours from the next boot on`,
      wipe: false,
      adopt: true,
    };
  const byName = f.serial
    ? `to take it, boot once with adopt=${f.serial} (keeps its partitions where they match the master's table) or wipe=${f.serial} (erases it)`
    : 'it has no serial to name it by: to take it, erase its first MiB by hand';
  if (firmware)
    return {
      ours: false,
      why: 'p1 holds boot firmware but no clusterboot marker (a Raspberry Pi OS or other system card, or a card prepared before clusterboot marked its disks)',
      remedy: byName,
    };
  return {
    ours: false,
    why: f.hasTable
      ? 'p1 holds neither the clusterboot marker nor boot firmware'
      : 'no partition table but data at the start of the disk',
    remedy: byName,
  };
}

/** A whole disk the kernel lists, with the identifiers it reports (sysfs `serial`, `wwid`). */
export interface DiskCandidate {
  name: string;
  serial: string | null;
  wwid: string | null;
}

/**
 * The device disk= names: a /dev path as it is; `serial:X` or `wwid:X` the one disk reporting exactly that
 * (null: none yet; an error when two do, since taking either could write the wrong card).
 */
export function findDisk(spec: string, disks: readonly DiskCandidate[]): { device: string } | { error: string } | null {
  const m = /^(serial|wwid):(.+)$/.exec(spec);
  if (!m) return { device: spec };
  const [, kind, want] = m as unknown as [string, 'serial' | 'wwid', string];
  const hits = disks.filter((d) => d[kind] !== null && d[kind] === want);
  if (hits.length > 1)
    return {
      error: `${hits.map((d) => d.name).join(' and ')} both report ${kind} ${want}: name the disk by its /dev path`,
    };
  const hit = hits[0];
  return hit ? { device: `/dev/${hit.name}` } : null;
}

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

/** Whose disk is it: blank and firmware/marker disks are ours; anything else only with wipe=<its serial>. */
export function diskVerdict(f: {
  blank: boolean;
  hasTable: boolean;
  ourLabel?: boolean;
  p1Files: string[] | null;
  serial: string;
  wipe?: string;
}): { ours: true; why: string; wipe: boolean } | { ours: false; why: string } {
  if (f.wipe !== undefined && f.wipe !== '' && f.wipe === f.serial)
    return { ours: true, why: `wipe=${f.wipe} names this disk`, wipe: true };
  if (f.blank) return { ours: true, why: 'blank disk', wipe: false };
  if (f.ourLabel) return { ours: true, why: 'clusterboot disk identifier in the table', wipe: false };
  const files = (f.p1Files ?? []).map((x) => x.toLowerCase());
  if (files.includes(MARKER)) return { ours: true, why: 'clusterboot marker on p1', wipe: false };
  if (files.includes('config.txt') || files.some((x) => x.startsWith('u-boot')))
    return { ours: true, why: 'boot firmware on p1', wipe: false };
  return {
    ours: false,
    why: f.hasTable
      ? 'p1 holds neither the clusterboot marker nor boot firmware'
      : 'no partition table but data at the start of the disk',
  };
}

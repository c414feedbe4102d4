// Which partitions hold no filesystem at all: what a power cut between writing the table and the end
// of formatting leaves behind. Pure: the caller reads the first 4 KiB of each partition.
import type { Role } from './sfdisk.ts';

// Only a partition with neither an ext2/3/4 nor a FAT signature counts. The disk is ours (the disk
// phase checked) and its table equals the wanted one, so such a partition can only be one of our own
// formats that did not finish: formatting it loses nothing. Anything with a signature is left to fsck.

/** ext2/3/4: magic 0xEF53 at byte 1080 (superblock at 1024, s_magic at +56). */
export function hasExt(head: Uint8Array): boolean {
  return head.length >= 1082 && head[1080] === 0x53 && head[1081] === 0xef;
}

/** FAT: boot sector signature 55 AA and "FAT" as the filesystem type (FAT12/16 at 54, FAT32 at 82). */
export function hasFat(head: Uint8Array): boolean {
  if (head.length < 512 || head[510] !== 0x55 || head[511] !== 0xaa) return false;
  const at = (o: number) => String.fromCharCode(...head.subarray(o, o + 3));
  return at(54) === 'FAT' || at(82) === 'FAT';
}

/** How many bytes of a partition's start the checks need (btrfs keeps its magic at 64 KiB + 64). */
export const HEAD_BYTES = 68 * 1024;

const text = (h: Uint8Array, o: number, s: string) =>
  h.length >= o + s.length && String.fromCharCode(...h.subarray(o, o + s.length)) === s;

/** Someone else's data: a filesystem, swap or container we do not make. Never formatted. */
export function foreign(h: Uint8Array): string | null {
  if (text(h, 0, 'XFSB')) return 'xfs';
  if (text(h, 0, 'LUKS')) return 'LUKS';
  if (text(h, 0, 'hsqs')) return 'squashfs';
  if (text(h, 3, 'NTFS')) return 'NTFS';
  if (text(h, 3, 'EXFAT')) return 'exFAT';
  if (text(h, 4086, 'SWAPSPACE2') || text(h, 4086, 'SWAP-SPACE')) return 'swap';
  if (h.length >= 1028 && h[1024] === 0x10 && h[1025] === 0x20 && h[1026] === 0xf5 && h[1027] === 0xf2) return 'f2fs';
  if (text(h, 65600, '_BHRfS_M')) return 'btrfs';
  return null;
}

/**
 * The roles whose partition may be formatted after an interrupted repartition (null head: the device is
 * missing, nothing to do). The boot partition holds only the master's firmware: formatted when it has no
 * filesystem we or anyone else would recognise. The others may hold this node's data (a writable layer,
 * p4) whose primary superblock is merely damaged, which e2fsck repairs from a backup: they are formatted
 * here only when their start is all zeros (a format cut before it wrote anything), and otherwise left
 * to the root and overlay phases' e2fsck.
 */
export function unformatted(roles: readonly Role[], head: (index: number) => Uint8Array | null): Role[] {
  return roles.filter((r) => {
    const h = head(r.index);
    if (h === null || hasExt(h) || hasFat(h) || foreign(h) !== null) return false;
    return r.role === 'boot' || h.every((b) => b === 0);
  });
}

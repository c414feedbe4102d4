// The master tree: every name a node reads or writes under the master root (the seed's /data/slaves),
// and the one filter a node fetches it with. The builder writes these names; the agent reads them.
import { ANNOUNCEMENT_FILE } from './firststage.ts';

/** The wanted partition table, `sfdisk -d` text (old or new dialect). */
export const PARTITION_TABLE = 'partitions.sfdisk';
/** The boot (firmware) template: rsynced into p1. */
export const BOOTFS_DIR = 'bootfs';
/** The root template: rsynced into a root slot on p2. */
export const ROOTFS_DIR = 'rootfs';
/** rootfs.stamp, bootfs.stamp (+ .sig): written by `builder publish` (stamp.ts has the format). */
export const STAMP_DIR = 'stamps';
/** Exists: approval mode is on (`builder stage --approval`). */
export const APPROVAL_REQUIRED = 'approval.required';
/** approved/<host>: the sha256 of the table that host may apply (approval.ts has the format). */
export const APPROVED_DIR = 'approved';
/** nodes/<host>/: per-node flags and files. */
export const NODES_DIR = 'nodes';
/** nodes/<host>/files/: laid onto that node's root at every boot. */
export const FILES_DIR = 'files';
/** nodes/<host>/reset: wipe that node's writable layer at its next boot. */
export const RESET_FLAG = 'reset';
/** reports/<mac>.json: the nodes' boot reports (report.ts has the format). */
export const REPORT_DIR = 'reports';
/** The node list `builder stage` writes and `builder status` reads. */
export const NODES_LIST = 'nodes.list';
/** The dnsmasq tftp-root: what U-Boot loads. */
export const TFTP_DIR = 'tftp';
export const BOOT_SCRIPT = 'boot.scr.uimg';
export const KERNEL = 'vmlinuz';
export const INITRAMFS = 'initramfs.igz.uimg';

/** The path prefix of the master's files under the rrsync root (masterroot=), '' or ending in '/'. */
export function masterBase(masterRoot: string): string {
  return masterRoot ? `${masterRoot.replace(/\/+$/, '')}/` : '';
}

/** What a node fetches in one filtered rsync of the master root. */
export type FetchPart = 'table' | 'stamps' | 'approval' | 'node' | 'firststage';
export const ALL_PARTS: readonly FetchPart[] = ['table', 'stamps', 'approval', 'node', 'firststage'];

/**
 * rsync filter rules for the parts a node needs ('***': the directory and all below). One filter rather
 * than one rsync per file: rrsync refuses a missing path, a filter does not.
 */
export function fetchFilter(host: string | undefined, parts: readonly FetchPart[] = ALL_PARTS): string[] {
  const rules: string[] = [];
  if (parts.includes('table')) rules.push(`/${PARTITION_TABLE}`);
  if (parts.includes('stamps')) rules.push(`/${STAMP_DIR}/`, `/${STAMP_DIR}/*.stamp`, `/${STAMP_DIR}/*.stamp.sig`);
  if (parts.includes('approval')) {
    rules.push(`/${APPROVAL_REQUIRED}`);
    if (host) rules.push(`/${APPROVED_DIR}/`, `/${APPROVED_DIR}/${host}`);
  }
  if (parts.includes('node') && host) rules.push(`/${NODES_DIR}/`, `/${NODES_DIR}/${host}/***`);
  // the first-stage announcement (agent/contract/firststage.ts), a few hundred bytes
  if (parts.includes('firststage')) rules.push(`/${TFTP_DIR}/`, `/${TFTP_DIR}/${ANNOUNCEMENT_FILE}`);
  return [...rules.map((r) => `--include=${r}`), '--exclude=*'];
}

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
/**
 * nodes/<host>/enrolled: written by `builder enrol`; the node then fetches its private files (`files/` under its
 * own enrolment key's rrsync root, outside the master root) with its enrolment key. Public: it holds no secret.
 */
export const ENROLLED_FLAG = 'enrolled';
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
/**
 * Bounds of the small fetch: no file over 64 KiB (a stamp, a table, a flag, an announcement). A symlink comes as a
 * link, never as what it points at, and the agent's lstat/O_NOFOLLOW read refuses it by name (--no-links would drop
 * it without a word from a 3.2 client).
 */
export const SMALL_FETCH_OPTIONS: readonly string[] = ['--max-size=64K', '--info=skip1'];

/** The one per-node files fetch's bound: whatever the admin keeps for one node, but not a runaway tree. */
export const NODE_FILES_MAX = '64M';

export function fetchFilter(host: string | undefined, parts: readonly FetchPart[] = ALL_PARTS): string[] {
  const rules: string[] = [];
  if (parts.includes('table')) rules.push(`/${PARTITION_TABLE}`);
  if (parts.includes('stamps'))
    rules.push(
      `/${STAMP_DIR}/`,
      `/${STAMP_DIR}/*.stamp`,
      `/${STAMP_DIR}/*.stamp.sig`,
      `/${STAMP_DIR}/rootfs.manifest`,
      `/${STAMP_DIR}/rootfs.manifest.sig`,
    );
  if (parts.includes('approval')) {
    rules.push(`/${APPROVAL_REQUIRED}`);
    if (host) rules.push(`/${APPROVED_DIR}/`, `/${APPROVED_DIR}/${host}`);
  }
  // this node's flag, and its files/ folder as an empty directory: the files themselves (any size, links) come in
  // a second rsync (nodeFilesFetch) only when the folder is there, so this one can refuse links and big files
  if (parts.includes('node') && host)
    rules.push(
      `/${NODES_DIR}/`,
      `/${NODES_DIR}/${host}/`,
      `/${NODES_DIR}/${host}/${RESET_FLAG}`,
      `/${NODES_DIR}/${host}/${ENROLLED_FLAG}`,
      `/${NODES_DIR}/${host}/${FILES_DIR}/`,
    );
  // the first-stage announcement (agent/contract/firststage.ts), a few hundred bytes
  if (parts.includes('firststage')) rules.push(`/${TFTP_DIR}/`, `/${TFTP_DIR}/${ANNOUNCEMENT_FILE}`);
  return [...rules.map((r) => `--include=${r}`), '--exclude=*'];
}

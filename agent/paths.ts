// Every path the agent uses at run time, in one place (phases never import each other for them).
// What the initramfs carries at fixed places (keys, the module list) is in contract/initramfs.ts.

/** The agent's working directory in the initramfs; /run moves into the booted system at the handoff. */
export const RUN_DIR = '/run/clusterboot';
/** What the master phase fetched this boot (table, stamps, this node's flags and files). */
export const FETCH_DIR = `${RUN_DIR}/master`;
/** This node's per-node files as fetched (nodes/<host>/files on the master). */
export const FETCHED_FILES = `${FETCH_DIR}/node/files`;
/** The udhcpc hook (initramfs-skel/etc/udhcpc/default.script) writes the lease here as key=value lines. */
export const LEASE_FILE = `${RUN_DIR}/lease.env`;
/** The boot (firmware) partition, p1, while a phase reads or fills it. */
export const BOOT_MNT = `${RUN_DIR}/boot`;
/** Where the disk phase mounts p1 read-only to list it. */
export const P1_PROBE = `${RUN_DIR}/p1probe`;
/** The root partition, p2: slots/, current, previous, and what lives outside the slots. */
export const ROOT_MNT = `${RUN_DIR}/rootdisk`;
/** The union handed to switch_root. */
export const NEWROOT = '/newroot';
/** On the root partition, outside the slots: survives every resync and template change. */
export const KEPT = `${ROOT_MNT}/node-files`;
export const KEPT_ID = `${ROOT_MNT}/identity/machine-id`;
/** The SSH host keys the node made itself (identity born on the node): p2, outside the slots, never sent. */
export const KEPT_KEYS = `${ROOT_MNT}/identity/ssh`;
/** The enrolment key the node made itself (id_ed25519): p2, outside the slots; its public half goes in the report. */
export const KEPT_ENROL = `${ROOT_MNT}/identity/enrol`;
export const ENROL_KEY = `${KEPT_ENROL}/id_ed25519`;
/** A copy of it for the boot report (p2 is unmounted by then): removed as soon as the final report is sent. */
export const ENROL_REPORT_KEY = `${RUN_DIR}/enrol-report-key`;
/** The shared SSH connection's control socket. */
export const SOCKET = `${RUN_DIR}/ssh.sock`;
/** The report key's own connection, opened early so its handshake is off the boot path. */
export const REPORT_SOCKET = `${RUN_DIR}/report.sock`;
/** The boot report as written before it is sent. */
export const REPORT_FILE_DIR = `${RUN_DIR}/report`;
/** On p1: the files clusterboot itself keeps there (rsync of bootfs/ leaves clusterboot.* alone). */
export const MARKER = 'clusterboot.marker';
export const BOOT_STAMP = 'clusterboot.bootfs.stamp';
/**
 * On p1, during a bootfs update (plans/bootfs.ts): the new set is staged in this directory beside the old one,
 * then the journal (the new set's names, sizes and sha256) is written, then each file is switched into place.
 * A journal on p1 means an update was cut after its staging was complete: the next boot finishes it.
 */
export const BOOT_STAGING = '.cb-new';
export const BOOT_JOURNAL = 'clusterboot.bootfs.journal';

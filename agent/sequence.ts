// The whole boot on one screen: the phases in order. Start reading here.
// Each name is the same string in the file name, the console tag, break=, clusterboot.hang= and the report.
import type { Phase } from './phase.ts';
import { bootfs } from './phases/bootfs.ts';
import { disk } from './phases/disk.ts';
import { early } from './phases/early.ts';
import { firststage } from './phases/firststage.ts';
import { handoff } from './phases/handoff.ts';
import { identity } from './phases/identity.ts';
import { master } from './phases/master.ts';
import { modules } from './phases/modules.ts';
import { network } from './phases/network.ts';
import { overlay } from './phases/overlay.ts';
import { partitions } from './phases/partitions.ts';
import { root } from './phases/root.ts';

export const SEQUENCE: readonly Phase[] = [
  early, // kernel filesystems, /run, command line
  modules, // drivers for the NIC, the disk, the filesystems
  network, // DHCP lease, hostname, which host is the master
  master, // one SSH connection; wanted table, stamps, this node's flags (or offline)
  disk, // the disk is there and is ours (blank, marker, firmware, or wipe=<serial>); read ahead from `modules` on
  partitions, // table differs: refuse on doubt, else write, format what moved, fill p1, reboot
  bootfs, // bootfs stamp moved: rsync the firmware into p1, reboot
  root, // rootfs stamp moved: rsync a new slot (link-dest), flip `current`; else keep
  firststage, // commit point: the kernel + initramfs this boot runs become the disk's cached first stage
  overlay, // slot read-only under tmpfs / p3 / nothing
  identity, // this node's own files (hostname, machine-id, host keys) into the writable layer
  handoff, // move /dev /proc /sys /run, switch_root to /sbin/init
];

export const PHASE_NAMES: readonly string[] = SEQUENCE.map((p) => p.name);

// The whole boot on one screen: the phases in order. Start reading here.
import type { Phase } from './phase.ts';
import { early } from './phases/early.ts';
import { modules } from './phases/modules.ts';
import { network } from './phases/network.ts';

export const SEQUENCE: readonly Phase[] = [
  early,     // kernel filesystems, /run, command line
  modules,   // drivers for the NIC, the disk, the filesystems
  network,   // DHCP lease, hostname, which host is the master
];

export const PHASE_NAMES: readonly string[] = SEQUENCE.map((p) => p.name);

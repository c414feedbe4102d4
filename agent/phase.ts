// What a phase is: its needs, its look-ahead, and the facts and context the phases share.
import type { ManifestVerdict } from './contract/manifest.ts';
import type { Params } from './cmdline.ts';
import type { Link } from './net/link.ts';
import type { ToolName } from './sys/tools.ts';
import type { FirstStageReport } from './plans/firststage.ts';
import type { ApprovalState } from './contract/report.ts';

export interface Needs {
  /** External tools this phase runs: `builder pack` puts them and their libraries in the initramfs. */
  tools?: readonly ToolName[];
  /** Kernel modules this phase relies on: `builder pack` adds them to the default module list. */
  modules?: readonly string[];
}

export interface Lease {
  interface: string;
  ip: string;
  mask: string;
  router: string;
  dns: string;
  serverid: string;
  siaddr: string;
  hostname: string;
  domain: string;
  tftp: string;
  /** The masters in MASTERS_OPTION, as sent (comma-separated; '' when absent or not printable). */
  masters: string;
}

/** Facts gathered by earlier phases for later ones; every field starts empty. */
export interface Facts {
  kernel?: string;
  lease?: Lease;
  /** The masters to try, in order (masterip= / master= list, or from the lease). */
  masters?: string[];
  /** The master in use: the first candidate until the master phase connects, then the one that answered. */
  master?: string;
  /** Masters tried before the one that served this boot, each with why it was passed over. */
  masterFailover?: string[];
  hostname?: string;
  /** Where the hostname came from: a fixed DHCP lease, or hostname= on the command line. */
  hostnameFrom?: 'dhcp' | 'cmdline';
  /** The NIC's MAC address (lower case): the node's name in boot reports. */
  mac?: string;
  modulesLoaded?: string[];
  /** The shared SSH connection, once the master phase opened it. */
  link?: Link;
  /** False when the master did not answer: nothing on the disk may then be changed. */
  online?: boolean;
  /** What the master wants, as fetched (null: the master has none). */
  wanted?: MasterWants;
  disk?: DiskFacts;
  /** Path of the root slot to boot, once the root phase chose it. */
  rootSlot?: string;
  rootStale?: boolean;
  /** The stamp id of the root slot that was current before this boot (null: none). */
  rootBefore?: string | null;
  /** The overlay set up for the handoff, e.g. 'disk (overlay)'. */
  overlayMode?: string;
  /** A table change under approval mode (reported to the master). */
  approval?: ApprovalState;
  /** The recovery button was held: wipe the writable layer, resync the root in full. */
  recovery?: boolean;
  /** Alarms raised on a boot that still hands over (a writable layer left unused): the report and the LEDs say so. */
  alarms?: string[];
  /** The public halves of the host keys laid into the new root (the boot report carries them). */
  hostKeys?: string[];
  /** The public half of the node's enrolment key (the boot report carries it, for `builder enrol`). */
  enrolKey?: string;
  /** The master took the enrolment key this boot: the final report goes with it (proof, not a claim). */
  enrolReport?: boolean;
  bytesReceived?: number;
  /** The first stage this boot runs, what the master announces, and what the disk caches now. */
  firstStage?: FirstStageReport;
}

export interface StampFile {
  text: string;
  sig: string | null;
}

export interface MasterWants {
  table: string | null;
  rootfs: StampFile | null;
  bootfs: StampFile | null;
  /** nodes/<hostname>/reset exists on the master: wipe this node's writable layer. */
  reset: boolean;
  /** approval.required exists on the master: a table change waits for `builder approve`. */
  approvalRequired: boolean;
  /** approved/<hostname> on the master: the sha256 of the table this node may apply. */
  approvedHash: string | null;
  /** nodes/<hostname>/files/ exists on the master (fetched to FETCH_DIR/node/files). */
  nodeFiles: boolean;
  /** nodes/<hostname>/enrolled exists: `builder enrol` took this node's enrolment key; its private files await. */
  enrolled?: boolean;
  /** tftp/firststage.env: the first stage the master serves (null: none announced). */
  firstStage: string | null;
  /** stamps/rootfs.manifest (+ .sig): the content manifest header (agent/contract/manifest.ts). */
  rootfsManifest?: StampFile | null;
  /** What the node made of it (decideManifest), set by the master phase. */
  manifest?: ManifestVerdict;
}

export interface DiskFacts {
  device: string;
  sectors: number;
  serial: string;
  /** The disk had no partition table and nothing written at its start. */
  blank: boolean;
  /** sfdisk -d text, null when there is no table. */
  currentTable: string | null;
}

export interface Ctx {
  params: Params;
  facts: Facts;
  /** Look-aheads under way, by the name of the phase that will use them. */
  lookaheads?: Map<string, Promise<unknown>>;
}

/**
 * Read-only work a phase can start before its turn, while earlier phases wait on the wire (DHCP, the
 * SSH handshake): e.g. waiting for a USB disk and reading its table. It must change nothing; the phase
 * awaits the result when its turn comes, so its messages and failures still belong to it.
 */
export interface Lookahead {
  /** The phase after which it may start (its modules are loaded by then). */
  readonly after: string;
  run(ctx: Ctx): Promise<unknown>;
}

/** The look-ahead's result for a phase, or the same work done now when none was started. */
export function lookaheadResult<T>(ctx: Ctx, phase: string, now: () => Promise<T>): Promise<T> {
  const started = ctx.lookaheads?.get(phase) as Promise<T> | undefined;
  ctx.lookaheads?.delete(phase);
  return started ?? now();
}

export interface Phase {
  readonly name: string;
  readonly needs: Needs;
  readonly lookahead?: Lookahead;
  /** Does the work; returns a one-line summary for the console. */
  run(ctx: Ctx): Promise<string | void>;
}

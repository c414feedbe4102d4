// Approval mode: one wrong line in partitions.sfdisk must not wipe every node at its next reboot.
// When the master has approval.required, a node whose table would change asks first. Pure.

export type Gate =
  /** go ahead and repartition */
  | { action: 'proceed'; approved: boolean; reason: string }
  /** leave the disk alone and boot what is on it */
  | { action: 'boot-current'; reason: string }
  /** nothing bootable to fall back on: wait (polling the master) until approved */
  | { action: 'wait'; reason: string };

export interface GateFacts {
  /** approval.required on the master */
  required: boolean;
  /** approved/<host> on the master (null: none) */
  approvedHash: string | null;
  /** hash of the table the master wants */
  wantedHash: string;
  /** the disk has a partition table now */
  hasTable: boolean;
  /** the current table has a root partition (p2) the root phase can boot */
  hasRoot: boolean;
  hostname: string | null;
}

export function approvalGate(f: GateFacts): Gate {
  if (!f.required) return { action: 'proceed', approved: false, reason: 'approval mode is off' };
  if (!f.hasTable)
    return { action: 'proceed', approved: false, reason: 'the disk has no table: nothing on it to lose' };
  if (f.approvedHash !== null && f.approvedHash === f.wantedHash) {
    return {
      action: 'proceed',
      approved: true,
      reason: `the master approved this table (sha256 ${f.wantedHash.slice(0, 12)}…)`,
    };
  }
  const who = f.hostname ?? '<this node>';
  const stale = f.approvedHash !== null ? ' (the approval on the master is for another table)' : '';
  if (f.hasRoot) {
    return {
      action: 'boot-current',
      reason: `table change waiting for approval${stale}: run \`builder approve ${who}\` on the master; booting the current root meanwhile`,
    };
  }
  return {
    action: 'wait',
    reason: `table change waiting for approval${stale}: run \`builder approve ${who}\` on the master; the disk has no root to boot meanwhile`,
  };
}

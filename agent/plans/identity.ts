// Per-node identity: every node boots the same template, yet keeps its own hostname, machine-id,
// SSH host keys and admin files. Pure: which copies to make, given what exists.
// Sources, best first: the master's nodes/<host>/files/ (fetched this boot, and mirrored to the root
// partition outside the slots so an offline boot has it too); SSH host keys and a machine-id the node made
// once and keeps on the root partition (identity born on the node: the private halves never leave it); the
// hostname from DHCP. They are laid into the writable layer at every boot,
// so they survive `rsync --delete` of the template, template changes, tmpfs overlays and layer resets.

export interface IdentityFacts {
  online: boolean;
  /** the master has nodes/<host>/files/ (fetched) */
  masterFiles: boolean;
  /** the root partition keeps a mirror of them from an earlier boot */
  keptFiles: boolean;
  /** overlay mode: with 'none' the root is the shared slot itself and must not be written */
  overlay: 'disk' | 'tmpfs' | 'none';
  hostname: string | null;
  /** what the files that will be laid provide (the master's when online, else the kept mirror) */
  filesHave: { hostname: boolean; machineId: boolean; hostKeys: boolean };
  /** the node made a machine-id on an earlier boot */
  keptMachineId: boolean;
  /** the node made its SSH host keys on an earlier boot */
  keptHostKeys: boolean;
  /** newidentity: make the node's own machine-id and host keys again (an explicit request only) */
  renew: boolean;
}

export type IdentityStep =
  | { kind: 'mirror' } // master's files -> the kept mirror on the root partition (replacing it)
  | { kind: 'drop-mirror' } // the master has none for this node any more
  | { kind: 'lay-files' } // kept mirror -> new root
  | { kind: 'hostname'; name: string }
  | { kind: 'make-machine-id' } // once, kept on the root partition
  | { kind: 'lay-machine-id' }
  | { kind: 'make-host-keys' } // once (or on newidentity), kept on the root partition, never sent anywhere
  | { kind: 'lay-host-keys' }; // the kept keys into the new root; the template's own host keys hidden

export function planIdentity(f: IdentityFacts): { steps: IdentityStep[]; skipped: string | null } {
  const steps: IdentityStep[] = [];
  if (f.online && f.masterFiles) steps.push({ kind: 'mirror' });
  else if (f.online && !f.masterFiles && f.keptFiles) steps.push({ kind: 'drop-mirror' });
  const haveFiles = f.online ? f.masterFiles : f.keptFiles;
  if (f.overlay === 'none') {
    return { steps, skipped: 'overlay=none: the root is the shared slot, so no per-node file is written into it' };
  }
  if (haveFiles) steps.push({ kind: 'lay-files' });
  const files = haveFiles ? f.filesHave : { hostname: false, machineId: false, hostKeys: false };
  if (!files.hostname && f.hostname) steps.push({ kind: 'hostname', name: f.hostname });
  if (!files.machineId) {
    if (!f.keptMachineId || f.renew) steps.push({ kind: 'make-machine-id' });
    steps.push({ kind: 'lay-machine-id' });
  }
  // host keys from the master's files (made there by an older `builder stage --identity`) keep working
  if (!files.hostKeys) {
    if (!f.keptHostKeys || f.renew) steps.push({ kind: 'make-host-keys' });
    steps.push({ kind: 'lay-host-keys' });
  }
  return { steps, skipped: null };
}

/** A machine-id: 32 lowercase hex digits, never all zero (systemd treats that as unset). */
export function machineId(random: Uint8Array): string {
  const hex = Buffer.from(random.subarray(0, 16)).toString('hex').padEnd(32, '0');
  return /^0+$/.test(hex) ? `${hex.slice(0, 31)}1` : hex;
}

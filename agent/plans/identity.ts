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

export interface EnrolFacts {
  /** the node made its enrolment key on an earlier boot (kept on p2, outside the slots) */
  keptKey: boolean;
  /** newidentity: a new enrolment key too (the master must enrol it again) */
  renew: boolean;
  online: boolean;
  /** nodes/<host>/enrolled on the master: an enrolment key is enrolled for this host name */
  enrolled: boolean;
  transport: 'ssh' | 'rsyncd';
  overlay: 'disk' | 'tmpfs' | 'none';
  hostname: string | null;
  /** the masters in the order the node tries them (mirrors first, the primary last) */
  masters: readonly string[];
  /** the master that answered this boot (null offline) */
  servedBy: string | null;
}

export interface EnrolPlan {
  /** make the enrolment key (first boot, or newidentity) */
  make: boolean;
  /** 'fetch': get the private files with the key; 'unavailable': enrolled, but they cannot come this boot (lay the kept copy) */
  privateFiles: 'fetch' | 'none' | 'unavailable';
  /** why the private files cannot come, with the remedy (null: nothing to say) */
  note: string | null;
  /**
   * where the private files come from: the primary, the last of the masters. A mirror holds no secret (it pulls
   * the public tree only), so a node served by a mirror asks the primary for them over a connection of its own.
   */
  from: string | null;
  /** the boot report may go with the enrolment key: the master that took it is the one the report goes to */
  reportWithKey: boolean;
}

/**
 * The enrolment key and the private files. A key the node has just made cannot be the enrolled one, so it never
 * asks with it: the master would refuse it, and the kept copy of the private files serves until the admin enrols
 * the new key. The key lives on the root partition: with overlay=none the node writes nothing there.
 */
export function planEnrolment(f: EnrolFacts): EnrolPlan {
  const make = f.overlay !== 'none' && (!f.keptKey || f.renew);
  const host = f.hostname ?? '<host>';
  const none = { from: null, reportWithKey: false };
  if (!f.online || !f.enrolled) return { make, privateFiles: 'none', note: null, ...none };
  if (f.transport !== 'ssh')
    return {
      make,
      privateFiles: 'unavailable',
      note: 'this node is enrolled, but transport=rsyncd has no keys: its private files come only over SSH (the kept copy is laid)',
      ...none,
    };
  if (make)
    return {
      make,
      privateFiles: 'unavailable',
      note: `${f.renew ? 'newidentity made a new enrolment key' : 'this node has no enrolment key any more (a new card?) and made one'}; the master has enrolled another: check the fingerprint below and run \`builder enrol --replace ${host}\` on the master`,
      ...none,
    };
  if (!f.keptKey)
    return { make, privateFiles: 'unavailable', note: 'overlay=none: no enrolment key on this node', ...none };
  const from = f.masters.at(-1) ?? f.servedBy;
  return { make, privateFiles: 'fetch', note: null, from, reportWithKey: from !== null && from === f.servedBy };
}

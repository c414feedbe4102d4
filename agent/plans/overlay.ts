// The writable layer over the read-only root slot: which union driver, which mounts, in which order. Pure: the
// agent reads /proc/filesystems and the partition roles, then executes the steps (or prints describe() when dry).

import type { OverlayMode } from '../cmdline.ts';

// Layout:
//   /run/clusterboot/lower     read-only bind of the slot (slots/<id> on the root partition)
//   /run/clusterboot/rw        the writable layer: a tmpfs (aufs=tmpfs) or the ext4 writable partition (aufs=disk)
//   /run/clusterboot/rw/upper  the union's upper (changed files); rw/work is overlayfs's scratch directory
//   /newroot                   the union, handed to switch_root
// At the handoff the whole /run is moved into the new root, so lower and rw stay visible there.

/** Where the writable layer lives, as given by aufs= / overlay= on the kernel command line. */
export type { OverlayMode } from '../cmdline.ts';

/** What planOverlay needs to know, gathered by the agent. */
export interface OverlayFacts {
  mode: OverlayMode;
  /** /proc/filesystems text. */
  kernelFilesystems: string;
  /** E.g. /dev/vda3 when the partition table has a writable role. */
  writablePartition: string | null;
  /** Kernel parameter or master flag: start the writable layer empty. */
  reset: boolean;
  /** '/run/clusterboot/rootdisk/slots/<id>'. */
  slotPath: string;
}

/** One mount-time step; describe() renders it as the shell command it stands for. */
export type MountStep =
  | { kind: 'mount'; source: string; target: string; fstype: string; flags: string[]; data: string; describe(): string }
  | { kind: 'bind'; source: string; target: string; readonly: boolean; describe(): string }
  | { kind: 'mkdir'; path: string; describe(): string }
  | { kind: 'wipe'; path: string; describe(): string };

/** The root assembly plan, or why it cannot be built and what to do about it. */
export type OverlayPlan =
  | {
      ok: true;
      driver: 'overlay' | 'aufs' | 'none';
      steps: MountStep[];
      newRoot: '/newroot';
      lower: string;
      upper: string | null;
      message: string;
    }
  | { ok: false; error: string; remedy: string };

/** Fixed mount points of the layout above, shared with the code that reports or cleans them up. */
export const OVERLAY_PATHS = {
  lower: '/run/clusterboot/lower',
  rw: '/run/clusterboot/rw',
  upper: '/run/clusterboot/rw/upper',
  work: '/run/clusterboot/rw/work',
  newRoot: '/newroot',
} as const;

const { lower: LOWER, rw: RW, upper: UPPER, work: WORK, newRoot: NEWROOT } = OVERLAY_PATHS;

function q(s: string): string {
  if (s !== '' && /^[A-Za-z0-9._\/:=@%+,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function mount(source: string, target: string, fstype: string, flags: string[], data: string): MountStep {
  return {
    kind: 'mount',
    source,
    target,
    fstype,
    flags,
    data,
    describe: () => {
      const opts = [...flags, ...(data === '' ? [] : [data])].join(',');
      return ['mount', '-t', fstype, ...(opts === '' ? [] : ['-o', opts]), source, target].map(q).join(' ');
    },
  };
}

function bind(source: string, target: string, readonly: boolean): MountStep {
  return {
    kind: 'bind',
    source,
    target,
    readonly,
    // A bind mount only becomes read-only through a remount of the bind.
    describe: () =>
      `mount --bind ${q(source)} ${q(target)}` + (readonly ? ` && mount -o remount,bind,ro ${q(target)}` : ''),
  };
}

function mkdir(path: string): MountStep {
  return { kind: 'mkdir', path, describe: () => `mkdir -p ${q(path)}` };
}

function wipe(path: string): MountStep {
  // Everything inside, dot files included (overlayfs and aufs keep their whiteouts and metadata in them).
  return { kind: 'wipe', path, describe: () => `rm -rf -- ${q(path)}/* ${q(path)}/.[!.]* ${q(path)}/..?*` };
}

// The filesystem names of /proc/filesystems ("nodev\toverlay", "\text4").
function kernelFilesystems(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const name = fields[fields.length - 1];
    if (name) names.add(name);
  }
  return names;
}

/** Plan the mounts that build /newroot from a slot and the writable layer chosen by aufs=. */
export function planOverlay(f: OverlayFacts): OverlayPlan {
  if (!f.slotPath.startsWith('/')) {
    return {
      ok: false,
      error: `slot path ${JSON.stringify(f.slotPath)} is not absolute`,
      remedy: 'this is an agent bug: pass /run/clusterboot/rootdisk/slots/<id>',
    };
  }
  if (f.mode === 'none') {
    return {
      ok: true,
      driver: 'none',
      steps: [mkdir(NEWROOT), bind(f.slotPath, NEWROOT, false)],
      newRoot: NEWROOT,
      lower: f.slotPath,
      upper: null,
      message:
        `aufs=none: ${f.slotPath} is bound read-write at /newroot without a union; changes go straight into the slot ` +
        `and are lost at the next sync` +
        (f.reset ? ' (reset ignored: there is no writable layer to wipe)' : ''),
    };
  }

  const fs = kernelFilesystems(f.kernelFilesystems);
  const driver = fs.has('overlay') ? 'overlay' : fs.has('aufs') ? 'aufs' : null;
  if (driver === null) {
    return {
      ok: false,
      error:
        'the kernel offers neither overlay nor aufs (not in /proc/filesystems)' +
        (fs.has('overlayfs') ? "; it has the old pre-3.18 'overlayfs', which is not supported" : ''),
      remedy:
        'pack the overlay module (overlay.ko) into the initramfs and load it before this step, or use a kernel built ' +
        'with CONFIG_OVERLAY_FS=y; or boot with aufs=none to run the slot without a writable layer',
    };
  }
  if (f.mode === 'disk' && f.writablePartition === null) {
    return {
      ok: false,
      error: 'aufs=disk but the partition table has no writable (p3) partition',
      remedy: 'the partition table has no writable (p3) partition: add one or boot with aufs=tmpfs',
    };
  }

  const steps: MountStep[] = [mkdir(LOWER), bind(f.slotPath, LOWER, true), mkdir(RW)];
  let where: string;
  if (f.mode === 'disk' && f.writablePartition !== null) {
    steps.push(mount(f.writablePartition, RW, 'ext4', ['noatime'], ''));
    where = `${f.writablePartition} (kept across reboots${f.reset ? ', wiped now: reset' : ''})`;
    if (f.reset) {
      steps.push(wipe(UPPER));
      if (driver === 'overlay') steps.push(wipe(WORK));
    }
  } else {
    steps.push(mount('tmpfs', RW, 'tmpfs', [], 'mode=0755'));
    where = `tmpfs (in RAM, lost at reboot${f.reset ? '; reset needs no wipe, it starts empty' : ''})`;
  }
  steps.push(mkdir(UPPER));
  if (driver === 'overlay') steps.push(mkdir(WORK));
  steps.push(mkdir(NEWROOT));
  if (driver === 'overlay')
    steps.push(mount('overlay', NEWROOT, 'overlay', [], `lowerdir=${LOWER},upperdir=${UPPER},workdir=${WORK}`));
  else steps.push(mount('none', NEWROOT, 'aufs', [], `br=${UPPER}=rw:${LOWER}=ro`));

  return {
    ok: true,
    driver,
    steps,
    newRoot: NEWROOT,
    lower: LOWER,
    upper: UPPER,
    message:
      `${driver}: ${f.slotPath} read-only at ${LOWER} under a writable layer on ${where}, assembled at /newroot; ` +
      `/run moves into the new root at the handoff, so ${LOWER} and ${UPPER} stay visible there under /run/clusterboot`,
  };
}

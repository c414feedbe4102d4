// Sync slots: at most N nodes pull the root template at once. After a mass reboot every node wants its root at the
// same moment; N parallel rsyncs share the master's disk and link fairly, 60 do not (each crawls, timeouts fire).
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { checkCommandPaths, DEFAULT_RRSYNC, keyLine } from '../sshkeys.ts';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import {
  SYNC_SLOT_BUSY,
  leaseOverMessage,
  noAddressSlotMessage,
  noSlotMessage,
} from '../../agent/contract/syncslot.ts';

// The node key's forced command runs `<state-dir>/sync-slot N <state-dir>/slots rrsync -ro <master root>`: a root
// pull takes one of N flock(1)-locked slot files first (and one of its client address's), or is turned away with
// exit 75 (EX_TEMPFAIL) and a message the agent recognises and retries on; every other pull (stamps, the table,
// the node's files) never waits. The locks are open file descriptors (8 and 9) of the processes that run the pull:
// the script's shell waiting for timeout(1), timeout and rrsync. The python rrsync runs rsync with close_fds, so
// rsync itself holds none; rsync exiting ends rrsync, which ends timeout and the shell. However they end (crash,
// kill, dropped connection, the lease), the kernel drops the locks with the last of them: a slot never leaks.
//
// A slot is freed at the latest when its pull
// - stops making progress: the script hands the master's rsync its own `--timeout=STALL` (rrsync lets --timeout
//   through). rsync then sends keep-alives while it waits and exits when it could not write for STALL seconds:
//   a client that stops reading (hung, stopped, its disk stuck) or a transport that stopped taking data. A node that
//   lost power is seen the same way once the kernel gives up on the unanswered keep-alives (TCP retransmission,
//   about 15 minutes); without --timeout the master's rsync would wait for it for good. Why not timeout(1) or a
//   watchdog on the output: from outside the script cannot tell a slow client from a stuck one, rsync can.
// - outlives its lease: timeout(1) (coreutils) sends SIGKILL to the pull's process group (rrsync and its rsync)
//   LEASE seconds after the slot was taken. That is the hard cap, for whatever the stall timeout does not see (a
//   client that keeps the connection alive but never finishes, a hostile one that spelled its way around the
//   injected --timeout). SIGKILL, not SIGTERM first: on SIGTERM rsync blocks telling a stalled client about it.
// Why the limits are written into the script and not onto the key line: authkeys.ts recognises stage's own node
// line by its six words; a longer line would no longer replace the older one in place.

export const SYNC_SLOT_SCRIPT = 'sync-slot';
export const SLOTS_DIR = 'slots';
export const DEFAULT_STATE_DIR = '/var/lib/clusterboot';
export const DEFAULT_SYNC_SLOTS = 8;
export const MAX_SYNC_SLOTS = 1000;
/** An hour: a root of some 40 GB at 11 MB/s (a Pi 3's 100 Mbit/s); raise it for bigger roots or slower links. */
export const DEFAULT_SYNC_LEASE = 3600;
/** Five minutes without the master's rsync being able to write: longer than any SD card write stall. */
export const DEFAULT_SYNC_STALL = 300;
/** One root pull per node address: a node pulls its root once at a time (dry run, then the sync). */
export const DEFAULT_SYNC_PER_ADDRESS = 1;
/** A week: the longest lease or stall timeout the script takes. */
export const MAX_SYNC_SECONDS = 7 * 24 * 3600;

/** How long a root pull may hold its slot, and how many one client address may hold. 0 turns each off. */
export interface SyncSlotLimits {
  /** Seconds from taking the slot to SIGKILL of the pull (timeout(1)); 0: no lease. */
  leaseSeconds?: number;
  /** The master's rsync --timeout for a root pull (no write possible this long: it exits); 0: the client's. */
  stallSeconds?: number;
  /** At most this many root pulls at once from one client address (SSH_CONNECTION); 0: no per-address limit. */
  perAddress?: number;
}

function limitsOf(l: SyncSlotLimits): Required<SyncSlotLimits> {
  return {
    leaseSeconds: l.leaseSeconds ?? DEFAULT_SYNC_LEASE,
    stallSeconds: l.stallSeconds ?? DEFAULT_SYNC_STALL,
    perAddress: l.perAddress ?? DEFAULT_SYNC_PER_ADDRESS,
  };
}

/** Problems with the limits, named by their `builder stage` options ([]: none). */
export function syncSlotLimitProblems(l: SyncSlotLimits): string[] {
  const v = limitsOf(l);
  const out: string[] = [];
  const whole = (x: number, max: number) => Number.isInteger(x) && x >= 0 && x <= max;
  if (!whole(v.leaseSeconds, MAX_SYNC_SECONDS))
    out.push(
      `--sync-lease ${v.leaseSeconds} must be a whole number of seconds from 0 (no lease) to ${MAX_SYNC_SECONDS}`,
    );
  if (!whole(v.stallSeconds, MAX_SYNC_SECONDS))
    out.push(
      `--sync-stall ${v.stallSeconds} must be a whole number of seconds from 0 (the client's own) to ${MAX_SYNC_SECONDS}`,
    );
  if (!whole(v.perAddress, MAX_SYNC_SLOTS))
    out.push(
      `--sync-per-address ${v.perAddress} must be a whole number from 0 (no per-address limit) to ${MAX_SYNC_SLOTS}`,
    );
  return out;
}

// Why: POSIX sh, util-linux flock and coreutils (timeout, realpath, tr, date) only, so it runs under sshd's forced
// command on any Debian master without the builder installed. Failure to lock (no slots folder, no flock) lets the
// pull through with a warning: the limit is a courtesy to the master, and a broken limiter must not keep every node
// from syncing its root.
// Why a root pull is matched so broadly: rrsync strips ./ and //, treats a leading / as the top of its tree,
// expands globs, braces and backslashes, and follows symlinks to a directory inside the tree; each of these spells
// rootfs differently. The script errs on the side of a slot: any argument with a component rootfs or .. (rrsync
// refuses .. anyway), or a glob, brace or backslash in it, or one that resolves (realpath, symlinks followed) to a
// rootfs inside rrsync's tree, or --files-from (the client sends the names). The agent's root pull is
// `. rootfs/` or `. <masterroot>/rootfs/`. Not caught: a pull of the whole tree (`.`, `<masterroot>/`) that does
// not exclude rootfs: that is how the agent fetches its table and stamps, with a filter the script cannot see.
export function syncSlotScript(limits: SyncSlotLimits = {}): string {
  const problems = syncSlotLimitProblems(limits);
  if (problems.length) throw new Error(`syncSlotScript: ${problems.join('; ')}`);
  const v = limitsOf(limits);
  return `#!/bin/sh
# clusterboot sync-slot: generated by \`builder stage\`; do not edit (the next stage rewrites it).
# Forced command of the node key: sync-slot N SLOTDIR COMMAND [ARG...]
# A pull of the root template (rsync --server --sender ... . ARGS, an argument naming rootfs/ in any spelling)
# first takes, on fd 8, one of the per_addr files SLOTDIR/addr-<client address>-slot0.. and then, on fd 9, one of
# the N slot files SLOTDIR/slot0..slotN-1, each with flock -n, then runs COMMAND, which inherits both and so holds
# the slots until it exits. No slot free (of the address's, or of the N): a message on stderr and exit ${SYNC_SLOT_BUSY}; the node retries later.
# COMMAND gets rsync's own --timeout=stall (no write possible that long: the master's rsync exits) and runs under
# timeout(1): lease seconds after it took its slots, it and everything it started get SIGKILL.
# Any other command, and any command when N is 0, is exec'd at once, without a slot.
set -f
lease=${v.leaseSeconds}
stall=${v.stallSeconds}
per_addr=${v.perAddress}
if [ "$#" -lt 3 ]; then
  echo "clusterboot: sync-slot: usage: sync-slot N SLOTDIR COMMAND [ARG...]" >&2
  exit 64
fi
n=$1
dir=$2
shift 2
case $n in
  '' | *[!0-9]*) echo "clusterboot: sync-slot: N '$n' is not a number" >&2; exit 64 ;;
esac
# COMMAND's last argument, when it is an absolute path: rrsync's tree, against which symlinks are resolved
tree=
for a in "$@"; do tree=$a; done
case $tree in /*) ;; *) tree= ;; esac
tree_real=

# has_rootfs PATH: 0 when a /-separated component of PATH is rootfs, or .. (lexically unsound past a symlink)
has_rootfs() {
  ifs=$IFS
  IFS=/
  for c in $1; do
    case $c in
      rootfs | ..) IFS=$ifs; return 0 ;;
    esac
  done
  IFS=$ifs
  return 1
}

# is_root ARG: 0 when the pull argument ARG may name the root template or something in it
is_root() {
  case $1 in
    *\\\\* | *\\** | *\\?* | *\\[* | *\\{*) return 0 ;;
  esac
  if has_rootfs "$1"; then return 0; fi
  if [ -z "$tree_real" ]; then
    tree_real=-
    if [ -n "$tree" ] && [ -d "$tree" ] && command -v realpath >/dev/null 2>&1; then
      tree_real=$(realpath -- "$tree" 2>/dev/null) || tree_real=-
    fi
  fi
  [ "$tree_real" != - ] || return 1
  t=$tree_real
  [ "$t" != / ] || t=
  r=$(realpath -m -- "$t/$1" 2>/dev/null) || return 0
  case $r in
    "$t") return 1 ;;
    "$t"/*) has_rootfs "\${r#"$t"/}" ;;
    *) return 0 ;;
  esac
}

pull=0
k=0
dot=0
for w in \${SSH_ORIGINAL_COMMAND:-}; do
  k=$((k + 1))
  case $k:$w in
    1:rsync | 2:--server | 3:--sender) continue ;;
    1:* | 2:* | 3:*) break ;;
  esac
  if [ "$dot" = 1 ]; then
    if is_root "$w"; then pull=1; break; fi
  else
    case $w in
      .) dot=1 ;;
      --files-from | --files-from=*) pull=1; break ;;
    esac
  fi
done
if [ "$pull" = 0 ]; then exec "$@"; fi
if [ "$n" -eq 0 ]; then exec "$@"; fi

# take FD PREFIX COUNT: flock -n one of PREFIX0..PREFIX<COUNT-1> on fd FD. 0: taken; 1: all held; 2: none opened
take() {
  i=0
  opened=0
  while [ "$i" -lt "$3" ]; do
    if { eval "command exec $1>>\\"\\$2\\$i\\""; } 2>/dev/null; then
      opened=1
      if flock -n "$1"; then return 0; fi
      eval "exec $1>&-"
    fi
    i=$((i + 1))
  done
  if [ "$opened" = 1 ]; then return 1; fi
  return 2
}

if ! command -v flock >/dev/null 2>&1; then
  echo "clusterboot: sync-slot: flock (util-linux) is not installed; syncing without a slot" >&2
else
  # the client's address: the first word sshd puts in SSH_CONNECTION, without an IPv6 zone or an IPv4-mapped
  # prefix, and with nothing but [0-9a-fA-F.:] in a file name
  addr=
  if [ "$per_addr" -gt 0 ]; then
    addr=\${SSH_CONNECTION:-}
    addr=\${addr%% *}
    addr=\${addr%%[%]*}
    case $addr in ::ffff:*.*) addr=\${addr#::ffff:} ;; esac
    addr=$(printf '%s' "$addr" | tr -cd '0-9a-fA-F.:')
  fi
  if [ -n "$addr" ]; then
    take 8 "$dir/addr-$addr-slot" "$per_addr"
    case $? in
      1) echo "${noAddressSlotMessage('$per_addr', '$addr')}" >&2; exit ${SYNC_SLOT_BUSY} ;;
      2) echo "clusterboot: sync-slot: cannot open a per-address slot file in $dir; syncing without one" >&2 ;;
    esac
  fi
  take 9 "$dir/slot" "$n"
  case $? in
    1) echo "${noSlotMessage('$n')}" >&2; exit ${SYNC_SLOT_BUSY} ;;
    2) echo "clusterboot: sync-slot: cannot open a slot file in $dir; syncing without a slot" >&2 ;;
  esac
fi

# the master's rsync gets --timeout=stall as its last option (rsync: the last one wins), before the . that
# ends rrsync's options; a command without " . " is left alone
if [ "$stall" -gt 0 ]; then
  case \${SSH_ORIGINAL_COMMAND:-} in
    *' . '*)
      head=\${SSH_ORIGINAL_COMMAND%%' . '*}
      SSH_ORIGINAL_COMMAND="$head --timeout=$stall\${SSH_ORIGINAL_COMMAND#"$head"}"
      export SSH_ORIGINAL_COMMAND
      ;;
  esac
fi
if [ "$lease" -eq 0 ]; then exec "$@"; fi
if ! command -v timeout >/dev/null 2>&1; then
  echo "clusterboot: sync-slot: timeout (coreutils) is not installed; syncing without a lease" >&2
  exec "$@"
fi
# SIGKILL, to timeout's whole process group: on SIGTERM rsync first tries to tell its client, which blocks for as
# long as a stalled client does not read, and timeout stops watching once rrsync, its child, is gone. A read-only
# sender has nothing to clean up. Not exec'd: this shell waits to say why the pull ended (timeout dies by its own
# SIGKILL, so the lease shows as status 137 after lease seconds).
start=$(date +%s 2>/dev/null) || start=
timeout -s KILL "$lease" "$@"
st=$?
exec 8>&- 9>&-
if [ "$st" -eq 137 ] && [ -n "$start" ] && [ $(($(date +%s) - start)) -ge "$lease" ]; then
  echo "${leaseOverMessage('$lease')}" >&2
fi
exit "$st"
`;
}

/** `<state-dir>/sync-slot` and `<state-dir>/slots`. */
export function syncSlotPaths(stateDir: string): { script: string; slotsDir: string } {
  const base = stateDir.replace(/(.)\/+$/, '$1');
  return { script: `${base}/${SYNC_SLOT_SCRIPT}`, slotsDir: `${base}/${SLOTS_DIR}` };
}

function checkSlots(fn: string, slots: number): void {
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SYNC_SLOTS) {
    throw new Error(
      `${fn}: sync slots ${slots} must be a whole number from 1 to ${MAX_SYNC_SLOTS} (0, no limit, takes the plain rrsync line)`,
    );
  }
}

// Why: the node key's authorized_keys entry with the slot limiter in front of the read-only rrsync; the same paths
// check as authorizedKeysLine, because every word lands inside command="...".
export function syncSlotKeysLine(
  nodeKeyPub: string,
  masterRoot: string,
  stateDir: string,
  slots: number,
  rrsync = DEFAULT_RRSYNC,
): string {
  checkSlots('syncSlotKeysLine', slots);
  checkCommandPaths('syncSlotKeysLine', [
    ['masterRoot', masterRoot],
    ['stateDir', stateDir],
    ['rrsync', rrsync],
  ]);
  const p = syncSlotPaths(stateDir);
  return keyLine(
    `restrict,command="${p.script} ${slots} ${p.slotsDir} ${rrsync} -ro ${masterRoot}"`,
    nodeKeyPub,
    'syncSlotKeysLine',
  );
}

/** Problems that would stop installSyncSlot, found before anything is written ([]: none). */
export function syncSlotProblems(stateDir: string, limits: SyncSlotLimits = {}): string[] {
  const out: string[] = syncSlotLimitProblems(limits);
  try {
    checkCommandPaths('--state-dir', [['state dir', stateDir]]);
  } catch (e) {
    out.push((e as Error).message);
    return out;
  }
  const p = syncSlotPaths(stateDir);
  for (const [path, dir] of [
    [stateDir, true],
    [p.slotsDir, true],
    [p.script, false],
  ] as const) {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st && st.isDirectory() !== dir)
      out.push(`${path} exists and is not a ${dir ? 'directory' : 'regular file'}: move it away`);
  }
  return out;
}

// Why: the effect half: the script (0755, atomic: a node running the old one keeps reading the old inode) and the
// slots folder. Existing slot files are left alone: a running rsync holds its lock on one of them.
export function installSyncSlot(stateDir: string, limits: SyncSlotLimits = {}): { script: string; slotsDir: string } {
  const script = syncSlotScript(limits);
  const p = syncSlotPaths(stateDir);
  for (const d of [stateDir, p.slotsDir]) {
    if (!existsSync(d)) {
      mkdirSync(d, { recursive: true, mode: 0o755 });
      chmodSync(d, 0o755);
    }
  }
  writeAtomic(p.script, script, 0o755);
  return p;
}

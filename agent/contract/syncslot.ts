// The master's sync-slot limiter turns a root pull away with this exit status and stderr line; the agent
// recognises the line and asks again later (builder/master/syncslot.ts writes the script that prints it).

/** sysexits.h EX_TEMPFAIL: the exit status of a root pull turned away because every slot is taken. */
export const SYNC_SLOT_BUSY = 75;

/** The exact stderr line of a turned-away root pull; `slots` may be a shell expansion such as '$n'. */
export function noSlotMessage(slots: number | string): string {
  return `clusterboot: no sync slot free (${slots} in use); retry later`;
}

/**
 * The stderr line of a root pull turned away because its own address already holds `perAddress` slots (a node
 * that rebooted while its old pull is still being reaped, or several nodes behind one NAT address). It starts
 * like noSlotMessage's line on purpose: agents built before the per-address limit match it with NO_SYNC_SLOT and
 * retry, as they should.
 */
export function noAddressSlotMessage(perAddress: number | string, address: string): string {
  return `clusterboot: no sync slot free (${perAddress} in use) for ${address}, at most ${perAddress} per address; retry later`;
}

/** Matches noSlotMessage's line and noAddressSlotMessage's; group 1 is the number of slots. */
export const NO_SYNC_SLOT = /clusterboot: no sync slot free \((\d+) in use\)/;

/** Matches noAddressSlotMessage's line only; group 1 is the per-address limit, group 2 the address. */
export const NO_ADDRESS_SYNC_SLOT = /clusterboot: no sync slot free \((\d+) in use\) for (\S+), at most/;

/** The stderr line of a root pull the master stopped because it held its slot longer than the lease. */
export function leaseOverMessage(leaseSeconds: number | string): string {
  return `clusterboot: sync-slot: this root pull held its sync slot for the master's lease of ${leaseSeconds} s and was stopped; retry`;
}

/** Matches leaseOverMessage's line; group 1 is the lease in seconds. */
export const SYNC_LEASE_OVER =
  /clusterboot: sync-slot: this root pull held its sync slot for the master's lease of (\d+) s/;

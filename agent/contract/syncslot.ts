// The master's sync-slot limiter turns a root pull away with this exit status and stderr line; the agent
// recognises the line and asks again later (builder/master/syncslot.ts writes the script that prints it).

/** sysexits.h EX_TEMPFAIL: the exit status of a root pull turned away because every slot is taken. */
export const SYNC_SLOT_BUSY = 75;

/** The exact stderr line of a turned-away root pull; `slots` may be a shell expansion such as '$n'. */
export function noSlotMessage(slots: number | string): string {
  return `clusterboot: no sync slot free (${slots} in use); retry later`;
}

/** Matches noSlotMessage's line; group 1 is the number of slots. */
export const NO_SYNC_SLOT = /clusterboot: no sync slot free \((\d+) in use\)/;

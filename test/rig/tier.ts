// The long tier: boot cases that repeat what a CI case already shows through the same code path, with a plan
// unit test covering the difference (a table too large, say, beside the malformed one CI boots). CI leaves them
// out to keep its run under an hour; `scripts/test long` (CLUSTERBOOT_LONG=1) runs every boot test, these too.
// Skipped cases show in bun's summary as skips, so a CI log says how many were left to the long tier.
import { test } from 'bun:test';

export const LONG = process.env.CLUSTERBOOT_LONG === '1';

/** `test` under CLUSTERBOOT_LONG=1, `test.skip` otherwise. */
export const longTest: typeof test = LONG ? test : (test.skip as typeof test);

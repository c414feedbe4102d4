// Waiting for a sync slot: the back-off between asks, and the master's refusal as rsync reports it.
import { describe, expect, test } from 'bun:test';
import { syncSlotDelay } from '../../../../agent/plans/slots.ts';
import { NO_SYNC_SLOT } from '../../../../agent/contract/syncslot.ts';

describe('sync slots', () => {
  test('the delay doubles from 5 s to a 30 s ceiling, with jitter between half and one and a half', () => {
    expect(syncSlotDelay(0, 0.5)).toBe(5);
    expect(syncSlotDelay(1, 0.5)).toBe(10);
    expect(syncSlotDelay(20, 0.5)).toBe(30);
    expect(syncSlotDelay(0, 0)).toBe(2.5);
    expect(syncSlotDelay(20, 0.999999)).toBeLessThanOrEqual(45);
    expect(syncSlotDelay(3, Number.NaN)).toBe(30);
  });
  test('two nodes with different random draws wait different times', () => {
    expect(syncSlotDelay(2, 0.1)).not.toBe(syncSlotDelay(2, 0.9));
  });
  test("the master's refusal is recognised in rsync's stderr", () => {
    const stderr =
      'clusterboot: no sync slot free (2 in use); retry later\nrsync: connection unexpectedly closed (0 bytes received so far) [Receiver]';
    expect(NO_SYNC_SLOT.exec(stderr)?.[1]).toBe('2');
    expect(NO_SYNC_SLOT.test('rsync: connection unexpectedly closed')).toBe(false);
  });
});

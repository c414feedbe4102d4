// The GPIO v2 request layout and which LED pattern each boot event calls for.
import { describe, expect, test } from 'bun:test';
import {
  GPIO_V2_GET_LINE_IOCTL,
  GPIO_V2_LINE_SET_VALUES_IOCTL,
  lineRequest,
  patternFor,
} from '../../../../agent/devices/leds.ts';
import { ERROR_PATTERNS, FINAL_PATTERN, PHASE_PATTERNS } from '../../../../agent/plans/leds.ts';

const iowr = (type: number, nr: number, size: number) => ((3 << 30) | (size << 16) | (type << 8) | nr) >>> 0;

describe('GPIO v2 character device', () => {
  test('ioctl numbers follow _IOWR(0xB4, nr, size) for the 592-byte request and the 16-byte values', () => {
    expect(GPIO_V2_GET_LINE_IOCTL).toBe(iowr(0xb4, 0x07, 592));
    expect(GPIO_V2_LINE_SET_VALUES_IOCTL).toBe(iowr(0xb4, 0x0f, 16));
  });
  test('the line request carries the offsets, the consumer, the output flag and the line count', () => {
    const r = lineRequest([22, 23, 24], 'clusterboot');
    const v = new DataView(r.buffer);
    expect(r.length).toBe(592);
    expect([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)]).toEqual([22, 23, 24]);
    expect(Buffer.from(r.subarray(256, 267)).toString('latin1')).toBe('clusterboot');
    expect(v.getBigUint64(288, true)).toBe(8n);
    expect(v.getUint32(560, true)).toBe(3);
  });
});

describe('patterns follow the boot', () => {
  test('phases, sync progress, errors by code and the final state', () => {
    expect(patternFor({ kind: 'phase-start', phase: 'network', n: 3, of: 10 })).toBe(PHASE_PATTERNS.network ?? null);
    expect(patternFor({ kind: 'progress', phase: 'root', message: 'syncing', percent: 50 })?.name).toBe('syncing');
    expect(patternFor({ kind: 'fatal', phase: 'disk', error: 'x', next: 'y', code: 'disk-refused' })).toBe(
      ERROR_PATTERNS['disk-refused'],
    );
    expect(patternFor({ kind: 'fatal', phase: 'master', error: 'x', next: 'y', code: 'hostkey' })).toBe(
      ERROR_PATTERNS.hostkey,
    );
    expect(patternFor({ kind: 'fatal', phase: 'x', error: 'x', next: 'y' })).toBe(ERROR_PATTERNS.fatal);
    expect(patternFor({ kind: 'info', phase: 'handoff', message: 'switch_root /newroot /sbin/init' })).toBe(
      FINAL_PATTERN,
    );
    expect(patternFor({ kind: 'info', phase: 'root', message: 'anything' })).toBeNull();
  });
});

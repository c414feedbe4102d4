// The approval gate: a disk that has a table is repartitioned only with an approval of exactly that table.
import { describe, expect, test } from 'bun:test';
import { approvalGate, type GateFacts } from '../../../../agent/plans/approval.ts';
import { tableHash } from '../../../../agent/contract/approval.ts';

const T = 'label: dos\n\n/dev/mmcblk0p1 : start=2048, size=65536, type=c\n';
const gate = (over: Partial<GateFacts>) =>
  approvalGate({
    required: true,
    approvedHash: null,
    wantedHash: tableHash(T),
    hasTable: true,
    hasRoot: true,
    hostname: 'node1',
    ...over,
  });

describe('approval gate', () => {
  test('approval mode off: proceed, as without the feature', () => {
    expect(gate({ required: false })).toMatchObject({ action: 'proceed', approved: false });
  });
  test('a disk with a root and no approval is left alone and boots what it has', () => {
    const g = gate({});
    expect(g.action).toBe('boot-current');
    expect(g.reason).toContain('builder approve node1');
  });
  test('no root to fall back on: wait', () => {
    expect(gate({ hasRoot: false }).action).toBe('wait');
  });
  test('an approval for exactly this table lets it through', () => {
    expect(gate({ approvedHash: tableHash(T) })).toMatchObject({ action: 'proceed', approved: true });
  });
  test('an approval for another table does not, and says so', () => {
    const g = gate({ approvedHash: tableHash(`${T}# edited\n`) });
    expect(g.action).toBe('boot-current');
    expect(g.reason).toContain('another table');
  });
  test('a blank disk has nothing to lose: no approval needed', () => {
    expect(gate({ hasTable: false, hasRoot: false })).toMatchObject({ action: 'proceed', approved: false });
  });
  test('the hash is of the exact bytes (one changed character is another table)', () => {
    expect(tableHash(T)).toMatch(/^[0-9a-f]{64}$/);
    expect(tableHash(T)).not.toBe(tableHash(T.replace('65536', '65537')));
  });
  test('under random facts, nothing but proceed ever repartitions, and proceed needs the approval when a table exists', () => {
    for (let i = 0; i < 500; i++) {
      const f: GateFacts = {
        required: i % 2 === 0,
        approvedHash: [null, tableHash(T), 'ff'][i % 3] ?? null,
        wantedHash: tableHash(T),
        hasTable: i % 5 !== 0,
        hasRoot: i % 7 !== 0,
        hostname: i % 11 ? 'n' : null,
      };
      const g = approvalGate(f);
      if (g.action === 'proceed' && f.required && f.hasTable) expect(f.approvedHash).toBe(f.wantedHash);
      if (g.action === 'boot-current') expect(f.hasRoot).toBe(true);
    }
  });
});

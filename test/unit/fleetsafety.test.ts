// The decisions behind #7: approval before a table change, per-node identity, waiting for a sync slot.
import { describe, expect, test } from 'bun:test';
import { approvalGate, type GateFacts } from '../../agent/plans/approval.ts';
import { tableHash } from '../../agent/contract/approval.ts';
import { machineId, planIdentity, type IdentityFacts } from '../../agent/plans/identity.ts';
import { syncSlotDelay } from '../../agent/plans/slots.ts';
import { NO_SYNC_SLOT } from '../../agent/contract/syncslot.ts';
import { fetchFilter } from '../../agent/contract/tree.ts';

const T = 'label: dos\n\n/dev/mmcblk0p1 : start=2048, size=65536, type=c\n';
const gate = (over: Partial<GateFacts>) =>
  approvalGate({ required: true, approvedHash: null, wantedHash: tableHash(T), hasTable: true, hasRoot: true, hostname: 'node1', ...over });

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
        required: i % 2 === 0, approvedHash: [null, tableHash(T), 'ff'][i % 3] ?? null, wantedHash: tableHash(T),
        hasTable: i % 5 !== 0, hasRoot: i % 7 !== 0, hostname: i % 11 ? 'n' : null,
      };
      const g = approvalGate(f);
      if (g.action === 'proceed' && f.required && f.hasTable) expect(f.approvedHash).toBe(f.wantedHash);
      if (g.action === 'boot-current') expect(f.hasRoot).toBe(true);
    }
  });
});

const idf = (over: Partial<IdentityFacts>): IdentityFacts => ({
  online: true, masterFiles: true, keptFiles: false, overlay: 'disk', hostname: 'node1',
  filesHave: { hostname: true, machineId: true }, keptMachineId: false, ...over,
});
const kinds = (f: IdentityFacts) => planIdentity(f).steps.map((s) => s.kind);

describe('identity plan', () => {
  test('online with the master\'s files: mirror them, then lay them; nothing else when they hold hostname and machine-id', () => {
    expect(kinds(idf({}))).toEqual(['mirror', 'lay-files']);
  });
  test('offline: the kept mirror is laid, so the identity does not depend on the master being up', () => {
    expect(kinds(idf({ online: false, masterFiles: false, keptFiles: true }))).toEqual(['lay-files']);
  });
  test('no files anywhere: the DHCP hostname and a machine-id made once and kept', () => {
    expect(kinds(idf({ masterFiles: false, filesHave: { hostname: false, machineId: false } }))).toEqual(['hostname', 'make-machine-id', 'lay-machine-id']);
    expect(kinds(idf({ masterFiles: false, keptMachineId: true, filesHave: { hostname: false, machineId: false } }))).toEqual(['hostname', 'lay-machine-id']);
  });
  test('the master dropped this node\'s files: the kept mirror is forgotten too', () => {
    expect(kinds(idf({ masterFiles: false, keptFiles: true, filesHave: { hostname: false, machineId: false }, keptMachineId: true }))).toEqual(['drop-mirror', 'hostname', 'lay-machine-id']);
  });
  test('overlay=none writes nothing into the shared slot, and says why', () => {
    const p = planIdentity(idf({ overlay: 'none' }));
    expect(p.steps.map((s) => s.kind)).toEqual(['mirror']);
    expect(p.skipped).toContain('overlay=none');
  });
  test('a tmpfs overlay gets the same files laid as a persistent one', () => {
    expect(kinds(idf({ overlay: 'tmpfs' }))).toEqual(kinds(idf({ overlay: 'disk' })));
  });
  test('machine-ids: 32 hex digits, never all zero', () => {
    expect(machineId(new Uint8Array(16).fill(0xab))).toBe('ab'.repeat(16));
    expect(machineId(new Uint8Array(16))).toMatch(/^0{31}1$/);
  });
});

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
  test('the master\'s refusal is recognised in rsync\'s stderr', () => {
    const stderr = 'clusterboot: no sync slot free (2 in use); retry later\nrsync: connection unexpectedly closed (0 bytes received so far) [Receiver]';
    expect(NO_SYNC_SLOT.exec(stderr)?.[1]).toBe('2');
    expect(NO_SYNC_SLOT.test('rsync: connection unexpectedly closed')).toBe(false);
  });
});

describe('what the master phase fetches', () => {
  test('only the table, the stamps, the approval switch, and this node\'s approval and files', () => {
    const f = fetchFilter('node1');
    expect(f.at(-1)).toBe('--exclude=*');
    expect(f).toContain('--include=/nodes/node1/***');
    expect(f).toContain('--include=/approved/node1');
    expect(f.some((r) => r.includes('rootfs'))).toBe(false);
    expect(fetchFilter(undefined).some((r) => r.includes('nodes') || r.includes('approved'))).toBe(false);
  });
});

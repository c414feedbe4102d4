// The identity plan: each node gets its own hostname and machine-id, online or not.
import { describe, expect, test } from 'bun:test';
import { machineId, planIdentity, type IdentityFacts } from '../../../../agent/plans/identity.ts';

const idf = (over: Partial<IdentityFacts>): IdentityFacts => ({
  online: true,
  masterFiles: true,
  keptFiles: false,
  overlay: 'disk',
  hostname: 'node1',
  filesHave: { hostname: true, machineId: true },
  keptMachineId: false,
  ...over,
});
const kinds = (f: IdentityFacts) => planIdentity(f).steps.map((s) => s.kind);

describe('identity plan', () => {
  test("online with the master's files: mirror them, then lay them; nothing else when they hold hostname and machine-id", () => {
    expect(kinds(idf({}))).toEqual(['mirror', 'lay-files']);
  });
  test('offline: the kept mirror is laid, so the identity does not depend on the master being up', () => {
    expect(kinds(idf({ online: false, masterFiles: false, keptFiles: true }))).toEqual(['lay-files']);
  });
  test('no files anywhere: the DHCP hostname and a machine-id made once and kept', () => {
    expect(kinds(idf({ masterFiles: false, filesHave: { hostname: false, machineId: false } }))).toEqual([
      'hostname',
      'make-machine-id',
      'lay-machine-id',
    ]);
    expect(
      kinds(idf({ masterFiles: false, keptMachineId: true, filesHave: { hostname: false, machineId: false } })),
    ).toEqual(['hostname', 'lay-machine-id']);
  });
  test("the master dropped this node's files: the kept mirror is forgotten too", () => {
    expect(
      kinds(
        idf({
          masterFiles: false,
          keptFiles: true,
          filesHave: { hostname: false, machineId: false },
          keptMachineId: true,
        }),
      ),
    ).toEqual(['drop-mirror', 'hostname', 'lay-machine-id']);
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

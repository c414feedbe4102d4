// The identity plan: each node gets its own hostname and machine-id, online or not.
import { describe, expect, test } from 'bun:test';
import {
  machineId,
  planEnrolment,
  planIdentity,
  type EnrolFacts,
  type IdentityFacts,
} from '../../../../agent/plans/identity.ts';

const idf = (over: Partial<IdentityFacts>): IdentityFacts => ({
  online: true,
  masterFiles: true,
  keptFiles: false,
  overlay: 'disk',
  hostname: 'node1',
  filesHave: { hostname: true, machineId: true, hostKeys: true },
  keptMachineId: false,
  keptHostKeys: false,
  renew: false,
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
    const none = { hostname: false, machineId: false, hostKeys: false };
    expect(kinds(idf({ masterFiles: false, filesHave: none }))).toEqual([
      'hostname',
      'make-machine-id',
      'lay-machine-id',
      'make-host-keys',
      'lay-host-keys',
    ]);
    expect(kinds(idf({ masterFiles: false, keptMachineId: true, keptHostKeys: true, filesHave: none }))).toEqual([
      'hostname',
      'lay-machine-id',
      'lay-host-keys',
    ]);
  });
  test("the master dropped this node's files: the kept mirror is forgotten too", () => {
    expect(
      kinds(
        idf({
          masterFiles: false,
          keptFiles: true,
          filesHave: { hostname: false, machineId: false, hostKeys: false },
          keptMachineId: true,
          keptHostKeys: true,
        }),
      ),
    ).toEqual(['drop-mirror', 'hostname', 'lay-machine-id', 'lay-host-keys']);
  });
  test('overlay=none writes nothing into the shared slot, and says why', () => {
    const p = planIdentity(idf({ overlay: 'none' }));
    expect(p.steps.map((s) => s.kind)).toEqual(['mirror']);
    expect(p.skipped).toContain('overlay=none');
  });
  test('a tmpfs overlay gets the same files laid as a persistent one', () => {
    expect(kinds(idf({ overlay: 'tmpfs' }))).toEqual(kinds(idf({ overlay: 'disk' })));
  });
  test('identity born on the node: host keys made once and kept; the same keys every boot, online or not, any overlay', () => {
    const none = { hostname: true, machineId: true, hostKeys: false };
    expect(kinds(idf({ filesHave: none }))).toEqual(['mirror', 'lay-files', 'make-host-keys', 'lay-host-keys']);
    for (const online of [true, false])
      for (const overlay of ['disk', 'tmpfs'] as const) {
        const k = kinds(idf({ online, overlay, keptFiles: true, filesHave: none, keptHostKeys: true }));
        expect(k).toContain('lay-host-keys');
        expect(k).not.toContain('make-host-keys');
      }
  });
  test("the master's host keys (files/ from an older stage --identity) win: the node makes none", () => {
    expect(kinds(idf({ keptHostKeys: false }))).not.toContain('make-host-keys');
    expect(kinds(idf({ keptHostKeys: false }))).not.toContain('lay-host-keys');
  });
  test('newidentity makes new host keys and a new machine-id, and only then', () => {
    const none = { hostname: true, machineId: false, hostKeys: false };
    const kept = { filesHave: none, keptHostKeys: true, keptMachineId: true };
    expect(kinds(idf({ ...kept }))).toEqual(['mirror', 'lay-files', 'lay-machine-id', 'lay-host-keys']);
    expect(kinds(idf({ ...kept, renew: true }))).toEqual([
      'mirror',
      'lay-files',
      'make-machine-id',
      'lay-machine-id',
      'make-host-keys',
      'lay-host-keys',
    ]);
    // a machine-id from the master's files is the admin's: newidentity does not replace it
    expect(kinds(idf({ ...kept, renew: true, filesHave: { ...none, machineId: true } }))).not.toContain(
      'make-machine-id',
    );
  });
  test('machine-ids: 32 hex digits, never all zero', () => {
    expect(machineId(new Uint8Array(16).fill(0xab))).toBe('ab'.repeat(16));
    expect(machineId(new Uint8Array(16))).toMatch(/^0{31}1$/);
  });
});

// #14 item 2: the enrolment key is made once on the node; the private files come only with the enrolled key
const ef = (over: Partial<EnrolFacts>): EnrolFacts => ({
  keptKey: true,
  renew: false,
  online: true,
  enrolled: true,
  transport: 'ssh',
  overlay: 'disk',
  hostname: 'node1',
  masters: ['10.77.0.1'],
  servedBy: '10.77.0.1',
  ...over,
});

describe('enrolment plan', () => {
  test('first boot: make the key; not enrolled yet, so nothing to fetch and nothing to say', () => {
    expect(planEnrolment(ef({ keptKey: false, enrolled: false }))).toEqual({
      make: true,
      privateFiles: 'none',
      note: null,
      from: null,
      reportWithKey: false,
    });
  });
  test('enrolled with the kept key: fetch the private files with it from the master; the key stays; the report goes with it', () => {
    expect(planEnrolment(ef({}))).toEqual({
      make: false,
      privateFiles: 'fetch',
      note: null,
      from: '10.77.0.1',
      reportWithKey: true,
    });
  });
  // #19: a mirror holds no secret
  test('served by a mirror: the private files come from the primary (the last master); the report goes to the mirror without the key', () => {
    const m = planEnrolment(ef({ masters: ['10.77.0.2', '10.77.0.1'], servedBy: '10.77.0.2' }));
    expect([m.privateFiles, m.from, m.reportWithKey]).toEqual(['fetch', '10.77.0.1', false]);
    // failed over to the primary: files and report both there
    const f = planEnrolment(ef({ masters: ['10.77.0.2', '10.77.0.1'], servedBy: '10.77.0.1' }));
    expect([f.from, f.reportWithKey]).toEqual(['10.77.0.1', true]);
    // no list (one master from the lease): the one that served
    const one = planEnrolment(ef({ masters: [], servedBy: '10.0.2.2' }));
    expect([one.from, one.reportWithKey]).toEqual(['10.0.2.2', true]);
  });
  test('offline or not enrolled: no fetch, and the kept copy is not held back', () => {
    expect(planEnrolment(ef({ online: false })).privateFiles).toBe('none');
    expect(planEnrolment(ef({ enrolled: false })).privateFiles).toBe('none');
  });
  test('newidentity makes a new key, which the master cannot have enrolled: no fetch, the kept copy, the remedy', () => {
    const p = planEnrolment(ef({ renew: true }));
    expect(p.make).toBe(true);
    expect(p.privateFiles).toBe('unavailable');
    expect(p.note).toContain('builder enrol --replace node1');
  });
  test('enrolled, but the key is gone (a new card): a new key, no fetch with it, the remedy', () => {
    const p = planEnrolment(ef({ keptKey: false }));
    expect(p).toMatchObject({ make: true, privateFiles: 'unavailable' });
    expect(p.note).toContain('new card');
  });
  test('transport=rsyncd carries no keys: enrolled private files are not fetched, the kept copy is laid', () => {
    const p = planEnrolment(ef({ transport: 'rsyncd' }));
    expect(p.privateFiles).toBe('unavailable');
    expect(p.note).toContain('rsyncd');
  });
  test('overlay=none writes nothing on the root partition: no key is made', () => {
    expect(planEnrolment(ef({ overlay: 'none', keptKey: false, enrolled: false })).make).toBe(false);
    expect(planEnrolment(ef({ overlay: 'none', keptKey: false })).privateFiles).toBe('unavailable');
  });
});

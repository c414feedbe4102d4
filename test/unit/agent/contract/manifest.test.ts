import { describe, expect, test } from 'bun:test';
import { generateKeyPairSync, sign } from 'node:crypto';
import {
  checkFileList,
  decideManifest,
  escapeField,
  parseFileList,
  parseManifest,
  planDelta,
  planVerify,
  renderFileList,
  renderManifest,
  sha256hex,
  unescapeField,
  type Entry,
  type ManifestHeader,
  type Observed,
  type StateFacts,
} from '../../../../agent/contract/manifest.ts';

const H = (c: string) => c.repeat(64);
const dir = (path: string, mode = 0o755): Entry => ({
  path,
  type: 'd',
  mode,
  uid: 0,
  gid: 0,
  size: 0,
  sha256: null,
  rdev: null,
  target: null,
  xattrs: [],
});
const file = (path: string, sha: string, size = 3, extra: Partial<Entry> = {}): Entry => ({
  ...dir(path, 0o644),
  type: 'f',
  size,
  sha256: sha,
  ...extra,
});
const link = (path: string, target: string): Entry => ({ ...dir(path, 0o777), type: 'l', target });

const TREE: Entry[] = [
  file('etc/passwd', H('a')),
  dir('.'),
  dir('etc'),
  link('bin/sh', 'busybox'),
  dir('bin'),
  file('bin/busybox', H('b'), 900, { mode: 0o4755, xattrs: [['security.capability', '0100']] }),
  { ...dir('dev/null', 0o666), type: 'c', rdev: '1,3' },
  dir('dev'),
  file('etc/we ird\nname%,=', H('c'), 1),
];

describe('file list', () => {
  test('escaping round-trips every byte and keeps fields space-free', () => {
    const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
    const f = escapeField(all);
    expect(f).not.toMatch(/[\s,=]/);
    expect(unescapeField(f)).toBe(all);
    expect(escapeField('-')).toBe('%2D');
    expect(unescapeField('a b')).toBeNull();
    expect(unescapeField('%zz')).toBeNull();
  });

  test('render sorts (root first) and parse gives back the same entries', () => {
    const text = renderFileList(TREE);
    const lines = text.split('\n');
    expect(lines[0]).toBe('clusterboot-files 1');
    expect(lines[1]).toBe('d 0755 0 0 0 - - . - -');
    expect(text).toContain(`f 4755 0 0 900 ${H('b')} - bin/busybox - security.capability=0100\n`);
    expect(text).toContain('l 0777 0 0 0 - - bin/sh busybox -\n');
    expect(text).toContain('c 0666 0 0 0 - 1,3 dev/null - -\n');
    expect(text).toContain('etc/we%20ird%0Aname%25%2C%3D');
    const p = parseFileList(text);
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    const byPath = (a: Entry, b: Entry) => (a.path < b.path ? -1 : 1);
    expect([...p.entries].sort(byPath)).toEqual([...TREE].sort(byPath));
  });

  test('parse refuses what a hostile or rotted list could hold', () => {
    const good = renderFileList(TREE);
    const bad: Array<[string, string, RegExp]> = [
      ['escape', good.replace('bin/sh busybox', 'bin/../../x busybox'), /'\.\.' component/],
      ['absolute', good.replace(' bin/sh ', ' /bin/sh '), /not a relative path/],
      ['duplicate', good.replace('bin/sh busybox', 'bin/busybox busybox'), /out of order or duplicate/],
      ['orphan', good.replace('dev/null', 'nodir/null'), /not a directory|out of order/],
      ['no sha', good.replace(` ${H('a')} `, ' - '), /sha256/],
      ['mode', good.replace('f 4755', 'f 04755'), /fields|mode/],
      ['truncated', good.slice(0, -3), /newline/],
      ['not root first', good.replace('d 0755 0 0 0 - - . - -\n', ''), /root directory/],
      ['header', good.replace('clusterboot-files 1', 'clusterboot-files 2'), /not a clusterboot file list/],
    ];
    for (const [what, text, re] of bad) {
      const p = parseFileList(text);
      expect({ what, ok: p.ok }).toEqual({ what, ok: false });
      if (!p.ok) expect(p.error).toMatch(re);
    }
  });
});

const HEADER: ManifestHeader = {
  name: 'rootfs',
  id: '7-20261202T080000Z',
  seq: 7,
  files: { sha256: H('d'), bytes: 1234, entries: 9 },
  table: H('e'),
  approval: false,
  reset: ['node2', 'node1'],
};

describe('manifest header', () => {
  test('renders, sums and parses back (reset sorted)', () => {
    const text = renderManifest(HEADER);
    expect(text).toContain('\nreset node1\nreset node2\nsum ');
    const p = parseManifest(text);
    expect(p).toEqual({ ok: true, header: { ...HEADER, reset: ['node1', 'node2'] } });
  });

  test('a flipped byte fails the sum (integrity without a signature)', () => {
    const text = renderManifest(HEADER);
    const rot = text.replace('approval off', 'approval on!'.slice(0, 11));
    expect(rot).not.toBe(text);
    const p = parseManifest(rot);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.error).toMatch(/sum does not match/);
    const cut = parseManifest(text.slice(0, text.indexOf('sum ')));
    expect(cut.ok).toBe(false);
  });

  const keys = generateKeyPairSync('ed25519');
  const pub = keys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const text = renderManifest(HEADER);
  const sig = sign(null, Buffer.from(text), keys.privateKey).toString('base64');
  const state: StateFacts = { tableSha256: H('e'), approvalRequired: false, reset: true, host: 'node1' };
  const stamp = { id: HEADER.id, seq: 7 };

  test('decideManifest: signed and matching state is used', () => {
    const v = decideManifest({ text, sig, publicKeyPem: pub, stamp, state });
    expect(v.ok && v.stateMismatch).toEqual([]);
  });

  test('decideManifest: unsigned, wrong key, other stamp, missing are refused', () => {
    const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const r = (f: Partial<Parameters<typeof decideManifest>[0]>) =>
      decideManifest({ text, sig, publicKeyPem: pub, stamp, state, ...f });
    const reason = (v: ReturnType<typeof decideManifest>) => (v.ok ? 'ok' : v.reason);
    expect(reason(r({ sig: null }))).toMatch(/unsigned/);
    expect(reason(r({ publicKeyPem: other }))).toMatch(/does not verify/);
    expect(reason(r({ stamp: { id: '8-20261202T090000Z', seq: 8 } }))).toMatch(/manifest is for 7-/);
    expect(reason(r({ text: null }))).toMatch(/no rootfs manifest/);
    // no key: the signature is not asked for, the sum still is
    expect(r({ sig: null, publicKeyPem: null }).ok).toBe(true);
    expect(reason(r({ publicKeyPem: null, text: text.replace('seq 7', 'seq 8') }))).toMatch(/sum/);
  });

  test('decideManifest: a table, approval switch or reset flag the manifest does not carry is a mismatch', () => {
    const m = (s: Partial<typeof state>) => {
      const v = decideManifest({ text, sig, publicKeyPem: pub, stamp, state: { ...state, ...s } });
      return v.ok ? v.stateMismatch : ['refused'];
    };
    expect(m({ tableSha256: H('f') })[0]).toMatch(/partitions.sfdisk has sha256 ffff/);
    expect(m({ tableSha256: null })[0]).toMatch(/partitions.sfdisk is missing/);
    expect(m({ approvalRequired: true })[0]).toMatch(/approval.required is set/);
    expect(m({ host: 'node3' })[0]).toMatch(/reset flag for node3 is set, the manifest does not carry it/);
    expect(m({ reset: false })[0]).toMatch(/reset flag for node1 is absent, the manifest carries it/);
    expect(m({ host: 'node3', reset: false })).toEqual([]);
  });
});

describe('checkFileList', () => {
  test('size, sha256 and entry count must match the header', () => {
    const text = renderFileList(TREE);
    const bytes = Buffer.from(text, 'latin1');
    const h = { ...HEADER, files: { sha256: sha256hex(bytes), bytes: bytes.length, entries: TREE.length } };
    expect(checkFileList(bytes, h).ok).toBe(true);
    const flipped = Buffer.from(bytes);
    flipped[40] = (flipped[40] as number) ^ 1;
    expect(checkFileList(flipped, h)).toEqual({ ok: false, error: 'the file list does not match the manifest sha256' });
    expect(checkFileList(bytes.subarray(1), h).ok).toBe(false);
    expect(checkFileList(bytes, { ...h, files: { ...h.files, entries: 3 } }).ok).toBe(false);
  });
});

const observed = (e: Entry, ino: number): Observed => ({
  type: e.type,
  mode: e.mode,
  uid: e.uid,
  gid: e.gid,
  size: e.size,
  rdev: e.rdev,
  target: e.target,
  xattrs: e.xattrs,
  ino,
});

describe('planVerify', () => {
  const seen = () => new Map(TREE.map((e, i) => [e.path, observed(e, 100 + i)]));

  test('a fresh tree: every regular file is hashed, metadata matches', () => {
    const p = planVerify(TREE, seen(), null);
    expect(p.problems).toEqual([]);
    expect(p.hash.sort()).toEqual(['bin/busybox', 'etc/passwd', 'etc/we ird\nname%,=']);
    expect(p.trusted).toBe(0);
  });

  test('a file hard-linked to the same path of the verified previous slot with the same sha256 is trusted', () => {
    const s = seen();
    const prevEntries = new Map(TREE.map((e) => [e.path, e]));
    prevEntries.set('etc/passwd', file('etc/passwd', H('9'))); // changed since: same inode would be a lie
    const ino = new Map([
      ['bin/busybox', s.get('bin/busybox')?.ino as number],
      ['etc/passwd', s.get('etc/passwd')?.ino as number],
      ['etc/we ird\nname%,=', 5], // another inode: received anew
    ]);
    const p = planVerify(TREE, s, { entries: prevEntries, ino });
    expect(p.trusted).toBe(1);
    expect(p.hash.sort()).toEqual(['etc/passwd', 'etc/we ird\nname%,=']);
  });

  test('missing, extra, and every metadata difference is a problem', () => {
    const s = seen();
    s.delete('etc/passwd');
    s.set('etc/shadow', observed(file('etc/shadow', H('0')), 1));
    const bb = s.get('bin/busybox') as Observed;
    s.set('bin/busybox', { ...bb, mode: 0o755, uid: 1000, size: 901, xattrs: [] });
    s.set('bin/sh', { ...(s.get('bin/sh') as Observed), target: '/evil' });
    s.set('dev/null', { ...(s.get('dev/null') as Observed), rdev: '8,0' });
    s.set('etc', { ...(s.get('etc') as Observed), type: 'l', target: '/' });
    const p = planVerify(TREE, s, null).problems.join('\n');
    expect(p).toContain('"etc/passwd" is missing');
    expect(p).toContain('"etc/shadow" is not in the manifest');
    expect(p).toContain('"bin/busybox" has mode 755, the manifest says 4755');
    expect(p).toContain('"bin/busybox" is owned by 1000:0');
    expect(p).toContain('"bin/busybox" is 901 bytes');
    expect(p).toContain('"bin/busybox" has other xattrs');
    expect(p).toContain('"bin/sh" points to "/evil"');
    expect(p).toContain('"dev/null" is device 8,0');
    expect(p).toContain('"etc" is type l, the manifest says d');
  });
});

describe('planDelta', () => {
  test('lists the changed and new paths plus every directory, and counts the changed bytes', () => {
    const prev = new Map(TREE.map((e) => [e.path, e]));
    const next = TREE.map((e) => (e.path === 'etc/passwd' ? { ...e, sha256: H('7'), size: 1 << 20 } : e));
    next.push(file('etc/new', H('8'), 10));
    const d = planDelta(next, prev);
    expect(d.paths.sort()).toEqual(['.', 'bin', 'dev', 'etc', 'etc/new', 'etc/passwd']);
    expect(d.bytes).toBe((1 << 20) + 10);
    const chmod = TREE.map((e) => (e.path === 'bin/sh' ? { ...e, target: 'other' } : e));
    expect(planDelta(chmod, prev).paths).toContain('bin/sh');
  });
});

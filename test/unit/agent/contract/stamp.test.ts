import { describe, expect, test } from 'bun:test';
import { generateKeyPairSync, sign } from 'node:crypto';
import { decideStamp, newStamp, parseStamp, renderStamp, verifyStamp } from '../../../../agent/contract/stamp.ts';
import type { Stamp } from '../../../../agent/contract/stamp.ts';
import { rng } from '../../../fixtures/rng.ts';

const TEXT = 'clusterboot-stamp 1\nname rootfs\nseq 17\nid 17-20261125T110000Z\ncreated 2026-11-25T11:00:00.000Z\n';
const S17: Stamp = { name: 'rootfs', seq: 17, id: '17-20261125T110000Z', created: '2026-11-25T11:00:00.000Z' };
const S12: Stamp = { name: 'rootfs', seq: 12, id: '12-20260101T000000Z', created: '2026-01-01T00:00:00.000Z' };
const S18: Stamp = { name: 'rootfs', seq: 18, id: '18-20261126T000000Z', created: '2026-11-26T00:00:00.000Z' };

function keys() {
  const k = generateKeyPairSync('ed25519');
  return {
    priv: k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    pub: k.publicKey.export({ type: 'spki', format: 'pem' }) as string,
  };
}
const K = keys();
const OTHER = keys();
const sigOf = (text: string, priv = K.priv) => sign(null, Buffer.from(text), priv).toString('base64');

describe('parseStamp / renderStamp', () => {
  test('parses the documented example', () => {
    expect(parseStamp(TEXT)).toEqual({ ok: true, stamp: S17 });
  });
  test('round trip', () => {
    expect(renderStamp(S17)).toBe(TEXT);
    for (const s of [
      S12,
      S18,
      newStamp('bootfs', 1, new Date(0)),
      newStamp('rootfs', Number.MAX_SAFE_INTEGER, new Date()),
    ]) {
      expect(parseStamp(renderStamp(s))).toEqual({ ok: true, stamp: s });
    }
  });
  test('newStamp builds the id from seq and the UTC clock', () => {
    expect(newStamp('rootfs', 17, new Date('2026-11-25T11:00:00.123Z'))).toEqual({
      ...S17,
      created: '2026-11-25T11:00:00.123Z',
    });
  });
  test('renderStamp refuses to write an invalid stamp', () => {
    expect(() => renderStamp({ ...S17, id: '18-x' })).toThrow(/id/);
    expect(() => renderStamp({ ...S17, seq: 0, id: '0-x' })).toThrow(/seq/);
  });

  const bad: Array<[string, string, RegExp]> = [
    ['empty', '', /empty/],
    ['wrong header', TEXT.replace('clusterboot-stamp 1', 'clusterboot-stump 1'), /not a clusterboot stamp/],
    ['wrong version', TEXT.replace('clusterboot-stamp 1', 'clusterboot-stamp 2'), /unsupported stamp version '2'/],
    ['missing field', TEXT.replace('created 2026-11-25T11:00:00.000Z\n', ''), /missing field 'created'/],
    ['duplicate field', TEXT.replace('seq 17\n', 'seq 17\nseq 17\n'), /duplicate field 'seq'/],
    ['unknown field', TEXT.replace('seq 17\n', 'seq 17\nfoo bar\n'), /unknown field 'foo'/],
    [
      'out of order',
      'clusterboot-stamp 1\nseq 17\nname rootfs\nid 17-a\ncreated 2026-11-25T11:00:00.000Z\n',
      /out of order/,
    ],
    ['bad name', TEXT.replace('name rootfs', 'name homefs'), /neither rootfs nor bootfs/],
    ['seq zero', TEXT.replace('seq 17', 'seq 0').replace('id 17-', 'id 0-'), /positive integer/],
    ['seq negative', TEXT.replace('seq 17', 'seq -1'), /positive integer/],
    ['seq leading zero', TEXT.replace('seq 17', 'seq 017'), /positive integer/],
    ['seq fractional', TEXT.replace('seq 17', 'seq 1.5'), /positive integer/],
    [
      'seq unsafe',
      TEXT.replace('seq 17', 'seq 9007199254740993').replace('id 17-', 'id 9007199254740993-'),
      /positive integer/,
    ],
    ['id other seq', TEXT.replace('id 17-', 'id 16-'), /id '16-/],
    ['id seq only', TEXT.replace('id 17-20261125T110000Z', 'id 17-'), /id '17-'/],
    ['id with slash', TEXT.replace('id 17-20261125T110000Z', 'id 17-../../etc'), /id/],
    ['id too long', TEXT.replace('id 17-20261125T110000Z', `id 17-${'a'.repeat(62)}`), /at most 64/],
    ['created not ISO', TEXT.replace('created 2026-11-25T11:00:00.000Z', 'created yesterday'), /created/],
    ['CRLF', TEXT.replaceAll('\n', '\r\n'), /forbidden character \(code 13\)/],
    ['NUL byte', TEXT.replace('seq 17', 'seq 1\u00007'), /forbidden character \(code 0\)/],
    ['non-ASCII / undecodable', TEXT.replace('rootfs', 'root\ufffdfs'), /forbidden character/],
    ['no trailing newline', TEXT.slice(0, -1), /newline/],
    ['blank line', TEXT + '\n', /line 6/],
    ['double space', TEXT.replace('seq 17', 'seq  17'), /line 3/],
    ['too long', TEXT + 'x'.repeat(2000), /at most 1024/],
  ];
  for (const [what, text, why] of bad) {
    test(`rejects: ${what}`, () => {
      const r = parseStamp(text);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatch(why);
    });
  }
  test('id of exactly 64 characters is accepted', () => {
    const id = `17-${'a'.repeat(61)}`;
    expect(parseStamp(TEXT.replace('17-20261125T110000Z', id)).ok).toBe(true);
  });
});

describe('verifyStamp', () => {
  test('signing off: anything goes', () => {
    expect(verifyStamp(TEXT, null, null)).toEqual({ ok: true });
    expect(verifyStamp(TEXT, 'garbage', null)).toEqual({ ok: true });
  });
  test('a real Ed25519 signature verifies (also with a trailing newline in the .sig file)', () => {
    expect(verifyStamp(TEXT, sigOf(TEXT), K.pub)).toEqual({ ok: true });
    expect(verifyStamp(TEXT, `${sigOf(TEXT)}\n`, K.pub)).toEqual({ ok: true });
  });
  test('unsigned stamp refused when signing is on', () => {
    expect(verifyStamp(TEXT, null, K.pub)).toEqual({ ok: false, error: 'unsigned stamp' });
    expect(verifyStamp(TEXT, '  \n', K.pub)).toEqual({ ok: false, error: 'unsigned stamp' });
  });
  test('signature by another key refused', () => {
    expect(verifyStamp(TEXT, sigOf(TEXT, OTHER.priv), K.pub)).toEqual({
      ok: false,
      error: 'stamp signature does not verify with the packed key',
    });
  });
  test('signature of other text refused (old sig with new stamp)', () => {
    const other = renderStamp(S18);
    expect(verifyStamp(other, sigOf(TEXT), K.pub)).toEqual({
      ok: false,
      error: 'stamp signature does not verify with the packed key',
    });
  });
  test('malformed signatures refused with the bad-signature message', () => {
    for (const s of ['not base64!', 'AAAA', Buffer.alloc(65).toString('base64')]) {
      const r = verifyStamp(TEXT, s, K.pub);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toStartWith('stamp signature does not verify with the packed key');
    }
  });
  test('unreadable or non-Ed25519 packed key reported as such', () => {
    const r1 = verifyStamp(TEXT, sigOf(TEXT), 'not a key');
    expect(r1.ok).toBe(false);
    if (!r1.ok) expect(r1.error).toMatch(/packed stamp key is unreadable/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
      type: 'spki',
      format: 'pem',
    }) as string;
    const r2 = verifyStamp(TEXT, sigOf(TEXT), ec);
    expect(r2).toEqual({ ok: false, error: 'packed stamp key is ec, not ed25519' });
  });
});

describe('decideStamp', () => {
  const base = { masterText: TEXT, masterSig: null, publicKeyPem: null, local: S17, localComplete: true };
  test('no master stamp: refuse with the publish remedy', () => {
    expect(decideStamp({ ...base, masterText: null, name: 'rootfs' })).toEqual({
      action: 'refuse',
      reason: 'master has no rootfs stamp',
      remedy: 'run `builder publish rootfs` on the master',
    });
    expect(decideStamp({ ...base, masterText: null, local: null, name: 'bootfs' }).action).toBe('refuse');
    // name falls back to the local stamp's
    const r = decideStamp({ ...base, masterText: null });
    expect(r.action === 'refuse' && r.reason).toBe('master has no rootfs stamp');
  });
  test('unparseable master stamp: refuse', () => {
    const r = decideStamp({ ...base, masterText: 'hello\n', local: null });
    expect(r.action).toBe('refuse');
    expect(r.reason).toMatch(/invalid: not a clusterboot stamp/);
  });
  test('stamp of the other template: refuse when the name is given', () => {
    expect(decideStamp({ ...base, local: null, name: 'bootfs' }).action).toBe('refuse');
  });
  test('signing on: unsigned, foreign-key and bad-key stamps refused', () => {
    const on = { ...base, local: null, publicKeyPem: K.pub };
    const r1 = decideStamp(on);
    expect(r1.action).toBe('refuse');
    expect(r1.reason).toMatch(/unsigned stamp/);
    const r2 = decideStamp({ ...on, masterSig: sigOf(TEXT, OTHER.priv) });
    expect(r2.action).toBe('refuse');
    expect(r2.reason).toMatch(/does not verify with the packed key/);
    expect(decideStamp({ ...on, masterSig: sigOf(TEXT), publicKeyPem: 'junk' }).action).toBe('refuse');
  });
  test('no local copy or incomplete local copy: sync', () => {
    expect(decideStamp({ ...base, local: null }).action).toBe('sync');
    expect(decideStamp({ ...base, localComplete: false }).action).toBe('sync');
    expect(decideStamp({ ...base, local: null, publicKeyPem: K.pub, masterSig: sigOf(TEXT) }).action).toBe('sync');
  });
  test('same id and seq: keep (signed or not)', () => {
    expect(decideStamp(base).action).toBe('keep');
    expect(decideStamp({ ...base, publicKeyPem: K.pub, masterSig: sigOf(TEXT) }).action).toBe('keep');
  });
  test('different id: sync (newer, or same seq from a re-installed master)', () => {
    expect(decideStamp({ ...base, local: S12 }).action).toBe('sync');
    expect(decideStamp({ ...base, local: { ...S17, id: '17-20250101T000000Z' } }).action).toBe('sync');
    expect(decideStamp({ ...base, local: S12, publicKeyPem: K.pub, masterSig: sigOf(TEXT) }).action).toBe('sync');
  });
  test('downgrade refused only when signing is on', () => {
    const older = renderStamp(S12);
    expect(decideStamp({ ...base, masterText: older }).action).toBe('sync');
    const r = decideStamp({ ...base, masterText: older, publicKeyPem: K.pub, masterSig: sigOf(older) });
    expect(r.action).toBe('refuse');
    expect(r.reason).toContain("master stamp 12 is older than the local root's 17");
    // an incomplete local copy is re-synced whatever its stamp says
    expect(
      decideStamp({ ...base, masterText: older, publicKeyPem: K.pub, masterSig: sigOf(older), localComplete: false })
        .action,
    ).toBe('sync');
  });
  test('never looks at the node clock', () => {
    const realNow = Date.now;
    try {
      Date.now = () => 0; // a Pi without RTC: 1970
      expect(decideStamp({ ...base, local: S12 }).action).toBe('sync');
      expect(decideStamp(base).action).toBe('keep');
    } finally {
      Date.now = realNow;
    }
  });
});

describe('property: garbage never throws and never syncs', () => {
  // Seeded (the shared mulberry32, scaled to a uint32) so a failure is reproducible.
  const draw = rng(0xc1b007);
  const next = (): number => Math.floor(draw() * 0x100000000);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff);
  const decoders = [new TextDecoder('utf-8'), new TextDecoder('latin1')];

  test('2000 random byte strings', () => {
    for (let i = 0; i < 2000; i++) {
      const raw = bytes(next() % 300);
      let text = (decoders[i % 2] as TextDecoder).decode(raw);
      // a third of the cases start like a real stamp, to get past the header check
      if (i % 3 === 0) text = `clusterboot-stamp 1\nname rootfs\n${text}`;
      const sig = i % 4 === 0 ? null : Buffer.from(bytes(next() % 100)).toString(i % 2 ? 'base64' : 'latin1');
      const key = [null, K.pub, 'junk'][i % 3] as string | null;
      const local = i % 5 === 0 ? null : S17;
      expect(() => parseStamp(text)).not.toThrow();
      expect(parseStamp(text).ok).toBe(false);
      const d = decideStamp({ masterText: text, masterSig: sig, publicKeyPem: key, local, localComplete: i % 7 !== 0 });
      expect(d.action).not.toBe('sync');
    }
  });

  test('2000 mutations of a valid stamp: sync only for canonical, parseable text', () => {
    for (let i = 0; i < 2000; i++) {
      const chars = [...TEXT];
      const edits = 1 + (next() % 3);
      for (let e = 0; e < edits; e++) {
        const at = next() % chars.length;
        const op = next() % 3;
        const ch = String.fromCharCode(next() % 128);
        if (op === 0) chars[at] = ch;
        else if (op === 1) chars.splice(at, 1);
        else chars.splice(at, 0, ch);
      }
      const text = chars.join('');
      let d;
      expect(() => {
        d = decideStamp({ masterText: text, masterSig: null, publicKeyPem: null, local: S12, localComplete: true });
      }).not.toThrow();
      const p = parseStamp(text);
      if (d!.action === 'sync') expect(p.ok).toBe(true);
      // anything accepted is in canonical form
      if (p.ok) expect(renderStamp(p.stamp)).toBe(text);
    }
  });
});

// Property 2: a stamp syncs only when it parses, verifies, names the template and does not downgrade.
import { describe } from 'bun:test';
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { decideStamp, parseStamp, renderStamp, verifyStamp } from '../../../agent/contract/stamp.ts';
import type { Stamp, StampName } from '../../../agent/contract/stamp.ts';
import { must, propertyRunner, randomBytesText, type Rng } from './runner.ts';

const property = propertyRunner(import.meta.path);

const ED = generateKeyPairSync('ed25519');
const K = {
  priv: ED.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  pub: ED.publicKey.export({ type: 'spki', format: 'pem' }) as string,
};
const ED2 = generateKeyPairSync('ed25519');
const OTHER = {
  priv: ED2.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  pub: ED2.publicKey.export({ type: 'spki', format: 'pem' }) as string,
};
const RSA_PUB = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({
  type: 'spki',
  format: 'pem',
}) as string;
const sigOf = (text: string, priv: string): string => sign(null, Buffer.from(text, 'utf8'), priv).toString('base64');

function genStamp(r: Rng, name: StampName, seq?: number): Stamp {
  const s = seq ?? (r.chance(0.05) ? r.pick([1, Number.MAX_SAFE_INTEGER, 2 ** 31]) : r.between(1, 5000));
  const ms = r.between(0, 4102444800000);
  const iso = new Date(ms).toISOString();
  const compact = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  let id = `${s}-${r.chance(0.8) ? compact : r.string('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._-', 20) || 'x'}`;
  id = id.slice(0, 64);
  if (id.length === `${s}-`.length) id += 'x';
  return { name, seq: s, id, created: r.chance(0.5) ? iso : `${iso.slice(0, 19)}Z` };
}

type SigKind =
  | 'none'
  | 'empty'
  | 'good'
  | 'good-padded'
  | 'other-text'
  | 'other-key'
  | 'random64'
  | 'short'
  | 'not-base64'
  | 'wrapped';

describe('property 2: stamps', () => {
  property(
    'parseStamp and decideStamp never throw; sync only for a parseable, verified, named, non-downgrading stamp',
    (r) => {
      const name: StampName | undefined = r.pick([undefined, 'rootfs', 'bootfs'] as const);
      const masterName: StampName = r.chance(0.85) ? (name ?? 'rootfs') : r.pick(['rootfs', 'bootfs'] as const);
      const local: Stamp | null = r.chance(0.2) ? null : genStamp(r, name ?? masterName);
      // the master's seq relative to the local one: older, equal (same stamp or another id), newer
      const rel = r.int(5);
      const seq =
        local === null || rel === 4
          ? undefined
          : rel === 0
            ? Math.max(1, local.seq - r.between(1, 10))
            : rel === 3
              ? Math.min(Number.MAX_SAFE_INTEGER, local.seq + r.between(1, 10))
              : local.seq;
      let master: Stamp = genStamp(r, masterName, seq);
      if (local !== null && rel === 1) master = { ...local, name: masterName };
      const canonical = renderStamp(master);
      const tk = r.int(10);
      let masterText: string | null =
        tk === 0 ? null : tk === 1 ? randomBytesText(r) : tk === 2 ? damageStamp(r, canonical) : canonical;
      const key = r.pick([null, null, K.pub, K.pub, K.pub, OTHER.pub, 'junk', '', RSA_PUB]);
      const sigKind: SigKind = r.pick([
        'none',
        'empty',
        'good',
        'good',
        'good',
        'good-padded',
        'other-text',
        'other-key',
        'random64',
        'short',
        'not-base64',
        'wrapped',
      ]);
      const text = masterText ?? '';
      const good = sigOf(text, K.priv);
      const masterSig: string | null = {
        none: null,
        empty: '',
        good,
        'good-padded': `  ${good}\n`,
        'other-text': sigOf(`${text} `, K.priv),
        'other-key': sigOf(text, OTHER.priv),
        random64: Buffer.from(Array.from({ length: 64 }, () => r.int(256))).toString('base64'),
        short: good.slice(0, r.int(good.length)),
        'not-base64': `${good.slice(0, 20)}!${good.slice(21)}`,
        wrapped: `${good.slice(0, 76)}\n${good.slice(76)}`,
      }[sigKind];
      if (r.chance(0.03)) masterText = masterText === null ? null : `${masterText}\n`;
      return { masterText, masterSig, key, sigKind, local, localComplete: r.chance(0.85), name };
    },
    ({ masterText, masterSig, key, local, localComplete, name }) => {
      if (masterText !== null) {
        const p = parseStamp(masterText);
        must(typeof p.ok === 'boolean', 'parseStamp answers');
        if (p.ok) must(renderStamp(p.stamp) === masterText, 'a parsed stamp is in canonical form');
        verifyStamp(masterText, masterSig, key);
      }
      const d = decideStamp(
        name === undefined
          ? { masterText, masterSig, publicKeyPem: key, local, localComplete }
          : { masterText, masterSig, publicKeyPem: key, local, localComplete, name },
      );
      must(['sync', 'keep', 'refuse'].includes(d.action), 'an action among sync/keep/refuse');
      if (d.action === 'refuse') must(d.remedy.length > 0, 'a refusal carries a remedy');
      if (masterText === null) {
        must(d.action === 'refuse', 'no stamp on the master: refuse');
        return;
      }
      const parsed = parseStamp(masterText);
      // independent signature check: an ed25519 key, and the signature verifies over the exact bytes
      let verified = key === null;
      if (key !== null) {
        try {
          const k = createPublicKey(key);
          const sig = Buffer.from((masterSig ?? '').trim(), 'base64');
          verified =
            k.asymmetricKeyType === 'ed25519' &&
            /^[A-Za-z0-9+/]+={0,2}$/.test((masterSig ?? '').trim()) &&
            sig.length === 64 &&
            verify(null, Buffer.from(masterText, 'utf8'), k, sig);
        } catch {
          verified = false;
        }
      }
      if (d.action === 'sync' || d.action === 'keep') {
        must(parsed.ok, `${d.action} only for a stamp that parses`);
        must(verified, `${d.action} only for a stamp whose signature verifies with the packed key (signed mode)`);
        if (name !== undefined) must(parsed.stamp.name === name, `${d.action} only for a stamp of the asked template`);
      }
      if (d.action === 'sync' && key !== null && local !== null && localComplete && parsed.ok) {
        must(
          parsed.stamp.seq >= local.seq,
          `signed mode: no downgrade (master seq ${parsed.stamp.seq} < local ${local.seq})`,
        );
      }
      if (d.action === 'keep') {
        must(local !== null && localComplete, 'keep only with a complete local copy');
        must(parsed.ok && parsed.stamp.id === local.id, 'keep only when the ids are equal');
      }
      // equal id (and seq) with a complete local copy and an acceptable stamp: keep
      if (
        parsed.ok &&
        verified &&
        local !== null &&
        localComplete &&
        parsed.stamp.id === local.id &&
        parsed.stamp.seq === local.seq &&
        (name === undefined || parsed.stamp.name === name)
      ) {
        must(d.action === 'keep', `equal id ${local.id}: keep (got ${d.action}: ${d.reason})`);
      }
    },
    {
      classify: ({ masterText, masterSig, key, local, localComplete, name }) => {
        const d = decideStamp(
          name === undefined
            ? { masterText, masterSig, publicKeyPem: key, local, localComplete }
            : { masterText, masterSig, publicKeyPem: key, local, localComplete, name },
        );
        const p = masterText === null ? null : parseStamp(masterText);
        const older = p?.ok && local !== null && p.stamp.seq < local.seq;
        return [
          `${d.action}${key === null ? '' : '-signed'}`,
          ...(older && key !== null && localComplete ? [`older-signed-${d.action}`] : []),
        ];
      },
      cover: {
        sync: 60,
        keep: 12,
        refuse: 60,
        'sync-signed': 30,
        'keep-signed': 6,
        'refuse-signed': 300,
        'older-signed-refuse': 40,
      },
    },
  );
});

function damageStamp(r: Rng, text: string): string {
  const chars = [...text];
  for (let k = r.between(1, 3); k > 0; k--) {
    const at = r.int(chars.length);
    const op = r.int(5);
    if (op === 0) chars[at] = String.fromCharCode(r.int(128));
    else if (op === 1) chars.splice(at, 1);
    else if (op === 2) chars.splice(at, 0, r.pick(['\n', ' ', '\r', '\u00e9', '\u0000', '9', '-', 'seq 1\n']));
    else if (op === 3)
      return text.replace(/seq (\d+)/, () => `seq ${r.pick(['0', '-1', '01', '1.0', '9007199254740993', ''])}`);
    else return text.slice(0, r.int(text.length));
  }
  return chars.join('');
}

// Stamps: the master's "this template changed" marker. A node re-syncs a root template only when the
// master's stamp for it differs from the stamp of its complete local copy.
// Pure: no I/O. The agent fetches stamps/<name>.stamp (+ .sig) and feeds the text here; the builder writes them.
import { createPublicKey, verify } from 'node:crypto';
import { STAMP_DIR } from './tree.ts';

// Staleness is decided by the master's stamp alone, never by the node's clock (a Pi without an RTC boots in
// 1970): `created` is informative only, `seq` orders stamps, `id` names the local slot directory.
//
// Signatures (optional): Ed25519 over the exact bytes of the stamp file, stored base64 in <name>.stamp.sig.
// Checked against Bun 1.4.5: node:crypto sign(null, data, key) / verify(null, data, key, sig) work with
// generateKeyPairSync('ed25519') KeyObjects and with PKCS#8 / SPKI PEM strings; verify() returns false for a
// wrong-length signature and throws for an unparseable key, hence the try/catch below.

export type StampName = 'rootfs' | 'bootfs';
/** Both templates, in the order they are reported. */
export const STAMP_NAMES: readonly StampName[] = ['rootfs', 'bootfs'];

/** One published version of a root template. */
export interface Stamp {
  name: StampName;
  /** Positive integer, +1 at every publish. */
  seq: number;
  /** `${seq}-${YYYYMMDDTHHMMSSZ}` of the master's clock; used as slot directory name, so only [0-9A-Za-z._-]. */
  id: string;
  /** ISO time of the master's clock, informative only. */
  created: string;
}

export const STAMP_HEADER = 'clusterboot-stamp 1';
const MAX_ID = 64;
const MAX_TEXT = 1024;
const FIELDS = ['name', 'seq', 'id', 'created'] as const;
type Field = (typeof FIELDS)[number];
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;
const BAD_SIG = 'stamp signature does not verify with the packed key';

// Why: publisher and agent must agree on where a stamp lives relative to the master root.
export function stampPath(name: StampName): string {
  return `${STAMP_DIR}/${name}.stamp`;
}

// Why: same for the detached signature next to it.
export function sigPath(name: StampName): string {
  return `${STAMP_DIR}/${name}.stamp.sig`;
}

// Why: the one place that builds an id from seq and the master's clock (UTC, second precision).
export function newStamp(name: StampName, seq: number, now: Date): Stamp {
  const iso = now.toISOString();
  const compact = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return { name, seq, id: `${seq}-${compact}`, created: iso };
}

// Why: the agent must turn untrusted bytes from the network into a Stamp or a reason, without ever throwing.
export function parseStamp(text: string): { ok: true; stamp: Stamp } | { ok: false; error: string } {
  const fail = (error: string) => ({ ok: false as const, error });
  if (typeof text !== 'string') return fail('stamp is not text');
  if (text.length === 0) return fail('stamp is empty');
  if (text.length > MAX_TEXT) return fail(`stamp is ${text.length} characters long (at most ${MAX_TEXT})`);
  // Printable ASCII and \n only: rejects binary garbage, CR, tabs, NULs and U+FFFD from undecodable bytes.
  const bad = /[^\x20-\x7e\n]/.exec(text);
  if (bad) return fail(`stamp contains a forbidden character (code ${bad[0].charCodeAt(0)}) at offset ${bad.index}`);
  if (!text.endsWith('\n')) return fail('stamp does not end with a newline (truncated?)');
  const lines = text.slice(0, -1).split('\n');
  const header = lines[0] ?? '';
  if (header !== STAMP_HEADER) {
    const m = /^clusterboot-stamp (.*)$/.exec(header);
    return fail(
      m
        ? `unsupported stamp version '${m[1]}' (this agent reads version 1)`
        : `not a clusterboot stamp (first line '${header.slice(0, 40)}')`,
    );
  }
  const got = new Map<Field, string>();
  const order: Field[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const m = /^([a-z]+) (\S+)$/.exec(line);
    if (!m) return fail(`line ${i + 1}: expected '<field> <value>', got '${line.slice(0, 40)}'`);
    const key = m[1] as string;
    if (!(FIELDS as readonly string[]).includes(key)) return fail(`line ${i + 1}: unknown field '${key}'`);
    const field = key as Field;
    if (got.has(field)) return fail(`line ${i + 1}: duplicate field '${field}'`);
    got.set(field, m[2] as string);
    order.push(field);
  }
  for (const f of FIELDS) if (!got.has(f)) return fail(`missing field '${f}'`);
  if (order.join(' ') !== FIELDS.join(' '))
    return fail(`fields out of order: ${order.join(', ')} (expected ${FIELDS.join(', ')})`);
  const name = got.get('name') as string;
  const seqText = got.get('seq') as string;
  const id = got.get('id') as string;
  const created = got.get('created') as string;
  if (name !== 'rootfs' && name !== 'bootfs') return fail(`name '${name}' is neither rootfs nor bootfs`);
  const seq = /^[1-9][0-9]*$/.test(seqText) ? Number(seqText) : NaN;
  if (!Number.isSafeInteger(seq)) return fail(`seq '${seqText}' is not a positive integer`);
  if (id.length > MAX_ID) return fail(`id is ${id.length} characters long (at most ${MAX_ID})`);
  if (!/^[0-9A-Za-z._-]+$/.test(id) || !id.startsWith(`${seq}-`) || id.length === `${seq}-`.length) {
    return fail(`id '${id}' is not '${seq}-' followed by [0-9A-Za-z._-]`);
  }
  if (!ISO.test(created) || Number.isNaN(Date.parse(created)))
    return fail(`created '${created}' is not an ISO UTC time`);
  return { ok: true, stamp: { name, seq, id, created } };
}

// Why: the publisher writes exactly the canonical text the agent parses; throws rather than write a stamp nodes would refuse.
export function renderStamp(s: Stamp): string {
  const text = `${STAMP_HEADER}\nname ${s.name}\nseq ${s.seq}\nid ${s.id}\ncreated ${s.created}\n`;
  const back = parseStamp(text);
  if (!back.ok) throw new Error(`renderStamp: invalid stamp: ${back.error}`);
  return text;
}

/** What an Ed25519 check says when it fails, in the words of the thing checked (a stamp, a manifest header). */
export interface SignatureWords {
  /** no signature at all */
  unsigned: string;
  /** a signature that does not verify; malformed ones add why in parentheses */
  bad: string;
}

// Why: one check for everything the master signs with its stamp key (stamps here, the manifest header in
// manifest.ts): Ed25519 over the exact bytes; a null key means signing is off and nothing is checked.
export function verifyEd25519(
  text: string,
  sigBase64: string | null,
  publicKeyPem: string | null,
  words: SignatureWords,
): { ok: true } | { ok: false; error: string } {
  if (publicKeyPem === null) return { ok: true };
  const sig = (sigBase64 ?? '').trim();
  if (sig === '') return { ok: false, error: words.unsigned };
  let key;
  try {
    key = createPublicKey(publicKeyPem);
  } catch (e) {
    return { ok: false, error: `packed stamp key is unreadable: ${(e as Error).message}` };
  }
  if (key.asymmetricKeyType !== 'ed25519')
    return { ok: false, error: `packed stamp key is ${key.asymmetricKeyType ?? 'unknown'}, not ed25519` };
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sig)) return { ok: false, error: `${words.bad} (signature is not base64)` };
  const raw = Buffer.from(sig, 'base64');
  if (raw.length !== 64)
    return { ok: false, error: `${words.bad} (signature is ${raw.length} bytes, Ed25519 needs 64)` };
  try {
    if (verify(null, Buffer.from(text, 'utf8'), key, raw)) return { ok: true };
  } catch {
    // fall through: any crypto failure is a non-verifying signature
  }
  return { ok: false, error: words.bad };
}

// Why: with a key packed in the initramfs, only stamps signed by the master's stamp key may trigger a sync.
export function verifyStamp(
  text: string,
  sigBase64: string | null,
  publicKeyPem: string | null,
): { ok: true } | { ok: false; error: string } {
  return verifyEd25519(text, sigBase64, publicKeyPem, { unsigned: 'unsigned stamp', bad: BAD_SIG });
}

/** What the agent does with one root template after comparing stamps. */
export type StampDecision =
  | { action: 'sync'; reason: string } // fetch the new tree
  | { action: 'keep'; reason: string } // local copy is current
  | { action: 'refuse'; reason: string; remedy: string }; // do not use the master's stamp; caller keeps its local root if it has one

// Why: the single rule deciding whether a node re-syncs a template; everything it needs is passed in, so it is testable.
// `name` is optional (an addition to the brief): when given, a master stamp for the other template is refused and
// messages name the template; otherwise the name comes from `local`, then from the master's stamp.
export function decideStamp(facts: {
  masterText: string | null;
  masterSig: string | null;
  publicKeyPem: string | null;
  local: Stamp | null;
  localComplete: boolean;
  name?: StampName;
}): StampDecision {
  const { masterText, masterSig, publicKeyPem, local, localComplete } = facts;
  const want = facts.name ?? local?.name;
  const label = want ?? '<name>';
  const publish = `run \`builder publish ${label}\` on the master`;
  if (masterText === null)
    return { action: 'refuse', reason: `master has no ${want ?? ''}${want ? ' ' : ''}stamp`, remedy: publish };
  const parsed = parseStamp(masterText);
  if (!parsed.ok)
    return {
      action: 'refuse',
      reason: `master's ${label} stamp is invalid: ${parsed.error}`,
      remedy: `${publish} to rewrite it`,
    };
  const master = parsed.stamp;
  if (want !== undefined && master.name !== want) {
    return {
      action: 'refuse',
      reason: `master's ${want} stamp names '${master.name}'`,
      remedy: `${publish} to rewrite it`,
    };
  }
  const v = verifyStamp(masterText, masterSig, publicKeyPem);
  if (!v.ok) {
    const remedy =
      v.error === 'unsigned stamp'
        ? `publish with the stamp key on the master (\`builder publish ${master.name}\` with stamp_ed25519.pem), or pack the initramfs without a stamp key`
        : v.error.startsWith('packed stamp key')
          ? "re-pack the initramfs with the master's stamp_ed25519.pub.pem"
          : `the master signs with another key than the one packed here: re-pack the initramfs with the master's stamp_ed25519.pub.pem, or re-publish ${master.name} with the matching key`;
    return { action: 'refuse', reason: `master's ${master.name} stamp ${master.id}: ${v.error}`, remedy };
  }
  if (local === null) return { action: 'sync', reason: `no local ${master.name} copy; master has ${master.id}` };
  if (!localComplete)
    return {
      action: 'sync',
      reason: `local ${master.name} copy ${local.id} is incomplete (interrupted sync); master has ${master.id}`,
    };
  if (master.id === local.id && master.seq === local.seq)
    return { action: 'keep', reason: `local ${master.name} copy is current (${local.id})` };
  if (publicKeyPem !== null && master.seq < local.seq) {
    return {
      action: 'refuse',
      reason: `downgrade: master stamp ${master.seq} is older than the local root's ${local.seq}`,
      remedy: `if the master really was rolled back, publish ${master.name} until its seq exceeds ${local.seq}, or wipe this node's local ${master.name} copy`,
    };
  }
  return { action: 'sync', reason: `master has ${master.name} ${master.id}, local copy is ${local.id}` };
}

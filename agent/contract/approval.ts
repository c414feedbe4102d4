// The approval file's format: approved/<host> holds the sha256 hex of the exact partitions.sfdisk bytes it
// approves, and a newline. `builder approve` writes it; the agent compares it with the table it fetched.
import { createHash } from 'node:crypto';

const HASH_RE = /^[0-9a-f]{64}$/;

/** sha256 hex of a table's exact bytes (a string is taken as UTF-8). */
export function tableHash(bytes: Uint8Array | string): string {
  return createHash('sha256')
    .update(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes)
    .digest('hex');
}

/** The content of an approval file. */
export function approvalText(hash: string): string {
  if (!HASH_RE.test(hash)) throw new Error(`approvalText: '${hash}' is not a sha256 hex digest`);
  return `${hash}\n`;
}

/** The hash an approval file holds; null when the text is not one (trailing white space is allowed). */
export function parseApproval(text: string): string | null {
  const t = text.trim();
  return HASH_RE.test(t) ? t : null;
}

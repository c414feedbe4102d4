// OpenSSH public key lines, for the image (the pinned known_hosts line) and the master (authorized_keys lines).
import { isAbsolute } from 'node:path';
import { HOST_ALIAS } from '../agent/contract/initramfs.ts';

// One OpenSSH public key line: type, base64 blob whose embedded type matches, optional comment.
export function parsePubKey(content: string, what: string): { type: string; blob: string; comment: string } {
  const lines = content
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length !== 1) throw new Error(`${what}: expected one OpenSSH public key line, got ${lines.length}`);
  const m = /^([a-z0-9@.-]+) ([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(lines[0] as string);
  if (!m) throw new Error(`${what}: not an OpenSSH public key line`);
  const type = m[1] as string;
  const blob = m[2] as string;
  const raw = Buffer.from(blob, 'base64');
  const len = raw.length >= 4 ? raw.readUInt32BE(0) : -1;
  if (len < 0 || 4 + len > raw.length || raw.subarray(4, 4 + len).toString('latin1') !== type) {
    throw new Error(`${what}: key blob does not match its type ${type}`);
  }
  return { type, blob, comment: (m[3] ?? '').trim() };
}

// Paths that go inside command="..." of an authorized_keys line: nothing sshd or rrsync could read as syntax.
/** Where Debian's rsync package installs rrsync (every forced command that rsyncs runs it). */
export const DEFAULT_RRSYNC = '/usr/bin/rrsync';

export function checkCommandPaths(fn: string, paths: Array<readonly [string, string]>): void {
  const safe = /^\/[A-Za-z0-9._+\/-]*$/;
  for (const [what, p] of paths) {
    if (!isAbsolute(p) || !safe.test(p) || p.split('/').includes('..')) {
      throw new Error(
        `${fn}: ${what} '${p}' must be an absolute path of [A-Za-z0-9._+/-] without '..' (no spaces or quotes)`,
      );
    }
  }
}

/** `<options> <type> <blob>[ <comment>]` from an OpenSSH public key; the comment only when it is plain. */
export function keyLine(options: string, pub: string, fn: string): string {
  const k = parsePubKey(pub, fn);
  const comment = /^[A-Za-z0-9@._-]+$/.test(k.comment) ? ` ${k.comment}` : '';
  return `${options} ${k.type} ${k.blob}${comment}`;
}

// Why: the node's known_hosts pin, keyed by HostKeyAlias so it holds whatever address the master has.
export function knownHostsLine(hostKeyPub: string): string {
  const k = parsePubKey(hostKeyPub, 'knownHostsLine');
  return `${HOST_ALIAS} ${k.type} ${k.blob}`;
}

/** Text from a process or a file, as one printable line. */
export function oneLine(s: string, max = 200): string {
  const t = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

export interface KeyOption {
  name: string;
  /** The option's value without its quotes; null for a flag. */
  value: string | null;
}

export interface ParsedKeyLine {
  options: KeyOption[];
  type: string;
  blob: string;
  comment: string;
}

const KEY_TYPE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9-]+@openssh\.com)$/;

/** One authorized_keys line, as sshd splits it (options with quoted values, then type, key, comment); null if none. */
export function parseKeyLine(line: string): ParsedKeyLine | null {
  const t = line.trim();
  if (t === '' || t.startsWith('#')) return null;
  const options: KeyOption[] = [];
  let rest = t;
  if (!KEY_TYPE.test(t.split(/\s+/)[0] ?? '')) {
    let cur = '';
    let quoted = false;
    let i = 0;
    const push = () => {
      const eq = cur.indexOf('=');
      options.push(eq < 0 ? { name: cur, value: null } : { name: cur.slice(0, eq), value: cur.slice(eq + 1) });
      cur = '';
    };
    for (; i < t.length; i++) {
      const c = t[i] as string;
      if (quoted) {
        if (c === '\\' && t[i + 1] === '"') {
          cur += '"';
          i++;
        } else if (c === '"') quoted = false;
        else cur += c;
      } else if (c === '"') quoted = true;
      else if (c === ',') {
        if (cur === '') return null;
        push();
      } else if (c === ' ' || c === '\t') break;
      else cur += c;
    }
    if (quoted || cur === '') return null;
    push();
    rest = t.slice(i).trim();
  }
  const m = /^(\S+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(rest);
  if (!m || !KEY_TYPE.test(m[1] as string)) return null;
  return { options, type: m[1] as string, blob: m[2] as string, comment: (m[3] ?? '').trim() };
}

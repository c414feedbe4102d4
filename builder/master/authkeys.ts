// Merging the node and report key lines into the master's authorized_keys: never twice, an older line of
// stage's own replaced in place, any other conflicting line pointed out. Pure.
import { parseKeyLine } from '../sshkeys.ts';
import { parseNodeCommand, parseReportCommand } from './keylines.ts';
// ---------------------------------------------------------------------------------------------------------------
// authorized_keys

/** One OpenSSH key line's key blob (the field after the type), or null: as sshd reads the line (parseKeyLine). */
export function keyBlob(line: string): string | null {
  return parseKeyLine(line)?.blob ?? null;
}

// Why: installing twice must not duplicate lines, and an older line for the same key with other options (another
// master root) must be pointed out: sshd uses the first line that matches the key, so the new one would never apply.
export function mergeAuthorizedKeys(
  existing: string,
  lines: string[],
): { append: string; added: string[]; conflicts: string[] } {
  const have = existing.split('\n').map((l) => l.trim());
  const added = lines.filter((l) => !have.includes(l));
  const conflicts: string[] = [];
  for (const l of added) {
    const blob = keyBlob(l);
    const old = have.find((h) => h !== '' && !h.startsWith('#') && blob !== null && keyBlob(h) === blob);
    if (old) conflicts.push(`an older line for the same key comes first and wins: '${old.slice(0, 80)}…'; remove it`);
  }
  const append = added.length ? `${existing && !existing.endsWith('\n') ? '\n' : ''}${added.join('\n')}\n` : '';
  return { append, added, conflicts };
}

/** A key line's options with `from="<patterns>"` added after `restrict`: the key works from these addresses only. */
export function restrictFrom(line: string, patterns: string): string {
  if (!/^[0-9A-Fa-f.:/,*?!]+$/.test(patterns))
    throw new Error(`restrictFrom: ${JSON.stringify(patterns)} is not an address list`);
  if (!line.startsWith('restrict,command="')) throw new Error('restrictFrom: not a line of builder stage');
  return line.replace(/^restrict,/, `restrict,from="${patterns}",`);
}

// The options stage writes: restrict, optionally from="...", then the command, nothing else. Its command, or null.
function ownCommand(line: string): string | null {
  const o = parseKeyLine(line)?.options ?? [];
  const names = o.map((x) => x.name).join(',');
  if (names !== 'restrict,command' && names !== 'restrict,from,command') return null;
  return o.at(-1)?.value ?? null;
}

// The node key's line as `builder stage` writes it for this master root, with or without the sync-slot limiter.
function isOwnNodeLine(line: string, masterRoot: string): boolean {
  const c = ownCommand(line);
  return c !== null && parseNodeCommand(c, masterRoot).ok;
}

// The report key's line as `builder stage` writes it for this master root: the write-only rrsync of older stages,
// or the report sink.
function isOwnReportLine(line: string, masterRoot: string): boolean {
  const c = ownCommand(line);
  return c !== null && parseReportCommand(c, masterRoot) !== null;
}

const isOwnLine = (line: string, masterRoot: string) =>
  isOwnNodeLine(line, masterRoot) || isOwnReportLine(line, masterRoot);

// Why: changing --sync-slots (or turning it on, on a master staged before it existed) changes the node key's line;
// appended, it would come after the old one, and sshd uses the first line of a key. So an older line for the same
// key, same master root, that stage itself wrote is replaced in place; any other line is left to the operator.
export function replaceOwnNodeLines(
  existing: string,
  lines: string[],
  masterRoot: string,
): { text: string; replaced: string[] } {
  const replaced: string[] = [];
  const text = existing
    .split('\n')
    .map((old) => {
      const t = old.trim();
      if (t === '' || t.startsWith('#') || !isOwnLine(t, masterRoot)) return old;
      const blob = keyBlob(t);
      const now = lines.find((l) => blob !== null && keyBlob(l) === blob && isOwnLine(l, masterRoot));
      if (now === undefined || now === t) return old;
      replaced.push(t);
      return now;
    })
    .join('\n');
  return { text, replaced };
}

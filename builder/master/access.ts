// The two keys in the initramfs and what a master lets them do: the node key reads the master root (read-only
// rrsync, behind the sync-slot limiter when there is one), the report key runs the report sink and nothing else;
// both from the cluster's subnet only. Written by `builder stage` on the primary and `builder mirror --serve` on a
// mirror, which serves nodes the same way.
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { keyBlob, mergeAuthorizedKeys, replaceOwnNodeLines, restrictFrom } from './authkeys.ts';
import { authorizedKeysLine } from './keylines.ts';
import { DEFAULT_REPORT_USER, reportSinkKeysLine, reportSinkProblems } from './reportsink.ts';
import { syncSlotKeysLine } from './syncslot.ts';

/** The node key's and the report key's authorized_keys lines, and what stands in their way. */
export function accessKeyLines(o: {
  keysDir: string;
  masterRoot: string;
  stateDir: string;
  /** Sync slots (0: the plain read-only line). */
  slots: number;
  rrsync?: string;
  reportUser?: string;
  dhcpLeases?: string;
  /** The report sink's cap on reports/. */
  maxReports: number;
  /** from= patterns ('' for none). */
  from: string;
}): { lines: string[]; problems: string[] } {
  const lines: string[] = [];
  const problems: string[] = [];
  const keysFix = `run \`builder keys --dir ${o.keysDir}\` (it creates missing keys and keeps existing ones), then \`builder pack --keys ${o.keysDir}\` so the nodes carry them`;
  const pub = (name: string) => {
    try {
      return readFileSync(join(o.keysDir, name), 'utf8');
    } catch {
      problems.push(`${join(o.keysDir, name)} is missing: ${keysFix}`);
      return null;
    }
  };
  const node = pub('node_ed25519.pub');
  const report = pub('report_ed25519.pub');
  const line = (f: () => string) => {
    try {
      lines.push(f());
    } catch (e) {
      problems.push((e as Error).message);
    }
  };
  if (node !== null)
    line(() =>
      o.slots > 0
        ? syncSlotKeysLine(node, o.masterRoot, o.stateDir, o.slots, o.rrsync)
        : authorizedKeysLine(node, o.masterRoot, o.rrsync),
    );
  if (report !== null) {
    line(() =>
      reportSinkKeysLine(report, o.stateDir, {
        ...(o.reportUser !== undefined ? { user: o.reportUser } : {}),
        ...(o.dhcpLeases !== undefined ? { leases: o.dhcpLeases } : {}),
        maxFiles: o.maxReports,
      }),
    );
    problems.push(...reportSinkProblems(o.reportUser ?? DEFAULT_REPORT_USER));
  }
  // the keys are public (TFTP), but they work from the cluster's own subnet only
  if (o.from !== '')
    for (const [i, l] of lines.entries())
      try {
        lines[i] = restrictFrom(l, o.from);
      } catch (e) {
        problems.push(`--key-from ${o.from}: ${(e as Error).message}`);
      }
  if (lines.length === 2 && keyBlob(lines[0] as string) === keyBlob(lines[1] as string))
    problems.push(
      `the node key and the report key in ${o.keysDir} are the same key: sshd would give it only the first line's rights; remove report_ed25519* and ${keysFix}`,
    );
  return { lines, problems };
}

/**
 * The lines into authorized_keys: an older line of our own for the same key replaced in place (atomic rewrite,
 * the file's mode kept), new ones appended once; any other line for the same key named (sshd uses the first).
 */
export function writeAuthorizedKeys(
  file: string,
  lines: readonly string[],
  masterRoot: string,
): { added: string[]; replaced: string[]; warnings: string[]; written: string[] } {
  const before = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const r = replaceOwnNodeLines(before, [...lines], masterRoot);
  const m = mergeAuthorizedKeys(r.text, [...lines]);
  const written: string[] = [];
  if (r.replaced.length) {
    writeAtomic(file, r.text + m.append, statSync(file).mode & 0o777);
    written.push(file);
  } else if (m.append) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    appendFileSync(file, m.append, { mode: 0o600 });
    written.push(file);
  }
  return { added: m.added, replaced: r.replaced, warnings: m.conflicts.map((c) => `${file}: ${c}`), written };
}

// The authorized_keys lines that give each key exactly one right on the master (read-only root, write-only reports).

import { basename, dirname, isAbsolute, join } from 'node:path';
import { REPORT_DIR } from '../../agent/contract/tree.ts';
import { checkCommandPaths, DEFAULT_RRSYNC, keyLine, oneLine } from '../sshkeys.ts';
import { PYTHON } from './reportsink.ts';
import { SLOTS_DIR, SYNC_SLOT_SCRIPT } from './syncslot.ts';

// Why: the master's authorized_keys entry that lets the node key do nothing but read-only rsync of the master root.
export function authorizedKeysLine(nodeKeyPub: string, masterRoot: string, rrsync = DEFAULT_RRSYNC): string {
  checkCommandPaths('authorizedKeysLine', [
    ['masterRoot', masterRoot],
    ['rrsync', rrsync],
  ]);
  return keyLine(`restrict,command="${rrsync} -ro ${masterRoot}"`, nodeKeyPub, 'authorizedKeysLine');
}

// Why: the entry that lets the report key do nothing but write-only rsync into <master root>/reports (boot reports).
// A separate key from the node key: sshd uses the first line that matches a key, so one key cannot have both commands.
// -no-lock: nodes report at the same moment after a mass reboot (rrsync's single-run lock would turn them away);
// -no-del: a node may replace its report but never delete anything.
export function reportKeysLine(reportKeyPub: string, masterRoot: string, rrsync = DEFAULT_RRSYNC): string {
  checkCommandPaths('reportKeysLine', [
    ['masterRoot', masterRoot],
    ['rrsync', rrsync],
  ]);
  const reports = `${masterRoot.replace(/\/+$/, '')}/${REPORT_DIR}`;
  return keyLine(`restrict,command="${rrsync} -wo -no-lock -no-del ${reports}"`, reportKeyPub, 'reportKeysLine');
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the lines back: one parser of stage's commands, for stage (which replaces its own older lines) and
// doctor (which checks that a line gives no more than stage's would).

export const trimSlash = (p: string) => p.replace(/(.)\/+$/, '$1');

/** What the node key's forced command runs, when it is the read-only rrsync of `builder stage`. */
export interface NodeCommand {
  rrsync: string;
  root: string;
  /** The sync-slot wrapper in front of it, when there is one. */
  syncSlot: { script: string; slots: number; slotsDir: string } | null;
}

/** The node key's command split into its parts, or why it is not stage's read-only rrsync. */
export function parseNodeCommand(
  command: string,
  masterRoot: string,
): { ok: true; cmd: NodeCommand } | { ok: false; why: string } {
  const w = command.split(' ');
  if (w.some((x) => !/^[A-Za-z0-9._+/=-]+$/.test(x)))
    return { ok: false, why: `the command \`${oneLine(command, 120)}\` is not one of plain words` };
  let k = 0;
  let syncSlot: NodeCommand['syncSlot'] = null;
  if (basename(w[0] ?? '') === SYNC_SLOT_SCRIPT) {
    const [script, n, slotsDir] = w as [string, string?, string?];
    if (
      !isAbsolute(script) ||
      n === undefined ||
      !/^[1-9]\d*$/.test(n) ||
      slotsDir !== join(dirname(script), SLOTS_DIR)
    )
      return {
        ok: false,
        why: `\`${oneLine(command, 120)}\` is not \`sync-slot N <state-dir>/slots rrsync -ro <root>\``,
      };
    syncSlot = { script, slots: Number(n), slotsDir };
    k = 3;
  }
  const rrsync = w[k] ?? '';
  if (!isAbsolute(rrsync) || basename(rrsync) !== 'rrsync')
    return {
      ok: false,
      why: `the command runs \`${oneLine(rrsync, 60)}\`, not rrsync: the key can do whatever it does`,
    };
  const args = w.slice(k + 1);
  const root = trimSlash(masterRoot);
  if (args.includes('-wo'))
    return {
      ok: false,
      why: `\`rrsync -wo\`: the key can write into ${args.at(-1) ?? 'the tree'}, and cannot read it`,
    };
  if (!args.includes('-ro'))
    return { ok: false, why: `rrsync without -ro: the key can write into ${args.at(-1) ?? 'the tree'}` };
  if (args.length !== 2 || args[0] !== '-ro')
    return { ok: false, why: `\`rrsync ${args.join(' ')}\` is not \`rrsync -ro ${root}\`` };
  if (trimSlash(args[1] as string) !== root)
    return { ok: false, why: `the key reads ${args[1]}, not the master root ${root}` };
  return { ok: true, cmd: { rrsync, root, syncSlot } };
}

/**
 * The report key's command as stage writes it: the report sink (its reports/ in the state dir beside the sink, or,
 * from older stages, in the master root), or the write-only rrsync of older stages still; else null.
 */
export function parseReportCommand(
  command: string,
  masterRoot: string,
): { kind: 'sink'; sink: string; reports: string; publicReports: boolean } | { kind: 'rrsync-wo' } | null {
  const old = `${trimSlash(masterRoot)}/${REPORT_DIR}`;
  const w = command.split(' ');
  if (w.length === 8 && w[0] === PYTHON && w[1] === '-I' && basename(w[2] ?? '') === 'report-sink') {
    const sink = w[2] as string;
    const reports = w[3] as string;
    if (reports === `${dirname(sink)}/${REPORT_DIR}` || reports === old)
      return { kind: 'sink', sink, reports, publicReports: reports === old };
    return null;
  }
  if (
    w.length === 5 &&
    basename(w[0] ?? '') === 'rrsync' &&
    w[1] === '-wo' &&
    w[2] === '-no-lock' &&
    w[3] === '-no-del' &&
    w[4] === old
  )
    return { kind: 'rrsync-wo' };
  return null;
}

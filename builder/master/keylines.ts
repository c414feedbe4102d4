// The authorized_keys lines that give each key exactly one right on the master (read-only root, write-only reports).

// Why: the master's authorized_keys entry that lets the node key do nothing but read-only rsync of the master root.
export function authorizedKeysLine(nodeKeyPub: string, masterRoot: string, rrsync = '/usr/bin/rrsync'): string {
  checkCommandPaths('authorizedKeysLine', [
    ['masterRoot', masterRoot],
    ['rrsync', rrsync],
  ]);
  return keyLine(`restrict,command="${rrsync} -ro ${masterRoot}"`, nodeKeyPub, 'authorizedKeysLine');
}

// Why: the entry that lets the report key do nothing but write-only rsync into <master root>/reports (boot reports).
// A separate key from the node key: sshd uses the first line that matches a key, so one key cannot have both commands.
import { checkCommandPaths, keyLine } from '../sshkeys.ts';
import { REPORT_DIR } from '../../agent/contract/tree.ts';
// -no-lock: nodes report at the same moment after a mass reboot (rrsync's single-run lock would turn them away);
// -no-del: a node may replace its report but never delete anything.
export function reportKeysLine(reportKeyPub: string, masterRoot: string, rrsync = '/usr/bin/rrsync'): string {
  checkCommandPaths('reportKeysLine', [
    ['masterRoot', masterRoot],
    ['rrsync', rrsync],
  ]);
  const reports = `${masterRoot.replace(/\/+$/, '')}/${REPORT_DIR}`;
  return keyLine(`restrict,command="${rrsync} -wo -no-lock -no-del ${reports}"`, reportKeyPub, 'reportKeysLine');
}

// What `builder pack` puts at fixed places in the initramfs and the agent reads there.
import { existsSync, readFileSync } from 'node:fs';

/** The access files: the node key, the master's pinned host key, the stamp-verify key, the report key. */
export const KEY_DIR = '/etc/clusterboot';
export const NODE_KEY = `${KEY_DIR}/node_key`;
export const KNOWN_HOSTS = `${KEY_DIR}/known_hosts`;
export const STAMP_KEY = `${KEY_DIR}/stamp.pub.pem`;
/** The second key: its only right on the master is `rrsync -wo <root>/reports` (boot reports). */
export const REPORT_KEY = `${KEY_DIR}/report_key`;
/** The packed modules in load order, one path relative to /lib/modules/<version> per line. */
export const MODULE_LIST = `${KEY_DIR}/modules.list`;
/** The name the master's host key is pinned under in known_hosts (HostKeyAlias), whatever its address. */
export const HOST_ALIAS = 'clusterboot-master';
/** transport=rsyncd: the read-only daemon module that serves the master root. */
export const RSYNCD_MODULE = 'clusterboot';

/** The packed stamp-verify key (PEM), or null when the initramfs was packed without `--sign`. */
export function stampKey(): string | null {
  return existsSync(STAMP_KEY) ? readFileSync(STAMP_KEY, 'utf8') : null;
}

// The root template from a running system, as the seed made it (`cp -ax / /data/slaves/rootfs/`, then its
// clean-ups), and the boot firmware set for bootfs/. The clean-up is a pure function over the list of the system's
// entries: what to leave out of the copy and which files to rewrite in it. The copy itself (rsync, one file system,
// the clean-up's paths excluded, so no secret of the master is ever copied) and the walk are the effects at the end.
import { spawnSync } from 'node:child_process';
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** One entry of the system root, relative to it ('etc/fstab'), as lstat sees it. */
export interface TreeEntry {
  path: string;
  kind: 'file' | 'dir' | 'link' | 'other';
}

export interface CleanupInput {
  entries: readonly TreeEntry[];
  /** The texts of the files the clean-up rewrites, when the system has them (relative path -> text). */
  texts: Readonly<Record<string, string>>;
  /** Absolute paths (on the system root) that are never copied: the master root, keys, state, … and --exclude. */
  exclude: readonly string[];
  /** Key blobs (base64) of the clusterboot keys: their lines leave root's authorized_keys. */
  clusterKeys: readonly string[];
}

export interface CleanupPlan {
  /** Relative paths left out of the copy (a directory: with everything below), sorted. */
  exclude: string[];
  /** Files written into the template after the copy (relative path -> text). */
  rewrite: Array<{ path: string; text: string; why: string }>;
  /** What each exclusion is for, for --dry-run. */
  reasons: Map<string, string>;
}

export const FSTAB = 'etc/fstab';
export const HOSTS = 'etc/hosts';
export const ROOT_AUTHORIZED_KEYS = 'root/.ssh/authorized_keys';

/** The seed's bare /etc/hosts (127.0.0.1 localhost), with Debian's IPv6 loopback lines: names come from DHCP and DNS. */
export const BARE_HOSTS = `127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
`;

const HISTORY = new Set([
  '.bash_history',
  '.zsh_history',
  '.sh_history',
  '.ash_history',
  '.history',
  '.python_history',
  '.lesshst',
  '.mysql_history',
  '.psql_history',
  '.node_repl_history',
  '.sqlite_history',
  '.viminfo',
  'fish_history',
]);

/** fstab mount points the initramfs owns (/, /boot, /boot/firmware) or that stay on the master (/data and below). */
export function fstabDropped(mountPoint: string): boolean {
  const m = mountPoint.replace(/\/+$/, '') || '/';
  return m === '/' || m === '/boot' || m === '/boot/firmware' || m === '/data' || m.startsWith('/data/');
}

/** The seed's `sed -i 's~^/.* / .*$~#&~'` for /, /boot and /data, for any device spelling (UUID=, PARTUUID=, LABEL=). */
export function cleanFstab(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      const f = line.trim().split(/\s+/);
      if (line.trimStart().startsWith('#') || f.length < 2 || !fstabDropped(f[1] ?? '')) return line;
      return `#${line}`;
    })
    .join('\n');
}

/** root's authorized_keys without the lines of the clusterboot keys (the admin's own keys stay). */
export function cleanAuthorizedKeys(text: string, blobs: readonly string[]): string {
  const have = new Set(blobs.filter(Boolean));
  return text
    .split('\n')
    .filter((l) => !l.split(/\s+/).some((w) => have.has(w)))
    .join('\n');
}

/** Paths under the system root, relative ('' for the root itself), of absolute paths; null when outside it. */
export function relativeTo(systemRoot: string, abs: string): string | null {
  const r = systemRoot.replace(/\/+$/, '');
  const a = abs.replace(/\/+$/, '');
  if (r === '') return a.replace(/^\/+/, '');
  if (a === r) return '';
  return a.startsWith(`${r}/`) ? a.slice(r.length + 1) : null;
}

function under(path: string, dir: string): boolean {
  return path === dir || path.startsWith(`${dir}/`);
}

// Why: the seed's clean-ups, and what a template read by every node (and by anyone with the node key) must not hold.
export function templateCleanup(input: CleanupInput): CleanupPlan {
  const reasons = new Map<string, string>();
  const drop = (p: string, why: string) => {
    if (!reasons.has(p)) reasons.set(p, why);
  };
  for (const x of input.exclude) drop(x.replace(/^\/+/, '').replace(/\/+$/, ''), 'excluded (the master only)');
  drop('data', "the master's /data (the seed: rmdir rootfs/data)");
  drop('var/swap', 'the swap file (dphys-swapfile)');
  drop('etc/clusterboot', "the master's clusterboot keys");
  drop('var/lib/clusterboot', "the master's clusterboot state");
  drop('etc/dnsmasq.d/clusterboot.conf', "the master's dnsmasq configuration");
  drop('var/lib/misc/dnsmasq.leases', "the master's DHCP leases");
  const byPath = new Set(input.entries.map((e) => e.path));
  for (const e of input.entries) {
    const p = e.path;
    const base = p.slice(p.lastIndexOf('/') + 1);
    if (e.kind !== 'dir' && HISTORY.has(base) && (under(p, 'root') || under(p, 'home'))) drop(p, 'a shell history');
    else if (/^etc\/udev\/rules\.d\/[^/]*persistent-net[^/]*\.rules$/.test(p))
      drop(p, 'udev persistent-net rules (the nodes have other MACs)');
    else if (e.kind !== 'dir' && (under(p, 'var/cache/apt') || under(p, 'var/lib/apt/lists')) && base !== 'lock')
      drop(p, 'apt caches (apt-get clean)');
    else if (/^etc\/ssh\/ssh_host_[^/]*$/.test(p))
      drop(p, "the master's SSH host keys (the nodes make their own; the node key can read the template)");
    else if (
      /^etc\/systemd\/system\/[^/]+\.wants\/dnsmasq\.service$/.test(p) ||
      /^etc\/rc[0-6S]\.d\/S\d*dnsmasq$/.test(p)
    )
      drop(p, "dnsmasq's start link (one DHCP server: the master)");
    else if (e.kind !== 'dir' && (/^tmp\//.test(p) || /^var\/tmp\//.test(p))) drop(p, 'temporary files');
  }
  // keep the exclusions that name something in the system, minus those inside an excluded directory
  const all = [...reasons.keys()].filter((p) => p !== '' && byPath.has(p)).sort();
  const exclude = all.filter((p, i) => !all.slice(0, i).some((q) => under(p, q)));
  const rewrite: CleanupPlan['rewrite'] = [];
  const fstab = input.texts[FSTAB];
  if (fstab !== undefined) {
    const t = cleanFstab(fstab);
    if (t !== fstab) rewrite.push({ path: FSTAB, text: t, why: 'fstab without the /, /boot and /data lines' });
  }
  if (byPath.has('etc') && input.texts[HOSTS] !== BARE_HOSTS)
    rewrite.push({ path: HOSTS, text: BARE_HOSTS, why: 'a bare /etc/hosts (names come from DHCP and DNS)' });
  const ak = input.texts[ROOT_AUTHORIZED_KEYS];
  if (ak !== undefined && !exclude.some((x) => under(ROOT_AUTHORIZED_KEYS, x))) {
    const t = cleanAuthorizedKeys(ak, input.clusterKeys);
    if (t !== ak)
      rewrite.push({ path: ROOT_AUTHORIZED_KEYS, text: t, why: "without the nodes' clusterboot key lines" });
  }
  return { exclude, rewrite, reasons };
}

/** The entries the copy writes: everything not excluded (for --dry-run's list of files). */
export function copiedEntries(entries: readonly TreeEntry[], exclude: readonly string[]): TreeEntry[] {
  const ex = new Set(exclude);
  return entries.filter((e) => {
    for (let p = e.path; ; p = p.slice(0, p.lastIndexOf('/'))) {
      if (ex.has(p)) return false;
      if (!p.includes('/')) return true;
    }
  });
}

/** An rsync exclude rule matching exactly one path relative to the transfer root (wildcards escaped). */
export function rsyncExactRule(rel: string): string {
  const anchored = `/${rel}`;
  return /[*?[\\]/.test(anchored) ? anchored.replace(/[*?[\\]/g, (c) => `\\${c}`) : anchored;
}

// ---------------------------------------------------------------------------------------------------------------
// boot firmware

/** Files of the Pi firmware directory that go into bootfs/: the firmware, the device trees and overlays (not the
 *  kernels, initramfs or cmdline.txt: U-Boot loads the first stage). config.txt is rewritten (bootConfig). */
export function firmwareFiles(names: readonly string[]): string[] {
  return names
    .filter(
      (n) =>
        /^[^/]+\.(bin|dat|elf|dtb)$/.test(n) &&
        !/^kernel[^/]*\.img$/.test(n) &&
        !/^u-boot[^/]*\.bin$/.test(n) &&
        !/^initramfs/.test(n),
    )
    .sort();
}

/** The seed's config.txt: `grep -v initramfs` and `kernel=u-boot.bin`, plus arm_64bit=1 for the arm64 U-Boot. */
export function bootConfig(configTxt: string | null): string {
  const BLOCK = '# clusterboot: the firmware starts U-Boot, which loads the first stage from the master';
  const lines = (configTxt ?? '').split('\n');
  const own = lines.indexOf(BLOCK); // a config.txt init wrote before: its block (always last) is written again
  const keep = (own >= 0 ? lines.slice(0, own) : lines).filter(
    (l) => !/^\s*(initramfs|kernel|arm_64bit|auto_initramfs)\b/.test(l),
  );
  while (keep.length && keep[keep.length - 1]?.trim() === '') keep.pop();
  return `${keep.join('\n')}${keep.length ? '\n\n' : ''}${BLOCK}\n[all]\narm_64bit=1\nkernel=u-boot.bin\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// effects

/** The system root's entries on its own file system (`cp -x`): a mount point is listed, what is below it is not. */
export function walkSystem(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const dev = lstatSync(root).dev;
  const walk = (rel: string) => {
    const names = readdirSync(join(root, rel)).sort();
    for (const name of names) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p), { throwIfNoEntry: false });
      if (!st) continue;
      const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : st.isFile() ? 'file' : 'other';
      out.push({ path: p, kind });
      if (kind === 'dir' && st.dev === dev) walk(p);
    }
  };
  walk('');
  return out;
}

/** `cp -ax <root>/ <dest>/` without the excluded paths: rsync -aHAXx, numeric ids; dest must not exist yet. */
export function copySystem(root: string, dest: string, exclude: readonly string[]): void {
  const rules = `${exclude.map(rsyncExactRule).join('\0')}\0`;
  const args = ['-aHAXx', '--numeric-ids', '--from0', '--exclude-from=-', `${root.replace(/\/+$/, '')}/`, `${dest}/`];
  const r = spawnSync('/usr/bin/rsync', args, { input: rules, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`copying ${root} into ${dest}: cannot run /usr/bin/rsync: ${r.error.message}`);
  // 24: files vanished while copying a running system (logs, sockets): the copy is still whole
  if (r.status !== 0 && r.status !== 24)
    throw new Error(`copying ${root} into ${dest}: rsync exited with ${r.status}: ${r.stderr.trim().slice(-2000)}`);
}

// Kernel command line -> typed agent parameters. Pure: the caller reads /proc/cmdline and prints warnings/unknowns.
import { parseButtonParam } from './plans/button.ts';

/** How the writable layer over the root is provided (seed name `aufs=`, also `overlay=`). */
export type OverlayMode = 'disk' | 'tmpfs' | 'none';

/** Everything the agent takes from the kernel command line; absent optional fields mean "not given". */
export interface Params {
  /** masterip=IP (seed name) or master=HOST; unset: the agent works it out from the DHCP lease. */
  master?: string;
  /** masteruser=, default 'root' (restricted by rrsync -ro on the master). */
  masterUser: string;
  /** masterport=, default 22. */
  masterPort: number;
  /** masterroot=, default '' (path prefix under the rrsync root, which is /data/slaves in the seed layout). */
  masterRoot: string;
  /** transport=ssh|rsyncd, default ssh. */
  transport: 'ssh' | 'rsyncd';
  /** aufs=disk|tmpfs|none (seed name) or overlay=..., default disk (like the seed's bootargs). */
  overlay: OverlayMode;
  /** disk=, default /dev/mmcblk0. */
  disk: string;
  /** disktimeout= seconds to wait for the disk to appear, default 30. */
  diskTimeout: number;
  /** wipe=<serial>: wipe the disk whose serial matches. */
  wipe?: string;
  /** modules=a,b,c: extra kernel modules loaded after the packed list. */
  modules: string[];
  /** init= program run after switch_root, default /sbin/init. */
  init: string;
  /** rescue (or rescue=1): drop to a shell on fatal errors instead of retrying. */
  rescue: boolean;
  /** break=<phase>: stop with a shell before that phase. */
  break?: string;
  /** dryrun / clusterboot.dryrun: plan and print, change nothing on disk. */
  dryRun: boolean;
  /** rollback: boot the previous root slot. */
  rollback: boolean;
  /** reset / clusterboot.reset: wipe the writable layer. */
  reset: boolean;
  /** quiet: the kernel's own flag, kept so the agent can be quiet too. */
  quiet: boolean;
  /** retries=: bounded master retries before the fallback, default 5. */
  retries: number;
  /** hostname= override of the DHCP-provided name. */
  hostname?: string;
  /** ip=: unset means dhcp; any other value (static form) is kept as given. */
  ip?: string;
  /** syslog=host[:port]: remote syslog target. */
  syslog?: string;
  /** button=<chip>:<line>[:high]: recovery button, held at boot to wipe the writable layer and resync the root. */
  button?: string;
  /** watchdog= seconds, default 15, 0 disables. */
  watchdog: number;
  /** leds=off or gpiochipN:a,b,c, default gpiochip0:22,23,24. */
  leds: string;
  /** clusterboot.hang=<phase>: test/debug aid, hang in that phase. */
  debugHang?: string;
}

/** Parsed parameters plus what the caller should print: bad values (defaults kept) and tokens nobody owns. */
export interface ParseResult {
  params: Params;
  warnings: string[];
  unknown: string[];
}

// Defaults in one place so the docs table, the parser and the warnings agree.
const DEFAULTS: Readonly<Params> = Object.freeze({
  masterUser: 'root',
  masterPort: 22,
  masterRoot: '',
  transport: 'ssh',
  overlay: 'disk',
  disk: '/dev/mmcblk0',
  diskTimeout: 30,
  modules: [],
  init: '/sbin/init',
  rescue: false,
  dryRun: false,
  rollback: false,
  reset: false,
  quiet: false,
  retries: 5,
  watchdog: 15,
  leds: 'gpiochip0:22,23,24',
});

/** The parameter table the README renders: one row per field of Params, in the same order. */
export const PARAM_DOCS: readonly { name: string; values: string; default: string; meaning: string }[] = Object.freeze([
  { name: 'masterip= / master=', values: 'IP address (masterip) or host name or IP (master)', default: '(unset: from the DHCP lease)', meaning: 'the master that serves the partition table and the root template' },
  { name: 'masteruser=', values: 'user name', default: DEFAULTS.masterUser, meaning: 'ssh user on the master (restricted there by rrsync -ro)' },
  { name: 'masterport=', values: '1..65535', default: String(DEFAULTS.masterPort), meaning: 'ssh (or rsyncd) port on the master' },
  { name: 'masterroot=', values: 'relative path, no ".."', default: "'' (the rrsync root itself, /data/slaves in the seed layout)", meaning: 'path prefix under the rrsync root' },
  { name: 'transport=', values: 'ssh | rsyncd', default: DEFAULTS.transport, meaning: 'how rsync reaches the master' },
  { name: 'aufs= / overlay=', values: 'disk | tmpfs | none', default: DEFAULTS.overlay, meaning: 'where the writable layer over the root lives (none: no overlay)' },
  { name: 'disk=', values: '/dev/... block device', default: DEFAULTS.disk, meaning: 'the local disk holding the roots' },
  { name: 'disktimeout=', values: 'seconds, 0..3600', default: String(DEFAULTS.diskTimeout), meaning: 'how long to wait for the disk to appear' },
  { name: 'wipe=', values: 'disk serial', default: '(unset)', meaning: 'wipe the disk, but only if its serial matches (guards against the wrong card)' },
  { name: 'modules=', values: 'comma-separated module names', default: '(none)', meaning: 'extra kernel modules to load after the packed list' },
  { name: 'init=', values: 'absolute path', default: DEFAULTS.init, meaning: 'program run as PID 1 after switch_root' },
  { name: 'rescue', values: 'flag, or rescue=0|1', default: 'off', meaning: 'on fatal errors drop to a shell instead of rebooting to retry' },
  { name: 'break=', values: 'phase name', default: '(unset)', meaning: 'stop with a shell before that phase' },
  { name: 'dryrun / clusterboot.dryrun', values: 'flag, or =0|1', default: 'off', meaning: 'plan and print, change nothing on disk' },
  { name: 'rollback', values: 'flag, or rollback=0|1', default: 'off', meaning: 'boot the previous root slot' },
  { name: 'reset / clusterboot.reset', values: 'flag, or =0|1', default: 'off', meaning: 'wipe the writable layer' },
  { name: 'quiet', values: 'flag', default: 'off', meaning: "the kernel's own; the agent also prints less" },
  { name: 'retries=', values: '0..100', default: String(DEFAULTS.retries), meaning: 'attempts to reach the master before the fallback' },
  { name: 'hostname=', values: 'host name (RFC 1123)', default: '(unset: from the DHCP lease)', meaning: 'override the node name' },
  { name: 'ip=', values: 'dhcp, or the kernel static form client:server:gw:netmask:host:dev:autoconf', default: 'dhcp', meaning: 'network configuration' },
  { name: 'button=', values: "off | gpiochipN:line[:high]", default: '(unset: no button)', meaning: 'recovery button: held 2 s at power-on, wipes the writable layer and forces a full root resync' },
  { name: 'syslog=', values: 'host[:port]', default: '(unset: no remote log)', meaning: 'send the agent log to a syslog server (UDP, port 514 if not given)' },
  { name: 'watchdog=', values: 'seconds, 0..3600 (0 disables)', default: String(DEFAULTS.watchdog), meaning: 'hardware watchdog timeout while the agent runs' },
  { name: 'leds=', values: 'off | gpiochipN:line[,line...]', default: DEFAULTS.leds, meaning: 'status LEDs' },
  { name: 'clusterboot.hang=', values: 'phase name', default: '(unset)', meaning: 'test/debug aid: hang in that phase (exercises the watchdog)' },
]);

// Non-dotted parameters the kernel (or the firmware/bootloader) owns: accepted silently, never "unknown".
const KERNEL_OWNED: ReadonlySet<string> = new Set([
  'console', 'root', 'rootwait', 'rootdelay', 'rootfstype', 'rootflags', 'rdinit', 'initrd', 'noinitrd',
  'panic', 'loglevel', 'earlycon', 'earlyprintk', 'keep_bootcon', 'ignore_loglevel', 'debug', 'rw', 'ro',
  'kgdboc', 'kgdbwait', 'elevator', 'coherent_pool', 'cma', 'mem', 'maxcpus', 'nosmp', 'isolcpus',
  'cgroup_enable', 'cgroup_disable', 'cgroup_memory', 'swapaccount', 'fbcon', 'video', 'consoleblank',
  'splash', 'nosplash', 'logo', 'nokaslr', 'kaslr', 'mitigations', 'audit', 'selinux', 'apparmor', 'security',
  'crashkernel', 'reboot', 'oops', 'nohz', 'nohz_full', 'rcu_nocbs', 'irqaffinity', 'initcall_debug',
  'sysrq_always_enabled', 'resume', 'noresume', 'nfsroot', 'biosdevname', 'hung_task_panic', 'softlockup_panic',
  'usbhid', 'numa', 'hugepages', 'transparent_hugepage', 'lpj', 'clk_ignore_unused', 'pd_ignore_unused', 'fsck',
]);

// Values accepted for boolean parameters written with '=' (a bare flag means true).
const TRUE_WORDS: ReadonlySet<string> = new Set(['1', 'y', 'yes', 'true', 'on']);
const FALSE_WORDS: ReadonlySet<string> = new Set(['0', 'n', 'no', 'false', 'off']);

/** Split /proc/cmdline text the way the kernel does: whitespace separates, double quotes group and are removed. */
export function tokenizeCmdline(text: string): string[] {
  const tokens: string[] = [];
  let current = '';
  let inQuote = false;
  let started = false;
  const s = typeof text === 'string' ? text : '';
  for (const ch of s) {
    if (ch === '"') {
      inQuote = !inQuote;
      started = true;
      continue;
    }
    if (!inQuote && isKernelSpace(ch)) {
      if (started && current !== '') tokens.push(current);
      current = '';
      started = false;
      continue;
    }
    current += ch;
    started = true;
  }
  if (started && current !== '') tokens.push(current);
  return tokens;
}

// The kernel's isspace(): space, \t, \n, \v, \f, \r.
function isKernelSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r';
}

// Make a user-supplied value safe to print on a console: escape control bytes, cap the length.
function show(value: string): string {
  let out = '';
  for (const ch of value) {
    const code = ch.codePointAt(0) ?? 0;
    out += code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0) ? `\\x${code.toString(16).padStart(2, '0')}` : ch;
  }
  return out.length > 80 ? `${out.slice(0, 77)}...` : out;
}

// How a default or current value reads in a warning.
function showValue(v: unknown): string {
  if (v === undefined) return 'unset';
  if (Array.isArray(v)) return v.length === 0 ? 'none' : show(v.join(','));
  if (v === '') return "''";
  return show(String(v));
}

// Validators: each returns the parsed value or undefined when malformed.
function parseInt0(value: string, min: number, max: number): number | undefined {
  if (!/^[0-9]{1,9}$/.test(value)) return undefined;
  const n = Number(value);
  return n >= min && n <= max ? n : undefined;
}

function isIPv4(value: string): boolean {
  const parts = value.split('.');
  return parts.length === 4 && parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255);
}

function isIPv6(value: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(value) || !value.includes(':') || value.length > 45) return false;
  const doubles = value.split('::').length - 1;
  if (doubles > 1) return false;
  const groups = value.split(':').filter((g) => g !== '');
  const last = groups[groups.length - 1];
  const v4Tail = last !== undefined && last.includes('.');
  if (v4Tail && !isIPv4(last)) return false;
  const hexGroups = v4Tail ? groups.slice(0, -1) : groups;
  if (!hexGroups.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const width = hexGroups.length + (v4Tail ? 2 : 0);
  return doubles === 1 ? width < 8 : width === 8;
}

function isHostname(value: string): boolean {
  if (value.length === 0 || value.length > 253) return false;
  return value.split('.').every((label) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

function isHost(value: string): boolean {
  return isIPv4(value) || isIPv6(value) || isHostname(value);
}

// host[:port] or [v6]:port; port 1..65535.
function isHostPort(value: string): boolean {
  const bracket = /^\[([^\]]+)\](?::([0-9]+))?$/.exec(value);
  if (bracket) return isIPv6(bracket[1] ?? '') && (bracket[2] === undefined || parseInt0(bracket[2], 1, 65535) !== undefined);
  if (isIPv6(value)) return true;
  const colon = value.lastIndexOf(':');
  if (colon < 0) return isHost(value);
  return isHost(value.slice(0, colon)) && parseInt0(value.slice(colon + 1), 1, 65535) !== undefined;
}

// A printable token without control bytes (whitespace cannot occur after tokenizing).
function isPrintable(value: string): boolean {
  return value.length > 0 && value.length <= 256 && !/[\x00-\x20\x7f-\x9f]/.test(value);
}

function isPhaseName(value: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(value);
}

function isModuleName(value: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(value);
}

// Which of our parameters a key names, with the message used when its value is malformed.
type Key =
  | 'master' | 'masterip' | 'masteruser' | 'masterport' | 'masterroot' | 'transport' | 'aufs' | 'overlay' | 'disk'
  | 'disktimeout' | 'wipe' | 'modules' | 'init' | 'rescue' | 'break' | 'dryrun' | 'rollback' | 'reset' | 'quiet'
  | 'retries' | 'hostname' | 'ip' | 'syslog' | 'watchdog' | 'leds' | 'hang' | 'button';

const KEYS: Readonly<Record<string, Key>> = Object.freeze<Record<string, Key>>({
  master: 'master', masterip: 'masterip', masteruser: 'masteruser', masterport: 'masterport',
  masterroot: 'masterroot', transport: 'transport', aufs: 'aufs', overlay: 'overlay', disk: 'disk',
  disktimeout: 'disktimeout', wipe: 'wipe', modules: 'modules', init: 'init', rescue: 'rescue', break: 'break',
  dryrun: 'dryrun', 'clusterboot.dryrun': 'dryrun', rollback: 'rollback', reset: 'reset',
  'clusterboot.reset': 'reset', quiet: 'quiet', retries: 'retries', hostname: 'hostname', ip: 'ip',
  syslog: 'syslog', watchdog: 'watchdog', leds: 'leds', 'clusterboot.hang': 'hang', button: 'button',
});

/** Turn /proc/cmdline text into Params; never throws; bad values keep the value in effect and produce a warning. */
export function parseCmdline(text: string, knownPhases?: readonly string[]): ParseResult {
  const params: Params = { ...DEFAULTS, modules: [] };
  const warnings: string[] = [];
  const unknown: string[] = [];
  let tokens: string[];
  try {
    tokens = tokenizeCmdline(text);
  } catch {
    tokens = [];
  }
  const phases = Array.isArray(knownPhases) ? knownPhases.filter((p): p is string => typeof p === 'string') : undefined;

  for (const token of tokens) {
    if (token === '--') break; // the rest is argv for init, not parameters
    const eq = token.indexOf('=');
    const name = eq < 0 ? token : token.slice(0, eq);
    const value = eq < 0 ? undefined : token.slice(eq + 1);
    const key = Object.hasOwn(KEYS, name) ? KEYS[name] : undefined;
    if (key === undefined) {
      if (name.startsWith('clusterboot.') || name === 'clusterboot') unknown.push(show(token));
      else if (name.includes('.') && !name.startsWith('.') && !name.endsWith('.')) continue; // module.param: the kernel's
      else if (KERNEL_OWNED.has(name)) continue;
      else unknown.push(show(token));
      continue;
    }
    applyParam(params, key, name, value, phases, warnings);
  }
  return { params, warnings, unknown };
}

// Apply one of our parameters; on a malformed value push a warning and leave params as they are.
function applyParam(
  params: Params,
  key: Key,
  name: string,
  value: string | undefined,
  phases: readonly string[] | undefined,
  warnings: string[],
): void {
  const bad = (expected: string, current: unknown): void => {
    const shown = value === undefined ? name : `${name}=${show(value)}`;
    warnings.push(`${shown}: expected ${expected}; using ${showValue(current)}`);
  };
  const flag = (field: 'rescue' | 'dryRun' | 'rollback' | 'reset' | 'quiet'): void => {
    if (value === undefined) params[field] = true;
    else if (TRUE_WORDS.has(value.toLowerCase())) params[field] = true;
    else if (FALSE_WORDS.has(value.toLowerCase())) params[field] = false;
    else bad(`a bare flag or ${name}=0|1`, params[field]);
  };
  const phase = (field: 'break' | 'debugHang'): void => {
    const ok = value !== undefined && isPhaseName(value) && (phases === undefined || phases.includes(value));
    if (ok) params[field] = value;
    else bad(`${name}=<phase>${phases && phases.length > 0 ? ` with phase one of ${phases.join('|')}` : ''}`, params[field]);
  };
  const v = value ?? '';
  switch (key) {
    case 'masterip':
      if (isIPv4(v) || isIPv6(v)) params.master = v;
      else bad('an IP address', params.master);
      return;
    case 'master':
      if (isHost(v)) params.master = v;
      else bad('a host name or IP address', params.master);
      return;
    case 'masteruser':
      if (/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(v)) params.masterUser = v;
      else bad('a user name', params.masterUser);
      return;
    case 'masterport': {
      const n = parseInt0(v, 1, 65535);
      if (n !== undefined) params.masterPort = n;
      else bad('a port 1..65535', params.masterPort);
      return;
    }
    case 'masterroot':
      if (value !== undefined && (v === '' || (isPrintable(v) && !v.split('/').includes('..')))) params.masterRoot = v;
      else bad('a path without ".."', params.masterRoot);
      return;
    case 'transport':
      if (v === 'ssh' || v === 'rsyncd') params.transport = v;
      else bad('ssh|rsyncd', params.transport);
      return;
    case 'aufs':
    case 'overlay':
      if (v === 'disk' || v === 'tmpfs' || v === 'none') params.overlay = v;
      else bad('disk|tmpfs|none', params.overlay);
      return;
    case 'disk':
      if (/^\/dev\/[A-Za-z0-9._:\/-]+$/.test(v) && !v.split('/').includes('..') && v.length <= 256) params.disk = v;
      else bad('a /dev/... block device path', params.disk);
      return;
    case 'disktimeout': {
      const n = parseInt0(v, 0, 3600);
      if (n !== undefined) params.diskTimeout = n;
      else bad('seconds 0..3600', params.diskTimeout);
      return;
    }
    case 'wipe':
      if (v.trim() !== '' && v.length <= 256 && !/[\x00-\x1f\x7f]/.test(v)) params.wipe = v;
      else bad('wipe=<disk serial>', params.wipe);
      return;
    case 'modules': {
      const names = v.split(',').filter((m) => m !== '');
      if (value !== undefined && names.every(isModuleName)) params.modules = names;
      else bad('comma-separated module names', params.modules);
      return;
    }
    case 'init':
      if (/^\/[^\x00-\x20\x7f-\x9f]*$/.test(v) && v.length <= 256) params.init = v;
      else bad('an absolute path', params.init);
      return;
    case 'rescue':
      return flag('rescue');
    case 'dryrun':
      return flag('dryRun');
    case 'rollback':
      return flag('rollback');
    case 'reset':
      return flag('reset');
    case 'quiet':
      return flag('quiet');
    case 'break':
      return phase('break');
    case 'hang':
      return phase('debugHang');
    case 'retries': {
      const n = parseInt0(v, 0, 100);
      if (n !== undefined) params.retries = n;
      else bad('an integer 0..100', params.retries);
      return;
    }
    case 'hostname':
      if (isHostname(v)) params.hostname = v;
      else bad('a host name (letters, digits, "-", dots)', params.hostname);
      return;
    case 'ip':
      if (/^(dhcp|on|any|both|bootp|rarp|off|none|dhcp6|auto6|ibft)$/.test(v) || isIPv4(v) || (v.includes(':') && isPrintable(v)))
        params.ip = v;
      else bad('dhcp or client:server:gw:netmask:host:dev:autoconf', params.ip);
      return;
    case 'button': {
      const b = parseButtonParam(v);
      if ('error' in b) bad("off or gpiochipN:line[:high]", params.button);
      else params.button = v;
      return;
    }
    case 'syslog':
      if (isHostPort(v)) params.syslog = v;
      else bad('host[:port]', params.syslog);
      return;
    case 'watchdog': {
      const n = parseInt0(v, 0, 3600);
      if (n !== undefined) params.watchdog = n;
      else bad('seconds 0..3600 (0 disables)', params.watchdog);
      return;
    }
    case 'leds': {
      if (v === 'off' || /^gpiochip[0-9]{1,3}:[0-9]{1,4}(?:,[0-9]{1,4})*$/.test(v)) params.leds = v;
      else bad('off or gpiochipN:line[,line...]', params.leds);
      return;
    }
  }
}

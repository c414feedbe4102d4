// Kernel command line -> typed agent parameters. Pure: the caller reads /proc/cmdline and prints warnings/unknowns.
import { parseButtonParam } from './plans/button.ts';
import { isHostname } from './plans/hostname.ts';
import { isStageId, STAGE_SOURCES, type StageSource } from './contract/firststage.ts';
import { BOOT_SET_SOURCES, type BootSetSource } from './contract/firmware.ts';

/** How the writable layer over the root is provided (seed name `aufs=`, also `overlay=`). */
export type OverlayMode = 'disk' | 'tmpfs' | 'none';

// Names, defaults, accepted values and docs of each field live in one place: TABLE below.
/** Everything the agent takes from the kernel command line; absent optional fields mean "not given". */
export interface Params {
  /**
   * masterip=IP (seed name) or master=HOST, or an ordered list of them (`a,b,c`: the first that answers serves the
   * boot); unset: the agent works it out from the DHCP lease. Kept as written; masterList() splits it.
   */
  master?: string;
  /** masteruser=: ssh user on the master (restricted by rrsync -ro there). */
  masterUser: string;
  /** masterport=: ssh (or rsyncd) port. */
  masterPort: number;
  /** masterroot=: path prefix under the rrsync root. */
  masterRoot: string;
  /** transport=ssh|rsyncd. */
  transport: 'ssh' | 'rsyncd';
  /** aufs= (seed name) or overlay=: where the writable layer lives. */
  overlay: OverlayMode;
  /** disk=: the local disk holding the roots. */
  disk: string;
  /** disktimeout=: seconds to wait for the disk to appear. */
  diskTimeout: number;
  /** wipe=<serial>: wipe the disk whose serial matches. */
  wipe?: string;
  /** adopt=<serial>: take the disk whose serial matches, keeping its partitions, and mark it ours. */
  adopt?: string;
  /** newidentity: make the node's own SSH host keys and machine-id again. */
  newIdentity: boolean;
  /** modules=a,b,c: extra kernel modules loaded after the packed list. */
  modules: string[];
  /** init=: program run after switch_root. */
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
  /** retries=: bounded master retries before the fallback. */
  retries: number;
  /** retrywait=: seconds between a failure and the reboot that retries (doubled per further failure in one boot, at most 300). */
  retryWait: number;
  /** hostname= override of the DHCP-provided name. */
  hostname?: string;
  /** ip=: unset means dhcp; any other value (static form) is kept as given. */
  ip?: string;
  /** syslog=host[:port]: remote syslog target. */
  syslog?: string;
  /** button=<chip>:<line>[:high]: recovery button, held at boot to wipe the writable layer and resync the root. */
  button?: string;
  /** watchdog=: hardware watchdog seconds, 0 disables. */
  watchdog: number;
  /** leds=off or gpiochipN:a,b,c. */
  leds: string;
  /** clusterboot.hang=<phase>: test/debug aid, hang in that phase. */
  debugHang?: string;
  /** clusterboot.fs=<id>: the first stage U-Boot booted (set by clusterboot's boot scripts). */
  stageId?: string;
  /** clusterboot.from=: how U-Boot loaded it. */
  stageFrom?: StageSource;
  /** clusterboot.try=N: the try of a new first stage. */
  stageTry?: number;
  /** clusterboot.failed=<id>: the new first stage U-Boot abandoned after its tries. */
  stageFailed?: string;
  /** clusterboot.set=a|b|net: the Raspberry Pi firmware path; the p1 set (or the TFTP folder) this boot runs. */
  stageSet?: BootSetSource;
}

/** Parsed parameters plus what the caller should print: bad values (defaults kept) and tokens nobody owns. */
export interface ParseResult {
  params: Params;
  warnings: string[];
  unknown: string[];
}

// Non-dotted parameters the kernel (or the firmware/bootloader) owns: accepted silently, never "unknown".
const KERNEL_OWNED: ReadonlySet<string> = new Set([
  'console',
  'root',
  'rootwait',
  'rootdelay',
  'rootfstype',
  'rootflags',
  'rdinit',
  'initrd',
  'noinitrd',
  'panic',
  'loglevel',
  'earlycon',
  'earlyprintk',
  'keep_bootcon',
  'ignore_loglevel',
  'debug',
  'rw',
  'ro',
  'kgdboc',
  'kgdbwait',
  'elevator',
  'coherent_pool',
  'cma',
  'mem',
  'maxcpus',
  'nosmp',
  'isolcpus',
  'cgroup_enable',
  'cgroup_disable',
  'cgroup_memory',
  'swapaccount',
  'fbcon',
  'video',
  'consoleblank',
  'splash',
  'nosplash',
  'logo',
  'nokaslr',
  'kaslr',
  'mitigations',
  'audit',
  'selinux',
  'apparmor',
  'security',
  'crashkernel',
  'reboot',
  'oops',
  'nohz',
  'nohz_full',
  'rcu_nocbs',
  'irqaffinity',
  'initcall_debug',
  'sysrq_always_enabled',
  'resume',
  'noresume',
  'nfsroot',
  'biosdevname',
  'hung_task_panic',
  'softlockup_panic',
  'usbhid',
  'numa',
  'hugepages',
  'transparent_hugepage',
  'lpj',
  'clk_ignore_unused',
  'pd_ignore_unused',
  'fsck',
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
    out +=
      code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0) ? `\\x${code.toString(16).padStart(2, '0')}` : ch;
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

/** At most this many masters in masterip=/master= (each unreachable one costs a connect timeout per round). */
export const MAX_MASTERS = 8;

/** The masters of masterip=/master= (or a DHCP option) in order, each once: "a, b,a" is [a, b]. */
export function masterList(value: string): string[] {
  return [...new Set(value.split(/[,\s]+/).filter(Boolean))];
}

function isHost(value: string): boolean {
  return isIPv4(value) || isIPv6(value) || isHostname(value);
}

/** A master's name as ssh may take it: an address or an RFC 1123 host name (never an option). */
export const masterHost = isHost;

// host[:port] or [v6]:port; port 1..65535.
function isHostPort(value: string): boolean {
  const bracket = /^\[([^\]]+)\](?::([0-9]+))?$/.exec(value);
  if (bracket)
    return isIPv6(bracket[1] ?? '') && (bracket[2] === undefined || parseInt0(bracket[2], 1, 65535) !== undefined);
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

// A malformed value; `expected` is the text after "expected" in the warning.
class Bad {
  readonly expected: string;
  constructor(expected: string) {
    this.expected = expected;
  }
}

// What a parser needs besides the value: the name as written (for messages) and the phases break= may name.
interface Context {
  readonly name: string;
  readonly phases: readonly string[] | undefined;
}

// value is undefined for a bare name (`rescue`), '' for `name=`.
type Parser<T> = (value: string | undefined, ctx: Context) => T | Bad;

type ParamDoc = { name: string; values: string; default: string; meaning: string };

// One kernel parameter as written in TABLE, typed so that parse returns exactly the type of its field.
interface RowSpec<K extends keyof Params> {
  readonly names: readonly string[];
  readonly field: K;
  readonly default: NoInfer<Params[K]>;
  // The docs' default column, where String(default) would not read well.
  readonly defaultText?: string;
  readonly values: string;
  readonly meaning: string;
  readonly parse: Parser<NoInfer<Params[K]>>;
}

// A row with its value type hidden: the typed work happens in closures made by row().
interface Row<K extends keyof Params = keyof Params> {
  readonly names: readonly string[];
  readonly field: K;
  readonly doc: ParamDoc;
  setDefault(params: Partial<Params>): void;
  apply(params: Params, value: string | undefined, ctx: Context, warnings: string[]): void;
}

function row<K extends keyof Params>(spec: RowSpec<K>): Row<K> {
  const flag = typeof spec.default === 'boolean';
  return {
    names: spec.names,
    field: spec.field,
    doc: {
      name: spec.names.map((n) => (flag ? n : `${n}=`)).join(' / '),
      values: spec.values,
      default: spec.defaultText ?? docDefault(spec.default),
      meaning: spec.meaning,
    },
    setDefault(params) {
      const d = spec.default;
      // Copy arrays so no parse result shares (and mutates) the table's default.
      if (d !== undefined) params[spec.field] = Array.isArray(d) ? structuredClone(d) : d;
    },
    apply(params, value, ctx, warnings) {
      const parsed = spec.parse(value, ctx);
      if (!(parsed instanceof Bad)) {
        params[spec.field] = parsed;
        return;
      }
      const shown = value === undefined ? ctx.name : `${ctx.name}=${show(value)}`;
      warnings.push(`${shown}: expected ${parsed.expected}; using ${showValue(params[spec.field])}`);
    },
  };
}

function docDefault(v: unknown): string {
  if (v === undefined) return '(unset)';
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return String(v);
}

// Parsers shared by several rows. A bare name checks as the empty value unless the parser says otherwise.
function text(ok: (v: string) => boolean, expected: string): Parser<string> {
  return (value) => (ok(value ?? '') ? (value ?? '') : new Bad(expected));
}

function int(min: number, max: number, expected: string): Parser<number> {
  return (value) => parseInt0(value ?? '', min, max) ?? new Bad(expected);
}

function oneOf<T extends string>(choices: readonly T[]): Parser<T> {
  return (value) => choices.find((c) => c === value) ?? new Bad(choices.join('|'));
}

function flag(value: string | undefined, { name }: Context): boolean | Bad {
  if (value === undefined || TRUE_WORDS.has(value.toLowerCase())) return true;
  return FALSE_WORDS.has(value.toLowerCase()) ? false : new Bad(`a bare flag or ${name}=0|1`);
}

function phase(value: string | undefined, { name, phases }: Context): string | Bad {
  if (value !== undefined && isPhaseName(value) && (phases === undefined || phases.includes(value))) return value;
  return new Bad(`${name}=<phase>${phases && phases.length > 0 ? ` with phase one of ${phases.join('|')}` : ''}`);
}

type FieldOf<R> = R extends Row<infer K> ? K : never;
type Missing<R extends readonly Row[]> = Exclude<keyof Params, FieldOf<R[number]>>;

// Compile-time check that every Params field has a row, so the defaults built from the table are complete.
function table<const R extends readonly Row[]>(
  rows: R & ([Missing<R>] extends [never] ? unknown : { missingRowFor: Missing<R> }),
): R {
  return rows;
}

// The kernel parameters, one row per Params field, in the README's order.
const TABLE = table([
  row({
    names: ['masterip', 'master'],
    field: 'master',
    default: undefined,
    defaultText: '(unset: from the DHCP lease)',
    values: `IP address (masterip) or host name or IP (master); a comma-separated list of up to ${MAX_MASTERS}`,
    meaning:
      'the master that serves the partition table and the root template; with a list, the first that answers (in order, each round) serves the boot',
    // The seed's masterip= takes only an address; master= also takes a host name.
    parse: (value, { name }) => {
      const list = masterList(value ?? '');
      const one = name === 'masterip' ? (v: string) => isIPv4(v) || isIPv6(v) : isHost;
      const what = name === 'masterip' ? 'an IP address' : 'a host name or IP address';
      if (list.length === 0 || list.length > MAX_MASTERS || !list.every(one))
        return new Bad(`${what}, or a comma-separated list of up to ${MAX_MASTERS}`);
      return list.join(',');
    },
  }),
  row({
    names: ['masteruser'],
    field: 'masterUser',
    default: 'root',
    values: 'user name',
    meaning: 'ssh user on the master (restricted there by rrsync -ro)',
    parse: text((v) => /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(v), 'a user name'),
  }),
  row({
    names: ['masterport'],
    field: 'masterPort',
    default: 22,
    values: '1..65535',
    meaning: 'ssh (or rsyncd) port on the master',
    parse: int(1, 65535, 'a port 1..65535'),
  }),
  row({
    names: ['masterroot'],
    field: 'masterRoot',
    default: '',
    defaultText: "'' (the rrsync root itself, /data/slaves in the seed layout)",
    values: 'relative path, no ".."',
    meaning: 'path prefix under the rrsync root',
    // `masterroot=` (empty) is valid and means the rrsync root; a bare `masterroot` is not.
    parse: (value) =>
      value !== undefined && (value === '' || (isPrintable(value) && !value.split('/').includes('..')))
        ? value
        : new Bad('a path without ".."'),
  }),
  row({
    names: ['transport'],
    field: 'transport',
    default: 'ssh',
    values: 'ssh | rsyncd',
    meaning: 'how rsync reaches the master',
    parse: oneOf(['ssh', 'rsyncd'] as const),
  }),
  row({
    names: ['aufs', 'overlay'],
    field: 'overlay',
    default: 'disk',
    values: 'disk | tmpfs | none',
    meaning: 'where the writable layer over the root lives (none: no overlay)',
    parse: oneOf(['disk', 'tmpfs', 'none'] as const),
  }),
  row({
    names: ['disk'],
    field: 'disk',
    default: '/dev/mmcblk0',
    values: '/dev/... block device, serial:<serial> or wwid:<wwid>',
    meaning: 'the local disk holding the roots; by serial or WWID it is found wherever the kernel names it',
    parse: text(
      (v) =>
        v.length <= 256 &&
        (/^(serial|wwid):[^\s\x00-\x1f\x7f]+$/.test(v) ||
          (/^\/dev\/[A-Za-z0-9._:\/-]+$/.test(v) && !v.split('/').includes('..'))),
      'a /dev/... block device path, serial:<serial> or wwid:<wwid>',
    ),
  }),
  row({
    names: ['disktimeout'],
    field: 'diskTimeout',
    default: 30,
    values: 'seconds, 0..3600',
    meaning: 'how long to wait for the disk to appear',
    parse: int(0, 3600, 'seconds 0..3600'),
  }),
  row({
    names: ['wipe'],
    field: 'wipe',
    default: undefined,
    values: 'disk serial',
    meaning: 'wipe the disk, but only if its serial matches (guards against the wrong card)',
    parse: text((v) => v.trim() !== '' && v.length <= 256 && !/[\x00-\x1f\x7f]/.test(v), 'wipe=<disk serial>'),
  }),
  row({
    names: ['adopt'],
    field: 'adopt',
    default: undefined,
    values: 'disk serial',
    meaning:
      'take a disk that has boot firmware but no clusterboot marker (a card set up before clusterboot), keeping its partitions, but only if its serial matches; once marked, it needs no parameter',
    parse: text((v) => v.trim() !== '' && v.length <= 256 && !/[\x00-\x1f\x7f]/.test(v), 'adopt=<disk serial>'),
  }),
  row({
    names: ['modules'],
    field: 'modules',
    default: [],
    defaultText: '(none)',
    values: 'comma-separated module names',
    meaning: 'extra kernel modules to load after the packed list',
    // `modules=` (empty) clears the list; a bare `modules` is a mistake.
    parse: (value) => {
      const names = (value ?? '').split(',').filter((m) => m !== '');
      return value !== undefined && names.every(isModuleName) ? names : new Bad('comma-separated module names');
    },
  }),
  row({
    names: ['init'],
    field: 'init',
    default: '/sbin/init',
    values: 'absolute path',
    meaning: 'program run as PID 1 after switch_root',
    parse: text((v) => /^\/[^\x00-\x20\x7f-\x9f]*$/.test(v) && v.length <= 256, 'an absolute path'),
  }),
  row({
    names: ['rescue'],
    field: 'rescue',
    default: false,
    values: 'flag, or rescue=0|1',
    meaning: 'on fatal errors drop to a shell instead of rebooting to retry',
    parse: flag,
  }),
  row({
    names: ['break'],
    field: 'break',
    default: undefined,
    values: 'phase name',
    meaning:
      'stop with a shell before that phase (the disk is then not read ahead: it is as the previous phase left it)',
    parse: phase,
  }),
  row({
    names: ['dryrun', 'clusterboot.dryrun'],
    field: 'dryRun',
    default: false,
    values: 'flag, or =0|1',
    meaning: 'plan and print, change nothing on disk',
    parse: flag,
  }),
  row({
    names: ['rollback'],
    field: 'rollback',
    default: false,
    values: 'flag, or rollback=0|1',
    meaning: 'boot the previous root slot',
    parse: flag,
  }),
  row({
    names: ['reset', 'clusterboot.reset'],
    field: 'reset',
    default: false,
    values: 'flag, or =0|1',
    meaning: 'wipe the writable layer',
    parse: flag,
  }),
  row({
    names: ['newidentity'],
    field: 'newIdentity',
    default: false,
    values: 'flag, or =0|1',
    meaning:
      "make this node's own SSH host keys and machine-id again (they are otherwise made once and kept on p2, surviving resyncs, tmpfs layers and resets)",
    parse: flag,
  }),
  row({
    names: ['quiet'],
    field: 'quiet',
    default: false,
    values: 'flag',
    meaning: "the kernel's own; the agent also prints less",
    parse: flag,
  }),
  row({
    names: ['retries'],
    field: 'retries',
    default: 5,
    values: '0..100',
    meaning: 'attempts to reach the master before the fallback',
    parse: int(0, 100, 'an integer 0..100'),
  }),
  row({
    names: ['retrywait'],
    field: 'retryWait',
    default: 15,
    values: '1..300 (seconds)',
    meaning:
      'after a failure, the wait (console and LED showing it) before the node reboots to try again; doubled for each further failure within one boot, at most 300 s',
    parse: int(1, 300, 'an integer 1..300'),
  }),
  row({
    names: ['hostname'],
    field: 'hostname',
    default: undefined,
    defaultText: '(unset: from the DHCP lease)',
    values: 'host name (RFC 1123)',
    meaning: 'override the node name',
    parse: text(isHostname, 'a host name (letters, digits, "-", dots)'),
  }),
  row({
    names: ['ip'],
    field: 'ip',
    default: undefined,
    defaultText: 'dhcp',
    values: 'dhcp, or the kernel static form client:server:gw:netmask:host:dev:autoconf',
    meaning: 'network configuration',
    parse: text(
      (v) =>
        /^(dhcp|on|any|both|bootp|rarp|off|none|dhcp6|auto6|ibft)$/.test(v) ||
        isIPv4(v) ||
        (v.includes(':') && isPrintable(v)),
      'dhcp or client:server:gw:netmask:host:dev:autoconf',
    ),
  }),
  row({
    names: ['button'],
    field: 'button',
    default: undefined,
    defaultText: '(unset: no button)',
    values: 'off | gpiochipN:line[:high]',
    meaning: 'recovery button: held 2 s at power-on, wipes the writable layer and forces a full root resync',
    // The value is kept as written; plans/button.ts parses it again where it is used.
    parse: (value) =>
      'error' in parseButtonParam(value ?? '') ? new Bad('off or gpiochipN:line[:high]') : (value ?? ''),
  }),
  row({
    names: ['syslog'],
    field: 'syslog',
    default: undefined,
    defaultText: '(unset: no remote log)',
    values: 'host[:port]',
    meaning: 'send the agent log to a syslog server (UDP, port 514 if not given)',
    parse: text(isHostPort, 'host[:port]'),
  }),
  row({
    names: ['watchdog'],
    field: 'watchdog',
    default: 15,
    values: 'seconds, 0..3600 (0 disables)',
    meaning: 'hardware watchdog timeout while the agent runs',
    parse: int(0, 3600, 'seconds 0..3600 (0 disables)'),
  }),
  row({
    names: ['leds'],
    field: 'leds',
    default: 'gpiochip0:22,23,24',
    values: 'off | gpiochipN:line[,line...]',
    meaning: 'status LEDs',
    parse: text(
      (v) => v === 'off' || /^gpiochip[0-9]{1,3}:[0-9]{1,4}(?:,[0-9]{1,4})*$/.test(v),
      'off or gpiochipN:line[,line...]',
    ),
  }),
  row({
    names: ['clusterboot.hang'],
    field: 'debugHang',
    default: undefined,
    values: 'phase name',
    meaning: 'test/debug aid: hang in that phase (exercises the watchdog)',
    parse: phase,
  }),
  row({
    names: ['clusterboot.fs'],
    field: 'stageId',
    default: undefined,
    defaultText: '(set by the boot scripts)',
    values: '16 hex digits',
    meaning: 'the first stage (kernel + initramfs) U-Boot booted; the agent caches it at the commit point',
    parse: text(isStageId, '16 hex digits'),
  }),
  row({
    names: ['clusterboot.from'],
    field: 'stageFrom',
    default: undefined,
    defaultText: '(set by the boot scripts)',
    values: STAGE_SOURCES.join(' | '),
    meaning: 'how U-Boot loaded the first stage: TFTP, the disk cache, fetched again, abandoned for the cache, offline',
    parse: oneOf(STAGE_SOURCES),
  }),
  row({
    names: ['clusterboot.try'],
    field: 'stageTry',
    default: undefined,
    defaultText: '(set by the boot scripts)',
    values: '0..255 (hex, as U-Boot counts)',
    meaning: 'which try of a new first stage this boot is',
    parse: (value) => (/^[0-9a-f]{1,2}$/.test(value ?? '') ? Number.parseInt(value ?? '', 16) : new Bad('a hex count')),
  }),
  row({
    names: ['clusterboot.failed'],
    field: 'stageFailed',
    default: undefined,
    defaultText: '(set by the boot scripts)',
    values: '16 hex digits',
    meaning: 'the new first stage U-Boot abandoned after its tries (the boot report names it)',
    parse: text(isStageId, '16 hex digits'),
  }),
  row({
    names: ['clusterboot.set'],
    field: 'stageSet',
    default: undefined,
    defaultText: '(set by the cmdline.txt files of the firmware path)',
    values: BOOT_SET_SOURCES.join(' | '),
    meaning:
      "Raspberry Pi firmware path (no U-Boot): the first stage this boot runs came from p1's set a or b, or from the firmware's TFTP (net); the agent keeps it in a set and takes a new one through tryboot",
    parse: oneOf(BOOT_SET_SOURCES),
  }),
]);

// A Map, not an object, so names like `constructor` or `__proto__` cannot hit a prototype entry.
const BY_NAME: ReadonlyMap<string, Row> = new Map(TABLE.flatMap((r) => r.names.map((n): [string, Row] => [n, r])));

// Fresh each parse (arrays copied); the cast is safe because table() checks that every field has a row.
function defaultParams(): Params {
  const params: Partial<Params> = {};
  for (const r of TABLE) r.setDefault(params);
  return params as Params;
}

/** The parameter table the README renders: one row per field of Params, in the same order. */
export const PARAM_DOCS: readonly { name: string; values: string; default: string; meaning: string }[] = Object.freeze(
  TABLE.map((r) => r.doc),
);

/** The README's `## Kernel parameters` table as markdown; a unit test keeps README.md equal to it. */
export function renderParamTable(): string {
  const cell = (s: string): string => s.replaceAll('|', '\\|');
  const lines = PARAM_DOCS.map(
    (d) => `| \`${cell(d.name)}\` | ${cell(d.values)} | ${cell(d.default)} | ${cell(d.meaning)} |`,
  );
  return ['| parameter | values | default | meaning |', '|---|---|---|---|', ...lines].join('\n');
}

/** Turn /proc/cmdline text into Params; never throws; bad values keep the value in effect and produce a warning. */
export function parseCmdline(text: string, knownPhases?: readonly string[]): ParseResult {
  const params = defaultParams();
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
    const param = BY_NAME.get(name);
    if (param === undefined) {
      if (name.startsWith('clusterboot.') || name === 'clusterboot') unknown.push(show(token));
      else if (name.includes('.') && !name.startsWith('.') && !name.endsWith('.'))
        continue; // module.param: the kernel's
      else if (KERNEL_OWNED.has(name)) continue;
      else unknown.push(show(token));
      continue;
    }
    param.apply(params, value, { name, phases }, warnings);
  }
  return { params, warnings, unknown };
}

// `builder stage`: from a node list to what the master serves: the dnsmasq configuration (fixed leases, DNS names,
// TFTP with option 66 pointing at the master), the TFTP folder (kernel, initramfs, boot script), the normalised
// nodes.list that `builder status` reads, the reports/ folder, and the master's authorized_keys lines; per node
// an identity (identity.ts); the sync-slot limiter in front of root pulls (syncslot.ts); approval mode (approve.ts).
// Pure parts (parse, validate, render) first; `stage()` does the I/O, and writes nothing unless every check passed.
import { accessSync, appendFileSync, chmodSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { REPORT_DIR } from '../../agent/contract/report.ts';
import { APPROVAL_REQUIRED, approvalModeOn, setApprovalMode } from './approve.ts';
import { bootScript } from '../image/bootscript.ts';
import { ensureIdentity, NODES_DIR, SSH_KEYGEN } from './identity.ts';
import { authorizedKeysLine, reportKeysLine, writeAtomic } from './publish.ts';
import { installSyncSlot, syncSlotKeysLine, syncSlotProblems } from './syncslot.ts';
import { readUImageHeader, scriptImage, type UArch } from '../image/uimage.ts';

/** One node: a fixed DHCP lease and a DNS name. `line` is where it came from in the list (1-based). */
export interface NodeEntry {
  mac: string;
  hostname: string;
  ip: string;
  /** Lease time from a dnsmasq `dhcp-host=` line; the plan's lease applies when absent. */
  lease?: string;
  line: number;
}

/** Everything the dnsmasq configuration is made of; the CLI fills it from its options. */
export interface StagePlan {
  nodes: NodeEntry[];
  /** The node list's path, for the header comment and the messages. */
  nodesFile: string;
  masterIp: string;
  /** CIDR, e.g. 10.77.0.0/24. */
  subnet: string;
  /** Optional dynamic range for unknown MACs: 'START,END'. Absent: unknown MACs get no lease at all. */
  range?: string;
  interface?: string;
  domain: string;
  router?: string;
  lease: string;
  tftpRoot: string;
}

export const TFTP_DIR = 'tftp';
export const NODES_LIST = 'nodes.list';
export const BOOT_SCRIPT = 'boot.scr.uimg';
export const KERNEL = 'vmlinuz';
export const INITRAMFS = 'initramfs.igz.uimg';

// ---------------------------------------------------------------------------------------------------------------
// addresses

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** `B8-27-EB-CB-63-18` or `b8:27:eb:cb:63:18` -> `b8:27:eb:cb:63:18`; null when it is not a MAC. */
export function normalizeMac(s: string): string | null {
  const m = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/.exec(s);
  return m ? s.toLowerCase().replace(/-/g, ':') : null;
}

/** Dotted quad to a 32-bit unsigned number; null for anything else (leading zeros too: some tools read them as octal). */
export function parseIPv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let n = 0;
  for (const part of m.slice(1) as string[]) {
    if (part.length > 1 && part.startsWith('0')) return null;
    const v = Number(part);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Subnet {
  network: number;
  prefix: number;
  mask: number;
  broadcast: number;
}

/** `10.77.0.0/24` -> network, mask, broadcast; an error saying how to write it otherwise. */
export function parseSubnet(s: string): { ok: true; subnet: Subnet } | { ok: false; error: string } {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(s);
  const ip = m ? parseIPv4(m[1] as string) : null;
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || ip === null || !(prefix >= 1 && prefix <= 30)) {
    return { ok: false, error: `--subnet '${s}' is not an IPv4 network in CIDR form with a prefix of 1 to 30: write it like 10.77.0.0/24` };
  }
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const network = (ip & mask) >>> 0;
  if (network !== ip) {
    return { ok: false, error: `--subnet '${s}' has host bits set: the network is ${formatIPv4(network)}/${prefix}; write that` };
  }
  return { ok: true, subnet: { network, prefix, mask, broadcast: (network | ~mask) >>> 0 } };
}

const inSubnet = (n: number, s: Subnet) => ((n & s.mask) >>> 0) === s.network;
const hostsOf = (s: Subnet) => `${formatIPv4(s.network + 1)}-${formatIPv4(s.broadcast - 1)}`;

// An RFC 1123 label; all-digit names and lease-time look-alikes are refused because dnsmasq's dhcp-host reads a
// field like `30m` or `600` as a lease time and `ignore` as a keyword, not as a host name.
const LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const LEASE_RE = /^(\d+[smhdw]?|infinite)$/i;

function hostnameProblem(h: string): string | null {
  if (!LABEL_RE.test(h)) {
    return `is not a valid host name (an RFC 1123 label: 1 to 63 letters, digits and '-', not starting or ending with '-', no dots)`;
  }
  if (LEASE_RE.test(h) || h.toLowerCase() === 'ignore') return `looks like a dnsmasq lease time or keyword, not a name: use a name with a letter in it, like rpinode01`;
  return null;
}

function leaseSeconds(s: string): number | null {
  const m = /^(\d+)([smhdw]?)$/i.exec(s);
  if (!m) return s.toLowerCase() === 'infinite' ? Infinity : null;
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[(m[2] as string).toLowerCase()] ?? 1;
  return Number(m[1]) * unit;
}

// ---------------------------------------------------------------------------------------------------------------
// the node list

const FORMS = `'MAC HOSTNAME IP' or 'dhcp-host=MAC,,HOSTNAME,IP[,LEASE]'`;

// Why: nodes come from the seed's dnsmasq lines or from a plain table; both must land in one checked shape, and every
// line that is neither is an error with its line number (a typo must not silently drop a node).
export function parseNodeList(text: string): { nodes: NodeEntry[]; errors: string[] } {
  const nodes: NodeEntry[] = [];
  const errors: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    // a comment starts at a '#' at the beginning or after white space (none of MAC, name, IP, lease contains one)
    const body = raw.replace(/\r$/, '').replace(/(^|\s)#.*$/, '').trim();
    if (body === '') return;
    const err = (msg: string) => errors.push(`line ${line}: ${msg}`);
    const dh = /^dhcp-host\s*=(.*)$/.exec(body);
    if (dh) {
      const fields = (dh[1] as string).split(',').map((f) => f.trim());
      const mac = fields[0] ?? '';
      if (mac === '') return void err(`dhcp-host= without a MAC: expected ${FORMS}`);
      let hostname: string | undefined;
      let ip: string | undefined;
      let lease: string | undefined;
      const unsupported = (f: string) => /^(id|set|tag|net):|^\[/.test(f) || f.toLowerCase() === 'ignore';
      if (unsupported(mac)) return void err(`dhcp-host= must start with the node's MAC, not '${mac}' (client ids and tags are not supported here)`);
      for (const f of fields.slice(1)) {
        if (f === '') continue; // the seed's empty client-id field
        const twice = (what: string) => err(`dhcp-host= has two ${what}s ('${f}'): one node per line, ${FORMS}`);
        if (normalizeMac(f)) return void err(`dhcp-host= with several MACs ('${f}') is not supported: write one line per MAC`);
        if (unsupported(f)) {
          return void err(`dhcp-host= field '${f}' (client id, tag, IPv6 or ignore) is not supported here: only MAC, HOSTNAME, IP and LEASE`);
        }
        if (/^[0-9.]+$/.test(f) && f.includes('.')) {
          if (ip !== undefined) return void twice('IP');
          ip = f;
        } else if (LEASE_RE.test(f)) {
          if (lease !== undefined) return void twice('lease time');
          lease = f.toLowerCase();
        } else {
          if (hostname !== undefined) return void twice('host name');
          hostname = f;
        }
      }
      if (hostname === undefined) return void err(`dhcp-host= for ${mac} has no host name: expected ${FORMS}`);
      if (ip === undefined) return void err(`dhcp-host= for ${mac} has no IP address: expected ${FORMS}`);
      nodes.push({ mac: normalizeMac(mac) ?? mac, hostname, ip, ...(lease !== undefined ? { lease } : {}), line });
      return;
    }
    if (/^[A-Za-z][A-Za-z0-9-]*\s*=/.test(body)) {
      return void err(`'${body.slice(0, 40)}' is a dnsmasq option, not a node: keep only dhcp-host= lines here; ` +
        'the rest comes from builder stage\'s options (--range, --domain, --router, --interface, --lease)');
    }
    const fields = body.split(/[\s,]+/).filter(Boolean);
    if (fields.length !== 3) return void err(`expected ${FORMS}, got ${fields.length} field${fields.length === 1 ? '' : 's'}: '${body.slice(0, 60)}'`);
    const [mac, hostname, ip] = fields as [string, string, string];
    nodes.push({ mac: normalizeMac(mac) ?? mac, hostname, ip, line });
  });
  return { nodes, errors };
}

/** The normalised list written to <master root>/nodes.list: parseNodeList reads it back unchanged. */
export function renderNodesList(nodes: NodeEntry[], from: string): string {
  const head = [
    `# clusterboot nodes: generated by \`builder stage\` from ${oneLine(from)}; read by \`builder status\`.`,
    '# Do not edit: change the node list and run `builder stage` again.',
    '# MAC HOSTNAME IP',
  ];
  return `${[...head, ...nodes.map((n) => `${n.mac} ${n.hostname} ${n.ip}`)].join('\n')}\n`;
}

const oneLine = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, '?');

// ---------------------------------------------------------------------------------------------------------------
// validation

// Why: dnsmasq accepts many of these mistakes silently (two leases for one IP, a lease inside the dynamic range,
// a node outside every dhcp-range that never gets an answer); a node then fails at boot, far from the cause.
// Returns every problem at once, each saying what is wrong and how to fix it; [] means the plan is good.
export function validateStage(plan: StagePlan): string[] {
  const errs: string[] = [];
  const where = (n: NodeEntry) => `${plan.nodesFile} line ${n.line}`;

  const sub = parseSubnet(plan.subnet);
  if (!sub.ok) errs.push(sub.error);
  const subnet = sub.ok ? sub.subnet : null;
  const cidr = subnet ? `${formatIPv4(subnet.network)}/${subnet.prefix}` : plan.subnet;

  // an address given by option: valid, inside the subnet, not the network or broadcast address
  const hostAddress = (what: string, s: string, fix: string): number | null => {
    const n = parseIPv4(s);
    if (n === null) {
      errs.push(`${what} '${s}' is not an IPv4 address: write it like 10.77.0.1`);
      return null;
    }
    if (subnet && !inSubnet(n, subnet)) errs.push(`${what} ${s} is outside the subnet ${cidr} (hosts ${hostsOf(subnet)}): ${fix}`);
    else if (subnet && n === subnet.network) errs.push(`${what} ${s} is the network address of ${cidr}, not a host: ${fix}`);
    else if (subnet && n === subnet.broadcast) errs.push(`${what} ${s} is the broadcast address of ${cidr}, not a host: ${fix}`);
    return n;
  };

  const master = hostAddress('--master-ip', plan.masterIp, 'the nodes could not reach it; fix --master-ip or --subnet');
  if (plan.router !== undefined) hostAddress('--router', plan.router, 'the nodes could not use it; fix --router or leave it out');

  let range: [number, number] | null = null;
  if (plan.range !== undefined) {
    const parts = plan.range.split(',').map((p) => p.trim());
    if (parts.length !== 2) {
      errs.push(`--range '${plan.range}' is not START,END: write it like 10.77.0.200,10.77.0.250, or leave it out so unknown MACs get no lease`);
    } else {
      const fix = 'keep the dynamic range inside the subnet, or leave --range out';
      const a = hostAddress('--range start', parts[0] as string, fix);
      const b = hostAddress('--range end', parts[1] as string, fix);
      if (a !== null && b !== null) {
        if (a > b) errs.push(`--range ${plan.range} is reversed (start after end): write it as ${parts[1]},${parts[0]}`);
        else range = [a, b];
      }
      if (range && master !== null && master >= range[0] && master <= range[1]) {
        errs.push(`--master-ip ${plan.masterIp} is inside the dynamic range ${plan.range}: dnsmasq could lease the master's address to a node; shrink --range`);
      }
    }
  }

  if (plan.interface !== undefined && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(plan.interface)) {
    errs.push(`--interface '${oneLine(plan.interface)}' is not a network interface name (1 to 15 of [A-Za-z0-9_.:@-]): give the master's NIC on the cluster LAN, like eth0`);
  }
  const labels = plan.domain.split('.');
  if (plan.domain.length > 253 || labels.some((l) => !LABEL_RE.test(l))) {
    errs.push(`--domain '${oneLine(plan.domain)}' is not a DNS domain (dot-separated RFC 1123 labels, no trailing dot): write it like cluster.lan`);
  }
  const leaseProblem = (what: string, s: string): string | null => {
    const secs = leaseSeconds(s);
    if (secs === null) return `${what} '${oneLine(s)}' is not a lease time: write it like 1h, 30m, 12h or infinite`;
    if (secs < 120) return `${what} ${s} is shorter than dnsmasq's minimum of 2 minutes: use 2m or more`;
    return null;
  };
  const lp = leaseProblem('--lease', plan.lease);
  if (lp) errs.push(lp);
  if (!/^\/[A-Za-z0-9._+\/-]*$/.test(plan.tftpRoot) || plan.tftpRoot.split('/').includes('..')) {
    errs.push(`TFTP root '${oneLine(plan.tftpRoot)}' must be an absolute path of [A-Za-z0-9._+/-] without '..' (dnsmasq reads a comma as a second field): choose another --master-root`);
  }

  if (plan.nodes.length === 0) {
    errs.push(`no nodes in ${plan.nodesFile}: add one line per node, ${FORMS}`);
  }
  const macs = new Map<string, NodeEntry>();
  const names = new Map<string, NodeEntry>();
  const ips = new Map<number, NodeEntry>();
  for (const n of plan.nodes) {
    const at = where(n);
    const mac = n.mac.toLowerCase();
    if (!MAC_RE.test(mac)) {
      errs.push(`${at}: MAC '${oneLine(n.mac)}' is malformed: write six hex pairs separated by ':', like b8:27:eb:cb:63:18`);
    } else {
      if (Number.parseInt(mac.slice(0, 2), 16) & 1) {
        errs.push(`${at}: MAC ${mac} is a multicast address (first octet odd), which no network card has: copy the node's MAC from \`ip link\` or its DHCP request in the master's log`);
      }
      const seen = macs.get(mac);
      if (seen) errs.push(`${at}: MAC ${mac} is already on line ${seen.line} (${seen.hostname}): one line per node; remove one of them`);
      else macs.set(mac, n);
    }
    const hp = hostnameProblem(n.hostname);
    if (hp) errs.push(`${at}: hostname '${oneLine(n.hostname)}' ${hp}`);
    else {
      const seen = names.get(n.hostname.toLowerCase());
      if (seen) errs.push(`${at}: hostname ${n.hostname} is already used on line ${seen.line} (${seen.mac}): give each node its own name`);
      else names.set(n.hostname.toLowerCase(), n);
    }
    if (n.lease !== undefined) {
      const p = leaseProblem(`lease time for ${n.hostname}`, n.lease);
      if (p) errs.push(`${at}: ${p}`);
    }
    const ip = parseIPv4(n.ip);
    if (ip === null) {
      errs.push(`${at}: IP '${oneLine(n.ip)}' is not an IPv4 address: write it like 10.77.0.11`);
      continue;
    }
    const seen = ips.get(ip);
    if (seen) errs.push(`${at}: IP ${n.ip} is already given to ${seen.hostname} on line ${seen.line}: give each node its own address`);
    else ips.set(ip, n);
    if (subnet && !inSubnet(ip, subnet)) {
      errs.push(`${at}: IP ${n.ip} is outside the subnet ${cidr} (hosts ${hostsOf(subnet)}): dnsmasq would never lease it; pick an address inside it or change --subnet`);
    } else if (subnet && ip === subnet.network) {
      errs.push(`${at}: IP ${n.ip} is the network address of ${cidr}, not a host: pick another address`);
    } else if (subnet && ip === subnet.broadcast) {
      errs.push(`${at}: IP ${n.ip} is the broadcast address of ${cidr}, not a host: pick another address`);
    }
    if (master !== null && ip === master) errs.push(`${at}: IP ${n.ip} is the master's own address (--master-ip): pick another address for ${n.hostname}`);
    if (range && ip >= range[0] && ip <= range[1]) {
      errs.push(`${at}: IP ${n.ip} is inside the dynamic range ${plan.range}: dnsmasq could lease it to an unknown MAC as well; pick an address outside the range or shrink --range`);
    }
  }
  return errs;
}

// ---------------------------------------------------------------------------------------------------------------
// dnsmasq

// Why: one generated file holds every fact dnsmasq needs for the cluster, in the node list's order, so a re-run
// with the same inputs gives the same bytes (diffable, no timestamp). Throws on a plan validateStage refuses.
export function renderDnsmasq(plan: StagePlan): string {
  const errs = validateStage(plan);
  if (errs.length) throw new Error(`renderDnsmasq: invalid plan:\n  ${errs.join('\n  ')}`);
  const sub = parseSubnet(plan.subnet);
  if (!sub.ok) throw new Error(sub.error); // validated above; narrows the type
  const mask = formatIPv4(sub.subnet.mask);
  const out: string[] = [
    `# clusterboot dnsmasq configuration: generated by \`builder stage\` from ${oneLine(plan.nodesFile)}.`,
    '# Do not edit: change the node list or the options and run `builder stage` again, then restart dnsmasq.',
  ];
  if (plan.interface !== undefined) out.push(`interface=${plan.interface}`, 'bind-interfaces');
  out.push(`domain=${plan.domain}`, `local=/${plan.domain}/`);
  if (plan.range !== undefined) {
    const [a, b] = plan.range.split(',').map((p) => p.trim());
    out.push('# unknown MACs get an address from this range (but no host name and no fixed root slot)');
    out.push(`dhcp-range=${a},${b},${mask},${plan.lease}`);
  } else {
    out.push('# static: only the MACs below get a lease; unknown MACs get no answer');
    out.push(`dhcp-range=${formatIPv4(sub.subnet.network)},static,${mask},${plan.lease}`);
  }
  if (plan.router !== undefined) out.push(`dhcp-option=3,${plan.router}`);
  out.push(
    `dhcp-option=6,${plan.masterIp}`,
    `dhcp-option=15,${plan.domain}`,
    '# TFTP server: U-Boot loads from it and the agent takes it as the master',
    `dhcp-option=66,${plan.masterIp}`,
    'enable-tftp',
    `tftp-root=${plan.tftpRoot}`,
    '# U-Boot\'s distro boot runs boot.scr.uimg from the TFTP server',
    `dhcp-boot=${BOOT_SCRIPT}`,
    'log-dhcp',
    `# ${plan.nodes.length} node${plan.nodes.length === 1 ? '' : 's'}`,
  );
  for (const n of plan.nodes) out.push(`dhcp-host=${n.mac.toLowerCase()},${n.hostname},${n.ip},${n.lease ?? plan.lease}`);
  for (const n of plan.nodes) out.push(`host-record=${n.hostname}.${plan.domain},${n.hostname},${n.ip}`);
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// authorized_keys

/** One OpenSSH key line's key blob (the field after the type), or null. */
function keyBlob(line: string): string | null {
  const m = /(?:^|\s)(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s|$)/.exec(line);
  return m ? (m[1] as string) : null;
}

// Why: installing twice must not duplicate lines, and an older line for the same key with other options (another
// master root) must be pointed out: sshd uses the first line that matches the key, so the new one would never apply.
export function mergeAuthorizedKeys(existing: string, lines: string[]): { append: string; added: string[]; conflicts: string[] } {
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

// The node key's line as `builder stage` writes it for this master root, with or without the sync-slot limiter.
function isOwnNodeLine(line: string, masterRoot: string): boolean {
  const m = /^restrict,command="([^"]*)" /.exec(line);
  if (!m) return false;
  const words = (m[1] as string).split(' ');
  const tail = words.slice(-3);
  if (tail[1] !== '-ro' || tail[2] !== masterRoot || !(tail[0] as string).endsWith('/rrsync')) return false;
  return words.length === 3 || (words.length === 6 && (words[0] as string).endsWith('/sync-slot') && /^\d+$/.test(words[1] as string));
}

// Why: changing --sync-slots (or turning it on, on a master staged before it existed) changes the node key's line;
// appended, it would come after the old one, and sshd uses the first line of a key. So an older line for the same
// key, same master root, that stage itself wrote is replaced in place; any other line is left to the operator.
export function replaceOwnNodeLines(existing: string, lines: string[], masterRoot: string): { text: string; replaced: string[] } {
  const replaced: string[] = [];
  const text = existing.split('\n').map((old) => {
    const t = old.trim();
    if (t === '' || t.startsWith('#') || !isOwnNodeLine(t, masterRoot)) return old;
    const blob = keyBlob(t);
    const now = lines.find((l) => blob !== null && keyBlob(l) === blob && isOwnNodeLine(l, masterRoot));
    if (now === undefined || now === t) return old;
    replaced.push(t);
    return now;
  }).join('\n');
  return { text, replaced };
}

// ---------------------------------------------------------------------------------------------------------------
// effects

/** The dnsmasq fields are StagePlan's; the nodes come from nodesFile and the TFTP root is <masterRoot>/tftp. */
export interface StageOptions extends Omit<StagePlan, 'nodes' | 'tftpRoot'> {
  masterRoot: string;
  kernel: string;
  initramfs: string;
  bootargs: string;
  arch: UArch;
  dnsmasqConf: string;
  /** Directory from `builder keys`: node_ed25519.pub and report_ed25519.pub. Absent: no authorized_keys lines. */
  keysDir?: string;
  /** Append the lines to this file unless present; absent: the caller prints `keyLines`. */
  authorizedKeys?: string;
  /** uImage time of boot.scr.uimg (SOURCE_DATE_EPOCH). */
  time?: number;
  rrsync?: string;
  /** Create missing per-node identity files under <master root>/nodes/<host>/files (default true). */
  identity?: boolean;
  /** At most this many root pulls at once (sync-slot in the node key's line); 0 or absent: no limit, plain rrsync. */
  syncSlots?: number;
  /** Where the sync-slot script and its slots live; required when syncSlots > 0. */
  stateDir?: string;
  /** true: create <master root>/approval.required; false: remove it; absent: leave it as it is. */
  approval?: boolean;
}

export interface StageResult {
  nodes: NodeEntry[];
  /** Files written, in order. */
  written: string[];
  /** Where the nodes' boot reports land (created 0755). */
  reportsDir: string;
  keyLines: string[];
  /** Lines appended to `authorizedKeys` (those already there are not). */
  keysAdded: string[];
  /** Older lines of stage's own node key line (other --sync-slots) replaced in `authorizedKeys`. */
  keysReplaced: string[];
  /** Per node, the identity files created this time (relative to nodes/<host>/files); [] when it had them all. */
  identity: Array<{ hostname: string; created: string[] }>;
  /** The sync-slot script and slots folder, when --sync-slots > 0. */
  syncSlot: { script: string; slotsDir: string; slots: number } | null;
  /** Approval mode after this stage. */
  approvalMode: boolean;
  warnings: string[];
}

/** Every problem found before writing; nothing was written. */
export class StageError extends Error {
  constructor(readonly problems: string[]) {
    super(`${problems.length} problem${problems.length === 1 ? '' : 's'}, nothing written:\n  - ${problems.join('\n  - ')}`);
  }
}

function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    return buf.subarray(0, readSync(fd, buf, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}

// The nearest existing ancestor must be a writable directory, so a permission problem shows before the first write.
function writableProblem(path: string, what: string): string | null {
  let dir = dirname(path);
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  try {
    if (!statSync(dir).isDirectory()) return `${what} ${path}: ${dir} is not a directory`;
    accessSync(dir, constants.W_OK);
  } catch {
    return `${what} ${path}: cannot write in ${dir} (run builder stage as root, or choose another path)`;
  }
  const st = statSync(path, { throwIfNoEntry: false });
  if (st && !st.isFile()) return `${what} ${path} exists and is not a regular file: move it away`;
  return null;
}

// Why: the one command that turns a node list into a working master; all checks first (the list, the options, the
// files, the keys, write access), so a mistake leaves the running configuration untouched.
export function stage(o: StageOptions): StageResult {
  const problems: string[] = [];
  const warnings: string[] = [];
  const masterRoot = resolve(o.masterRoot);
  const tftp = join(masterRoot, TFTP_DIR);

  let text = '';
  let unreadable = false;
  try {
    text = readFileSync(o.nodesFile, 'utf8');
  } catch (e) {
    problems.push(`cannot read the node list ${o.nodesFile}: ${(e as Error).message}`);
    unreadable = true;
  }
  const parsed = parseNodeList(text);
  problems.push(...parsed.errors.map((e) => `${o.nodesFile} ${e}`));
  const plan: StagePlan = {
    nodes: parsed.nodes, nodesFile: o.nodesFile, masterIp: o.masterIp, subnet: o.subnet, domain: o.domain, lease: o.lease, tftpRoot: tftp,
    ...(o.range !== undefined ? { range: o.range } : {}),
    ...(o.interface !== undefined ? { interface: o.interface } : {}),
    ...(o.router !== undefined ? { router: o.router } : {}),
  };
  // a node list that did not read at all already said so; "no nodes" on top would only repeat it
  problems.push(...validateStage(plan).filter((e) => !(unreadable && e.startsWith('no nodes'))));

  const kst = statSync(o.kernel, { throwIfNoEntry: false });
  if (!kst) problems.push(`kernel ${o.kernel} does not exist: give --kernel the node kernel, e.g. /data/slaves/rootfs/boot/vmlinuz-<version>`);
  else if (!kst.isFile()) problems.push(`kernel ${o.kernel} is not a regular file`);
  else if (kst.size === 0) problems.push(`kernel ${o.kernel} is empty`);

  const ist = statSync(o.initramfs, { throwIfNoEntry: false });
  if (!ist) problems.push(`initramfs ${o.initramfs} does not exist: run \`builder pack\` first and give its initramfs.igz.uimg`);
  else if (!ist.isFile()) problems.push(`initramfs ${o.initramfs} is not a regular file`);
  else {
    try {
      const h = readUImageHeader(readHead(o.initramfs, 64));
      if (h.type !== 3) problems.push(`initramfs ${o.initramfs} is a U-Boot image of type ${h.type}, not a ramdisk: give the initramfs.igz.uimg from \`builder pack\``);
      else if (h.size + 64 !== ist.size) problems.push(`initramfs ${o.initramfs} is ${ist.size} bytes but its header says ${h.size + 64}: truncated or damaged copy; run \`builder pack\` again`);
      else if (h.size > 64e6) warnings.push(`initramfs is over 64 MB: Raspberry Pi HTTP boot truncates ramdisks this large`);
    } catch (e) {
      problems.push(`initramfs ${o.initramfs} is not a U-Boot image (${(e as Error).message}): give the initramfs.igz.uimg that \`builder pack\` writes, not initramfs.igz`);
    }
  }

  const slots = o.syncSlots ?? 0;
  if (!Number.isInteger(slots) || slots < 0 || slots > 1000) {
    problems.push(`--sync-slots ${slots} must be a whole number from 0 (no limit) to 1000: the number of nodes that may sync their root at once`);
  } else if (slots > 0 && o.stateDir === undefined) {
    problems.push('--sync-slots needs --state-dir: where the sync-slot script and its slot files live (e.g. /var/lib/clusterboot)');
  }
  if (slots > 0 && o.stateDir !== undefined) problems.push(...syncSlotProblems(resolve(o.stateDir)));

  const identity = o.identity ?? true;
  if (identity) {
    if (!existsSync(SSH_KEYGEN)) problems.push(`${SSH_KEYGEN} is missing, needed for the nodes' SSH host keys: install openssh-client, or use --no-identity`);
    const nodesDir = join(masterRoot, NODES_DIR);
    const nst = statSync(nodesDir, { throwIfNoEntry: false });
    if (nst && !nst.isDirectory()) problems.push(`${nodesDir} exists and is not a directory: move it away`);
    for (const n of parsed.nodes) {
      const st = statSync(join(nodesDir, n.hostname), { throwIfNoEntry: false });
      if (st && !st.isDirectory()) problems.push(`${join(nodesDir, n.hostname)} exists and is not a directory: move it away`);
    }
  }
  const ast = statSync(join(masterRoot, APPROVAL_REQUIRED), { throwIfNoEntry: false });
  if (o.approval !== undefined && ast && !ast.isFile()) problems.push(`${join(masterRoot, APPROVAL_REQUIRED)} exists and is not a regular file: move it away`);

  const keyLines: string[] = [];
  if (o.keysDir !== undefined) {
    const keysFix = `run \`builder keys --dir ${o.keysDir}\` (it creates missing keys and keeps existing ones), then \`builder pack --keys ${o.keysDir}\` so the nodes carry them`;
    const pub = (name: string) => {
      try {
        return readFileSync(join(o.keysDir as string, name), 'utf8');
      } catch {
        problems.push(`${join(o.keysDir as string, name)} is missing: ${keysFix}`);
        return null;
      }
    };
    const node = pub('node_ed25519.pub');
    const report = pub('report_ed25519.pub');
    const line = (f: () => string) => {
      try {
        keyLines.push(f());
      } catch (e) {
        problems.push((e as Error).message);
      }
    };
    if (node !== null) {
      line(() => slots > 0 && o.stateDir !== undefined
        ? syncSlotKeysLine(node, masterRoot, resolve(o.stateDir), slots, o.rrsync)
        : authorizedKeysLine(node, masterRoot, o.rrsync));
    }
    if (report !== null) line(() => reportKeysLine(report, masterRoot, o.rrsync));
    if (keyLines.length === 2 && keyBlob(keyLines[0] as string) === keyBlob(keyLines[1] as string)) {
      problems.push(`the node key and the report key in ${o.keysDir} are the same key: sshd would give it only the first line's rights; remove report_ed25519* and ${keysFix}`);
    }
  } else {
    warnings.push('no --keys: no authorized_keys lines; nodes cannot read the master or send reports until `builder keys` lines are installed');
  }

  const targets: Array<[string, string]> = [
    [join(tftp, KERNEL), 'TFTP file'], [join(tftp, INITRAMFS), 'TFTP file'], [join(tftp, BOOT_SCRIPT), 'TFTP file'],
    [join(masterRoot, NODES_LIST), 'node list'], [join(masterRoot, REPORT_DIR, 'x'), 'reports folder'],
    [o.dnsmasqConf, 'dnsmasq configuration'],
    ...(o.authorizedKeys !== undefined ? [[o.authorizedKeys, 'authorized_keys'] as [string, string]] : []),
    ...(identity ? [[join(masterRoot, NODES_DIR, 'x'), 'node identity folder'] as [string, string]] : []),
    ...(slots > 0 && o.stateDir !== undefined ? [[join(resolve(o.stateDir), 'sync-slot'), 'sync-slot script'] as [string, string]] : []),
  ];
  for (const [p, what] of targets) {
    const w = writableProblem(p, what);
    if (w) problems.push(w);
  }
  const rst = statSync(join(masterRoot, REPORT_DIR), { throwIfNoEntry: false });
  if (rst && !rst.isDirectory()) problems.push(`${join(masterRoot, REPORT_DIR)} exists and is not a directory: move it away`);

  if (problems.length) throw new StageError(problems);

  // ---- every check passed: write
  const written: string[] = [];
  const put = (path: string, data: string | Uint8Array) => {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    writeAtomic(path, data);
    written.push(path);
  };
  put(join(tftp, KERNEL), readFileSync(o.kernel));
  put(join(tftp, INITRAMFS), readFileSync(o.initramfs));
  const script = bootScript({ arch: o.arch, kernel: KERNEL, initramfs: INITRAMFS, bootargs: o.bootargs });
  put(join(tftp, BOOT_SCRIPT), scriptImage(script, { arch: o.arch, name: 'clusterboot boot script', time: o.time ?? 0 }));
  put(join(masterRoot, NODES_LIST), renderNodesList(parsed.nodes, o.nodesFile));
  const reports = join(masterRoot, REPORT_DIR);
  mkdirSync(reports, { recursive: true, mode: 0o755 });
  chmodSync(reports, 0o755);
  put(o.dnsmasqConf, renderDnsmasq(plan));

  const identities = identity ? parsed.nodes.map((n) => ({ hostname: n.hostname, created: ensureIdentity(masterRoot, n.hostname).created })) : [];
  let syncSlot: StageResult['syncSlot'] = null;
  if (slots > 0 && o.stateDir !== undefined) {
    syncSlot = { ...installSyncSlot(resolve(o.stateDir)), slots };
    written.push(syncSlot.script);
  }
  if (o.approval !== undefined) setApprovalMode(masterRoot, o.approval);

  let keysAdded: string[] = [];
  let keysReplaced: string[] = [];
  if (o.authorizedKeys !== undefined && keyLines.length) {
    const file = o.authorizedKeys;
    const before = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const r = replaceOwnNodeLines(before, keyLines, masterRoot);
    const m = mergeAuthorizedKeys(r.text, keyLines);
    warnings.push(...m.conflicts.map((c) => `${file}: ${c}`));
    if (r.replaced.length) {
      // a rewrite, atomic, keeping the file's mode
      writeAtomic(file, r.text + m.append, statSync(file).mode & 0o777);
      written.push(file);
    } else if (m.append) {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      appendFileSync(file, m.append, { mode: 0o600 });
      written.push(file);
    }
    keysAdded = m.added;
    keysReplaced = r.replaced;
  }
  return {
    nodes: parsed.nodes, written, reportsDir: reports, keyLines, keysAdded, keysReplaced, identity: identities, syncSlot,
    approvalMode: approvalModeOn(masterRoot), warnings,
  };
}

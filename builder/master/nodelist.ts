// The node list: the seed's `dhcp-host=` lines or `MAC NAME IP` lines, parsed into one checked shape, and the
// normalised nodes.list that `builder status` reads; the address helpers the checks share. Pure.
/** One node: a fixed DHCP lease and a DNS name. `line` is where it came from in the list (1-based). */
export interface NodeEntry {
  mac: string;
  hostname: string;
  ip: string;
  /** Lease time from a dnsmasq `dhcp-host=` line; the plan's lease applies when absent. */
  lease?: string;
  /** The node's architecture (`arch=amd64` in the list); absent: arm64, a U-Boot node. */
  arch?: NodeArch;
  /**
   * The master this node syncs from first (`master=10.77.0.2` in the list: a mirror, or a second master); its
   * DHCP option 66 then lists it before the primary, which the agent falls back to. Absent: the primary only.
   */
  master?: string;
  line: number;
}

/** What a node runs: arm64 boards through U-Boot (the default), amd64 PCs through PXE and iPXE. */
export type NodeArch = 'arm64' | 'amd64';
const ARCH_ALIASES: Readonly<Record<string, NodeArch>> = {
  arm64: 'arm64',
  aarch64: 'arm64',
  amd64: 'amd64',
  x86_64: 'amd64',
  'x86-64': 'amd64',
  x64: 'amd64',
};

/** `arch=amd64` (or x86_64, x64; arm64, aarch64) -> the arch; null when the field is not arch=; an error for an unknown one. */
export function parseArchField(f: string): { arch: NodeArch } | { error: string } | null {
  const m = /^arch=(.*)$/i.exec(f);
  if (!m) return null;
  const arch = ARCH_ALIASES[(m[1] as string).toLowerCase()];
  return arch
    ? { arch }
    : { error: `'${f}' names no architecture clusterboot boots: write arch=arm64 (the default) or arch=amd64` };
}

/** `master=10.77.0.2` -> the address; null when the field is not master=; an error for anything but an IPv4 address. */
export function parseMasterField(f: string): { master: string } | { error: string } | null {
  const m = /^master=(.*)$/i.exec(f);
  if (!m) return null;
  const ip = m[1] as string;
  return parseIPv4(ip) !== null
    ? { master: ip }
    : { error: `'${oneLine(f)}' is not master=<IPv4 address of the master or mirror this node syncs from>` };
}

/** A node line's optional fields after MAC, HOSTNAME and IP. */
type Extras = Pick<NodeEntry, 'arch' | 'master'>;

/**
 * Take `f` into `into` when it is one of the optional fields (arch=, master=), each at most once: 'taken', an
 * error (`where` starts the one for a second field), or null when `f` is none of them.
 */
function takeExtra(f: string, into: Extras, where: string): 'taken' | { error: string } | null {
  const e = parseArchField(f) ?? parseMasterField(f);
  if (!e) return null;
  if ('error' in e) return e;
  const key = 'arch' in e ? 'arch' : 'master';
  if (into[key] !== undefined) return { error: `${where}two ${key}= fields ('${f}'): one per node` };
  Object.assign(into, e);
  return 'taken';
}

/** A node's architecture with the default filled in. */
export const archOf = (n: Pick<NodeEntry, 'arch'>): NodeArch => n.arch ?? 'arm64';

// ---------------------------------------------------------------------------------------------------------------
// addresses

export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

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
    return {
      ok: false,
      error: `--subnet '${s}' is not an IPv4 network in CIDR form with a prefix of 1 to 30: write it like 10.77.0.0/24`,
    };
  }
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const network = (ip & mask) >>> 0;
  if (network !== ip) {
    return {
      ok: false,
      error: `--subnet '${s}' has host bits set: the network is ${formatIPv4(network)}/${prefix}; write that`,
    };
  }
  return { ok: true, subnet: { network, prefix, mask, broadcast: (network | ~mask) >>> 0 } };
}

export const inSubnet = (n: number, s: Subnet) => (n & s.mask) >>> 0 === s.network;
export const hostsOf = (s: Subnet) => `${formatIPv4(s.network + 1)}-${formatIPv4(s.broadcast - 1)}`;

// An RFC 1123 label; all-digit names and lease-time look-alikes are refused because dnsmasq's dhcp-host reads a
// field like `30m` or `600` as a lease time and `ignore` as a keyword, not as a host name.
export const LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
export const LEASE_RE = /^(\d+[smhdw]?|infinite)$/i;

export function hostnameProblem(h: string): string | null {
  if (!LABEL_RE.test(h)) {
    return `is not a valid host name (an RFC 1123 label: 1 to 63 letters, digits and '-', not starting or ending with '-', no dots)`;
  }
  if (LEASE_RE.test(h) || h.toLowerCase() === 'ignore')
    return `looks like a dnsmasq lease time or keyword, not a name: use a name with a letter in it, like rpinode01`;
  return null;
}

export function leaseSeconds(s: string): number | null {
  const m = /^(\d+)([smhdw]?)$/i.exec(s);
  if (!m) return s.toLowerCase() === 'infinite' ? Infinity : null;
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[(m[2] as string).toLowerCase()] ?? 1;
  return Number(m[1]) * unit;
}

// ---------------------------------------------------------------------------------------------------------------
// the node list

export const FORMS = `'MAC HOSTNAME IP [arch=amd64] [master=IP]' or 'dhcp-host=MAC,,HOSTNAME,IP[,LEASE][,arch=amd64][,master=IP]'`;

// Why: nodes come from the seed's dnsmasq lines or from a plain table; both must land in one checked shape, and every
// line that is neither is an error with its line number (a typo must not silently drop a node).
export function parseNodeList(text: string): { nodes: NodeEntry[]; errors: string[] } {
  const nodes: NodeEntry[] = [];
  const errors: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    // a comment starts at a '#' at the beginning or after white space (none of MAC, name, IP, lease contains one)
    const body = raw
      .replace(/\r$/, '')
      .replace(/(^|\s)#.*$/, '')
      .trim();
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
      const extras: Extras = {};
      const unsupported = (f: string) => /^(id|set|tag|net):|^\[/.test(f) || f.toLowerCase() === 'ignore';
      if (unsupported(mac))
        return void err(
          `dhcp-host= must start with the node's MAC, not '${mac}' (client ids and tags are not supported here)`,
        );
      for (const f of fields.slice(1)) {
        if (f === '') continue; // the seed's empty client-id field
        const x = takeExtra(f, extras, 'dhcp-host= has ');
        if (x === 'taken') continue;
        if (x) return void err(x.error);
        const twice = (what: string) => err(`dhcp-host= has two ${what}s ('${f}'): one node per line, ${FORMS}`);
        if (normalizeMac(f))
          return void err(`dhcp-host= with several MACs ('${f}') is not supported: write one line per MAC`);
        if (unsupported(f)) {
          return void err(
            `dhcp-host= field '${f}' (client id, tag, IPv6 or ignore) is not supported here: only MAC, HOSTNAME, IP and LEASE`,
          );
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
      nodes.push({
        mac: normalizeMac(mac) ?? mac,
        hostname,
        ip,
        ...(lease !== undefined ? { lease } : {}),
        ...extras,
        line,
      });
      return;
    }
    if (/^[A-Za-z][A-Za-z0-9-]*\s*=/.test(body)) {
      return void err(
        `'${body.slice(0, 40)}' is a dnsmasq option, not a node: keep only dhcp-host= lines here; ` +
          "the rest comes from builder stage's options (--range, --domain, --router, --interface, --lease)",
      );
    }
    const all = body.split(/[\s,]+/).filter(Boolean);
    // after MAC HOSTNAME IP: arch= and master=, each at most once, in any order
    const extras: Extras = {};
    let taken = 0;
    for (const f of all.slice(3)) {
      const x = takeExtra(f, extras, '');
      if (!x) break;
      if (x !== 'taken') return void err(x.error);
      taken++;
    }
    const fields = all.slice(0, all.length - taken);
    if (fields.length !== 3)
      return void err(
        `expected ${FORMS}, got ${fields.length} field${fields.length === 1 ? '' : 's'}: '${body.slice(0, 60)}'`,
      );
    const [mac, hostname, ip] = fields as [string, string, string];
    nodes.push({
      mac: normalizeMac(mac) ?? mac,
      hostname,
      ip,
      ...extras,
      line,
    });
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
  // arm64 (the default) is left out, so a list without other arches reads as it always did
  const row = (n: NodeEntry) =>
    `${n.mac} ${n.hostname} ${n.ip}${archOf(n) === 'arm64' ? '' : ` arch=${archOf(n)}`}${n.master ? ` master=${n.master}` : ''}`;
  return `${[...head, ...nodes.map(row)].join('\n')}\n`;
}

export const oneLine = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, '?');

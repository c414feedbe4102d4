// The dnsmasq configuration `builder stage` writes (fixed leases, DNS names, TFTP, option 66), and every check
// of the plan behind it. Pure.
import {
  FORMS,
  LABEL_RE,
  MAC_RE,
  type NodeEntry,
  formatIPv4,
  hostnameProblem,
  hostsOf,
  inSubnet,
  leaseSeconds,
  oneLine,
  parseIPv4,
  parseSubnet,
} from './nodelist.ts';
import { BOOT_SCRIPT } from '../../agent/contract/tree.ts';
import { MASTERS_OPTION } from '../../agent/contract/dhcp.ts';
import { dhcpHostLine, pxeDnsmasqLines } from './pxe.ts';
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
  /**
   * Nodes with master= get their first stage by TFTP from that master too (next-server and option 66 per tag):
   * every mirror then runs TFTP (`builder mirror --serve --tftp`). Off: TFTP stays on this master.
   */
  tftpFromMirrors?: boolean;
}

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
    if (subnet && !inSubnet(n, subnet))
      errs.push(`${what} ${s} is outside the subnet ${cidr} (hosts ${hostsOf(subnet)}): ${fix}`);
    else if (subnet && n === subnet.network)
      errs.push(`${what} ${s} is the network address of ${cidr}, not a host: ${fix}`);
    else if (subnet && n === subnet.broadcast)
      errs.push(`${what} ${s} is the broadcast address of ${cidr}, not a host: ${fix}`);
    return n;
  };

  const master = hostAddress('--master-ip', plan.masterIp, 'the nodes could not reach it; fix --master-ip or --subnet');
  if (plan.router !== undefined)
    hostAddress('--router', plan.router, 'the nodes could not use it; fix --router or leave it out');

  let range: [number, number] | null = null;
  if (plan.range !== undefined) {
    const parts = plan.range.split(',').map((p) => p.trim());
    if (parts.length !== 2) {
      errs.push(
        `--range '${plan.range}' is not START,END: write it like 10.77.0.200,10.77.0.250, or leave it out so unknown MACs get no lease`,
      );
    } else {
      const fix = 'keep the dynamic range inside the subnet, or leave --range out';
      const a = hostAddress('--range start', parts[0] as string, fix);
      const b = hostAddress('--range end', parts[1] as string, fix);
      if (a !== null && b !== null) {
        if (a > b)
          errs.push(`--range ${plan.range} is reversed (start after end): write it as ${parts[1]},${parts[0]}`);
        else range = [a, b];
      }
      if (range && master !== null && master >= range[0] && master <= range[1]) {
        errs.push(
          `--master-ip ${plan.masterIp} is inside the dynamic range ${plan.range}: dnsmasq could lease the master's address to a node; shrink --range`,
        );
      }
    }
  }

  if (plan.interface !== undefined && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(plan.interface)) {
    errs.push(
      `--interface '${oneLine(plan.interface)}' is not a network interface name (1 to 15 of [A-Za-z0-9_.:@-]): give the master's NIC on the cluster LAN, like eth0`,
    );
  }
  const labels = plan.domain.split('.');
  if (plan.domain.length > 253 || labels.some((l) => !LABEL_RE.test(l))) {
    errs.push(
      `--domain '${oneLine(plan.domain)}' is not a DNS domain (dot-separated RFC 1123 labels, no trailing dot): write it like cluster.lan`,
    );
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
    errs.push(
      `TFTP root '${oneLine(plan.tftpRoot)}' must be an absolute path of [A-Za-z0-9._+/-] without '..' (dnsmasq reads a comma as a second field): choose another --master-root`,
    );
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
      errs.push(
        `${at}: MAC '${oneLine(n.mac)}' is malformed: write six hex pairs separated by ':', like b8:27:eb:cb:63:18`,
      );
    } else {
      if (Number.parseInt(mac.slice(0, 2), 16) & 1) {
        errs.push(
          `${at}: MAC ${mac} is a multicast address (first octet odd), which no network card has: copy the node's MAC from \`ip link\` or its DHCP request in the master's log`,
        );
      }
      const seen = macs.get(mac);
      if (seen)
        errs.push(
          `${at}: MAC ${mac} is already on line ${seen.line} (${seen.hostname}): one line per node; remove one of them`,
        );
      else macs.set(mac, n);
    }
    const hp = hostnameProblem(n.hostname);
    if (hp) errs.push(`${at}: hostname '${oneLine(n.hostname)}' ${hp}`);
    else {
      const seen = names.get(n.hostname.toLowerCase());
      if (seen)
        errs.push(
          `${at}: hostname ${n.hostname} is already used on line ${seen.line} (${seen.mac}): give each node its own name`,
        );
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
    if (seen)
      errs.push(
        `${at}: IP ${n.ip} is already given to ${seen.hostname} on line ${seen.line}: give each node its own address`,
      );
    else ips.set(ip, n);
    if (subnet && !inSubnet(ip, subnet)) {
      errs.push(
        `${at}: IP ${n.ip} is outside the subnet ${cidr} (hosts ${hostsOf(subnet)}): dnsmasq would never lease it; pick an address inside it or change --subnet`,
      );
    } else if (subnet && ip === subnet.network) {
      errs.push(`${at}: IP ${n.ip} is the network address of ${cidr}, not a host: pick another address`);
    } else if (subnet && ip === subnet.broadcast) {
      errs.push(`${at}: IP ${n.ip} is the broadcast address of ${cidr}, not a host: pick another address`);
    }
    if (master !== null && ip === master)
      errs.push(`${at}: IP ${n.ip} is the master's own address (--master-ip): pick another address for ${n.hostname}`);
    if (n.master !== undefined) {
      const m = hostAddress(
        `${at}: master=${n.master} of ${n.hostname}`,
        n.master,
        `the node could not reach it; name a master or mirror on the cluster LAN`,
      );
      if (m !== null && m === ip)
        errs.push(`${at}: master=${n.master} is ${n.hostname}'s own address: name its mirror`);
    }
    if (range && ip >= range[0] && ip <= range[1]) {
      errs.push(
        `${at}: IP ${n.ip} is inside the dynamic range ${plan.range}: dnsmasq could lease it to an unknown MAC as well; pick an address outside the range or shrink --range`,
      );
    }
  }
  for (const n of plan.nodes) {
    const other = n.master !== undefined ? plan.nodes.find((o) => o !== n && o.ip === n.master) : undefined;
    if (other)
      errs.push(
        `${where(n)}: master=${n.master} of ${n.hostname} is the address of node ${other.hostname}: a node serves no other node; name a master or mirror`,
      );
  }
  return errs;
}

// ---------------------------------------------------------------------------------------------------------------
// dnsmasq

/** The dnsmasq tag of each master (other than the primary) that nodes name with master=, in list order. */
export function masterTags(nodes: readonly NodeEntry[], primary: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const n of nodes)
    if (n.master !== undefined && n.master !== primary && !tags.has(n.master))
      tags.set(n.master, `cb-master-${tags.size + 1}`);
  return tags;
}

// Why: one generated file holds every fact dnsmasq needs for the cluster, in the node list's order, so a re-run
// with the same inputs gives the same bytes (diffable, no timestamp). Throws on a plan validateStage refuses.
export function renderDnsmasq(plan: StagePlan): string {
  const errs = validateStage(plan);
  if (errs.length) throw new Error(`renderDnsmasq: invalid plan:\n  ${errs.join('\n  ')}`);
  const sub = parseSubnet(plan.subnet);
  if (!sub.ok) throw new Error(sub.error); // validated above; narrows the type
  const mask = formatIPv4(sub.subnet.mask);
  const tags = masterTags(plan.nodes, plan.masterIp);
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
    ...(tags.size
      ? [
          `# nodes with master= in the list: option ${MASTERS_OPTION} lists that master first and this one after; the`,
          plan.tftpFromMirrors
            ? '# agent syncs from the first that answers; U-Boot TFTPs from that master too (next-server, option 66)'
            : '# agent syncs from the first that answers (their first stage still comes from this TFTP server)',
          ...[...tags].flatMap(([ip, tag]) => [
            `dhcp-option=tag:${tag},${MASTERS_OPTION},"${ip},${plan.masterIp}"`,
            ...(plan.tftpFromMirrors ? [`dhcp-option=tag:${tag},66,${ip}`] : []),
          ]),
        ]
      : []),
    'enable-tftp',
    `tftp-root=${plan.tftpRoot}`,
    "# U-Boot's distro boot runs boot.scr.uimg from the TFTP server",
    ...pxeDnsmasqLines(plan.nodes, BOOT_SCRIPT, plan.tftpFromMirrors ? tags : new Map()),
    'log-dhcp',
    `# ${plan.nodes.length} node${plan.nodes.length === 1 ? '' : 's'}`,
  );
  for (const n of plan.nodes) {
    const tag = n.master !== undefined ? tags.get(n.master) : undefined;
    out.push(dhcpHostLine(n, plan.lease, tag ? [tag] : []));
  }
  for (const n of plan.nodes) out.push(`host-record=${n.hostname}.${plan.domain},${n.hostname},${n.ip}`);
  return `${out.join('\n')}\n`;
}

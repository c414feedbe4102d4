// Phase "network": wait for a NIC, DHCP with busybox udhcpc, hostname, and which host is the master.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { info, warn } from '../log.ts';
import { type Lease, type Phase } from '../phase.ts';
import { PhaseFailure } from '../errors.ts';
import { startSyslog } from '../devices/syslog.ts';
import { linkUp } from '../sys/libc.ts';
import { LEASE_FILE } from '../paths.ts';
import { isHostname, printable } from '../plans/hostname.ts';
import { masterHost, masterList, MAX_MASTERS } from '../cmdline.ts';
import { MASTERS_LEASE_KEY, MASTERS_OPTION, mastersFromHex } from '../contract/dhcp.ts';

/** Pick the interface to configure: wired names first, in a stable order. */
export function chooseInterface(names: string[]): string | null {
  const candidates = names.filter((n) => n !== 'lo' && !/^(sit|tun|tap|wl|bond|dummy|ip6)/.test(n)).sort();
  return candidates.find((n) => /^(eth|en|end)/.test(n)) ?? candidates[0] ?? null;
}

/** The udhcpc hook writes key=value lines; unknown keys are ignored. */
export function parseLease(text: string): Lease {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const g = (k: string) => kv.get(k) ?? '';
  return {
    interface: g('interface'),
    ip: g('ip'),
    mask: g('mask'),
    router: g('router'),
    dns: g('dns'),
    serverid: g('serverid'),
    siaddr: g('siaddr'),
    hostname: g('hostname'),
    domain: g('domain'),
    tftp: g('tftp'),
    masters: mastersFromHex(g(MASTERS_LEASE_KEY)),
  };
}

/**
 * The masters, in the order to try them: masterip= wins, then the list the master's dnsmasq sends a node with its
 * own master (MASTERS_OPTION), DHCP option 66 (TFTP server), next-server, the DHCP server. What DHCP names becomes
 * ssh's host argument: only host names and addresses are taken (never "-oProxyCommand=...").
 */
export function chooseMasters(param: string | undefined, lease: Lease): { hosts: string[]; from: string } | null {
  if (param) return { hosts: masterList(param), from: 'masterip=' };
  const fromDhcp = (v: string) => masterList(v).filter(masterHost).slice(0, MAX_MASTERS);
  const listed = fromDhcp(lease.masters);
  if (listed.length) return { hosts: listed, from: `DHCP option ${MASTERS_OPTION}` };
  const tftp = fromDhcp(lease.tftp);
  if (tftp.length) return { hosts: tftp, from: 'DHCP option 66' };
  if (lease.siaddr && lease.siaddr !== '0.0.0.0') return { hosts: [lease.siaddr], from: 'DHCP next-server' };
  if (lease.serverid) return { hosts: [lease.serverid], from: 'DHCP server' };
  return null;
}

async function waitFor<T>(what: () => T | null, ms: number): Promise<T | null> {
  const end = Date.now() + ms;
  for (;;) {
    const v = what();
    if (v !== null) return v;
    if (Date.now() > end) return null;
    await Bun.sleep(200);
  }
}

export const network: Phase = {
  name: 'network',
  needs: { modules: ['virtio_net'] },
  async run(ctx) {
    try {
      linkUp('lo');
    } catch (e) {
      warn('network', `loopback: ${(e as Error).message}`);
    }
    const ifname = await waitFor(
      () => chooseInterface(existsSync('/sys/class/net') ? readdirSync('/sys/class/net') : []),
      15_000,
    );
    if (!ifname) {
      throw new PhaseFailure(
        'no network interface appeared within 15 s',
        'check the cable and that the NIC driver is packed (builder pack --modules ...)',
        'network',
      );
    }
    try {
      linkUp(ifname);
    } catch (e) {
      throw new PhaseFailure(
        `cannot bring ${ifname} up: ${(e as Error).message}`,
        'check the NIC driver (dmesg in the rescue shell)',
        'network',
        { cause: e },
      );
    }
    try {
      ctx.facts.mac = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim().toLowerCase();
    } catch {
      // no address file: the report then names the node by hostname only
    }
    // U-Boot found the master silent (it booted the cached first stage): ask DHCP briefly, then go offline
    const silent = ctx.params.stageFrom === 'offline';
    info('network', `DHCP on ${ifname}${silent ? ' (U-Boot had no answer from the master: asking briefly)' : ''}`);
    try {
      await run(
        'busybox',
        [
          'udhcpc',
          '-i',
          ifname,
          '-f',
          '-q',
          '-n',
          '-t',
          silent ? '2' : '8',
          '-T',
          '3',
          '-A',
          '2',
          '-s',
          '/etc/udhcpc/default.script',
          '-O',
          'tftp',
          '-O',
          String(MASTERS_OPTION),
        ],
        { timeoutMs: 90_000 },
      );
    } catch (e) {
      // no lease is the master (or the link) down: the disk's last complete root boots, nothing on it changes;
      // a disk with no root fails in the root phase, visibly, and the node retries
      warn(
        'network',
        `no DHCP lease on ${ifname} (${(e as Error).message.split('\n').pop()?.slice(-80) ?? ''}): continuing offline; ` +
          "check the master's dnsmasq (dhcp-range / dhcp-host for this MAC) and the link",
      );
      return `no lease: offline`;
    }
    const lease = parseLease(readFileSync(LEASE_FILE, 'utf8'));
    ctx.facts.lease = lease;
    // it becomes a path, /proc/sys/kernel/hostname and an rsync filter: an invalid one counts as none
    const dhcpName = isHostname(lease.hostname) ? lease.hostname : undefined;
    if (lease.hostname && !dhcpName)
      warn(
        'network',
        `DHCP gave an invalid hostname "${printable(lease.hostname)}": ignoring it (letters, digits, "-", dots only); ` +
          "fix the master's node list, or set hostname=",
      );
    const hostname = ctx.params.hostname ?? dhcpName;
    if (hostname) {
      writeFileSync('/proc/sys/kernel/hostname', hostname);
      ctx.facts.hostname = hostname;
      ctx.facts.hostnameFrom = ctx.params.hostname ? 'cmdline' : 'dhcp';
    } else if (!lease.hostname) {
      warn(
        'network',
        `DHCP gave no hostname: ${ctx.facts.mac ?? 'this MAC'} has no fixed lease on the master ` +
          '(add it to the node list and run `builder stage`), or set hostname=',
      );
    }
    const master = chooseMasters(ctx.params.master, lease);
    if (master) {
      ctx.facts.masters = master.hosts;
      ctx.facts.master = master.hosts[0];
    } else warn('network', 'no master known: give masterip= on the kernel command line or DHCP option 66');
    startSyslog(ctx);
    info(
      'network',
      `lease ${lease.ip}/${lease.mask} on ${ifname} from ${lease.serverid}, router ${lease.router || '-'}, ` +
        `hostname ${hostname ?? '(none)'}, master ${master ? `${master.hosts.join(', ')} (${master.from})` : '(none)'}`,
      { lease, master },
    );
    return `${lease.ip} on ${ifname}`;
  },
};

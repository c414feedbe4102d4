// `builder init`'s options and its output, kept apart from cli.ts (which only names the command).
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import {
  defaultPaths,
  describe as describeAction,
  filesOf,
  INIT_DEFAULTS,
  parseSize,
  runInit,
  type InitOptions,
} from './init.ts';

export const INIT_DESCRIBE =
  "turn this machine into a master: install dnsmasq, sshd and rsync if missing, make the seed layout, the keys, a first partition table, the root template from the running system (cp -ax / and the seed's clean-ups), bootfs/ from the Pi firmware and U-Boot; pack, stage, publish; start dnsmasq. Safe to run again: it does only what is missing";

const list = (v: unknown): string[] =>
  (Array.isArray(v) ? v : v === undefined ? [] : [v])
    .flatMap((x) => String(x).split(','))
    .map((s) => s.trim())
    .filter(Boolean);

export function initOptions(y: Argv) {
  return y
    .option('nodes', {
      type: 'string',
      demandOption: true,
      describe: "node list: the seed's 'dhcp-host=MAC,,NAME,IP[,LEASE]' lines or 'MAC NAME IP' lines; # comments",
    })
    .option('interface', {
      type: 'string',
      demandOption: true,
      describe: "the cluster NIC, e.g. eth0: dnsmasq serves only there; the master's address is its address",
    })
    .option('subnet', { type: 'string', describe: "the cluster LAN, CIDR (default: the interface's)" })
    .option('master-ip', {
      type: 'string',
      describe: "the master's address on the cluster LAN (default: the interface's)",
    })
    .option('range', { type: 'string', describe: 'START,END: dynamic leases for unknown MACs (default: none)' })
    .option('domain', { type: 'string', default: INIT_DEFAULTS.domain })
    .option('prefix', {
      type: 'string',
      default: '',
      describe:
        'every default path below is under this directory (a master prepared in a directory, or a test); the files written name the paths with it',
    })
    .option('master-root', { type: 'string', describe: 'default <prefix>/data/slaves (the seed)' })
    .option('keys', { type: 'string', describe: 'key directory, default <prefix>/etc/clusterboot' })
    .option('state-dir', { type: 'string', describe: 'default <prefix>/var/lib/clusterboot' })
    .option('dnsmasq-conf', { type: 'string', describe: 'default <prefix>/etc/dnsmasq.d/clusterboot.conf' })
    .option('authorized-keys', {
      type: 'string',
      describe: "root's authorized_keys, default <prefix>/root/.ssh/authorized_keys",
    })
    .option('dhcp-leases', { type: 'string', describe: 'default <prefix>/var/lib/misc/dnsmasq.leases' })
    .option('master-host-key', {
      type: 'string',
      describe: 'the sshd host key the nodes pin, default <prefix>/etc/ssh/ssh_host_ed25519_key.pub',
    })
    .option('system-root', {
      type: 'string',
      default: '/',
      describe: 'the running system the root template is copied from (one file system, like cp -ax)',
    })
    .option('sysroot', {
      type: 'string',
      describe: 'the arm64 root the initramfs tools come from (default: --system-root); `builder sysroot` makes one',
    })
    .option('kernel', {
      type: 'string',
      describe: "the nodes' kernel (default: the system root's only /boot/vmlinuz-*)",
    })
    .option('kernel-modules', { type: 'string', describe: 'its /lib/modules/<version> (with --kernel)' })
    .option('firmware', {
      type: 'string',
      describe: 'the Pi firmware directory (default: <system root>/boot/firmware, /boot or /usr/lib/raspi-firmware)',
    })
    .option('u-boot', {
      type: 'string',
      describe: 'U-Boot for the Pi (default: <system root>/usr/lib/u-boot/rpi_arm64/u-boot.bin, from u-boot-rpi)',
    })
    .option('card-size', {
      type: 'string',
      array: true,
      default: [INIT_DEFAULTS.cardSize],
      describe: "the nodes' SD card sizes (16GB, 32G, 2GiB, bytes): the first table fits the smallest",
    })
    .option('exclude', {
      type: 'string',
      array: true,
      default: [],
      describe: 'also leave these paths of the system root out of the template (e.g. /home/big)',
    })
    .option('bootargs', {
      type: 'string',
      default: INIT_DEFAULTS.bootargs,
      describe: 'kernel command line in boot.scr.uimg',
    })
    .option('modules', { type: 'string', array: true, describe: 'extra kernel modules for the initramfs' })
    .option('agent', { type: 'string', describe: 'agent executable (default: compile it now)' })
    .option('sync-slots', {
      type: 'number',
      default: INIT_DEFAULTS.syncSlots,
      describe: 'at most N root syncs at once',
    })
    .option('sign', { type: 'boolean', default: false, describe: 'sign the stamps; nodes then refuse unsigned ones' })
    .option('apt', {
      type: 'boolean',
      default: true,
      describe: 'install what is missing with apt-get (--no-apt: only say what is missing, and stop)',
    })
    .option('force', {
      type: 'boolean',
      default: false,
      describe: 'make the template, bootfs/, the table and the first stage again (keys are always kept)',
    })
    .option('dry-run', {
      type: 'boolean',
      default: false,
      describe: 'print every action and every file it would write; write nothing',
    })
    .example(
      '$0 init --nodes nodes.txt --interface eth0 --card-size 16GB',
      'a Raspberry Pi OS machine with eth0 on the cluster LAN becomes its master (/data/slaves)',
    )
    .example('$0 init --nodes nodes.txt --interface eth0 --dry-run', 'what it would do, and every file it would write');
}

type InitArgs = ReturnType<typeof initOptions> extends Argv<infer T> ? T : never;

/** The command line to InitOptions; an error names the option. */
export function initOptionsFrom(a: InitArgs): InitOptions {
  const d = defaultPaths(a.prefix);
  const cardSizes = list(a['card-size']).map((s) => {
    const n = parseSize(s);
    if (n === null) throw new Error(`--card-size ${s}: write it like 16GB, 32G, 2GiB or in bytes`);
    return n;
  });
  const opt = (v: string | undefined, dflt: string) => resolve(v ?? dflt);
  const systemRoot = resolve(a['system-root']);
  return {
    nodesFile: resolve(a.nodes),
    interface: a.interface,
    ...(a.subnet !== undefined ? { subnet: a.subnet } : {}),
    ...(a['master-ip'] !== undefined ? { masterIp: a['master-ip'] } : {}),
    ...(a.range !== undefined ? { range: a.range } : {}),
    domain: a.domain,
    prefix: a.prefix ? resolve(a.prefix) : '',
    masterRoot: opt(a['master-root'], d.masterRoot),
    keysDir: opt(a.keys, d.keysDir),
    stateDir: opt(a['state-dir'], d.stateDir),
    dnsmasqConf: opt(a['dnsmasq-conf'], d.dnsmasqConf),
    authorizedKeys: opt(a['authorized-keys'], d.authorizedKeys),
    dhcpLeases: opt(a['dhcp-leases'], d.dhcpLeases),
    masterHostKey: opt(a['master-host-key'], d.masterHostKey),
    systemRoot,
    sysroot: a.sysroot !== undefined ? resolve(a.sysroot) : systemRoot,
    ...(a.kernel !== undefined ? { kernel: resolve(a.kernel) } : {}),
    ...(a['kernel-modules'] !== undefined ? { kernelModules: resolve(a['kernel-modules']) } : {}),
    ...(a.firmware !== undefined ? { firmware: resolve(a.firmware) } : {}),
    ...(a['u-boot'] !== undefined ? { uBoot: resolve(a['u-boot']) } : {}),
    cardSizes,
    exclude: list(a.exclude),
    bootargs: a.bootargs,
    modules: list(a.modules),
    ...(a.agent !== undefined ? { agent: resolve(a.agent) } : {}),
    syncSlots: a['sync-slots'],
    sign: a.sign,
    apt: a.apt,
    force: a.force,
  };
}

export async function initHandler(a: InitArgs): Promise<void> {
  const say = (s: string) => console.error(`builder: ${s}`);
  const o = initOptionsFrom(a);
  const dry = a['dry-run'];
  const r = await runInit(o, { dryRun: dry, say });
  const out: string[] = [];
  if (dry) {
    out.push(
      r.plan.actions.length
        ? `init would do ${r.plan.actions.length} action(s) (--dry-run: nothing written):`
        : 'init: nothing to do: this master is as asked',
    );
    for (const x of r.plan.actions) {
      out.push(`- ${describeAction(x)}`);
      for (const f of filesOf(x, o)) out.push(`    ${f}`);
    }
  } else
    out.push(
      r.done.length
        ? `init: done, ${r.done.length} action(s); check the master with: builder doctor${a.prefix ? ' (with the paths above)' : ''}`
        : 'init: nothing to do: this master is as asked',
    );
  out.push('', r.sdCard, '');
  process.stdout.write(out.join('\n'));
}

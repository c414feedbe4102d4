#!/usr/bin/env bun
// `builder`: a thin command line over the builder's functions; every option maps to one field.
import { appendFileSync, existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { buildAgent, REPO, type AgentArch } from './image/agentbuild.ts';
import { bootScript, DEFAULT_BOOTARGS } from './image/bootscript.ts';
import type { Compression } from './image/compress.ts';
import { accessFiles, pack, type ExtraFile } from './image/pack.ts';
import { publish } from './master/publish.ts';
import { authorizedKeysLine } from './master/keylines.ts';
import { generateKeys } from './master/keys.ts';
import { DEFAULT_PACKAGES, fetchSysroot, kernelsIn, KERNEL_PACKAGES } from './image/sysroot.ts';
import { scriptImage, type UArch } from '../agent/contract/uimage.ts';
import { stage } from './master/stage.ts';
import { readStatus, renderStatusTable, approvalList } from './master/status.ts';
import { approve } from './master/approve.ts';
import { manPage, overview } from './help.ts';
import { renderStatusHtml } from './master/statushtml.ts';
import { watch } from './master/watch.ts';
import { knownHostsPlan, parseKnownHosts, signHostCerts } from './master/knownhosts.ts';
import { writeAuthorizedKeys } from './master/access.ts';
import { applyEnrol, enrolList, enrolPlan, enrolStates, readAuthorized, reportUserIn } from './master/enrol.ts';
import {
  checkMirror,
  gatherReports,
  mirrorKeysLine,
  mirrorRsh,
  timerUnits,
  mirrorVerdict,
  runMirror,
  mirrorTftpConf,
  serveMirror,
  writeMirrorState,
} from './master/mirror.ts';
import { writeAtomic } from '../agent/contract/atomic.ts';
import { TFTP_DIR } from '../agent/contract/tree.ts';
import { keyFingerprint } from '../agent/contract/report.ts';
import {
  DEFAULT_STATE_DIR,
  DEFAULT_SYNC_LEASE,
  DEFAULT_SYNC_PER_ADDRESS,
  DEFAULT_SYNC_SLOTS,
  DEFAULT_SYNC_STALL,
} from './master/syncslot.ts';
import { DEFAULT_TRIES } from '../agent/contract/firststage.ts';
import {
  DEFAULT_AUTHORIZED_KEYS,
  DEFAULT_DNSMASQ_CONF,
  DEFAULT_KEYS_DIR,
  DEFAULT_MASTER_HOST_KEY,
  renderDoctor,
  runDoctor,
} from './master/doctor.ts';
import { INIT_DESCRIBE, initHandler, initOptions } from './master/initcli.ts';

const say = (s: string) => console.error(`builder: ${s}`);

/**
 * A peer that rsync reads (the primary for a mirror, a mirror for `gather`): a path with '/' is a folder here,
 * anything else an address reached over SSH with `ssh`'s key, pinned host keys and local address.
 */
function rsyncPeer(
  spec: string,
  ssh: { key: string; knownHosts: string; bind?: string | undefined },
): { local: boolean; source: string; rsh?: string } {
  if (spec.includes('/')) return { local: true, source: resolve(spec) };
  return { local: false, source: `${spec}:`, rsh: mirrorRsh(resolve(ssh.key), resolve(ssh.knownHosts), 22, ssh.bind) };
}

/** `--timer DIR`: clusterboot-<kind>.service and .timer there, and how to start them. */
function writeTimer(dir: string, kind: 'mirror' | 'gather', command: string): void {
  const u = timerUnits(kind, command);
  mkdirSync(resolve(dir), { recursive: true });
  writeAtomic(join(resolve(dir), `clusterboot-${kind}.service`), u.service, 0o644);
  writeAtomic(join(resolve(dir), `clusterboot-${kind}.timer`), u.timer, 0o644);
  say(
    `wrote clusterboot-${kind}.service and .timer in ${resolve(dir)}: systemctl daemon-reload && systemctl enable --now clusterboot-${kind}.timer`,
  );
}
const epoch = () => Number(process.env.SOURCE_DATE_EPOCH ?? 0);
const list = (v: unknown): string[] =>
  (Array.isArray(v) ? v : v === undefined ? [] : [v])
    .flatMap((x) => String(x).split(','))
    .map((s) => s.trim())
    .filter(Boolean);

function parseAdd(spec: string): ExtraFile {
  const i = spec.lastIndexOf(':');
  if (i <= 0) throw new Error(`--add ${spec}: expected SRC:DEST[:MODE]`);
  const parts = spec.split(':');
  const mode = parts.length === 3 ? Number.parseInt(parts[2] ?? '', 8) : undefined;
  return { path: parts[1] ?? '', data: readFileSync(parts[0] ?? ''), ...(mode ? { mode } : {}) };
}

await overview(yargs(hideBin(process.argv)))
  .scriptName('builder')
  .usage('$0 <command> [options]: network boot and self-healing local roots for a cluster, run from its master')
  .wrap(Math.min(120, process.stdout.columns || 120))
  .strict()
  .demandCommand(1)
  .command(
    'sysroot',
    'fetch Debian packages for the nodes into a private apt cache and unpack them',
    (y) =>
      manPage(
        y
          .option('cache', {
            type: 'string',
            default: join(REPO, '.cache/sysroot-arm64'),
            describe: 'cache directory (apt state, debs, root/)',
          })
          .option('arch', { choices: ['arm64', 'armhf', 'amd64'] as const, default: 'arm64' as const })
          .option('kernel', {
            type: 'boolean',
            default: false,
            describe: `also fetch Debian's kernel for --arch (${Object.values(KERNEL_PACKAGES).join(', ')}; for QEMU tests)`,
          })
          .option('packages', { type: 'string', array: true, describe: 'extra packages' }),
        'sysroot',
      ),
    async (a) => {
      const pkgs = [...DEFAULT_PACKAGES, ...list(a.packages), ...(a.kernel ? [KERNEL_PACKAGES[a.arch]] : [])];
      const r = await fetchSysroot({ cache: resolve(a.cache), packages: pkgs, arch: a.arch, log: say });
      console.log(JSON.stringify({ root: r.root, packages: r.debs.length, kernels: r.kernels }));
    },
  )
  .command(
    'agent',
    'compile the agent into one executable',
    (y) =>
      manPage(
        y
          .option('arch', { choices: ['arm64', 'x64'] as const, default: 'arm64' as const })
          .option('out', { type: 'string', default: join(REPO, 'build') }),
        'agent',
      ),
    async (a) => {
      const r = await buildAgent(a.arch as AgentArch, resolve(a.out));
      say(`agent ${r.path}: ${(r.bytes / 1e6).toFixed(1)} MB`);
      console.log(r.path);
    },
  )
  .command(
    'pack',
    'write initramfs.igz and initramfs.igz.uimg',
    (y) =>
      manPage(
        y
          .option('sysroot', {
            type: 'string',
            demandOption: true,
            describe: "arm64 root: the slaves' template on a master, or `builder sysroot` output",
          })
          .option('agent', { type: 'string', describe: 'agent executable (default: compile it now)' })
          .option('arch', {
            choices: ['arm64', 'arm', 'amd64'] as const,
            default: 'arm64' as const,
            describe: 'amd64: an x86-64 agent and image (with an amd64 sysroot), for arch=amd64 nodes',
          })
          .option('kernel-modules', {
            type: 'string',
            describe: "DIR holding modules.dep (default: the sysroot's only /lib/modules/<version>)",
          })
          .option('modules', { type: 'string', array: true, describe: 'extra modules, comma separated' })
          .option('compress', { choices: ['gzip', 'zstd', 'xz', 'none'] as const, default: 'gzip' as const })
          .option('skel', { type: 'string', default: join(REPO, 'initramfs-skel') })
          .option('add', { type: 'string', array: true, describe: 'SRC:DEST[:MODE] extra file' })
          .option('keys', { type: 'string', describe: 'key directory from `builder keys` (packs the node key)' })
          .option('master-host-key', {
            type: 'string',
            array: true,
            default: ['/etc/ssh/ssh_host_ed25519_key.pub'],
            describe: "the master's host key to pin; give it again for each mirror master (any of them is accepted)",
          })
          .option('sign', {
            type: 'boolean',
            default: false,
            describe: 'pack the stamp key: nodes then refuse unsigned or older stamps',
          })
          .option('report', {
            type: 'boolean',
            default: true,
            describe:
              'with --keys: pack the report key (report_ed25519) so nodes send boot reports (--no-report: do not)',
          })
          .option('out', { type: 'string', default: join(REPO, 'build/tftp') }),
        'pack',
      ),
    async (a) => {
      const sysroot = resolve(a.sysroot);
      const agent = a.agent
        ? resolve(a.agent)
        : (await buildAgent(a.arch === 'amd64' ? 'x64' : 'arm64', join(REPO, 'build'))).path;
      let km = a['kernel-modules'];
      if (!km) {
        const ks = kernelsIn(sysroot);
        if (ks.length === 1) km = join(sysroot, 'lib/modules', ks[0] ?? '');
        else if (ks.length > 1)
          throw new Error(`the sysroot has kernels ${ks.join(', ')}: choose with --kernel-modules`);
      }
      const reportKey = a.keys ? join(resolve(a.keys), 'report_ed25519') : '';
      const report = Boolean(a.keys) && a.report && existsSync(reportKey);
      if (a.keys && a.report && !report)
        say(
          `warning: no ${reportKey}: nodes will not send boot reports; run \`builder keys --dir ${a.keys}\` to create it`,
        );
      const r = await pack({
        sysroot,
        agent,
        skel: resolve(a.skel),
        out: resolve(a.out),
        modules: list(a.modules),
        compress: a.compress as Compression,
        arch: (a.arch === 'amd64' ? 'x86_64' : a.arch) as UArch,
        sourceDateEpoch: epoch(),
        ...(km ? { kernelModules: resolve(km) } : {}),
        extra: [
          ...(a.keys
            ? accessFiles({
                keysDir: resolve(a.keys),
                masterHostKeyPub: a['master-host-key'].map((f) => readFileSync(String(f), 'utf8')),
                sign: a.sign,
                report,
              })
            : []),
          ...(a.add ?? []).map(String).map(parseAdd),
        ],
      });
      if (!a.keys) say('warning: no --keys: nodes will not be able to reach the master');
      for (const m of r.missingLibraries) say(`warning: ${m.neededBy} needs ${m.lib}, not found in the sysroot`);
      for (const m of r.missingModules) say(`warning: module ${m} not found in ${km}`);
      say(
        `${r.uimagePath}: ${(r.compressedBytes / 1e6).toFixed(1)} MB ${a.compress} (${(r.cpioBytes / 1e6).toFixed(1)} MB cpio, ${r.files} entries, ${r.modules.length} modules)`,
      );
      if (r.compressedBytes > 64e6) say('warning: over 64 MB: Raspberry Pi HTTP boot truncates ramdisks this large');
    },
  )
  .command(
    'bootscript',
    'write boot.scr.uimg for U-Boot',
    (y) =>
      manPage(
        y
          .option('out', { type: 'string', default: join(REPO, 'build/tftp/boot.scr.uimg') })
          .option('arch', { choices: ['arm64', 'arm'] as const, default: 'arm64' as const })
          .option('kernel', { type: 'string', default: 'vmlinuz' })
          .option('initramfs', { type: 'string', default: 'initramfs.igz.uimg' })
          .option('bootargs', { type: 'string', default: DEFAULT_BOOTARGS })
          .option('master', { type: 'string', describe: 'adds masterip=' })
          .option('fdt', { type: 'string' }),
        'bootscript',
      ),
    async (a) => {
      const bootargs = a.master ? `${a.bootargs} masterip=${a.master}` : a.bootargs;
      const text = bootScript({
        arch: a.arch as UArch,
        kernel: a.kernel,
        initramfs: a.initramfs,
        bootargs,
        ...(a.fdt ? { fdt: a.fdt } : {}),
      });
      mkdirSync(dirname(resolve(a.out)), { recursive: true });
      writeFileSync(
        resolve(a.out),
        scriptImage(text, { arch: a.arch as UArch, name: 'clusterboot boot script', time: epoch() }),
      );
      say(`${a.out}: ${bootargs}`);
    },
  )
  .command(
    'keys',
    'create (once) the node key and the stamp signing key; print the authorized_keys line',
    (y) =>
      manPage(
        y
          .option('dir', { type: 'string', default: '/etc/clusterboot', describe: 'where the keys live on the master' })
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('install', {
            type: 'string',
            describe: 'append the line to this authorized_keys file (e.g. /root/.ssh/authorized_keys) unless present',
          }),
        'keys',
      ),
    async (a) => {
      const k = generateKeys(resolve(a.dir));
      const line = authorizedKeysLine(readFileSync(k.nodeKeyPub, 'utf8'), resolve(a['master-root']));
      if (a.install) {
        const file = resolve(a.install);
        const have = existsSync(file) ? readFileSync(file, 'utf8') : '';
        if (have.split('\n').includes(line)) say(`${file} already has the node key line`);
        else {
          mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
          appendFileSync(file, `${have && !have.endsWith('\n') ? '\n' : ''}${line}\n`, { mode: 0o600 });
          say(`added the node key line to ${file}`);
        }
      } else say(`keys in ${a.dir}; add this line to root's ~/.ssh/authorized_keys on the master (or use --install):`);
      console.log(line);
    },
  )
  .command(
    'publish <name>',
    'freeze rootfs or bootfs into a snapshot, write its content manifest and a new stamp (atomic); also after changing partitions.sfdisk, approval.required or a reset flag',
    (y) =>
      manPage(
        y
          .positional('name', { choices: ['rootfs', 'bootfs'] as const, demandOption: true })
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('sign', {
            type: 'string',
            describe: 'Ed25519 private key (PEM) to sign the stamp with, e.g. /etc/clusterboot/stamp_ed25519.pem',
          }),
        'publish',
      ),
    async (a) => {
      const s = await publish({
        masterRoot: resolve(a['master-root']),
        name: a.name as 'rootfs' | 'bootfs',
        ...(a.sign ? { signKeyPem: readFileSync(a.sign, 'utf8') } : {}),
      });
      say(`published ${s.name} ${s.id}${a.sign ? ' (signed)' : ''}`);
    },
  )
  .command(
    'stage',
    'from a node list: the dnsmasq configuration, the TFTP folder, nodes.list, reports/ and the authorized_keys lines',
    (y) =>
      manPage(
        y
          .option('nodes', {
            type: 'string',
            demandOption: true,
            describe:
              "node list: lines 'MAC HOSTNAME IP' or the seed's 'dhcp-host=MAC,,HOSTNAME,IP[,LEASE]', each with optional arch=amd64 and master=IP (the node's own master or mirror, the primary after it); # comments",
          })
          .option('master-ip', {
            type: 'string',
            demandOption: true,
            describe: "the master's address on the cluster LAN (DNS, TFTP server = DHCP option 66)",
          })
          .option('subnet', {
            type: 'string',
            demandOption: true,
            describe: 'the cluster LAN in CIDR form, e.g. 10.77.0.0/24',
          })
          .option('range', {
            type: 'string',
            describe: 'START,END: dynamic leases for unknown MACs (default: none, only listed MACs get a lease)',
          })
          .option('tftp-from-mirrors', {
            type: 'boolean',
            default: false,
            describe:
              "nodes with master= TFTP their first stage from that mirror too (next-server, option 66); turn on once every mirror serves TFTP (`builder mirror --serve --tftp`); a provisioned node falls back to this master's TFTP",
          })
          .option('interface', {
            type: 'string',
            describe: 'serve DHCP/DNS/TFTP only on this NIC (interface= + bind-interfaces), e.g. eth0',
          })
          .option('domain', { type: 'string', default: 'cluster.lan', describe: 'DNS domain of the nodes' })
          .option('router', {
            type: 'string',
            describe: 'default gateway for the nodes (dhcp-option=3); default: dnsmasq announces the master',
          })
          .option('lease', {
            type: 'string',
            default: '1h',
            describe: 'lease time (dnsmasq syntax: 1h, 30m, infinite)',
          })
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('kernel', {
            type: 'string',
            demandOption: true,
            describe: 'node kernel, copied to <master-root>/tftp/vmlinuz',
          })
          .option('initramfs', {
            type: 'string',
            default: join(REPO, 'build/tftp/initramfs.igz.uimg'),
            describe: 'initramfs.igz.uimg from `builder pack`, copied to <master-root>/tftp/',
          })
          .option('bootargs', {
            type: 'string',
            default: DEFAULT_BOOTARGS,
            describe: 'kernel command line in boot.scr.uimg',
          })
          .option('kernel-amd64', {
            type: 'string',
            describe:
              'x86-64 nodes (arch=amd64 in the node list): their kernel (bzImage), copied to <master-root>/tftp/vmlinuz-amd64',
          })
          .option('initramfs-amd64', {
            type: 'string',
            describe:
              'x86-64 nodes: the plain initramfs.igz from `builder pack` for amd64, copied to <master-root>/tftp/initramfs-amd64.igz',
          })
          .option('bootargs-amd64', {
            type: 'string',
            describe: 'x86-64 nodes: kernel command line in clusterboot.ipxe (default: --bootargs with console=ttyS0)',
          })
          .option('ipxe-dir', {
            type: 'string',
            default: '/usr/lib/ipxe',
            describe:
              "x86-64 nodes: Debian's iPXE binaries (undionly.kpxe, snponly.efi), copied to <master-root>/tftp/",
          })
          .option('arch', {
            choices: ['arm64', 'arm'] as const,
            default: 'arm64' as const,
            describe: 'boot script: booti (arm64) or bootz (arm)',
          })
          .option('keys', {
            type: 'string',
            describe: 'key directory from `builder keys` (node and report keys for the authorized_keys lines)',
          })
          .option('dnsmasq-conf', {
            type: 'string',
            default: '/etc/dnsmasq.d/clusterboot.conf',
            describe: 'where the dnsmasq configuration goes',
          })
          .option('authorized-keys', {
            type: 'string',
            describe: 'append the two lines to this authorized_keys file unless present (default: print them)',
          })
          .option('identity', {
            type: 'boolean',
            default: false,
            describe:
              'also make per-node identity files (hostname, machine-id, SSH host keys) on the master in <master-root>/nodes/<host>/files: the old way, whose private keys the node key can read; by default each node makes its own keys at first boot and keeps them on its disk',
          })
          .option('sync-slots', {
            type: 'number',
            default: DEFAULT_SYNC_SLOTS,
            describe: "at most N nodes sync their root at once (sync-slot in the node key's line); 0: no limit",
          })
          .option('key-from', {
            type: 'string',
            describe:
              "the addresses the node and report keys work from (sshd from=, e.g. 10.77.0.0/24); default the cluster's --subnet; '' for any",
          })
          .option('report-user', {
            type: 'string',
            default: 'nobody',
            describe:
              "the report sink (the report key's only command) stores reports as this unprivileged user; reports/ is chowned to it",
          })
          .option('dhcp-leases', {
            type: 'string',
            default: '/var/lib/misc/dnsmasq.leases',
            describe:
              "dnsmasq's lease file: a node missing from the node list may report only for the MAC its address was leased to",
          })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'where the sync-slot script and its slot files live',
          })
          .option('sync-lease', {
            type: 'number',
            default: DEFAULT_SYNC_LEASE,
            describe:
              'a root sync is stopped (its slot freed) this many seconds after it got its slot; raise it for roots that take longer to pull; 0: no lease',
          })
          .option('sync-stall', {
            type: 'number',
            default: DEFAULT_SYNC_STALL,
            describe:
              "the master's rsync stops a root sync it could not send anything to for this many seconds (rsync --timeout); 0: off",
          })
          .option('sync-per-address', {
            type: 'number',
            default: DEFAULT_SYNC_PER_ADDRESS,
            describe: 'at most N root syncs at once from one client address; 0: no per-address limit',
          })
          .option('first-stage-tries', {
            type: 'number',
            default: DEFAULT_TRIES,
            describe:
              'a new first stage (kernel + initramfs) that fails this many boots in a row is abandoned: nodes boot their cached one until another is staged',
          })
          .option('approval', {
            type: 'boolean',
            describe:
              'approval mode: nodes wait for `builder approve` before a table change (creates <master-root>/approval.required); --no-approval removes it; absent: unchanged',
          })
          .option('first-stage', {
            choices: ['uboot', 'firmware'] as const,
            default: 'uboot' as const,
            describe:
              "firmware: also what the Pi 4/5 EEPROM bootloader fetches by TFTP without U-Boot (start4.elf, DTBs, overlays from bootfs/, config.txt, cmdline.txt, kernel, initramfs.cpio.gz) under each node's prefix",
          })
          .option('tftp-prefix', {
            choices: ['serial', 'mac'] as const,
            default: 'serial' as const,
            describe: "the nodes' EEPROM TFTP_PREFIX: serial (0, the default; needs --serials) or mac (2)",
          })
          .option('serials', {
            type: 'string',
            describe: "with --tftp-prefix serial: lines '<hostname or MAC> <serial>' (vcgencmd otp_dump | grep 28:)",
          }),
        'stage',
      ),
    async (a) => {
      const r = stage({
        firstStage: a['first-stage'],
        tftpPrefix: a['tftp-prefix'],
        ...(a.serials !== undefined ? { serialsFile: resolve(a.serials) } : {}),
        nodesFile: resolve(a.nodes),
        masterRoot: resolve(a['master-root']),
        kernel: resolve(a.kernel),
        initramfs: resolve(a.initramfs),
        bootargs: a.bootargs,
        arch: a.arch as UArch,
        ...(a['kernel-amd64'] !== undefined || a['initramfs-amd64'] !== undefined
          ? {
              amd64: {
                kernel: resolve(a['kernel-amd64'] ?? ''),
                initramfs: resolve(a['initramfs-amd64'] ?? ''),
                bootargs: a['bootargs-amd64'] ?? a.bootargs.replace(/\bconsole=ttyAMA0\b/g, 'console=ttyS0'),
              },
            }
          : {}),
        ipxeDir: resolve(a['ipxe-dir']),
        dnsmasqConf: resolve(a['dnsmasq-conf']),
        masterIp: a['master-ip'],
        subnet: a.subnet,
        domain: a.domain,
        lease: a.lease,
        time: epoch(),
        ...(a.range !== undefined ? { range: a.range } : {}),
        ...(a['tftp-from-mirrors'] ? { tftpFromMirrors: true } : {}),
        ...(a.interface !== undefined ? { interface: a.interface } : {}),
        ...(a.router !== undefined ? { router: a.router } : {}),
        ...(a.keys !== undefined ? { keysDir: resolve(a.keys) } : {}),
        ...(a['authorized-keys'] !== undefined ? { authorizedKeys: resolve(a['authorized-keys']) } : {}),
        identity: a.identity,
        syncSlots: a['sync-slots'],
        stateDir: resolve(a['state-dir']),
        reportUser: a['report-user'],
        ...(a['key-from'] !== undefined ? { keyFrom: a['key-from'] } : {}),
        dhcpLeases: resolve(a['dhcp-leases']),
        syncLease: a['sync-lease'],
        syncStall: a['sync-stall'],
        syncPerAddress: a['sync-per-address'],
        tries: a['first-stage-tries'],
        ...(a.approval !== undefined ? { approval: a.approval } : {}),
      });
      for (const w of r.warnings) say(`warning: ${w}`);
      for (const f of r.written) say(`wrote ${f}`);
      say(
        `first stage ${r.firstStage.id} announced (kernel ${(r.firstStage.kernelGz.size / 1e6).toFixed(1)} MB gzip'd, initramfs ${(r.firstStage.initramfs.size / 1e6).toFixed(1)} MB): nodes that cache it load it from their disk`,
      );
      if (r.firmware)
        say(
          `firmware first stage ${r.firmware.id} in tftp/firmware-${r.firmware.id}/ for ${r.firmware.prefixes.map((x) => `${x.hostname} (${x.prefix}/)`).join(', ') || 'no node'}`,
        );
      say(`boot reports land in ${r.reportsDir}`);
      say(
        `staged ${r.nodes.length} node${r.nodes.length === 1 ? '' : 's'}: ${r.nodes.map((n) => n.hostname).join(', ')}`,
      );
      if (a.identity) {
        const fresh = r.identity.filter((i) => i.created.length > 0);
        const files = fresh.reduce((s, i) => s + i.created.length, 0);
        say(
          fresh.length
            ? `${fresh.length} node${fresh.length === 1 ? '' : 's'} got new identity files (${files} files): ${fresh.map((i) => i.hostname).join(', ')}`
            : 'every node already had its identity files (nothing created)',
        );
      }
      if (r.syncSlot) {
        const q = r.syncSlot;
        const ends = [
          q.leaseSeconds ? `${q.leaseSeconds} s after it got its slot` : '',
          q.stallSeconds ? `after ${q.stallSeconds} s without progress` : '',
        ].filter(Boolean);
        say(
          `sync slots: at most ${q.slots} root sync${q.slots === 1 ? '' : 's'} at once (${q.script}, slots in ${q.slotsDir})` +
            `${q.perAddress ? `, ${q.perAddress} per client address` : ''}; each is stopped ${ends.length ? ends.join(' or ') : 'never (--sync-lease 0, --sync-stall 0)'}`,
        );
      } else say('sync slots: no limit (--sync-slots 0)');
      say(`approval mode ${r.approvalMode ? 'on: table changes wait for `builder approve`' : 'off'}`);
      if (a['authorized-keys'] !== undefined) {
        for (const l of r.keysReplaced) say(`replaced in ${a['authorized-keys']}: ${l.slice(0, 100)}…`);
        say(
          r.keysAdded.length || r.keysReplaced.length
            ? `added ${r.keysAdded.length} and replaced ${r.keysReplaced.length} line(s) in ${a['authorized-keys']}`
            : `${a['authorized-keys']} already has the node and report key lines`,
        );
      } else if (r.keyLines.length) {
        say("add these lines to root's ~/.ssh/authorized_keys on the master (or use --authorized-keys):");
        for (const l of r.keyLines) console.log(l);
      }
      say('restart dnsmasq to apply the configuration (systemctl restart dnsmasq)');
    },
  )
  .command(
    'status',
    "the fleet from the master's files: nodes.list, reports/*.json, stamps/rootfs.stamp",
    (y) =>
      manPage(
        y
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'holds nodes.list and reports/ (outside the master root: the node key does not read them)',
          })
          .option('json', {
            type: 'boolean',
            default: false,
            describe: 'print { masterStamp, rows, warnings } as JSON, for scripts',
          })
          .option('html', {
            type: 'string',
            describe: 'also write a self-contained page to this file: the fleet table and a phase timeline per node',
          }),
        'status',
      ),
    async (a) => {
      const now = Date.now();
      const s = readStatus({ masterRoot: resolve(a['master-root']), stateDir: resolve(a['state-dir']) }, now);
      if (a.html) {
        writeAtomic(resolve(a.html), renderStatusHtml(s, now), 0o644);
        say(`wrote ${resolve(a.html)} (${s.rows.length} nodes)`);
      }
      if (a.json) {
        console.log(JSON.stringify(s, null, 2));
        return;
      }
      for (const w of s.warnings) say(`warning: ${w}`);
      process.stdout.write(renderStatusTable(s.rows, now, s.masterStamp, s.mirrors));
    },
  )
  .command(
    'watch',
    'the fleet live: one row per node (phase, progress, last message) from reports/ and the syslog the nodes send to; redrawn in place on a terminal, changed rows as lines otherwise',
    (y) =>
      manPage(
        y
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'holds nodes.list and reports/ (outside the master root: the node key does not read them)',
          })
          .option('syslog', { type: 'string', describe: "the file the master's syslog writes the nodes' lines to" })
          .option('interval', { type: 'number', default: 1, describe: 'seconds between polls' })
          .option('once', { type: 'boolean', default: false, describe: 'draw once and exit' }),
        'watch',
      ),
    async (a) => {
      if (!(a.interval > 0 && a.interval <= 3600)) throw new Error('--interval: seconds, more than 0, at most 3600');
      await watch({
        masterRoot: resolve(a['master-root']),
        stateDir: resolve(a['state-dir']),
        syslog: a.syslog ? resolve(a.syslog) : undefined,
        intervalMs: Math.round(a.interval * 1000),
        once: a.once,
        tty: process.stdout.isTTY === true,
        columns: () => process.stdout.columns || 120,
        write: (t) => process.stdout.write(t),
        warn: (t) => say(`warning: ${t}`),
      });
    },
  )
  .command(
    'known-hosts',
    "write the cluster's ssh_known_hosts from the host keys the nodes made themselves (their boot reports carry the public halves); trust on first use: a key that changes is shown and kept out until --accept names the host",
    (y) =>
      manPage(
        y
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'holds nodes.list and reports/ (outside the master root: the node key does not read them)',
          })
          .option('out', {
            type: 'string',
            default: '/etc/ssh/ssh_known_hosts.d/clusterboot',
            describe: 'the known_hosts file to write (read first: the keys it holds are kept)',
          })
          .option('domain', { type: 'string', describe: 'also name each node <host>.<domain>' })
          .option('accept', {
            type: 'string',
            array: true,
            default: [],
            describe: 'take the newly reported keys of these hosts (after a newidentity boot or a new card)',
          })
          .option('ca', {
            type: 'string',
            describe:
              "sign each node's ed25519 key with this CA private key (ssh-keygen -s) into nodes/<host>/files/; clients then trust `@cert-authority *.<domain> <ca.pub>`",
          })
          .example('$0 known-hosts --domain cluster.lan', 'write /etc/ssh/ssh_known_hosts.d/clusterboot')
          .example('$0 known-hosts --accept rpinode03', 'rpinode03 was re-imaged with newidentity: take its new keys'),
        'known-hosts',
      ),
    async (a) => {
      const root = resolve(a['master-root']);
      const out = resolve(a.out);
      const s = readStatus({ masterRoot: root, stateDir: resolve(a['state-dir']) });
      for (const w of s.warnings) say(`warning: ${w}`);
      const previous = existsSync(out) ? parseKnownHosts(readFileSync(out, 'utf8')) : new Map();
      const plan = knownHostsPlan(s.rows, previous, {
        ...(a.domain ? { domain: a.domain } : {}),
        accept: new Set((a.accept ?? []).map(String)),
      });
      mkdirSync(dirname(out), { recursive: true });
      writeAtomic(out, plan.text, 0o644);
      say(
        `${out}: ${plan.hosts.length} host(s), ${plan.added.length} new${plan.added.length ? `: ${plan.added.join(' ')}` : ''}`,
      );
      for (const c of plan.changed)
        say(
          `warning: ${c.host} reports other host keys than the ones kept (${c.reported.join(' | ')}); kept the old ones. If the node was re-imaged or booted with newidentity, run: builder known-hosts --accept ${c.host}`,
        );
      if (plan.missing.length) say(`no host keys reported yet by: ${plan.missing.join(' ')} (boot them once)`);
      if (a.ca) {
        const signed = signHostCerts(root, plan.hosts, resolve(a.ca));
        say(`signed host certificates for ${signed.length} node(s); they lay them in at their next boot`);
      }
      if (plan.changed.length) process.exitCode = 1;
    },
  )
  .command(
    'enrol [nodes..]',
    "give these nodes their private files: each node's own enrolment key (made on the node, its public half in its boot report) may then read <state-dir>/private/<host>/, from the node's address only; trust on first use: a key that changes is shown and kept out until --replace",
    (y) =>
      manPage(
        y
          .positional('nodes', { type: 'string', array: true, describe: 'host names from nodes.list' })
          .option('all', {
            type: 'boolean',
            default: false,
            describe: 'every listed node that reports a key and has none enrolled',
          })
          .option('replace', {
            type: 'boolean',
            default: false,
            describe: 'take the newly reported key of these nodes (a new card, or a newidentity boot)',
          })
          .option('list', {
            type: 'boolean',
            default: false,
            describe: "show each listed node's reported key fingerprint and whether it is enrolled; enrol nothing",
          })
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'holds private/<host>/files/ (the private per-node files), nodes.list and reports/',
          })
          .option('authorized-keys', { type: 'string', default: DEFAULT_AUTHORIZED_KEYS })
          .example(
            '$0 enrol --list',
            "compare each fingerprint with the node's console line `enrolment key SHA256:...`",
          )
          .example(
            '$0 enrol rpinode01 rpinode02',
            'enrol two nodes; put their secrets in /var/lib/clusterboot/private/<host>/files/',
          )
          .example('$0 enrol --replace rpinode03', 'rpinode03 got a new card: take its new key'),
        'enrol',
      ),
    async (a) => {
      const root = resolve(a['master-root']);
      const stateDir = resolve(a['state-dir']);
      const file = resolve(a['authorized-keys']);
      const names = (a.nodes ?? []).map(String);
      const s = readStatus({ masterRoot: root, stateDir });
      for (const w of s.warnings) say(`warning: ${w}`);
      const before = readAuthorized(file);
      const states = enrolStates(s.rows, before, stateDir);
      if (a.list) {
        if (names.length || a.all) throw new Error('--list enrols nothing: leave out the node names and --all');
        process.stdout.write(enrolList(states));
        return;
      }
      if (!names.length && !a.all) throw new Error('name the nodes to enrol, or --all (see --list)');
      const plan = enrolPlan(states, before, { hosts: names, all: a.all, replace: a.replace, stateDir });
      const reportUser = reportUserIn(before);
      applyEnrol(plan, states, {
        masterRoot: root,
        stateDir,
        authorizedKeys: file,
        ...(reportUser ? { reportUser } : {}),
      });
      for (const h of [...plan.enrolled, ...plan.replaced]) {
        const st = states.find((x) => x.host === h);
        say(
          `${plan.replaced.includes(h) ? 're-enrolled' : 'enrolled'} ${h} (${st?.ip}) with ${st?.reported ? keyFingerprint(st.reported) : '?'}: its private files go in ${join(stateDir, 'private', h, 'files')}/, laid at its next boot`,
        );
      }
      if (plan.already.length) say(`already enrolled: ${plan.already.join(', ')}`);
      for (const p of plan.problems) say(`warning: ${p}`);
      if (plan.problems.length) process.exitCode = 1;
    },
  )
  .command(
    'mirror',
    "keep this machine a mirror of a primary master: pull its published tree (snapshots, stamps, manifests, the table, the flags, the first stage) in three passes, so nodes here never see half a publish; --check compares only; --allow (on the primary) lets a mirror's key read",
    (y) =>
      manPage(
        y
          .option('primary', {
            type: 'string',
            describe:
              "the primary's address (pulled over SSH with --key through its rrsync) or, with a /, its master root here",
          })
          .option('master-root', {
            type: 'string',
            default: '/data/slaves',
            describe: "this mirror's tree (the nodes' master root here); on the primary with --allow: the primary's",
          })
          .option('key', {
            type: 'string',
            default: '/etc/clusterboot/mirror_ed25519',
            describe: 'the mirror key (private half here; its .pub goes to the primary with --allow)',
          })
          .option('known-hosts', {
            type: 'string',
            default: '/etc/clusterboot/primary_known_hosts',
            describe: "the primary's host key, pinned (ssh-keyscan it once and check it)",
          })
          .option('check', {
            type: 'boolean',
            default: false,
            describe: "compare this mirror's stamps with the primary's; pull nothing; exit 1 when behind",
          })
          .option('allow', {
            type: 'string',
            describe: "on the primary: the mirror's IP; adds the mirror key (--key's .pub) to --authorized-keys",
          })
          .option('authorized-keys', { type: 'string', default: DEFAULT_AUTHORIZED_KEYS })
          .option('timer', {
            type: 'string',
            describe: 'write clusterboot-mirror.service and .timer (a pull every minute) into this systemd directory',
          })
          .option('serve', {
            type: 'boolean',
            default: false,
            describe:
              "let nodes read this mirror as they read the primary: the node and report key lines (--keys: the primary's .pub files), its report sink (--nodes) and sync slots, from --subnet",
          })
          .option('keys', {
            type: 'string',
            default: DEFAULT_KEYS_DIR,
            describe: "with --serve: the primary's public keys",
          })
          .option('nodes', {
            type: 'string',
            describe: "with --serve: the primary's node list (the report sink's peers)",
          })
          .option('subnet', {
            type: 'string',
            describe: "with --serve: the cluster's subnet (the keys work from it only)",
          })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe:
              "the mirror's state: its report sink (with --serve), and after each pull reports/mirror.state (what it serves), which the primary's `builder gather` takes",
          })
          .option('sync-slots', { type: 'number', default: DEFAULT_SYNC_SLOTS })
          .option('bind', {
            type: 'string',
            describe: 'connect to the primary from this local address (a multi-homed mirror: the one --allow names)',
          })
          .option('tftp', {
            type: 'string',
            describe:
              "with --serve: serve the mirror's tftp/ folder on this address (a TFTP-only dnsmasq: --dnsmasq-conf), for `builder stage --tftp-from-mirrors` on the primary",
          })
          .option('dnsmasq-conf', {
            type: 'string',
            default: '/etc/dnsmasq.d/clusterboot-mirror.conf',
            describe: 'with --tftp: where the TFTP-only dnsmasq configuration goes',
          })
          .option('gather-key', {
            type: 'string',
            describe:
              "with --serve: the primary's gather key (.pub): it may pull this mirror's reports, from --primary's address only",
          }),
        'mirror',
      ),
    async (a) => {
      const root = resolve(a['master-root']);
      if (a.serve) {
        if (!a.nodes || !a.subnet) throw new Error('--serve needs --nodes (the node list) and --subnet');
        const r = serveMirror({
          keysDir: resolve(a.keys),
          masterRoot: root,
          stateDir: resolve(a['state-dir']),
          authorizedKeys: resolve(a['authorized-keys']),
          nodesFile: resolve(a.nodes),
          subnet: a.subnet,
          slots: a['sync-slots'],
          ...(a['gather-key'] !== undefined
            ? {
                gather: {
                  pub: readFileSync(resolve(a['gather-key']), 'utf8'),
                  primaryIp: a.primary ?? '',
                },
              }
            : {}),
        });
        for (const w of r.warnings) say(`warning: ${w}`);
        say(`this mirror serves ${root} to the nodes: ${r.written.join(', ')}`);
        if (a.tftp !== undefined) {
          const conf = resolve(a['dnsmasq-conf']);
          mkdirSync(dirname(conf), { recursive: true });
          writeAtomic(conf, mirrorTftpConf(root, a.tftp), 0o644);
          say(
            `wrote ${conf}: TFTP of ${join(root, TFTP_DIR)} on ${a.tftp} (restart dnsmasq); on the primary, \`builder stage --tftp-from-mirrors\` sends this mirror's nodes here`,
          );
        }
        return;
      }
      if (a.allow !== undefined) {
        const pub = readFileSync(`${resolve(a.key)}${a.key.endsWith('.pub') ? '' : '.pub'}`, 'utf8');
        const line = mirrorKeysLine(pub, root, a.allow);
        const file = resolve(a['authorized-keys']);
        const w = writeAuthorizedKeys(file, [line], root);
        for (const x of w.warnings) say(`warning: ${x}`);
        say(
          w.added.length
            ? `${file}: the mirror ${a.allow} may read ${root} (read-only, from its address only)`
            : `${file} already lets the mirror ${a.allow} read ${root}`,
        );
        return;
      }
      if (!a.primary) throw new Error('--primary: the primary master (its address, or its master root here)');
      const { local, source, rsh } = rsyncPeer(a.primary, { key: a.key, knownHosts: a['known-hosts'], bind: a.bind });
      const o = { source, dest: root, ...(rsh ? { rsh } : {}) };
      if (a.timer !== undefined) {
        const args = [
          '/usr/local/bin/builder mirror',
          `--primary ${a.primary}`,
          `--master-root ${root}`,
          `--state-dir ${resolve(a['state-dir'])}`,
          ...(local ? [] : [`--key ${resolve(a.key)}`, `--known-hosts ${resolve(a['known-hosts'])}`]),
          ...(a.bind ? [`--bind ${a.bind}`] : []),
        ];
        writeTimer(a.timer, 'mirror', args.join(' '));
        return;
      }
      if (a.check) {
        const v = mirrorVerdict(checkMirror(o));
        console.log(`mirror ${root}: ${v.text}`);
        if (!v.current) process.exitCode = 1;
        return;
      }
      const stateDir = resolve(a['state-dir']);
      let r: ReturnType<typeof runMirror>;
      try {
        r = runMirror(o);
      } catch (e) {
        writeMirrorState(stateDir, { mirrorRoot: root, error: (e as Error).message });
        throw e;
      }
      writeMirrorState(stateDir, { mirrorRoot: root });
      const v = mirrorVerdict(r.states);
      say(
        `mirror ${root} from ${a.primary}: ${r.passes.map((p) => `${p.name} ${p.seconds.toFixed(1)} s`).join(', ')}; ${v.text}`,
      );
      if (!v.current) process.exitCode = 1;
    },
  )
  .command(
    'gather',
    "on the primary: pull each mirror's boot reports (read-only, with the gather key) into <state-dir>/mirrors/<mirror>/reports, where `builder status` shows them beside this master's own",
    (y) =>
      manPage(
        y
          .option('mirror', { type: 'string', array: true, default: [], describe: 'a mirror address (again for each)' })
          .option('key', { type: 'string', default: '/etc/clusterboot/gather_ed25519' })
          .option('known-hosts', {
            type: 'string',
            default: '/etc/clusterboot/mirrors_known_hosts',
            describe: "the mirrors' host keys, pinned",
          })
          .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR })
          .option('bind', {
            type: 'string',
            describe: 'connect from this local address (the one the mirrors let the gather key in from)',
          })
          .option('timer', {
            type: 'string',
            describe: 'write clusterboot-gather.service and .timer (a gather every minute) into this systemd directory',
          }),
        'gather',
      ),
    async (a) => {
      const mirrors = (a.mirror ?? []).map(String);
      if (!mirrors.length) throw new Error('--mirror: the mirrors to gather reports from');
      if (a.timer !== undefined) {
        writeTimer(
          a.timer,
          'gather',
          [
            '/usr/local/bin/builder gather',
            ...mirrors.map((m) => `--mirror ${m.includes('/') ? resolve(m) : m}`),
            `--state-dir ${resolve(a['state-dir'])}`,
            `--key ${resolve(a.key)}`,
            `--known-hosts ${resolve(a['known-hosts'])}`,
            ...(a.bind ? [`--bind ${a.bind}`] : []),
          ].join(' '),
        );
        return;
      }
      let failed = 0;
      for (const m of mirrors) {
        const { local, source, rsh } = rsyncPeer(m, { key: a.key, knownHosts: a['known-hosts'], bind: a.bind });
        const r = gatherReports({
          mirror: local ? basename(m) : m,
          source,
          stateDir: resolve(a['state-dir']),
          ...(rsh ? { rsh } : {}),
        });
        if (r.status === 0) say(`${m}: reports gathered into ${r.dir}`);
        else {
          failed++;
          say(`warning: ${m}: could not gather its reports (rsync exit ${r.status}): ${r.message}`);
        }
      }
      if (failed) process.exitCode = 1;
    },
  )
  .command(
    'approve [nodes..]',
    "approval mode: approve the master's current partitions.sfdisk for these nodes (they repartition at their next boot)",
    (y) =>
      manPage(
        y
          .positional('nodes', { type: 'string', array: true, describe: 'host names from nodes.list' })
          .option('all', { type: 'boolean', default: false, describe: 'every node in nodes.list' })
          .option('force', {
            type: 'boolean',
            default: false,
            describe: 'also approve names that are not in nodes.list',
          })
          .option('list', {
            type: 'boolean',
            default: false,
            describe:
              'show the nodes waiting for approval and which are approved for the current table; approve nothing',
          })
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('state-dir', {
            type: 'string',
            default: DEFAULT_STATE_DIR,
            describe: 'holds nodes.list and reports/ (outside the master root: the node key does not read them)',
          }),
        'approve',
      ),
    async (a) => {
      const root = resolve(a['master-root']);
      const names = (a.nodes ?? []).map(String);
      if (a.list) {
        if (names.length || a.all) throw new Error('--list approves nothing: leave out the node names and --all');
        const s = readStatus({ masterRoot: root, stateDir: resolve(a['state-dir']) });
        for (const w of s.warnings) say(`warning: ${w}`);
        process.stdout.write(approvalList(s).text);
        return;
      }
      const r = approve({ masterRoot: root, stateDir: resolve(a['state-dir']), names, all: a.all, force: a.force });
      for (const w of r.warnings) say(`warning: ${w}`);
      if (r.approved.length) say(`approved ${r.approved.join(', ')}`);
      if (r.already.length) say(`already approved: ${r.already.join(', ')}`);
      say(
        `for ${r.table} sha256 ${r.hash}: each node repartitions at its next boot (a later table change needs a new approval)`,
      );
    },
  )
  .command('init', INIT_DESCRIBE, (y: Argv) => manPage(initOptions(y), 'init'), initHandler)
  .command(
    'doctor',
    'check a running master end to end (dnsmasq and TFTP, sshd and the node key, stamps, initramfs size, rsync, key modes, free space; on a mirror, with --mirror-of, that it serves what the primary published); exits 1 if a check fails',
    (y) =>
      manPage(
        y
          .option('master-root', { type: 'string', default: '/data/slaves' })
          .option('master-ip', {
            type: 'string',
            describe: "the master's address on the cluster LAN (default: dhcp-option=66 of --dnsmasq-conf)",
          })
          .option('keys', { type: 'string', default: DEFAULT_KEYS_DIR, describe: 'key directory from `builder keys`' })
          .option('authorized-keys', { type: 'string', default: DEFAULT_AUTHORIZED_KEYS })
          .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR })
          .option('dnsmasq-conf', { type: 'string', default: DEFAULT_DNSMASQ_CONF })
          .option('master-host-key', {
            type: 'string',
            default: DEFAULT_MASTER_HOST_KEY,
            describe: 'the host key the initramfs pins (as given to `builder pack`)',
          })
          .option('master-port', { type: 'number', default: 22, describe: "sshd's port" })
          .option('mirror-of', {
            type: 'string',
            describe:
              'on a mirror: its primary (address, or master root here); adds the check that this mirror serves what the primary published',
          })
          .option('mirror-key', { type: 'string', default: '/etc/clusterboot/mirror_ed25519' })
          .option('primary-known-hosts', { type: 'string', default: '/etc/clusterboot/primary_known_hosts' })
          .option('bind', { type: 'string', describe: 'with --mirror-of: connect to the primary from this address' })
          .option('json', { type: 'boolean', default: false, describe: 'print { checks, ok, warn, fail } as JSON' }),
        'doctor',
      ),
    async (a) => {
      const primary = a['mirror-of'];
      const peer =
        primary === undefined
          ? null
          : rsyncPeer(primary, { key: a['mirror-key'], knownHosts: a['primary-known-hosts'], bind: a.bind });
      const mirrorOf =
        peer && primary ? { primary, source: peer.source, ...(peer.rsh ? { rsh: peer.rsh } : {}) } : null;
      const r = await runDoctor({
        masterRoot: resolve(a['master-root']),
        ...(a['master-ip'] !== undefined ? { masterIp: a['master-ip'] } : {}),
        keysDir: resolve(a.keys),
        authorizedKeys: resolve(a['authorized-keys']),
        stateDir: resolve(a['state-dir']),
        dnsmasqConf: resolve(a['dnsmasq-conf']),
        masterHostKey: resolve(a['master-host-key']),
        masterPort: a['master-port'],
        ...(mirrorOf ? { mirrorOf } : {}),
      });
      process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : renderDoctor(r));
      if (r.fail) process.exitCode = 1;
    },
  )
  .fail((msg, err) => {
    say(`error: ${err?.message ?? msg}`);
    process.exit(1);
  })
  .parseAsync();

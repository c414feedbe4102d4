// `builder --help` and each command's help read like a man page: what it does, examples that work as written, the
// files it reads and writes, and its exit status. One page per command here; cli.ts adds them with manPage().
// test/unit/builder/help.test.ts runs every page and checks each example's options against the command's own.
import type { Argv } from 'yargs';

export interface ManPage {
  /** Examples: [command line, what it does]; `$0` is the program's name. */
  examples: ReadonlyArray<readonly [string, string]>;
  /** FILES: the paths it reads or writes, and what each is. */
  files?: readonly string[];
  /** EXIT STATUS, when it is not the usual 0 / 1 with a message. */
  exit?: string;
  /** NOTES: what a person should know before running it. */
  notes?: string;
}

const ROOT = '/data/slaves';

export const MAN: Readonly<Record<string, ManPage>> = {
  sysroot: {
    examples: [
      [
        '$0 sysroot --cache /var/cache/clusterboot',
        "the nodes' arm64 tools (busybox, rsync, ssh, sfdisk, mkfs) from Debian",
      ],
      ['$0 sysroot --cache .cache/sysroot --kernel', "the same with Debian's arm64 kernel, for QEMU tests"],
      ['$0 sysroot --cache .cache/sysroot-amd64 --arch amd64 --kernel', 'a sysroot for x86-64 nodes'],
    ],
    files: ['<cache>/root/   the unpacked root (pass it to `builder pack --sysroot`)', '<cache>/debs/   the packages'],
    notes: "The host's apt setup is not changed: apt runs with its own state, sources and keyring under <cache>.",
  },
  agent: {
    examples: [
      ['$0 agent', 'compile the arm64 agent into build/clusterboot-agent-arm64'],
      ['$0 agent --arch x64 --out /tmp/agent', 'an x86-64 agent'],
    ],
    notes: 'Offline once scripts/setup has fetched the Bun runtime for the target (node_modules/@oven/bun-linux-*).',
  },
  pack: {
    examples: [
      [
        `$0 pack --sysroot ${ROOT}/rootfs --keys /etc/clusterboot --sign`,
        "the initramfs from the slaves' own template, with the node and report keys and the stamp key's public half",
      ],
      ['$0 pack --sysroot .cache/sysroot/root --compress zstd --out build/tftp', 'from a dev sysroot, zstd'],
      ['$0 pack --sysroot .cache/sysroot-amd64/root --arch amd64 --keys /etc/clusterboot', 'for x86-64 nodes'],
    ],
    files: [
      '<out>/initramfs.igz        the cpio.gz (the Pi firmware path and iPXE load it as is)',
      '<out>/initramfs.igz.uimg   the same as a U-Boot ramdisk image',
    ],
    notes:
      'Everything packed is public: anyone on the LAN can TFTP it. The node key reads the master root, the report key ' +
      'runs only the report sink, and no private key of the master is ever packed.',
  },
  bootscript: {
    examples: [
      [
        '$0 bootscript --master 192.168.2.254',
        'a plain network boot script (no first-stage cache; `builder stage` writes the real one)',
      ],
    ],
  },
  keys: {
    examples: [
      ['$0 keys --dir /etc/clusterboot', 'make the node, report and stamp keys once (kept if they exist)'],
      ['$0 keys --dir /etc/clusterboot --install /root/.ssh/authorized_keys', 'and add the node key line for sshd'],
    ],
    files: [
      '<dir>/node_ed25519, report_ed25519   the keys packed into the initramfs (public to the LAN: read-only fetch, report sink)',
      '<dir>/stamp_ed25519.pem   the stamp signing key (0600; only its public half is packed)',
    ],
  },
  publish: {
    examples: [
      [
        '$0 publish rootfs --sign /etc/clusterboot/stamp_ed25519.pem',
        'after changing the root template: nodes re-sync at their next boot',
      ],
      ['$0 publish bootfs', 'after changing the firmware files nodes copy to their p1'],
    ],
    files: [
      `${ROOT}/snapshots/<name>/<id>/   the frozen tree nodes sync (the last 3 kept)`,
      `${ROOT}/snapshots/<name>/<id>.files   its file list (sha256 per file)`,
      `${ROOT}/stamps/<name>.stamp, <name>.manifest (+ .sig)   what nodes compare and verify`,
    ],
    notes:
      'Publish again after editing partitions.sfdisk, approval.required or nodes/<host>/reset: the signed manifest carries them.',
  },
  stage: {
    examples: [
      [
        `$0 stage --nodes nodes.txt --master-ip 192.168.2.254 --subnet 192.168.2.0/24 --interface eth0 --kernel /boot/vmlinuz --initramfs build/tftp/initramfs.igz.uimg --keys /etc/clusterboot --authorized-keys /root/.ssh/authorized_keys --state-dir /var/lib/clusterboot`,
        'serve a node list: dnsmasq lines, the TFTP folder with the announced first stage, the key lines',
      ],
      [
        `$0 stage --nodes nodes.txt --master-ip 192.168.2.254 --kernel /boot/vmlinuz --initramfs build/tftp/initramfs.igz.uimg --first-stage firmware --tftp-prefix mac`,
        'also the Pi 4/5 EEPROM set (no U-Boot), by MAC prefix',
      ],
    ],
    files: [
      `${ROOT}/tftp/   boot.scr.uimg, vmlinuz(.gz), initramfs.igz.uimg, firststage.env (what nodes boot and cache)`,
      '/var/lib/clusterboot/nodes.list, reports/   the node list as staged; where boot reports land (--state-dir)',
      '/etc/dnsmasq.d/clusterboot.conf   DHCP and TFTP for the cluster (--dnsmasq-conf)',
    ],
    notes:
      'Nothing is written when a check fails (a bad node line, a missing file, an image over the firmware ceiling).',
  },
  status: {
    examples: [
      ['$0 status', "one row per node: its last report's phase, root, first stage and errors"],
      ['$0 status --json | jq .rows', 'for scripts'],
      ['$0 status --html /var/www/html/fleet.html', 'also a page with a phase timeline per node'],
    ],
    notes:
      'Reports are hostile input: odd files are skipped and named, forged future times rank last, names are escaped.',
  },
  watch: {
    examples: [
      ['$0 watch', 'the fleet, redrawn in place until Ctrl-C'],
      ['$0 watch --syslog /var/log/clusterboot.log', "with the nodes' live lines (their syslog= target)"],
      ['$0 watch --once', 'draw once and exit'],
    ],
  },
  'known-hosts': {
    examples: [],
    exit: '0 when written; 1 when a node reported other keys than the kept ones (they stay out until --accept).',
  },
  enrol: {
    examples: [],
    files: [
      '/var/lib/clusterboot/private/<host>/files/   the private per-node files (outside the master root; root only)',
      `${ROOT}/nodes/<host>/enrolled   public marker: the node asks for its private files with its key`,
      '/root/.ssh/authorized_keys   one `restrict,from="<ip>",command="rrsync -ro .../private/<host>"` line per node',
    ],
    exit: '0 when every named node is enrolled; 1 when one is not (no key reported, a changed key without --replace).',
    notes:
      "A report is a claim: compare the fingerprint with the node's console (`enrolment key SHA256:...`) before enrolling.",
  },
  mirror: {
    examples: [
      ['$0 mirror --primary 192.168.2.254', "pull the primary's published tree into /data/slaves here, now"],
      ['$0 mirror --primary 192.168.2.254 --check', 'current or behind? (exit 1 when behind)'],
      ['$0 mirror --primary 192.168.2.254 --timer /etc/systemd/system', 'keep it in step: a pull every minute'],
      ['$0 mirror --allow 192.168.2.253 --key /root/mirror_ed25519.pub', "on the primary: let that mirror's key read"],
      [
        '$0 mirror --serve --keys /etc/clusterboot --nodes nodes.txt --subnet 192.168.2.0/24 --tftp 192.168.2.253',
        'serve nodes: key lines, report sink, sync slots, TFTP (for `builder stage --tftp-from-mirrors`)',
      ],
    ],
    files: [
      '/data/slaves/   the mirrored tree: what nodes that use this master read (never published here)',
      '/etc/clusterboot/mirror_ed25519, primary_known_hosts   the mirror key and the pinned primary host key',
      '/var/lib/clusterboot/reports/mirror.state   what the last pull left (the stamps served), for `builder gather`',
      "/etc/dnsmasq.d/clusterboot-mirror.conf   with --tftp: TFTP only, on the mirror's address",
    ],
    exit: '0 when the mirror is current after the pull; 1 when it is behind, or a pass failed (it still serves one whole publish).',
    notes:
      'Three passes: the snapshots, then the stamps, table and flags together (--delay-updates), then what the primary dropped.',
  },
  gather: {
    examples: [
      ['$0 gather --mirror 192.168.2.253 --mirror 192.168.3.253', "the mirrors' reports, for `builder status`"],
      ['$0 gather --mirror 192.168.2.253 --timer /etc/systemd/system', 'keep gathering: every minute'],
    ],
    files: ['/var/lib/clusterboot/mirrors/<mirror>/reports/   what each mirror last reported (pulled)'],
    exit: '0 when every mirror answered; 1 when one did not (its last gathered reports stay).',
  },
  approve: {
    examples: [
      ['$0 approve --list', 'who waits for approval, and for which table'],
      ['$0 approve node1 node2', 'these two repartition at their next boot'],
      ['$0 approve --all', 'every node in nodes.list'],
    ],
  },
  init: {
    examples: [],
    files: [`${ROOT}/   the seed layout`, '/etc/clusterboot/   keys', '/etc/dnsmasq.d/clusterboot.conf'],
    notes: 'Safe to run twice: it does only what is missing; --force remakes all but the keys.',
  },
  doctor: {
    examples: [
      ['$0 doctor', 'check this master with the default paths'],
      ['$0 doctor --master-ip 192.168.2.254 --json', 'for monitoring'],
      [
        '$0 doctor --mirror-of 192.168.2.254 --master-ip 192.168.2.253 --dnsmasq-conf /etc/dnsmasq.d/clusterboot-mirror.conf',
        'on a mirror: its checks, and whether it serves what the primary published',
      ],
    ],
    exit: '0 when no check fails (warnings allowed), 1 when one does.',
  },
};

const OVERVIEW = [
  'A master in one command:  builder init --nodes nodes.txt --interface eth0 --card-size 16GB',
  'Then after each change:   builder publish rootfs   (nodes re-sync at their next boot)',
  'Watch it:                 builder status / builder watch / builder doctor',
  '',
  `FILES  ${ROOT}/ (rootfs/, bootfs/, partitions.sfdisk, stamps/, snapshots/, nodes/, tftp/: public), /var/lib/clusterboot/ (nodes.list, reports/, private/), /etc/clusterboot/`,
  'EXIT STATUS  0 on success; 1 with "error: ..." and the remedy.',
  "SEE ALSO  README.md (the kernel parameters, LED codes, what a node does with bad input), 'builder <command> --help'",
].join('\n');

/** The epilogue of a command's help: FILES, EXIT STATUS, NOTES. */
export function epilogue(p: ManPage): string {
  const parts: string[] = [];
  if (p.files?.length) parts.push(`FILES\n${p.files.map((f) => `  ${f}`).join('\n')}`);
  parts.push(`EXIT STATUS\n  ${p.exit ?? '0 on success; 1 with "error: ..." on the console.'}`);
  if (p.notes) parts.push(`NOTES\n  ${p.notes}`);
  return parts.join('\n\n');
}

/** Add a command's examples and epilogue to its yargs builder. */
export function manPage<T>(y: Argv<T>, name: string): Argv<T> {
  const p = MAN[name];
  if (!p) throw new Error(`no help page for ${name}`);
  let out = y;
  for (const [cmd, what] of p.examples) out = out.example(cmd, what);
  return out.epilogue(epilogue(p));
}

/** The top-level help: the overview. */
export function overview<T>(y: Argv<T>): Argv<T> {
  return y.epilogue(OVERVIEW);
}

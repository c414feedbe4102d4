// A virtual cluster on one machine, with the production chain and no QEMU user-network shortcuts:
// a network namespace with a bridge (the master's LAN), the master's dnsmasq as `builder stage` wrote
// it (DHCP with fixed leases, DNS, TFTP), its sshd, a syslog sink, and N QEMU arm64 nodes on tap
// devices, each with its own MAC and disk.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Subprocess } from 'bun';
import { REPO } from '../../builder/image/agentbuild.ts';
import { accessFiles } from '../../builder/image/pack.ts';
import { images, type Images } from './images.ts';
import { Dnsmasq } from './dnsmasq.ts';
import { TestMaster, testKeys } from './master.ts';
import { NO_ROM, QemuNode, blankDisk, type AgentEvent } from './qemu.ts';
import { resultOf, type BootResult } from './boot.ts';

export const MASTER_IP = '10.77.0.1';
export const SUBNET = '10.77.0.0/24';
export const DYNAMIC = '10.77.0.200,10.77.0.250';
export const BRIDGE = 'cbbr0';
const BUN = join(REPO, 'node_modules/.bin/bun');

export interface NodeSpec {
  hostname: string;
  mac: string;
  ip: string;
  /** An x86-64 node (arch=amd64 in the node list): it PXE-boots the `amd64` first stage. */
  arch?: 'amd64';
  /** master= in the node list: the master (a mirror) this node syncs from first, the primary after. */
  master?: string;
}

/** n nodes named node1..n with QEMU-range MACs and fixed IPs .11, .12, … */
export function nodeSpecs(n: number): NodeSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    hostname: `node${i + 1}`,
    mac: `52:54:00:c1:00:${(i + 1).toString(16).padStart(2, '0')}`,
    ip: `10.77.0.${11 + i}`,
  }));
}

/** What a node is doing now, from its last events (for the live table). */
export interface NodeView {
  hostname: string;
  boots: number;
  phase: string;
  step: string;
  detail: string;
  state: 'booting' | 'up' | 'rebooting' | 'failed' | 'off';
}

function sh(args: string[], input?: string): string {
  const r = spawnSync(args[0] ?? '', args.slice(1), { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Namespaces of earlier runs whose owner is gone: their QEMUs and daemons are killed, the namespace deleted. */
export function cleanStaleNamespaces(): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const name of list
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith('cbvc-'))) {
    const pid = Number(name.slice(5));
    if (pid && existsSync(`/proc/${pid}`)) continue;
    const pids = (spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout ?? '')
      .split('\n')
      .filter(Boolean);
    for (const p of pids) spawnSync('kill', ['-9', p]);
    spawnSync('ip', ['netns', 'del', name]);
  }
}

export class VirtualCluster {
  readonly ns = `cbvc-${process.pid}`;
  readonly wrap: string[];
  readonly master: TestMaster;
  readonly nodes: NodeSpec[];
  img: Images | null = null;
  private dnsmasq: Dnsmasq | null = null;
  private syslog: Subprocess | null = null;
  dnsmasqLog = '';
  readonly running = new Map<string, QemuNode>();
  readonly views = new Map<string, NodeView>();
  bootargs: string;
  /** The amd64 first stage `builder stage` gets (--kernel-amd64 ...) for the nodes with arch amd64. */
  amd64: { kernel: string; initramfs: string; bootargs: string } | null = null;

  constructor(
    readonly dir: string,
    nodes: NodeSpec[],
    busybox: string,
    o: { bootargs?: string } = {},
  ) {
    this.wrap = ['ip', 'netns', 'exec', this.ns];
    this.master = new TestMaster(dir, busybox);
    this.nodes = nodes;
    this.bootargs =
      o.bootargs ??
      `console=ttyAMA0 panic=1 disk=/dev/vda retries=3 retrywait=1 leds=gpiochip0:4,5,6 syslog=${MASTER_IP}`;
    for (const n of nodes)
      this.views.set(n.hostname, { hostname: n.hostname, boots: 0, phase: '-', step: '', detail: 'off', state: 'off' });
  }

  get masterRoot(): string {
    return this.master.root;
  }

  /** The network: namespace, bridge with the master's address, one tap per node slot (init.test.ts calls it alone). */
  network(taps: number): void {
    cleanStaleNamespaces();
    spawnSync('ip', ['netns', 'del', this.ns]);
    sh(['ip', 'netns', 'add', this.ns]);
    const ipn = (...a: string[]) => sh(['ip', '-n', this.ns, ...a]);
    ipn('link', 'set', 'lo', 'up');
    ipn('link', 'add', BRIDGE, 'type', 'bridge');
    ipn('addr', 'add', `${MASTER_IP}/24`, 'dev', BRIDGE);
    ipn('link', 'set', BRIDGE, 'up');
    for (let i = 0; i < taps; i++) {
      ipn('tuntap', 'add', 'dev', `cbtap${i}`, 'mode', 'tap');
      ipn('link', 'set', `cbtap${i}`, 'master', BRIDGE);
      ipn('link', 'set', `cbtap${i}`, 'up');
    }
  }

  /** Build images, lay out the master, stage it with `builder stage`, start dnsmasq, sshd and syslog. */
  async start(o: { taps?: number; dataMb?: number; syncSlots?: number } = {}): Promise<void> {
    const k = testKeys();
    this.img = await images({
      extra: accessFiles({
        keysDir: k.dir,
        masterHostKeyPub: readFileSync(`${k.hostKey}.pub`, 'utf8'),
        sign: false,
        report: true,
      }),
    });
    mkdirSync(this.dir, { recursive: true });
    // a master laid out by an earlier run is kept as it is: same stamps, so its nodes take the fast path
    if (!existsSync(join(this.masterRoot, 'stamps/rootfs.stamp')))
      await this.master.layout(o.dataMb === undefined ? {} : { dataMb: o.dataMb });
    rmSync(this.authorizedKeys, { force: true });
    this.stage(o.syncSlots === undefined ? {} : { syncSlots: o.syncSlots });
    this.network(o.taps ?? this.nodes.length);
    await this.startMaster();
    this.syslog = Bun.spawn(
      [...this.wrap, BUN, join(REPO, 'test/rig/syslog-sink.ts'), MASTER_IP, '514', this.syslogFile],
      { stdout: 'ignore', stderr: 'inherit' },
    );
  }

  /** The master's dnsmasq (DHCP, DNS, TFTP) and sshd, as `builder stage` configured them; `dnsmasq: false`: sshd only
   *  (`builder init` starts its own dnsmasq). */
  async startMaster(o: { dnsmasq?: boolean } = {}): Promise<void> {
    const k = testKeys();
    if (o.dnsmasq === false) {
      await this.master.start(k.hostKey, {
        listen: MASTER_IP,
        port: 22,
        wrap: this.wrap,
        authorizedKeys: this.authorizedKeys,
      });
      return;
    }
    this.dnsmasq = await Dnsmasq.start({
      wrap: this.wrap,
      conf: this.conf,
      pidFile: join(this.dir, 'dnsmasq.pid'),
      extra: [`--dhcp-leasefile=${this.leaseFile}`],
      onLog: (t) => {
        this.dnsmasqLog += t;
      },
    });
    await this.master.start(k.hostKey, {
      listen: MASTER_IP,
      port: 22,
      wrap: this.wrap,
      authorizedKeys: this.authorizedKeys,
    });
  }

  /** The master down: dnsmasq and sshd stopped (no DHCP, no TFTP, no SSH on the LAN). */
  async stopMaster(): Promise<void> {
    await this.dnsmasq?.stop();
    this.dnsmasq = null;
    await this.master.stop();
  }

  /** Only dnsmasq stopped (no DHCP, no TFTP), sshd left running; `stopMaster()` then `startMaster()` brings it back. */
  async stopDnsmasq(): Promise<void> {
    await this.dnsmasq?.stop();
    this.dnsmasq = null;
  }

  /** Options of the last `builder stage` run (restage changes some and runs it again, as an admin would). */
  stageOptions: {
    approval?: boolean;
    syncSlots?: number;
    initramfs?: string;
    tries?: number;
    tftpFromMirrors?: boolean;
  } = {};

  get conf(): string {
    return join(this.dir, 'dnsmasq.conf');
  }

  get stateDir(): string {
    return join(this.dir, 'state');
  }

  /** Run `builder stage` for this cluster: dnsmasq config, TFTP folder, node list, keys, identities, slots. */
  stage(
    o: {
      bootargs?: string;
      approval?: boolean;
      syncSlots?: number;
      initramfs?: string;
      tries?: number;
      tftpFromMirrors?: boolean;
    } = {},
  ): string {
    if (!this.img) throw new Error('images first');
    const k = testKeys();
    if (o.bootargs) this.bootargs = o.bootargs;
    Object.assign(this.stageOptions, Object.fromEntries(Object.entries(o).filter(([key]) => key !== 'bootargs')));
    const nodesFile = join(this.dir, 'nodes.txt');
    writeFileSync(
      nodesFile,
      `# the virtual cluster's nodes, in the seed's dnsmasq form\n${this.nodes.map((n) => `dhcp-host=${n.mac},,${n.hostname},${n.ip},1h${n.arch ? `,arch=${n.arch}` : ''}${n.master ? `,master=${n.master}` : ''}`).join('\n')}\n`,
    );
    const so = this.stageOptions;
    const r = spawnSync(
      BUN,
      [
        join(REPO, 'builder/cli.ts'),
        'stage',
        '--nodes',
        nodesFile,
        '--master-root',
        this.masterRoot,
        '--master-ip',
        MASTER_IP,
        '--subnet',
        SUBNET,
        '--range',
        DYNAMIC,
        '--interface',
        BRIDGE,
        '--domain',
        'cluster.test',
        '--kernel',
        this.img.kernel,
        '--initramfs',
        so.initramfs ?? this.img.initramfs,
        ...(so.tries ? ['--first-stage-tries', String(so.tries)] : []),
        '--bootargs',
        this.bootargs,
        ...(this.amd64
          ? [
              '--kernel-amd64',
              this.amd64.kernel,
              '--initramfs-amd64',
              this.amd64.initramfs,
              '--bootargs-amd64',
              this.amd64.bootargs,
            ]
          : []),
        '--keys',
        k.dir,
        '--dnsmasq-conf',
        this.conf,
        '--authorized-keys',
        this.authorizedKeys,
        '--dhcp-leases',
        this.leaseFile,
        '--state-dir',
        this.stateDir,
        '--sync-slots',
        String(so.syncSlots ?? 8),
        ...(so.approval === undefined ? [] : [so.approval ? '--approval' : '--no-approval']),
        ...(so.tftpFromMirrors ? ['--tftp-from-mirrors'] : []),
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`builder stage failed:\n${r.stderr}${r.stdout}`);
    return r.stderr;
  }

  get authorizedKeys(): string {
    return join(this.dir, 'authorized_keys');
  }

  /** Any `builder` command: its exit status and everything it printed. */
  builder(...args: string[]): { status: number; output: string } {
    const r = spawnSync(BUN, [join(REPO, 'builder/cli.ts'), ...args], { encoding: 'utf8' });
    return { status: r.status ?? -1, output: r.stdout + r.stderr };
  }

  /** A fleet command (`known-hosts`, `enrol`, ...) on this master: its master root and state dir given. */
  fleet(command: string, ...args: string[]): { status: number; output: string } {
    return this.builder(command, '--master-root', this.masterRoot, '--state-dir', this.stateDir, ...args);
  }

  /** `builder approve` on this master. */
  approve(...args: string[]): string {
    const r = spawnSync(
      BUN,
      [
        join(REPO, 'builder/cli.ts'),
        'approve',
        '--master-root',
        this.masterRoot,
        '--state-dir',
        this.stateDir,
        ...args,
      ],
      {
        encoding: 'utf8',
      },
    );
    if (r.status !== 0) throw new Error(`builder approve failed: ${r.stderr}`);
    return r.stdout + r.stderr;
  }

  get leaseFile(): string {
    return join(this.dir, 'dnsmasq.leases');
  }

  get syslogFile(): string {
    return join(this.dir, 'syslog.log');
  }

  /** dnsmasq's leases: MAC -> { ip, hostname }. */
  leases(): Map<string, { ip: string; hostname: string }> {
    const m = new Map<string, { ip: string; hostname: string }>();
    if (!existsSync(this.leaseFile)) return m;
    for (const line of readFileSync(this.leaseFile, 'utf8').split('\n')) {
      const [, mac, ip, hostname] = line.split(' ');
      if (mac && ip) m.set(mac.toLowerCase(), { ip, hostname: hostname ?? '*' });
    }
    return m;
  }

  /** Bytes the master sent onto the cluster's LAN so far (the bridge's transmit counter). */
  masterBytesSent(): number {
    return Number(sh([...this.wrap, 'cat', `/sys/class/net/${BRIDGE}/statistics/tx_bytes`]).trim());
  }

  disk(n: NodeSpec): string {
    return join(this.dir, `${n.hostname}.img`);
  }

  /** Blank disks for the given nodes (the cold start). */
  blankDisks(nodes = this.nodes, megabytes = 1024): void {
    for (const n of nodes) blankDisk(this.disk(n), megabytes);
  }

  private watch(name: string, node: QemuNode): void {
    const v = this.views.get(name);
    if (!v) return;
    v.state = 'booting';
    v.detail = 'U-Boot: DHCP, TFTP';
    let seen = 0;
    const tick = setInterval(() => {
      const ev = node.events();
      for (const e of ev.slice(seen)) this.viewEvent(v, e);
      seen = ev.length;
      if (node.exitCode !== null) clearInterval(tick);
    }, 250);
  }

  private viewEvent(v: NodeView, e: AgentEvent): void {
    if (e.kind === 'phase-start') {
      v.phase = e.phase;
      v.step = `${String(e.n)}/${String(e.of)}`;
      v.detail = '';
    } else if (e.kind === 'progress' || e.kind === 'info' || e.kind === 'warn') {
      v.detail = `${String(e.message ?? '')}${typeof e.percent === 'number' ? ` (${Math.round(e.percent)}%)` : ''}`;
      if (String(e.message ?? '').startsWith('rebooting')) v.state = 'rebooting';
      if (String(e.message ?? '').startsWith('switch_root')) v.state = 'up';
    } else if (e.kind === 'fatal') {
      v.state = 'failed';
      v.detail = String(e.error ?? '');
    }
  }

  /** Start one node's QEMU on its tap and disk, without waiting for anything. */
  powerOn(n: NodeSpec, o: { tap: number; mac?: string; logTag?: string }): QemuNode {
    const node = new QemuNode({
      tftpDir: join(this.masterRoot, 'tftp'),
      disk: this.disk(n),
      wrap: this.wrap,
      smp: 1,
      logFile: join(this.dir, `${o.logTag ?? n.hostname}.console.log`),
      // disable-legacy: U-Boot 2023.01 reads the MAC of a modern virtio-net only (else 52:52:52:52:52:52 for all)
      netdev: [
        '-netdev',
        `tap,id=n0,ifname=cbtap${o.tap},script=no,downscript=no`,
        '-device',
        `virtio-net-pci,netdev=n0,mac=${o.mac ?? n.mac},disable-legacy=on,${NO_ROM}`,
      ],
    });
    this.running.set(n.hostname, node);
    return node;
  }

  /** One power-on of one node: until QEMU exits (the node rebooted or its template powered off). */
  async bootOnce(
    n: NodeSpec,
    o: { tap: number; mac?: string; timeoutMs?: number; logTag?: string },
  ): Promise<BootResult> {
    if (!this.img) throw new Error('start() first');
    const v = this.views.get(n.hostname);
    if (v) v.boots++;
    const node = this.powerOn(n, o);
    this.watch(n.hostname, node);
    const t0 = performance.now();
    try {
      await node.waitForExit(o.timeoutMs ?? 600_000);
    } finally {
      await node.kill();
      this.running.delete(n.hostname);
    }
    const r = resultOf(node, t0);
    if (v) {
      v.state =
        r.ending === 'template' ? 'off' : r.ending === 'reboot' ? 'rebooting' : r.ending === 'fatal' ? 'failed' : 'off';
      if (r.ending === 'template') v.detail = 'template init ran, powered off';
    }
    return r;
  }

  /** Power a node on, and on again after each reboot, until its template's init ran (at most `maxBoots`). */
  async bootUntilUp(n: NodeSpec, tap: number, maxBoots = 4): Promise<BootResult[]> {
    const out: BootResult[] = [];
    for (let i = 0; i < maxBoots; i++) {
      const r = await this.bootOnce(n, { tap });
      out.push(r);
      if (r.ending !== 'reboot') break;
    }
    return out;
  }

  /** Reports on the master (in its state dir, out of the node key's reach): file name -> parsed JSON. */
  reports(): Map<string, Record<string, unknown>> {
    const dir = join(this.stateDir, 'reports');
    const m = new Map<string, Record<string, unknown>>();
    if (!existsSync(dir)) return m;
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.json')))
      m.set(f, JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>);
    return m;
  }

  /** `builder status` against this master, as a person would run it. */
  status(json = false): string {
    const r = spawnSync(
      BUN,
      [
        join(REPO, 'builder/cli.ts'),
        'status',
        '--master-root',
        this.masterRoot,
        '--state-dir',
        this.stateDir,
        ...(json ? ['--json'] : []),
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`builder status failed: ${r.stderr}`);
    return r.stdout;
  }

  async stop(): Promise<void> {
    for (const n of this.running.values()) await n.kill();
    await this.dnsmasq?.stop();
    const p = this.syslog;
    if (p && p.exitCode === null) {
      p.kill();
      await p.exited;
    }
    await this.master.stop();
    spawnSync('ip', ['netns', 'del', this.ns]);
  }
}

// A master on loopback, as on a real cluster: the seed's layout, stamps, and OpenSSH sshd whose only
// door for the node key is `rrsync -ro` (the guest reaches 127.0.0.1 as 10.0.2.2).
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Subprocess } from 'bun';
import { accessFiles, type ExtraFile } from '../../builder/image/pack.ts';
import { publish } from '../../builder/master/publish.ts';
import { authorizedKeysLine } from '../../builder/master/keylines.ts';
import { generateKeys } from '../../builder/master/keys.ts';
import { CACHE, images, type Images } from './images.ts';

export const KEYS = join(CACHE, 'test-keys');

/** Test keys, made once per cache: the node key, the stamp key, the master's host key and a wrong one. */
export function testKeys(): { dir: string; hostKey: string; wrongHostKey: string; otherSignKey: string } {
  generateKeys(KEYS);
  const host = join(KEYS, 'host_ed25519');
  const wrong = join(KEYS, 'wrong_host_ed25519');
  for (const k of [host, wrong]) {
    if (!existsSync(k)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test-master', '-f', k]);
  }
  const other = join(KEYS, 'other');
  generateKeys(other);
  return { dir: KEYS, hostKey: host, wrongHostKey: wrong, otherSignKey: join(other, 'stamp_ed25519.pem') };
}

/** What to pack so a test node reaches this master (and, with sign, verifies stamps). */
export function testAccessFiles(sign = false): ExtraFile[] {
  const k = testKeys();
  return accessFiles({ keysDir: k.dir, masterHostKeyPub: readFileSync(`${k.hostKey}.pub`, 'utf8'), sign });
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export const TEST_TABLE = `label: dos
unit: sectors

/dev/mmcblk0p1 : start=        2048, size=       65536, type=c, bootable
/dev/mmcblk0p2 : start=       67584, size=      786432, type=83
/dev/mmcblk0p3 : start=      854016, size=      524288, type=83
/dev/mmcblk0p4 : start=     1378304, size=      409600, type=83
`;

/** The template's /sbin/init: reports what it sees on the console, keeps a persistence probe, powers off. */
export const TEMPLATE_INIT = `#!/bin/sh
B=/bin/busybox
echo "TEMPLATE-INIT pid=$$ version=$($B cat /etc/template-version) hostname=$($B hostname)"
echo "TEMPLATE-ROOT $($B awk '$2=="/"{print $1" "$3" "$4}' /proc/mounts)"
if [ -e /var/persist-probe ]; then echo "TEMPLATE-PERSIST before=yes"; else echo "TEMPLATE-PERSIST before=no"; fi
echo probe > /var/persist-probe
if [ -b /dev/vda4 ]; then
  $B mkdir -p /mnt/p4 && $B mount -t ext4 /dev/vda4 /mnt/p4 && {
    if [ -e /mnt/p4/p4-probe ]; then echo "TEMPLATE-P4 before=yes"; else echo "TEMPLATE-P4 before=no"; fi
    echo p4 > /mnt/p4/p4-probe; $B umount /mnt/p4; }
fi
for p in /proc/[0-9]*; do c=$($B tr '\\0' ' ' < $p/cmdline 2>/dev/null); [ -n "$c" ] && echo "TEMPLATE-PROC \${p#/proc/} $c"; done
for c in /sys/class/gpio/gpiochip*; do
  [ "$($B cat $c/ngpio 2>/dev/null)" = 8 ] || continue; b=$($B cat $c/base)
  for l in 4 5 6; do n=$((b+l)); echo $n > /sys/class/gpio/export 2>/dev/null
    echo "TEMPLATE-GPIO $l $($B cat /sys/class/gpio/gpio$n/direction 2>/dev/null) $($B cat /sys/class/gpio/gpio$n/value 2>/dev/null)"; done
done
echo "TEMPLATE-ID machine-id=$($B cat /etc/machine-id 2>/dev/null) hostkey=$($B awk '{print $2}' /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null) keymode=$($B stat -c %a /etc/ssh/ssh_host_ed25519_key 2>/dev/null) role=$($B cat /etc/role 2>/dev/null) etc-hostname=$($B cat /etc/hostname 2>/dev/null)"
echo "TEMPLATE-SUM $($B find /usr/share/data /etc/template-version -type f | $B sort | $B xargs $B md5sum | $B md5sum | $B cut -d' ' -f1)"
echo "TEMPLATE-LAYERS $($B ls /run/clusterboot 2>/dev/null | $B tr '\\n' ' ')"
[ -x /etc/test-hook ] && /etc/test-hook
echo "TEMPLATE-DONE"
$B sync
$B poweroff -f
`;

export class TestMaster {
  readonly root: string;
  port = 0;
  log = '';
  private proc: Subprocess | null = null;

  constructor(
    readonly dir: string,
    readonly busybox: string,
  ) {
    this.root = join(dir, 'slaves');
  }

  /** Lay out the seed's master tree with a tiny bootable template, and publish both stamps. */
  async layout(opts: { table?: string; dataMb?: number } = {}): Promise<void> {
    const r = this.root;
    for (const d of [
      'bootfs',
      'rootfs/bin',
      'rootfs/sbin',
      'rootfs/etc',
      'rootfs/proc',
      'rootfs/sys',
      'rootfs/dev',
      'rootfs/run',
      'rootfs/var',
      'rootfs/tmp',
      'rootfs/mnt',
      'rootfs/usr/share/data',
      'tftp',
      'stamps',
      'nodes',
    ])
      mkdirSync(join(r, d), { recursive: true });
    writeFileSync(join(r, 'partitions.sfdisk'), opts.table ?? TEST_TABLE);
    writeFileSync(join(r, 'bootfs/config.txt'), 'kernel=u-boot.bin\narm_64bit=1\n');
    writeFileSync(join(r, 'bootfs/u-boot.bin'), Buffer.alloc(4096, 7));
    cpSync(this.busybox, join(r, 'rootfs/bin/busybox'));
    chmodSync(join(r, 'rootfs/bin/busybox'), 0o755);
    for (const a of ['sh', 'cat', 'echo', 'ls']) execFileSync('ln', ['-sf', 'busybox', join(r, 'rootfs/bin', a)]);
    writeFileSync(join(r, 'rootfs/sbin/init'), TEMPLATE_INIT, { mode: 0o755 });
    writeFileSync(join(r, 'rootfs/etc/template-version'), '1\n');
    const mb = opts.dataMb ?? 4;
    for (let i = 0; i < mb; i++) writeFileSync(join(r, `rootfs/usr/share/data/blob${i}`), randomBytes(1 << 20, i + 1));
    execFileSync('ln', [
      '-f',
      join(r, 'rootfs/usr/share/data/blob0'),
      join(r, 'rootfs/usr/share/data/hardlink-to-blob0'),
    ]);
    await this.publish('rootfs');
    await this.publish('bootfs');
  }

  async publish(name: 'rootfs' | 'bootfs', signKeyPath?: string): Promise<string> {
    const s = await publish({
      masterRoot: this.root,
      name,
      ...(signKeyPath ? { signKeyPem: readFileSync(signKeyPath, 'utf8') } : {}),
    });
    return s.id;
  }

  /**
   * Start sshd with its own config and host key. By default on 127.0.0.1 with the node key's rrsync -ro
   * line; a virtual cluster passes its address, port 22, the namespace to run in, and the
   * authorized_keys file `builder stage` wrote.
   */
  async start(
    hostKey = testKeys().hostKey,
    o: { listen?: string; port?: number; wrap?: string[]; authorizedKeys?: string } = {},
  ): Promise<void> {
    const k = testKeys();
    mkdirSync('/run/sshd', { recursive: true });
    const cfgDir = join(this.dir, 'sshd');
    mkdirSync(cfgDir, { recursive: true });
    this.port = o.port ?? (this.port || (await freePort()));
    const authorized = o.authorizedKeys ?? join(cfgDir, 'authorized_keys');
    if (!o.authorizedKeys)
      writeFileSync(
        authorized,
        `${authorizedKeysLine(readFileSync(join(k.dir, 'node_ed25519.pub'), 'utf8'), this.root)}\n`,
      );
    writeFileSync(
      join(cfgDir, 'sshd_config'),
      [
        `Port ${this.port}`,
        `ListenAddress ${o.listen ?? '127.0.0.1'}`,
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${authorized}`,
        `PidFile ${join(cfgDir, 'sshd.pid')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'MaxStartups 100',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );
    this.proc = Bun.spawn([...(o.wrap ?? []), '/usr/sbin/sshd', '-D', '-e', '-f', join(cfgDir, 'sshd_config')], {
      stdout: 'pipe',
      stderr: 'pipe',
    });
    const proc = this.proc;
    void (async () => {
      for await (const c of proc.stderr as ReadableStream<Uint8Array>) this.log += new TextDecoder().decode(c);
    })();
    const end = Date.now() + 10_000;
    while (!/Server listening/.test(this.log)) {
      if (proc.exitCode !== null) throw new Error(`sshd failed: ${this.log}`);
      if (Date.now() > end) throw new Error(`sshd did not start: ${this.log}`);
      await Bun.sleep(50);
    }
  }

  rsyncdPort = 0;
  private rsyncd: Subprocess | null = null;

  /** An rsync daemon on 127.0.0.1 serving the master root as the read-only module `clusterboot`. */
  async startRsyncd(): Promise<void> {
    const cfgDir = join(this.dir, 'rsyncd');
    mkdirSync(cfgDir, { recursive: true });
    this.rsyncdPort = await freePort();
    writeFileSync(
      join(cfgDir, 'rsyncd.conf'),
      [
        `pid file = ${join(cfgDir, 'rsyncd.pid')}`,
        'use chroot = no',
        'uid = root',
        'gid = root',
        '',
        '[clusterboot]',
        `path = ${this.root}`,
        'read only = yes',
        'numeric ids = yes',
        '',
      ].join('\n'),
    );
    this.rsyncd = Bun.spawn(
      [
        '/usr/bin/rsync',
        '--daemon',
        '--no-detach',
        `--config=${join(cfgDir, 'rsyncd.conf')}`,
        `--port=${this.rsyncdPort}`,
        '--address=127.0.0.1',
      ],
      { stdout: 'ignore', stderr: 'ignore' },
    );
    const end = Date.now() + 10_000;
    while (Bun.spawnSync(['/usr/bin/rsync', `rsync://127.0.0.1:${this.rsyncdPort}/clusterboot/`]).exitCode !== 0) {
      if (Date.now() > end) throw new Error('rsyncd did not start');
      await Bun.sleep(100);
    }
  }

  async stop(): Promise<void> {
    if (this.rsyncd) {
      this.rsyncd.kill();
      await this.rsyncd.exited;
      this.rsyncd = null;
    }
    if (!this.proc) return;
    this.proc.kill();
    await this.proc.exited;
    this.proc = null;
  }

  /** SSH sessions that authenticated since the log started: one per handshake. */
  handshakes(): number {
    return (this.log.match(/Accepted publickey for/g) ?? []).length;
  }

  /** Kernel parameters that point a QEMU user-network guest at this master. */
  bootargs(extra = ''): string {
    return `console=ttyAMA0 panic=1 masterip=10.0.2.2 masterport=${this.port} disk=/dev/vda retries=2 retrywait=1 ${extra}`.trim();
  }
}

/**
 * What the template's init prints as TEMPLATE-SUM for this master's rootfs: the md5 of the md5sum lines
 * of its data files, sorted by path. Equal sums mean the node's root has the master's bytes.
 */
export function templateSum(root: string): string {
  const rootfs = join(root, 'rootfs');
  const files: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(rootfs, rel), { withFileTypes: true })) {
      const p = `${rel}/${name.name}`;
      if (name.isDirectory()) walk(p);
      else if (name.isFile()) files.push(p);
    }
  };
  walk('/usr/share/data');
  files.push('/etc/template-version');
  const lines = files
    .sort()
    .map(
      (p) =>
        `${createHash('md5')
          .update(readFileSync(join(rootfs, p)))
          .digest('hex')}  ${p}\n`,
    )
    .join('');
  return createHash('md5').update(lines).digest('hex');
}

/** Incompressible but reproducible bytes (xorshift), so rsync stats measure real transfer. */
export function randomBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  return b;
}

/** What a boot suite starts from: the images with the test keys, a work directory and a running master. */
export interface MasterRig {
  img: Images;
  work: string;
  master: TestMaster;
}

/** The common start of the boot suites and scripts: build (or reuse) the images, lay out and start a master in a fresh work directory. */
export async function startMasterRig(
  name: string,
  layout: Parameters<TestMaster['layout']>[0] = {},
): Promise<MasterRig> {
  const img = await images({ extra: testAccessFiles() });
  const work = mkdtempSync(join(tmpdir(), `cb-${name}-`));
  const master = new TestMaster(work, join(img.sysroot, 'bin/busybox'));
  await master.layout(layout);
  await master.start();
  return { img, work, master };
}

/** Stops the master and removes the work directory (kept, and named, with KEEP=1). */
export async function stopMasterRig(rig: MasterRig | undefined): Promise<void> {
  if (!rig) return;
  await rig.master.stop();
  if (process.env.KEEP) console.error(`kept ${rig.work}`);
  else rmSync(rig.work, { recursive: true, force: true });
}

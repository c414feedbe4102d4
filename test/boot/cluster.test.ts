// A fleet on one machine: two listed nodes and one stranger boot through the master's real dnsmasq
// (staged by `builder stage`) on a bridge, report their boots over the write-only report key, log to
// the master's syslog, and show up in `builder status`. The same cluster then proves the fleet's
// safety features: one sync slot shared by two syncing nodes, per-node identity that survives a
// template change and a tmpfs overlay, and a table change held until `builder approve`.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sysroot } from '../rig/images.ts';
import { BRIDGE, DYNAMIC, MASTER_IP, VirtualCluster, nodeSpecs, type NodeSpec } from '../rig/cluster.ts';
import { ENROL_KEY_LINE, keyFingerprint } from '../../agent/contract/report.ts';
import { sfdiskDump, type BootResult } from '../rig/boot.ts';
import { TEST_TABLE, TestMaster, testKeys } from '../rig/master.ts';
import { Dnsmasq } from '../rig/dnsmasq.ts';
import { REPO } from '../../builder/image/agentbuild.ts';

let vc: VirtualCluster;
let busybox = '';
let work: string;
const [a, b] = nodeSpecs(2) as [NodeSpec, NodeSpec];
/** Not in the node list: a Pi someone plugged in without telling the master. */
const stranger: NodeSpec = { hostname: 'stranger', mac: '52:54:00:c1:00:99', ip: '' };
let cold: BootResult[][] = [];
let coldBytes = 0;

beforeAll(async () => {
  const sr = await sysroot();
  work = mkdtempSync(join(tmpdir(), 'cb-cluster-'));
  busybox = join(sr.root, 'bin/busybox');
  vc = new VirtualCluster(work, [a, b], busybox);
  await vc.start({ taps: 3, syncSlots: 1 });
  vc.blankDisks([a, b, stranger]);
  // an admin's extra file for node1 only
  mkdirSync(join(vc.masterRoot, 'nodes/node1/files/etc'), { recursive: true });
  writeFileSync(join(vc.masterRoot, 'nodes/node1/files/etc/role'), 'storage\n');
}, 20 * 60_000);

afterAll(async () => {
  await vc?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

const template = (rs: BootResult[]) => rs.at(-1);
/** What the template's init saw of its identity: machine-id, host key, key mode, role file, /etc/hostname. */
const ident = (r: BootResult | undefined) => {
  const m = /TEMPLATE-ID machine-id=(\S*) hostkey=(\S*) keymode=(\S*) role=(\S*) etc-hostname=(\S*)/.exec(
    r?.console ?? '',
  );
  return m ? { machineId: m[1], hostKey: m[2], keyMode: m[3], role: m[4], hostname: m[5] } : null;
};
const coldIds = new Map<string, ReturnType<typeof ident>>();

/** One file off the node's disk image's p2 (outside the slots: identity/, node-files/) with debugfs; null: none. */
function p2Cat(disk: string, path: string): string | null {
  const loop = execFileSync(
    'losetup',
    ['-f', '--show', '-r', '-o', String(67584 * 512), '--sizelimit', String(786432 * 512), disk],
    { encoding: 'utf8' },
  ).trim();
  try {
    const r = spawnSync('debugfs', ['-R', `cat ${path}`, loop], { encoding: 'utf8' });
    return r.status === 0 && !/File not found/.test(r.stderr) ? r.stdout : null;
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
}
/** The base64 body of the node's own ed25519 host key, read off its disk image's p2 (identity/ssh) with debugfs. */
function privateKeyBody(disk: string): string {
  const pem = p2Cat(disk, 'identity/ssh/ssh_host_ed25519_key') ?? '';
  // the key's secret lines (the PEM armour and the public part excepted): long enough to find verbatim
  return pem
    .split('\n')
    .filter((l) => /^[A-Za-z0-9+/=]{60,}$/.test(l))
    .slice(1)
    .join('');
}
/** Files under dir whose bytes contain needle's lines (each 70-character line of the PEM body is searched). */
function grepTree(dir: string, body: string): string[] {
  const pieces = body.match(/.{1,64}/g) ?? [];
  const hits: string[] = [];
  for (const f of findFiles(dir, /./)) {
    let data: string;
    try {
      data = readFileSync(f, 'latin1').replace(/\s/g, '');
    } catch {
      continue;
    }
    if (pieces.some((p) => p.length >= 40 && data.includes(p))) hits.push(f);
  }
  return hits;
}
/** One file out of a gzip'd newc initramfs inside a U-Boot uImage, as anyone who TFTPs it can take it. */
function unpackFromInitramfs(uimage: string, path: string): Buffer {
  const cpio = gunzipSync(readFileSync(uimage).subarray(64));
  for (let o = 0; o + 110 <= cpio.length;) {
    const hex = (i: number) => parseInt(cpio.subarray(o + 6 + i * 8, o + 14 + i * 8).toString('latin1'), 16);
    const size = hex(6);
    const nameSize = hex(11);
    const name = cpio.subarray(o + 110, o + 110 + nameSize - 1).toString('latin1');
    const data = (o + 110 + nameSize + 3) & ~3;
    if (name === 'TRAILER!!!') break;
    if (name === path || name === `./${path}`) return Buffer.from(cpio.subarray(data, data + size));
    o = (data + size + 3) & ~3;
  }
  throw new Error(`${path} is not in ${uimage}`);
}
function findFiles(dir: string, name: RegExp): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && name.test(e.name)) out.push(join(e.parentPath ?? dir, e.name));
  }
  return out;
}
/** A command run from inside the cluster LAN (the namespace), as an attacker there would. */
const attacker = (argv: string[], input: string | Buffer = '') =>
  spawnSync('ip', ['netns', 'exec', vc.ns, ...argv], { input, encoding: 'utf8', timeout: 120_000, maxBuffer: 1 << 24 });
/** ssh as rsync's -e with a stolen key (and a source address to bind to). */
const attackerSsh = (key: string, bind?: string) =>
  [
    'ssh',
    '-i',
    key,
    ...(bind ? ['-b', bind] : []),
    '-o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes',
  ].join(' ');
/** Files under dir that contain text. */
function grepText(dir: string, text: string): string[] {
  return findFiles(dir, /./).filter((f) => {
    try {
      return readFileSync(f, 'latin1').includes(text);
    } catch {
      return false;
    }
  });
}
const report = (mac: string) => vc.reports().get(`${mac.replace(/:/g, '-')}.json`) as Record<string, any> | undefined;

describe('virtual cluster', () => {
  test('two listed nodes boot from blank disks at once: fixed leases and hostnames from dnsmasq; with one sync slot, held, both wait, then both sync', async () => {
    const bytes0 = vc.masterBytesSent();
    const t0 = performance.now();
    // the master's only sync slot is taken (as by a third node) until both nodes say they wait for it
    // -F: flock execs sleep itself, so killing it frees the slot (a forked sleep would keep the lock)
    const holder = Bun.spawn(['flock', '-F', '-x', join(vc.stateDir, 'slots/slot0'), 'sleep', '600'], {
      stdout: 'ignore',
      stderr: 'inherit',
    });
    await Bun.sleep(300);
    const booting = Promise.all([vc.bootUntilUp(a, 0), vc.bootUntilUp(b, 1)]);
    const waiting = (n: NodeSpec) => vc.running.get(n.hostname)?.console.includes('waiting for a sync slot') ?? false;
    const deadline = Date.now() + 400_000;
    while (!(waiting(a) && waiting(b)) && Date.now() < deadline) await Bun.sleep(500);
    const bothWaited = waiting(a) && waiting(b);
    holder.kill();
    cold = await booting;
    coldBytes = vc.masterBytesSent() - bytes0;
    console.error(
      `measure: cluster cold nodes=2 slots=1 wall_s=${((performance.now() - t0) / 1000).toFixed(1)} master_bytes_sent=${coldBytes}`,
    );
    expect(bothWaited).toBe(true);
    expect(
      cold
        .map((rs) => rs.at(-1)?.console.match(/waiting for a sync slot: the master's 1 are in use/g)?.length ?? 0)
        .every((c) => c >= 1),
    ).toBe(true);
    for (const [i, n] of [a, b].entries()) {
      const rs = cold[i] ?? [];
      expect(rs.map((r) => r.ending)).toEqual(['reboot', 'template']);
      const up = template(rs);
      expect(up?.console).toContain(`TEMPLATE-INIT pid=1 version=1 hostname=${n.hostname}`);
      // the agent's lease is the fixed one, from the master found through DHCP (no masterip= given)
      expect(up?.console).toContain(`lease ${n.ip}/24 on eth0 from ${MASTER_IP}`);
      expect(up?.console).toMatch(
        new RegExp(`master ${MASTER_IP.replace(/\./g, '\\.')} \\(DHCP (option 66|next-server)\\)`),
      );
      expect(vc.leases().get(n.mac)).toEqual({ ip: n.ip, hostname: n.hostname });
      coldIds.set(n.hostname, ident(up));
    }
    // both nodes' roots came over the LAN: at least the two templates' data
    expect(coldBytes).toBeGreaterThan(2 * 4 * 1024 * 1024);
  }, 900_000);

  test('each node reported its boot: phases with durations, stamps, bytes, overlay; through the report sink', () => {
    const stamp = /^id (\S+)/m.exec(readFileSync(join(vc.masterRoot, 'stamps/rootfs.stamp'), 'utf8'))?.[1];
    expect(stamp).toBeTruthy();
    for (const n of [a, b]) {
      const r = report(n.mac);
      expect(r).toBeDefined();
      expect(r?.result).toBe('ok');
      expect(r?.hostname).toBe(n.hostname);
      expect(r?.hostnameFrom).toBe('dhcp');
      expect(r?.ip).toBe(n.ip);
      expect(r?.stamps).toEqual({ rootBefore: null, rootAfter: stamp, masterRoot: stamp });
      expect([r?.master, r?.failover]).toEqual([MASTER_IP, undefined]);
      expect(r?.bytesReceived).toBeGreaterThan(4 * 1024 * 1024);
      expect(r?.overlay).toBe('disk (overlay)');
      expect((r?.phases as { name: string }[]).map((p) => p.name)).toEqual([
        'early',
        'modules',
        'network',
        'master',
        'disk',
        'partitions',
        'bootfs',
        'root',
        'firststage',
        'overlay',
        'identity',
        'handoff',
      ]);
    }
    // the report key can hand over one report and nothing else: the report sink in the line `builder stage` wrote
    const keys = readFileSync(join(work, 'authorized_keys'), 'utf8');
    expect(keys).toMatch(
      /^restrict,from="10\.77\.0\.0\/24",command="\/usr\/bin\/python3 -I \S*\/report-sink \S*\/reports nobody [^"]*" ssh-ed25519 /m,
    );
    // the node key: read-only, behind the sync-slot wrapper (one slot in this cluster)
    expect(keys).toMatch(
      /^restrict,from="10\.77\.0\.0\/24",command="\S*\/sync-slot 1 \S*\/slots \/usr\/bin\/rrsync -ro [^"]*" ssh-ed25519 /m,
    );
    // two different keys authenticated: the node key (read) and the report key (write)
    const fps = new Set(
      [...vc.master.log.matchAll(/Accepted publickey for root from \S+ port \d+ ssh2: ED25519 (SHA256:\S+)/g)].map(
        (m) => m[1],
      ),
    );
    expect(fps.size).toBe(2);
  });

  test("console messages reached the master's syslog, tagged with the node's hostname", () => {
    const log = readFileSync(vc.syslogFile, 'utf8');
    for (const n of [a, b]) {
      expect(log).toMatch(
        new RegExp(`^<\\d+>1 - ${n.hostname} clusterboot - - - [\\d.]+s \\[8/12 root\\] done in `, 'm'),
      );
      // messages from before the network was up are sent too
      expect(log).toMatch(
        new RegExp(`^<\\d+>1 - ${n.hostname} clusterboot - - - [\\d.]+s \\[1/12 early\\] start`, 'm'),
      );
    }
  });

  test('a warm boot of both takes the fast path: no root sync, a fraction of the bytes, reports updated', async () => {
    const bytes0 = vc.masterBytesSent();
    const t0 = performance.now();
    const warm = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
    const sent = vc.masterBytesSent() - bytes0;
    console.error(
      `measure: cluster warm nodes=2 wall_s=${((performance.now() - t0) / 1000).toFixed(1)} master_bytes_sent=${sent}`,
    );
    for (const r of warm) {
      expect(r.ending).toBe('template');
      expect(r.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    }
    // a warm boot loads the first stage from the node's disk: the master sends the boot script, DHCP and a little SSH
    expect(sent).toBeLessThanOrEqual(2 * 64 * 1024);
    for (const r of warm) expect(r.raw).toContain('loaded from the disk (the announced one, checks passed)');
    expect(sent).toBeLessThan(coldBytes);
    for (const n of [a, b]) {
      const r = report(n.mac);
      expect(r?.bytesReceived).toBeLessThan(64 * 1024);
      expect(r?.stamps.rootBefore).toBe(r?.stamps.rootAfter);
    }
  }, 600_000);

  // #14: identity born on the node: the host keys are made on the node and only their public halves leave it
  test('each node is itself: its own machine-id and host keys, made on the node; no private key anywhere on the master', () => {
    const i1 = coldIds.get('node1');
    const i2 = coldIds.get('node2');
    expect(i1?.machineId).toMatch(/^[0-9a-f]{32}$/);
    expect(i2?.machineId).toMatch(/^[0-9a-f]{32}$/);
    expect(i1?.machineId).not.toBe(i2?.machineId);
    expect(i1?.hostKey).toMatch(/^AAAAC3NzaC1lZDI1NTE5/);
    expect(i1?.hostKey).not.toBe(i2?.hostKey);
    expect(i1?.keyMode).toBe('600');
    expect(i1?.role).toBe('storage');
    expect(i2?.role).toBe('');
    expect(i1?.hostname).toBe('node1');
    for (const n of [a, b]) {
      // the report carries the public half the template sees
      expect(report(n.mac)?.hostKeys).toContain(`ssh-ed25519 ${coldIds.get(n.hostname)?.hostKey}`);
      // the private half lives on the node's p2 (identity/ssh), and nowhere in the master's tree
      const priv = privateKeyBody(vc.disk(n));
      expect(priv.length).toBeGreaterThan(40);
      expect(grepTree(vc.masterRoot, priv)).toEqual([]);
      expect(grepTree(vc.stateDir, priv)).toEqual([]);
    }
    expect(findFiles(vc.masterRoot, /^ssh_host_.*_key$/)).toEqual([]);
  });

  test("`builder known-hosts` writes both nodes' keys from their reports; a changed key is held back until --accept", () => {
    const out = join(work, 'known_hosts');
    const first = vc.fleet('known-hosts', '--out', out, '--domain', 'cluster.lan');
    expect(first.status).toBe(0);
    expect(first.output).toContain('2 new: node1 node2');
    const text = readFileSync(out, 'utf8');
    for (const n of [a, b])
      expect(text).toContain(
        `${n.hostname},${n.hostname}.cluster.lan,${n.ip} ssh-ed25519 ${coldIds.get(n.hostname)?.hostKey}`,
      );
    // a forged key in the file stands for "known before": the node's real report is then a change, not taken
    const forged = text.replace(coldIds.get('node2')?.hostKey ?? 'x', `AAAAC3NzaC1lZDI1NTE5AAAAI${'F'.repeat(43)}`);
    writeFileSync(out, forged);
    const held = vc.fleet('known-hosts', '--out', out, '--domain', 'cluster.lan');
    expect(held.status).toBe(1);
    expect(held.output).toContain('node2 reports other host keys than the ones kept');
    expect(readFileSync(out, 'utf8')).toBe(forged);
    vc.fleet('known-hosts', '--out', out, '--domain', 'cluster.lan', '--accept', 'node2');
    expect(readFileSync(out, 'utf8')).toBe(text);
  });

  test('identity survives a template change and a reboot with aufs=tmpfs', async () => {
    writeFileSync(join(vc.masterRoot, 'rootfs/etc/template-version'), '2\n');
    await vc.master.publish('rootfs');
    const normal = vc.bootargs;
    vc.stage({ bootargs: `${normal} aufs=tmpfs` });
    try {
      const rs = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
      for (const [i, n] of [a, b].entries()) {
        const r = rs[i];
        expect(r?.ending).toBe('template');
        expect(r?.console).toContain('TEMPLATE-INIT pid=1 version=2');
        expect(r?.console).toMatch(/overlay\] .*tmpfs/);
        expect(ident(r)).toEqual(coldIds.get(n.hostname) ?? null);
      }
    } finally {
      vc.stage({ bootargs: normal });
    }
    // a reset of the writable layer keeps the identity too (it lives on p2, outside the layer)
    vc.stage({ bootargs: `${normal} reset` });
    try {
      const r = await vc.bootOnce(a, { tap: 0 });
      expect(r.ending).toBe('template');
      expect(r.console).toContain('resetting the writable layer (kernel parameter reset)');
      expect(ident(r)).toEqual(coldIds.get(a.hostname) ?? null);
    } finally {
      vc.stage({ bootargs: normal });
    }
  }, 600_000);

  test('newidentity, and only newidentity, makes a node new host keys and a new machine-id, kept from then on', async () => {
    const normal = vc.bootargs;
    vc.stage({ bootargs: `${normal} newidentity` });
    let renewed: ReturnType<typeof ident>;
    try {
      const r = await vc.bootOnce(b, { tap: 1 });
      expect(r.ending).toBe('template');
      expect(r.console).toContain('newidentity: making new host keys and a new machine-id');
      renewed = ident(r);
      expect(renewed?.hostKey).toMatch(/^AAAAC3NzaC1lZDI1NTE5/);
      expect(renewed?.hostKey).not.toBe(coldIds.get(b.hostname)?.hostKey);
      expect(renewed?.machineId).not.toBe(coldIds.get(b.hostname)?.machineId);
    } finally {
      vc.stage({ bootargs: normal });
    }
    const again = await vc.bootOnce(b, { tap: 1 });
    expect(ident(again)).toEqual(renewed);
    coldIds.set(b.hostname, renewed);
  }, 600_000);

  // #14 item 2: what the node key reads (the master root) is public; a node's secrets are outside it, readable with
  // that node's own enrolment key only, from its own address, after the admin enrolled it
  test("private files reach their node only: `builder enrol` takes the key node1 made and reported; the node key, node2 and node1's key from elsewhere read nothing of them; node1 reports with it, as itself only", async () => {
    const k1 = report(a.mac)?.enrolKey as string;
    const k2 = report(b.mac)?.enrolKey as string;
    expect(k1).toMatch(ENROL_KEY_LINE);
    expect(k2).toMatch(ENROL_KEY_LINE);
    expect(k1).not.toBe(k2);
    const enrol = (...args: string[]) => vc.fleet('enrol', '--authorized-keys', vc.authorizedKeys, ...args);
    const list = enrol('--list');
    expect(list.status).toBe(0);
    expect(list.output).toContain(`${keyFingerprint(k1)}`);
    expect(list.output).toContain('not enrolled: builder enrol node1');
    const e = enrol('node1');
    expect(e.status).toBe(0);
    expect(e.output).toContain(`enrolled node1 (${a.ip}) with ${keyFingerprint(k1)}`);
    const secret1 = `node1-secret-${process.pid}`;
    const secret2 = `node2-secret-${process.pid}`;
    mkdirSync(join(vc.stateDir, 'private/node1/files/etc'), { recursive: true });
    writeFileSync(join(vc.stateDir, 'private/node1/files/etc/cluster-secret'), `${secret1}\n`, { mode: 0o600 });
    // node2 has private files too, but is not enrolled: nothing reaches it, nor anyone else
    mkdirSync(join(vc.stateDir, 'private/node2/files/etc'), { recursive: true });
    writeFileSync(join(vc.stateDir, 'private/node2/files/etc/cluster-secret'), `${secret2}\n`, { mode: 0o600 });

    const [r1, r2] = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
    expect(r1?.ending).toBe('template');
    expect(r2?.ending).toBe('template');
    expect(r1?.console).toContain(`enrolment key ${keyFingerprint(k1)}`);
    expect(r1?.console).toContain("private files fetched with this node's enrolment key");
    expect(r2?.console).toContain(`builder enrol node2\` on the master gives this node its private files`);
    // laid into node1's root (the role file from the public files/ still there) and kept for offline boots
    expect(ident(r1)?.role).toBe('storage');
    expect(p2Cat(vc.disk(a), 'node-files/etc/cluster-secret')).toBe(`${secret1}\n`);
    expect(p2Cat(vc.disk(b), 'node-files/etc/cluster-secret')).toBeNull();
    // node1 reported with its enrolment key: the sink stored it as node1's, marked enrolled (proof, not a claim)
    expect(r1?.console).toMatch(/boot report sent to \S+ \(ok, \d+ phases, with the enrolment key\)/);
    expect(report(a.mac)?.enrolled).toBe(true);
    expect(report(b.mac)?.enrolled).toBeUndefined();
    const rows = (JSON.parse(vc.status(true)) as { rows: Array<Record<string, any>> }).rows;
    expect(rows.find((x) => x.mac === a.mac)?.enrolled).toBe(true);
    expect(rows.find((x) => x.mac === b.mac)?.enrolled).toBeUndefined();

    // a LAN attacker with the node key out of the TFTP'd initramfs: the whole master root holds no secret
    const nodeKey = join(work, 'stolen_node_key');
    writeFileSync(
      nodeKey,
      unpackFromInitramfs(join(vc.masterRoot, 'tftp/initramfs.igz.uimg'), 'etc/clusterboot/node_key'),
      { mode: 0o600 },
    );
    const grab = join(work, 'grabbed');
    rmSync(grab, { recursive: true, force: true });
    const names = attacker(['rsync', '-e', attackerSsh(nodeKey), '-r', '--list-only', `root@${MASTER_IP}:./`]);
    expect(names.status).toBe(0);
    expect(names.stdout).toContain('nodes/node1/files/etc/role'); // it did read the whole master root
    expect(names.stdout).not.toContain('cluster-secret');
    // and every small file's content (the templates left out: they are the published roots)
    const small = ['--exclude=/rootfs/', '--exclude=/snapshots/', '--exclude=/bootfs/', '--exclude=/tftp/'];
    const all = attacker(['rsync', '-e', attackerSsh(nodeKey), '-r', ...small, `root@${MASTER_IP}:./`, `${grab}/`]);
    expect(all.status).toBe(0);
    expect(findFiles(grab, /^role$/).length).toBe(1);
    expect(grepText(grab, secret1)).toEqual([]);
    expect(grepText(grab, secret2)).toEqual([]);
    const up = attacker([
      'rsync',
      '-e',
      attackerSsh(nodeKey),
      `root@${MASTER_IP}:../private/node1/files/`,
      `${grab}/x/`,
    ]);
    expect(up.status).not.toBe(0);
    expect(up.stderr).toMatch(/do not use \.\.|unsafe/);

    // node1's enrolment key off its disk: from any other address sshd refuses it (from=)
    const enrolKey = join(work, 'node1_enrol_key');
    writeFileSync(enrolKey, p2Cat(vc.disk(a), 'identity/enrol/id_ed25519') ?? '', { mode: 0o600 });
    const elsewhere = attacker(['rsync', '-e', attackerSsh(enrolKey), '-r', `root@${MASTER_IP}:files/`, `${grab}/e/`]);
    expect(elsewhere.status).not.toBe(0);
    expect(elsewhere.stderr).toMatch(/Permission denied/);
    // from node1's own address (node1 is off): its own files, and nothing of node2's
    spawnSync('ip', ['-n', vc.ns, 'addr', 'add', `${a.ip}/32`, 'dev', BRIDGE]);
    try {
      const own = attacker([
        'rsync',
        '-e',
        attackerSsh(enrolKey, a.ip),
        '-r',
        `root@${MASTER_IP}:files/`,
        `${grab}/o/`,
      ]);
      expect(own.status).toBe(0);
      expect(readFileSync(join(grab, 'o/etc/cluster-secret'), 'utf8')).toBe(`${secret1}\n`);
      const other = attacker([
        'rsync',
        '-e',
        attackerSsh(enrolKey, a.ip),
        '-r',
        `root@${MASTER_IP}:../node2/files/`,
        `${grab}/n2/`,
      ]);
      expect(other.status).not.toBe(0);
      expect(grepText(grab, secret2)).toEqual([]);
      // read-only: nothing can be written into its own tree either
      writeFileSync(join(work, 'planted'), 'x\n');
      const put = attacker([
        'rsync',
        '-e',
        attackerSsh(enrolKey, a.ip),
        join(work, 'planted'),
        `root@${MASTER_IP}:files/`,
      ]);
      expect(put.status).not.toBe(0);
      expect(findFiles(join(vc.stateDir, 'private'), /^planted$/)).toEqual([]);
      // and it reports for node1 only: a report for node2's MAC is refused, node2's report stays as it was
      const before2 = readFileSync(join(vc.stateDir, 'reports', `${b.mac.replace(/:/g, '-')}.json`), 'utf8');
      const forged = attacker(
        ['sh', '-c', `${attackerSsh(enrolKey, a.ip)} root@${MASTER_IP} clusterboot-report`],
        JSON.stringify({ ...report(b.mac), result: 'ok', errors: [] }),
      );
      expect(forged.status).toBe(65);
      expect(forged.stderr).toContain(`this enrolment key is ${a.mac}'s: it cannot report for ${b.mac}`);
      expect(readFileSync(join(vc.stateDir, 'reports', `${b.mac.replace(/:/g, '-')}.json`), 'utf8')).toBe(before2);
    } finally {
      spawnSync('ip', ['-n', vc.ns, 'addr', 'del', `${a.ip}/32`, 'dev', BRIDGE]);
    }
  }, 600_000);

  test('approval mode: a changed table leaves the disk alone until `builder approve`, then applies', async () => {
    vc.stage({ approval: true });
    const before = sfdiskDump(vc.disk(a));
    expect(before).toMatch(/node1\.img4 : start=\s*1378304, size=\s*409600/);
    writeFileSync(
      join(vc.masterRoot, 'partitions.sfdisk'),
      TEST_TABLE.replace('size=      409600', 'size=      204800'),
    );
    const held = await vc.bootOnce(a, { tap: 0 });
    expect(held.ending).toBe('template'); // boots its current root meanwhile
    expect(held.console).toContain('table change waiting for approval');
    expect(sfdiskDump(vc.disk(a))).toBe(before);
    const rep = report(a.mac);
    expect(rep?.approval?.state).toBe('pending');
    expect(rep?.approval?.meanwhile).toBe('booting the current root');
    expect(rep?.approval?.wanted).toContain('size=204800');
    const status = vc.status();
    expect(status).toContain('builder approve node1');

    const out = vc.approve('node1');
    expect(out).toContain('node1');
    const applied = await vc.bootUntilUp(a, 0);
    expect(applied.map((r) => r.ending)).toEqual(['reboot', 'template']);
    expect(applied[0]?.console).toContain('the master approved this table');
    expect(sfdiskDump(vc.disk(a))).toMatch(/node1\.img4 : start=\s*1378304, size=\s*204800/);
    // p1-p3 kept: the root was not copied again
    expect(applied[1]?.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
    expect(ident(applied[1])).toEqual(coldIds.get('node1') ?? null);
  }, 600_000);

  test('a node with an unknown MAC gets no fixed lease: a dynamic address, no hostname, and its report says so', async () => {
    const r = await vc.bootOnce(stranger, { tap: 2 });
    // it still partitions its blank disk (the table is the cluster's; a blank disk needs no approval)
    expect(r.ending).toBe('reboot');
    expect(r.console).toContain('the disk has no table: nothing on it to lose');
    expect(r.console).toContain('DHCP gave no hostname: 52:54:00:c1:00:99 has no fixed lease');
    const lease = vc.leases().get(stranger.mac);
    const [lo, hi] = DYNAMIC.split(',').map((x) => Number(x.split('.')[3]));
    const last = Number(lease?.ip.split('.')[3]);
    expect(last).toBeGreaterThanOrEqual(lo ?? 0);
    expect(last).toBeLessThanOrEqual(hi ?? 0);
    const rep = report(stranger.mac);
    expect(rep?.result).toBe('reboot');
    expect(rep?.hostname).toBeNull();
    expect(rep?.hostnameFrom).toBeNull();
  }, 400_000);

  test('builder status shows the fleet: both nodes ok and current, the stranger flagged', () => {
    const text = vc.status();
    expect(text).toMatch(/node1\s+52:54:00:c1:00:01\s+10\.77\.0\.11\s+.*\bok\b.*\bcurrent\b/);
    expect(text).toMatch(/node2\s+52:54:00:c1:00:02\s+10\.77\.0\.12\s+.*\bok\b.*\bcurrent\b/);
    expect(text).not.toContain('builder approve node1'); // approved and applied
    expect(text).toContain('52:54:00:c1:00:99');
    expect(text).toMatch(/unknown MAC/);
    const json = JSON.parse(vc.status(true)) as { rows: Array<Record<string, unknown>> };
    const rows = json.rows;
    expect(rows.find((r) => r.mac === a.mac)?.result).toBe('ok');
    expect(rows.find((r) => r.mac === a.mac)?.master).toBe(MASTER_IP);
    expect(rows.find((r) => r.mac === stranger.mac)?.result).toBe('reboot');
  });

  // #14 item 3: the report key, as anyone on the LAN can TFTP it, reaches the report sink and nothing else
  test("a LAN attacker with the report key from the TFTP'd initramfs: forged reports, rsync, a 1 GB stream, all refused; reports unchanged", () => {
    const key = join(work, 'stolen_report_key');
    writeFileSync(
      key,
      unpackFromInitramfs(join(vc.masterRoot, 'tftp/initramfs.igz.uimg'), 'etc/clusterboot/report_key'),
      {
        mode: 0o600,
      },
    );
    const dir = join(vc.stateDir, 'reports');
    const snapshot = () =>
      readdirSync(dir)
        .sort()
        .map((f) => `${f} ${lstatSync(join(dir, f)).mtimeMs} ${readFileSync(join(dir, f), 'utf8').length}`);
    const before = snapshot();
    const ssh = [
      'ssh',
      '-i',
      key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'BatchMode=yes',
    ];
    const as = (argv: string[], input: string | Buffer) =>
      spawnSync('ip', ['netns', 'exec', vc.ns, ...argv], {
        input,
        encoding: 'utf8',
        timeout: 60_000,
        maxBuffer: 1 << 20,
      });
    // a forged "ok" for node1, from an address that is not node1's
    const forged = JSON.stringify({ ...report(a.mac), result: 'ok', uptime: 1, errors: [] });
    const f = as([...ssh, `root@${MASTER_IP}`, 'anything'], forged);
    expect(f.status).toBe(65);
    expect(f.stderr).toContain(`${a.mac} is listed at ${a.ip}, not ${MASTER_IP}`);
    // the old write-only rsync: a setuid file or a symlink into reports/ is no longer possible
    const evil = join(work, 'evil');
    writeFileSync(evil, '#!/bin/sh\nid\n', { mode: 0o4755 });
    const t1 = performance.now();
    const r = as(['rsync', '-e', ssh.join(' '), '-a', evil, `root@${MASTER_IP}:./`], '');
    expect(r.status).not.toBe(0);
    expect(r.status).not.toBeNull(); // it ended by itself: the sink drops a sender that never completes a report
    expect(performance.now() - t1).toBeLessThan(40_000);
    // an endless stream: cut at 64 KiB, refused at once
    const t0 = performance.now();
    const big = as([...ssh, `root@${MASTER_IP}`], Buffer.alloc(256 << 20, 0x7b));
    expect(big.stderr).toContain('larger than 65536 bytes');
    console.error(
      `measure: 256 MiB stream to the report sink refused in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    // a remote port forward: restrict refuses it (one that worked would keep ssh -N running to the timeout)
    const fwd = as(
      [...ssh, '-N', '-R', '2222:127.0.0.1:22', '-o', 'ExitOnForwardFailure=yes', `root@${MASTER_IP}`],
      '',
    );
    expect(fwd.status).toBe(255);
    expect(fwd.stderr).toMatch(/prohibited|forwarding failed/i);
    expect(snapshot()).toEqual(before);
    expect(findFiles(dir, /^evil$/)).toEqual([]);
    const status = JSON.parse(vc.status(true)) as { rows: Array<Record<string, unknown>> };
    expect(status.rows.find((x) => x.mac === a.mac)?.result).toBe('ok');
  });

  // #19 item 2: the node list names a node's own master (a mirror); dnsmasq lists it before the primary in option
  // 224. Nothing answers 10.77.0.9 on the namespace's bridge (no ARP reply): the node fails over to the primary
  test('a node whose master= does not answer fails over to the primary: up on its root; the report and builder status say which served it', async () => {
    b.master = '10.77.0.9';
    try {
      vc.stage();
      expect(readFileSync(vc.conf, 'utf8')).toContain(`dhcp-option=tag:cb-master-1,224,"10.77.0.9,${MASTER_IP}"`);
      await vc.stopMaster();
      await vc.startMaster();
      const r = await vc.bootOnce(b, { tap: 1 });
      expect(r.ending).toBe('template');
      expect(r.console).toContain(`master 10.77.0.9, ${MASTER_IP} (DHCP option 224)`);
      expect(r.console).toMatch(
        new RegExp(`master 10\\.77\\.0\\.9: master unreachable: .*; failing over to ${MASTER_IP}`),
      );
      const rep = report(b.mac);
      expect([rep?.result, rep?.master]).toEqual(['ok', MASTER_IP]);
      expect(rep?.failover).toEqual([expect.stringMatching(/^10\.77\.0\.9: master unreachable: /)]);
      const row = (JSON.parse(vc.status(true)) as { rows: Array<Record<string, any>> }).rows.find(
        (x) => x.mac === b.mac,
      );
      expect(row?.master).toBe(MASTER_IP);
      expect(row?.notes).toContainEqual(
        expect.stringMatching(/^served by 10\.77\.0\.1 after failing over from 10\.77\.0\.9: /),
      );
    } finally {
      delete b.master;
      vc.stage();
      await vc.stopMaster();
      await vc.startMaster();
    }
  }, 600_000);

  // #19: a mirror master fed by `builder mirror` (over SSH, with its own key, from the primary's rrsync) serves
  // nodes whose node list entry names it, their TFTP too; a mirror that has not pulled yet keeps them on the root
  // it serves; a mirror that stops mid-boot, or is down, costs a failover to the primary and nothing else
  test('two nodes served by a mirror: it pulls the primary over SSH, serves their TFTP and sync and takes their reports, which the primary gathers; private files come from the primary; behind, it keeps them on its root until it pulls; stopped mid-boot or down, the primary serves', async () => {
    const MIRROR_IP = '10.77.0.2';
    const mdir = join(work, 'mirror');
    const mirror = new TestMaster(mdir, busybox);
    const mstate = join(mdir, 'state');
    const mkey = join(mdir, 'mirror_ed25519');
    const gkey = join(mdir, 'gather_ed25519');
    mkdirSync(mdir, { recursive: true });
    for (const k of [mkey, gkey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'k', '-f', k]);
    const hostPub = readFileSync(`${testKeys().hostKey}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    writeFileSync(join(mdir, 'known_hosts'), `${MASTER_IP} ${hostPub}\n`);
    a.master = MIRROR_IP;
    b.master = MIRROR_IP;
    let mirrorDns: Dnsmasq | null = null;
    try {
      vc.stage({ tftpFromMirrors: true });
      await vc.stopMaster();
      await vc.startMaster();
      // the mirror's address comes after the primary's dnsmasq bound its own (bind-interfaces): TFTP there is the mirror's
      spawnSync('ip', ['-n', vc.ns, 'addr', 'add', `${MIRROR_IP}/24`, 'dev', BRIDGE]);
      const conf = readFileSync(vc.conf, 'utf8');
      expect(conf).toContain(`dhcp-option=tag:cb-master-1,224,"${MIRROR_IP},${MASTER_IP}"`);
      expect(conf).toContain(`dhcp-boot=tag:cb-master-1,boot.scr.uimg,,${MIRROR_IP}`);
      // on the primary: the mirror's key may read its master root, from the mirror's address only
      expect(
        vc.builder(
          ...['mirror', '--allow', MIRROR_IP, '--key', mkey],
          ...['--master-root', vc.masterRoot, '--authorized-keys', vc.authorizedKeys],
        ).status,
      ).toBe(0);
      // `builder mirror` as the mirror runs it: inside the LAN, over SSH with its key, the primary's host key pinned
      const onMirror = (...args: string[]) =>
        spawnSync(
          'ip',
          [
            ...['netns', 'exec', vc.ns, process.execPath, join(REPO, 'builder/cli.ts'), 'mirror', ...args],
            ...['--primary', MASTER_IP, '--key', mkey, '--known-hosts', join(mdir, 'known_hosts')],
            ...['--master-root', mirror.root, '--state-dir', mstate, '--bind', MIRROR_IP],
          ],
          { encoding: 'utf8' },
        );
      const pull = () => onMirror();
      // `builder doctor` as the mirror runs it: its own checks, and whether it serves what the primary published
      const mirrorCheck = () => {
        const d = spawnSync(
          'ip',
          [
            ...['netns', 'exec', vc.ns, process.execPath, join(REPO, 'builder/cli.ts'), 'doctor', '--json'],
            ...['--master-root', mirror.root, '--master-ip', MIRROR_IP, '--keys', testKeys().dir],
            ...['--authorized-keys', join(mdir, 'authorized_keys'), '--state-dir', mstate],
            ...['--dnsmasq-conf', join(mdir, 'dnsmasq.conf'), '--master-host-key', `${testKeys().hostKey}.pub`],
            ...['--mirror-of', MASTER_IP, '--mirror-key', mkey, '--primary-known-hosts', join(mdir, 'known_hosts')],
            ...['--bind', MIRROR_IP],
          ],
          { encoding: 'utf8' },
        );
        const checks = (JSON.parse(d.stdout) as { checks: Array<{ name: string; level: string; detail: string }> })
          .checks;
        return checks.find((c) => c.name === 'mirror');
      };
      writeFileSync(join(vc.masterRoot, 'rootfs/etc/template-version'), 'mirrored\n');
      await vc.master.publish('rootfs');
      const p = pull();
      expect(p.stderr).toMatch(/content .*commit .*cleanup .*; rootfs \S+ \(current\)/);
      expect(p.status).toBe(0);
      // the mirror serves nodes: the primary's public keys, its own report sink and sync slots
      const serve = vc.builder(
        'mirror',
        '--serve',
        '--keys',
        testKeys().dir,
        '--nodes',
        join(vc.dir, 'nodes.txt'),
        '--subnet',
        '10.77.0.0/24',
        '--master-root',
        mirror.root,
        '--state-dir',
        mstate,
        '--authorized-keys',
        join(mdir, 'authorized_keys'),
        ...['--gather-key', `${gkey}.pub`, '--primary', MASTER_IP],
        ...['--tftp', MIRROR_IP, '--dnsmasq-conf', join(mdir, 'dnsmasq.conf')],
      );
      expect(serve.status).toBe(0);
      // its TFTP-only dnsmasq, as the mirror's systemd would start it
      mirrorDns = await Dnsmasq.start({
        wrap: vc.wrap,
        conf: join(mdir, 'dnsmasq.conf'),
        pidFile: join(mdir, 'dnsmasq.pid'),
        onLog: () => {},
      });
      // a pull now that the mirror serves: it leaves its state (what it serves) for the primary to gather
      expect(pull().status).toBe(0);
      expect(existsSync(join(mstate, 'reports/mirror.state'))).toBe(true);
      // node1's private file changes on the primary: it must come from there (a mirror holds no secret)
      const secret = `node1-secret-mirrored-${process.pid}`;
      writeFileSync(join(vc.stateDir, 'private/node1/files/etc/cluster-secret'), `${secret}\n`, { mode: 0o600 });
      await mirror.start(testKeys().hostKey, {
        listen: MIRROR_IP,
        port: 22,
        wrap: vc.wrap,
        authorizedKeys: join(mdir, 'authorized_keys'),
      });
      const primaryLog = vc.master.log.length;
      const rs = await Promise.all([vc.bootOnce(a, { tap: 0 }), vc.bootOnce(b, { tap: 1 })]);
      for (const [i, n] of [a, b].entries()) {
        const r = rs[i];
        expect(r?.ending).toBe('template');
        expect(r?.console).toContain('TEMPLATE-INIT pid=1 version=mirrored');
        expect(r?.console).toContain(`connected to ${MIRROR_IP}:22`);
        // U-Boot asked the mirror's TFTP (next-server) for the network script
        expect(r?.console).toContain(`clusterboot: the master ${MIRROR_IP} announces first stage`);
        // the sync and the report went to the mirror; the primary saw SSH from node1 once (its private files with
        // its enrolment key), none from node2
        expect(mirror.log).toContain(`Accepted publickey for root from ${n.ip}`);
        expect(vc.master.log.slice(primaryLog).split(`Accepted publickey for root from ${n.ip} `).length - 1).toBe(
          n === a ? 1 : 0,
        );
        const rep = JSON.parse(readFileSync(join(mstate, 'reports', `${n.mac.replace(/:/g, '-')}.json`), 'utf8'));
        expect([rep.result, rep.master]).toEqual(['ok', MIRROR_IP]);
      }
      expect(rs[0]?.console).toContain(
        `private files fetched with this node's enrolment key from the primary ${MASTER_IP} (the mirror ${MIRROR_IP} holds none)`,
      );
      expect(p2Cat(vc.disk(a), 'node-files/etc/cluster-secret')).toBe(`${secret}\n`);
      // the short tier of scripts/bench-mirrors: bytes per server, from the reports the mirror took
      const bytes = [a, b].map(
        (n) =>
          (
            JSON.parse(readFileSync(join(mstate, 'reports', `${n.mac.replace(/:/g, '-')}.json`), 'utf8')) as {
              bytesReceived: number;
            }
          ).bytesReceived,
      );
      expect(bytes.every((x) => x > 0)).toBe(true);
      console.error(
        `measure: mirror served 2 nodes a template change: ${bytes.reduce((x, y) => x + y, 0)} B from ${MIRROR_IP}, 0 B of root from ${MASTER_IP}`,
      );
      // the primary gathers the mirror's reports (pulled with its gather key) and shows which master served each
      writeFileSync(join(mdir, 'mirror_known_hosts'), `${MIRROR_IP} ${hostPub}\n`);
      const g = spawnSync(
        'ip',
        [
          ...['netns', 'exec', vc.ns, process.execPath, join(REPO, 'builder/cli.ts'), 'gather', '--mirror', MIRROR_IP],
          ...['--key', gkey, '--known-hosts', join(mdir, 'mirror_known_hosts'), '--bind', MASTER_IP],
          ...['--state-dir', vc.stateDir],
        ],
        { encoding: 'utf8' },
      );
      expect(g.stderr).toContain(`${MIRROR_IP}: reports gathered into`);
      expect(g.status).toBe(0);
      const rows = (JSON.parse(vc.status(true)) as { rows: Array<Record<string, any>> }).rows;
      for (const n of [a, b]) expect(rows.find((x) => x.mac === n.mac)?.master).toBe(MIRROR_IP);
      expect(vc.status()).toMatch(new RegExp(`mirrors:\\n  ${MIRROR_IP.replace(/\./g, '\\.')}: current: rootfs `));
      expect(mirrorCheck()).toMatchObject({ level: 'ok', detail: expect.stringContaining('serves what the primary') });
      // behind: the primary publishes, the mirror has not pulled: node1 stays on the root the mirror serves
      writeFileSync(join(vc.masterRoot, 'rootfs/etc/template-version'), 'after\n');
      await vc.master.publish('rootfs');
      const check = onMirror('--check');
      expect(check.status).toBe(1);
      expect(check.stdout).toMatch(/rootfs \S+, the primary has \S+ \(behind\)/);
      // builder status on the primary says so, from the gathered state, by stamp
      expect(vc.status()).toMatch(/: behind: rootfs \S+, the primary has \S+/);
      expect(vc.status()).toContain('1 mirror behind or unknown');
      expect(mirrorCheck()).toMatchObject({ level: 'warn', detail: expect.stringMatching(/^behind the primary /) });
      const behind = await vc.bootOnce(a, { tap: 0 });
      expect(behind.ending).toBe('template');
      expect(behind.console).toContain('TEMPLATE-INIT pid=1 version=mirrored');
      expect(behind.events.some((e) => e.phase === 'root' && e.kind === 'progress')).toBe(false);
      // the mirror catches up: the next boot takes the new root
      expect(pull().status).toBe(0);
      const caught = await vc.bootOnce(a, { tap: 0 });
      expect(caught.console).toContain('TEMPLATE-INIT pid=1 version=after');
      // the mirror stops mid-boot: U-Boot had the network script from it; the agent finds it gone and fails over
      const midBoot = vc.bootOnce(a, { tap: 0 });
      await vc.running
        .get(a.hostname)
        ?.waitFor(new RegExp(`the master ${MIRROR_IP.replace(/\./g, '\\.')} announces first stage`), 300_000);
      await mirror.stop();
      await mirrorDns.stop();
      const mid = await midBoot;
      expect(mid.ending).toBe('template');
      expect(mid.console).toContain('TEMPLATE-INIT pid=1 version=after');
      expect(mid.console).toMatch(
        new RegExp(`master ${MIRROR_IP.replace(/\./g, '\\.')}: .*; failing over to ${MASTER_IP}`),
      );
      expect([report(a.mac)?.result, report(a.mac)?.master]).toEqual(['ok', MASTER_IP]);
      // the mirror down from the start: the local script asks the primary's TFTP, the agent the primary
      const down = await vc.bootOnce(a, { tap: 0 });
      expect(down.console).toContain(`no first stage from ${MIRROR_IP}: asking the primary ${MASTER_IP}`);
      expect(down.console).toContain(`clusterboot: the master ${MASTER_IP} announces first stage`);
      expect(down.ending).toBe('template');
      expect(down.console).toContain('TEMPLATE-INIT pid=1 version=after');
    } finally {
      delete a.master;
      delete b.master;
      await mirrorDns?.stop();
      await mirror.stop();
      spawnSync('ip', ['-n', vc.ns, 'addr', 'del', `${MIRROR_IP}/24`, 'dev', BRIDGE]);
      vc.stage({ tftpFromMirrors: false });
      await vc.stopMaster();
      await vc.startMaster();
    }
  }, 900_000);
});

// builder mirror: a copy of the primary's public tree, pulled in three passes so a node never sees a mirror between
// two publishes. Real rsync on local trees made by the real `publish`.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publish } from '../../../../builder/master/publish.ts';
import {
  compareMirror,
  mirrorKeysLine,
  mirrorPasses,
  mirrorVerdict,
  namedSnapshots,
  gatherKeysLine,
  gatherReports,
  runMirror,
  serveMirror,
  timerUnits,
  writeMirrorState,
} from '../../../../builder/master/mirror.ts';
import { readStatus } from '../../../../builder/master/status.ts';
import { generateKeys } from '../../../../builder/master/keys.ts';
import { parseKeyLine } from '../../../../builder/sshkeys.ts';

let tmp = '';
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'mirror-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBJ3PmS2n7ZlN4ajnkjN2gNPb2ZQ0gT6sHzwXNSG9v3P mirror';

/** A primary with a published root (and bootfs), a table and a node flag. */
async function primary(): Promise<{ root: string; mirror: string }> {
  const root = join(tmp, `p${n}`);
  const mirror = join(tmp, `m${n++}`);
  mkdirSync(join(root, 'rootfs/sbin'), { recursive: true });
  mkdirSync(join(root, 'rootfs/usr/lib'), { recursive: true });
  mkdirSync(join(root, 'bootfs'), { recursive: true });
  mkdirSync(join(root, 'nodes/node1'), { recursive: true });
  mkdirSync(join(root, 'tftp'), { recursive: true });
  writeFileSync(join(root, 'rootfs/sbin/init'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(root, 'rootfs/usr/lib/big'), Buffer.alloc(256 * 1024, 7));
  writeFileSync(join(root, 'rootfs/etc-version'), 'v1\n');
  writeFileSync(join(root, 'bootfs/config.txt'), 'arm_64bit=1\n');
  writeFileSync(join(root, 'partitions.sfdisk'), 'label: dos\n');
  writeFileSync(join(root, 'approval.required'), 'on\n');
  writeFileSync(join(root, 'nodes/node1/reset'), '');
  writeFileSync(join(root, 'tftp/firststage.env'), 'cb_id=one\n');
  writeFileSync(join(root, 'tftp/initramfs.igz.uimg'), 'one');
  await publish({ masterRoot: root, name: 'rootfs' });
  await publish({ masterRoot: root, name: 'bootfs' });
  return { root, mirror };
}

/** Every stamp the mirror has names a snapshot it has whole: byte-equal to the primary's of the same id. */
function wholeAgainst(primaryRoot: string, mirrorRoot: string): void {
  for (const { name, id } of namedSnapshots(mirrorRoot)) {
    const diff = spawnSync('diff', [
      '-r',
      join(primaryRoot, 'snapshots', name, id),
      join(mirrorRoot, 'snapshots', name, id),
    ]);
    expect(diff.status).toBe(0);
    expect(readFileSync(join(mirrorRoot, `snapshots/${name}/${id}.files`))).toEqual(
      readFileSync(join(primaryRoot, `snapshots/${name}/${id}.files`)),
    );
  }
}

describe('mirror', () => {
  test('a first pull: the same stamps, snapshots, table, flags and first stage; current', async () => {
    const { root, mirror } = await primary();
    const r = runMirror({ source: root, dest: mirror });
    expect(r.passes.map((p) => [p.name, p.status])).toEqual([
      ['content', 0],
      ['commit', 0],
      ['cleanup', 0],
    ]);
    for (const f of [
      'stamps/rootfs.stamp',
      'stamps/rootfs.manifest',
      'partitions.sfdisk',
      'approval.required',
      'nodes/node1/reset',
      'tftp/firststage.env',
    ])
      expect(readFileSync(join(mirror, f))).toEqual(readFileSync(join(root, f)));
    wholeAgainst(root, mirror);
    expect(mirrorVerdict(r.states)).toMatchObject({ current: true });
  });

  test('a new publish arrives whole at every step: after each pass the stamps name a snapshot that is all there', async () => {
    const { root, mirror } = await primary();
    runMirror({ source: root, dest: mirror });
    const before = namedSnapshots(mirror);
    writeFileSync(join(root, 'rootfs/etc-version'), 'v2\n');
    writeFileSync(join(root, 'rootfs/new-file'), 'new\n');
    writeFileSync(join(root, 'partitions.sfdisk'), 'label: dos\nlabel-id: 0xc10b0070\n');
    rmSync(join(root, 'approval.required'));
    await publish({ masterRoot: root, name: 'rootfs' });
    const passes = mirrorPasses(root, mirror, { keep: namedSnapshots(mirror) });
    const run = (i: number) => expect(spawnSync('/usr/bin/rsync', passes[i]?.args ?? []).status).toBe(0);
    run(0); // content: the new snapshot is there, the stamps still the old ones
    expect(namedSnapshots(mirror)).toEqual(before);
    expect(readFileSync(join(mirror, 'partitions.sfdisk'), 'utf8')).toBe('label: dos\n');
    wholeAgainst(root, mirror);
    run(1); // commit: the new stamps, table and switch together
    expect(namedSnapshots(mirror)).not.toEqual(before);
    expect(readFileSync(join(mirror, 'partitions.sfdisk'), 'utf8')).toContain('label-id');
    expect(existsSync(join(mirror, 'approval.required'))).toBe(false);
    wholeAgainst(root, mirror);
    run(2);
    wholeAgainst(root, mirror);
    expect(mirrorVerdict(compareMirror(root, mirror)).current).toBe(true);
  });

  test('unchanged files stay hard links between snapshots on the mirror too (a publish costs its changes)', async () => {
    const { root, mirror } = await primary();
    writeFileSync(join(root, 'rootfs/etc-version'), 'v2\n');
    await publish({ masterRoot: root, name: 'rootfs' });
    runMirror({ source: root, dest: mirror });
    const ids = namedSnapshots(mirror);
    const [first] = spawnSync('ls', [join(mirror, 'snapshots/rootfs')], { encoding: 'utf8' }).stdout.split('\n');
    const a = statSync(join(mirror, 'snapshots/rootfs', first as string, 'usr/lib/big'));
    const now = ids.find((s) => s.name === 'rootfs')?.id as string;
    const b = statSync(join(mirror, 'snapshots/rootfs', now, 'usr/lib/big'));
    expect(first).not.toBe(now);
    expect(a.ino).toBe(b.ino);
  });

  test('what the primary pruned goes, except a snapshot the mirror still serves; a mirror behind says so', async () => {
    const { root, mirror } = await primary();
    runMirror({ source: root, dest: mirror });
    const served = namedSnapshots(mirror);
    for (const v of ['v2', 'v3', 'v4', 'v5']) {
      writeFileSync(join(root, 'rootfs/etc-version'), `${v}\n`);
      await publish({ masterRoot: root, name: 'rootfs' });
    }
    const old = served.find((s) => s.name === 'rootfs')?.id as string;
    expect(existsSync(join(root, 'snapshots/rootfs', old))).toBe(false); // pruned (3 kept)
    const behind = mirrorVerdict(compareMirror(root, mirror));
    expect(behind.current).toBe(false);
    expect(behind.text).toMatch(/rootfs \S+, the primary has \S+ \(behind\)/);
    // the cleanup pass alone, before any commit: the snapshot the mirror's stamp names stays
    const cleanup = mirrorPasses(root, mirror, { keep: namedSnapshots(mirror) })[2];
    const c = spawnSync('/usr/bin/rsync', cleanup?.args ?? [], { encoding: 'utf8' });
    expect(c.stderr).toBe('');
    expect(c.status).toBe(0);
    expect(existsSync(join(mirror, 'snapshots/rootfs', old, 'sbin/init'))).toBe(true);
    expect(existsSync(join(mirror, 'snapshots/rootfs', `${old}.files`))).toBe(true);
    // a whole run: current, and the old one gone
    runMirror({ source: root, dest: mirror });
    expect(existsSync(join(mirror, 'snapshots/rootfs', old))).toBe(false);
    expect(mirrorVerdict(compareMirror(root, mirror)).current).toBe(true);
  });

  test("the primary's key line for a mirror: read-only rrsync of the master root, from the mirror's address only", () => {
    const l = mirrorKeysLine(PUB, '/data/slaves', '10.77.0.2');
    expect(l).toBe(
      `restrict,from="10.77.0.2",command="/usr/bin/rrsync -ro /data/slaves" ${PUB.replace(' mirror', '')} clusterboot-mirror@10.77.0.2`,
    );
    expect(parseKeyLine(l)?.options.map((o) => o.name)).toEqual(['restrict', 'from', 'command']);
    expect(() => mirrorKeysLine(PUB, '/data/slaves', '10.77.0.*')).toThrow('not an IPv4 address');
  });

  test('--serve: the node key reads the mirror tree through its own sync slots, the report key runs its own sink, from the subnet', () => {
    const dir = join(tmp, 'serve');
    const keys = join(dir, 'keys');
    generateKeys(keys);
    writeFileSync(join(tmp, 'nodes.txt'), 'b8:27:eb:cb:63:18 rpinode01 10.77.0.11\n');
    const o = {
      keysDir: keys,
      masterRoot: join(dir, 'slaves'),
      stateDir: join(dir, 'state'),
      authorizedKeys: join(dir, 'authorized_keys'),
      nodesFile: join(tmp, 'nodes.txt'),
      subnet: '10.77.0.0/24',
      slots: 4,
    };
    const r = serveMirror(o);
    const lines = readFileSync(o.authorizedKeys, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toStartWith(
      `restrict,from="10.77.0.0/24",command="${o.stateDir}/sync-slot 4 ${o.stateDir}/slots /usr/bin/rrsync -ro ${o.masterRoot}" ssh-ed25519 `,
    );
    expect(lines[1]).toStartWith(
      `restrict,from="10.77.0.0/24",command="/usr/bin/python3 -I ${o.stateDir}/report-sink ${o.stateDir}/reports nobody `,
    );
    expect(readFileSync(join(o.stateDir, 'report-peers'), 'utf8')).toBe('b8:27:eb:cb:63:18 10.77.0.11\n');
    expect(readFileSync(join(o.stateDir, 'nodes.list'), 'utf8')).toContain('rpinode01');
    expect(r.written).toContain(o.authorizedKeys);
    // again: nothing added twice
    serveMirror(o);
    expect(readFileSync(o.authorizedKeys, 'utf8').trim().split('\n')).toEqual(lines);
  });

  test("gather: a mirror's report files (and nothing else) reach the primary's status, newest per MAC", () => {
    const mstate = join(tmp, 'gm');
    mkdirSync(join(mstate, 'reports'), { recursive: true });
    const rep = (mac: string, master: string, hostname: string) =>
      JSON.stringify({
        schema: 1,
        mac,
        hostname,
        hostnameFrom: 'dhcp',
        ip: '10.77.0.11',
        agentVersion: '0.1.0',
        kernel: '6.1',
        result: 'ok',
        phases: [{ name: 'early', seconds: 0.1 }],
        stamps: { rootBefore: null, rootAfter: null, masterRoot: null },
        bytesReceived: 0,
        overlay: 'tmpfs',
        errors: [],
        uptime: 5,
        master,
      });
    writeFileSync(join(mstate, 'reports/52-54-00-c1-00-01.json'), rep('52:54:00:c1:00:01', '10.77.0.2', 'node1'));
    writeFileSync(join(mstate, 'reports/huge.json'), Buffer.alloc(100 * 1024, 0x20));
    writeFileSync(join(mstate, 'reports/notes.txt'), 'x');
    spawnSync('ln', ['-s', '/etc/shadow', join(mstate, 'reports/link.json')]);
    const primary = join(tmp, 'gp');
    mkdirSync(join(primary, 'reports'), { recursive: true });
    writeFileSync(join(primary, 'nodes.list'), '52:54:00:c1:00:01 node1 10.77.0.11\n');
    const g = gatherReports({ mirror: '10.77.0.2', source: join(mstate, 'reports'), stateDir: primary });
    expect(g.status).toBe(0);
    expect(spawnSync('ls', [g.dir], { encoding: 'utf8' }).stdout.trim().split('\n')).toEqual([
      '52-54-00-c1-00-01.json',
    ]);
    const s = readStatus({ masterRoot: join(tmp, 'gp-root'), stateDir: primary });
    expect(s.rows.find((r) => r.hostname === 'node1')).toMatchObject({ result: 'ok', master: '10.77.0.2' });
    expect(() => gatherReports({ mirror: '../x', source: mstate, stateDir: primary })).toThrow('not a host name');
    expect(gatherKeysLine(PUB, '/var/lib/clusterboot', '10.77.0.1')).toBe(
      `restrict,from="10.77.0.1",command="/usr/bin/rrsync -ro /var/lib/clusterboot/reports" ${PUB.replace(' mirror', '')} clusterboot-gather@10.77.0.1`,
    );
  });

  test("a mirror's pull state reaches the primary with its reports: status says current, then behind after a publish, and a failed pull", async () => {
    const p = await primary();
    const mstate = join(tmp, `ms${n}`);
    // a mirror that does not serve (no reports folder) writes no state: nothing would gather it
    runMirror({ source: p.root, dest: p.mirror });
    expect(writeMirrorState(mstate, { mirrorRoot: p.mirror })).toBeNull();
    mkdirSync(join(mstate, 'reports'), { recursive: true });
    const file = writeMirrorState(mstate, { mirrorRoot: p.mirror, now: new Date(0) });
    expect(file).toBe(join(mstate, 'reports/mirror.state'));
    const pstate = join(tmp, `ps${n}`);
    const gather = () => gatherReports({ mirror: '10.77.0.2', source: join(mstate, 'reports'), stateDir: pstate });
    expect(gather().status).toBe(0);
    const mirrors = () => readStatus({ masterRoot: p.root, stateDir: pstate }).mirrors;
    expect(mirrors()).toEqual([
      expect.objectContaining({ mirror: '10.77.0.2', state: 'current', pulled: '1970-01-01T00:00:00.000Z' }),
    ]);
    // the primary publishes; the mirror has not pulled: behind, by stamp
    writeFileSync(join(p.root, 'rootfs/etc-version'), 'v2\n');
    await publish({ masterRoot: p.root, name: 'rootfs' });
    expect(mirrors()[0]).toMatchObject({
      state: 'behind',
      text: expect.stringMatching(/^behind: rootfs \S+, the primary has \S+/),
    });
    // a pull that fails leaves what it serves and says why
    writeMirrorState(mstate, { mirrorRoot: p.mirror, error: 'mirror: the content pass failed (rsync exit 12)' });
    gather();
    expect(mirrors()[0]?.text).toContain('its last pull failed: mirror: the content pass failed (rsync exit 12)');
    // it pulls, the primary gathers again: current
    runMirror({ source: p.root, dest: p.mirror });
    writeMirrorState(mstate, { mirrorRoot: p.mirror });
    gather();
    expect(mirrors()[0]?.state).toBe('current');
  });

  test('the timers: a oneshot service at low priority every minute, for the pull (mirror) and the gathering (primary)', () => {
    const m = timerUnits('mirror', '/usr/local/bin/builder mirror --primary 10.77.0.1 --master-root /data/slaves');
    expect(m.service).toContain(
      'ExecStart=/usr/local/bin/builder mirror --primary 10.77.0.1 --master-root /data/slaves\n',
    );
    expect(m.service).toContain('Type=oneshot');
    expect(m.timer).toContain('OnUnitInactiveSec=60s');
    const g = timerUnits('gather', '/usr/local/bin/builder gather --mirror 10.77.0.2 --mirror 10.77.0.3');
    expect(g.service).toContain("Description=clusterboot gather: pull the mirrors' reports and pull state");
    expect(g.timer).toContain('WantedBy=timers.target');
    for (const bad of ['builder gather\nExecStartPre=/bin/sh', 'builder gather --mirror $(id)', 'a;b', '50%'])
      expect(() => timerUnits('gather', bad)).toThrow('characters systemd would read');
  });

  test('builder gather --timer writes the units with the mirrors, the state dir and the key; nothing is gathered', () => {
    const dir = join(tmp, 'units');
    const r = spawnSync(
      process.execPath,
      [
        join(import.meta.dir, '../../../../builder/cli.ts'),
        ...['gather', '--mirror', '10.77.0.2', '--mirror', '10.77.0.3', '--state-dir', join(tmp, 'gs')],
        ...['--key', '/etc/clusterboot/gather_ed25519', '--timer', dir],
      ],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('systemctl enable --now clusterboot-gather.timer');
    expect(readFileSync(join(dir, 'clusterboot-gather.service'), 'utf8')).toContain(
      `ExecStart=/usr/local/bin/builder gather --mirror 10.77.0.2 --mirror 10.77.0.3 --state-dir ${join(tmp, 'gs')} --key /etc/clusterboot/gather_ed25519 --known-hosts /etc/clusterboot/mirrors_known_hosts\n`,
    );
    expect(existsSync(join(dir, 'clusterboot-gather.timer'))).toBe(true);
    expect(existsSync(join(tmp, 'gs'))).toBe(false);
  });
});

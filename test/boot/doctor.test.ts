// `builder doctor` against a running master: the virtual cluster's dnsmasq and sshd in their network namespace,
// staged by the real `builder stage` (no node boots). It passes there; then each fault is made, the doctor fails
// with that fault's remedy and exit 1, and the fault is undone: dnsmasq stopped, the node key's line widened, a
// stamp missing, an initramfs over the firmware's 64 MiB TFTP ceiling.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../builder/image/agentbuild.ts';
import { sysroot } from '../rig/images.ts';
import { MASTER_IP, VirtualCluster, nodeSpecs } from '../rig/cluster.ts';
import { testKeys } from '../rig/master.ts';

let vc: VirtualCluster;
let work: string;

beforeAll(async () => {
  const sr = await sysroot();
  work = mkdtempSync(join(tmpdir(), 'cb-doctor-'));
  vc = new VirtualCluster(work, nodeSpecs(1), join(sr.root, 'bin/busybox'));
  await vc.start({ taps: 1 });
}, 20 * 60_000);

afterAll(async () => {
  await vc?.stop();
  if (process.env.KEEP) console.error(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

interface Line {
  level: string;
  name: string;
  detail: string;
}

/** `builder doctor` run inside the cluster's namespace, as on the master itself. */
function doctor(): { status: number; text: string; lines: Line[]; get: (name: string) => Line | undefined } {
  const k = testKeys();
  const r = spawnSync(
    'ip',
    [
      ...['netns', 'exec', vc.ns, join(REPO, 'node_modules/.bin/bun'), join(REPO, 'builder/cli.ts'), 'doctor'],
      ...['--master-root', vc.masterRoot, '--master-ip', MASTER_IP, '--keys', k.dir],
      ...['--authorized-keys', vc.authorizedKeys, '--state-dir', vc.stateDir, '--dnsmasq-conf', vc.conf],
      ...['--master-host-key', `${k.hostKey}.pub`],
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  const text = r.stdout;
  const lines = text
    .split('\n')
    .map((l) => /^(ok|warn|FAIL) +([^:]+): (.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ level: m[1] as string, name: m[2] as string, detail: m[3] as string }));
  return { status: r.status ?? -1, text: text + r.stderr, lines, get: (n) => lines.find((l) => l.name === n) };
}

/** Assert the run failed (exit 1) on `name` with `says` in its detail and `remedy` in its remedy. */
function failsWith(d: ReturnType<typeof doctor>, name: string, says: string, remedy: string): void {
  const l = d.get(name);
  if (d.status !== 1 || l?.level !== 'FAIL') console.error(d.text);
  expect(d.status).toBe(1);
  expect(l?.level).toBe('FAIL');
  expect(l?.detail).toContain(says);
  expect(l?.detail).toContain(`; remedy: ${remedy}`);
}

const NAMES = [
  'tree',
  'private files',
  'first stage',
  'dnsmasq',
  'tftp boot.scr.uimg',
  'tftp vmlinuz.gz',
  'tftp initramfs.igz.uimg',
  'initramfs size',
  'node key line',
  'report key line',
  'key commands',
  'ssh read',
  'ssh write',
  'ssh shell',
  'stamp rootfs',
  'stamp bootfs',
  'rsync',
  'key modes',
  'free space',
];

describe('builder doctor', () => {
  test('passes on the staged master: every check ok, exit 0', () => {
    const d = doctor();
    console.error(d.text);
    expect(d.lines.map((l) => l.name)).toEqual(NAMES);
    expect(d.lines.filter((l) => l.level !== 'ok')).toEqual([]);
    expect(d.status).toBe(0);
    expect(d.get('ssh read')?.detail).toContain('rootfs.stamp');
    expect(d.get('ssh write')?.detail).toContain('sending to read-only server is not allowed');
    expect(d.text).toContain(`doctor: ${NAMES.length} checks: ${NAMES.length} ok, 0 warnings, 0 failed`);
  }, 120_000);

  test('dnsmasq stopped: TFTP gets no answer; remedy: restart dnsmasq', async () => {
    await vc.stopDnsmasq();
    try {
      const d = doctor();
      failsWith(d, 'tftp boot.scr.uimg', 'dnsmasq does not answer', 'start dnsmasq (`systemctl restart dnsmasq`)');
      failsWith(d, 'dnsmasq', 'no dnsmasq process runs', 'systemctl restart dnsmasq');
      expect(d.get('ssh read')?.level).toBe('ok');
    } finally {
      await vc.stopMaster();
      await vc.startMaster();
    }
  }, 120_000);

  test('the node key line widened: -wo, then without restrict; remedy: delete the line and stage again', () => {
    const before = readFileSync(vc.authorizedKeys, 'utf8');
    const lines = before.split('\n');
    const n = lines.findIndex((l) => l.includes('rrsync -ro'));
    expect(n).toBeGreaterThanOrEqual(0);
    const remedy = `delete line ${n + 1} of ${vc.authorizedKeys}, then run builder stage again`;
    const probes = () => readdirSync(vc.masterRoot).filter((f) => f.startsWith('.clusterboot-doctor-probe'));
    try {
      lines[n] = (lines[n] as string).replace(' -ro ', ' -wo ');
      writeFileSync(vc.authorizedKeys, lines.join('\n'));
      const wo = doctor();
      failsWith(wo, 'node key line', '`rrsync -wo`: the key can write', 'replace the line with the one');
      expect(wo.get('node key line')?.detail).toContain(remedy);
      // not just the line: through sshd the key now writes, and cannot read
      failsWith(wo, 'ssh write', 'an rsync upload through the node key was accepted', 'give the node key');
      failsWith(wo, 'ssh read', 'reading from write-only server is not allowed', 'the node key line must be');
      expect(probes()).toEqual([]);

      lines[n] = before.split('\n')[n]?.replace(/^restrict,/, '') ?? '';
      writeFileSync(vc.authorizedKeys, lines.join('\n'));
      const open = doctor();
      failsWith(open, 'node key line', 'no `restrict`', 'replace the line with the one');
      expect(open.get('node key line')?.detail).toContain(remedy);
    } finally {
      writeFileSync(vc.authorizedKeys, before);
    }
  }, 120_000);

  test('a stamp missing: remedy builder publish', () => {
    const stamp = join(vc.masterRoot, 'stamps/rootfs.stamp');
    renameSync(stamp, `${stamp}.away`);
    try {
      const d = doctor();
      failsWith(
        d,
        'stamp rootfs',
        'stamps/rootfs.stamp is missing',
        `run \`builder publish rootfs --master-root ${vc.masterRoot}\``,
      );
      expect(d.get('stamp bootfs')?.level).toBe('ok');
    } finally {
      renameSync(`${stamp}.away`, stamp);
    }
  }, 120_000);

  test('the initramfs over 64 MiB: over the TFTP ceiling; remedy: make it smaller', () => {
    const initramfs = join(vc.masterRoot, 'tftp/initramfs.igz.uimg');
    renameSync(initramfs, `${initramfs}.away`);
    try {
      writeFileSync(initramfs, Buffer.alloc(65 * 1048576, 0x5a));
      const d = doctor();
      failsWith(d, 'initramfs size', '68157440 bytes (65.0 MiB) is over', 'make the initramfs smaller');
      // and the bytes dnsmasq serves are no longer the announced ones
      failsWith(d, 'tftp initramfs.igz.uimg', 'U-Boot on the nodes refuses it', 'run `builder stage` again');
    } finally {
      renameSync(`${initramfs}.away`, initramfs);
    }
  }, 120_000);

  test('every fault undone: it passes again', () => {
    const d = doctor();
    if (d.status !== 0) console.error(d.text);
    expect(d.lines.filter((l) => l.level !== 'ok')).toEqual([]);
    expect(d.status).toBe(0);
    expect(existsSync(join(vc.masterRoot, 'stamps/rootfs.stamp'))).toBe(true);
  }, 120_000);
});

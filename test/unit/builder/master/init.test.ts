// `builder init`'s plan: facts about a machine to the list of actions. A fresh machine gets the whole list, the
// machine after that list gets none (a second run changes nothing), --force redoes the template, table, bootfs and
// first stage but never the keys, --no-apt and bad inputs stop everything, --dry-run lists every file.
import { describe, expect, test } from 'bun:test';
import { join } from 'node:path';
import { parseSfdiskDump, validateTable } from '../../../../agent/plans/sfdisk.ts';
import {
  addressOf,
  cardTable,
  defaultPaths,
  describe as describeAction,
  filesOf,
  findKernel,
  KEY_FILES,
  MIN_CARD_BYTES,
  parseSize,
  planInit,
  PROGRAMS,
  TOOL_PACKAGE,
  versionProblems,
  type Action,
  type InitFacts,
  type InitOptions,
} from '../../../../builder/master/init.ts';
import type { TreeEntry } from '../../../../builder/master/template.ts';

const P = '/srv/m';
const opts = (o: Partial<InitOptions> = {}): InitOptions => ({
  nodesFile: '/srv/nodes.txt',
  interface: 'eth0',
  domain: 'cluster.lan',
  prefix: P,
  ...defaultPaths(P),
  systemRoot: '/',
  sysroot: '/',
  cardSizes: [16e9, 8e9],
  exclude: [],
  bootargs: 'console=ttyAMA0',
  modules: [],
  syncSlots: 8,
  sign: false,
  apt: true,
  force: false,
  ...o,
});
const o0 = opts();
const root = o0.masterRoot;
const SYSTEM: TreeEntry[] = [
  { path: 'etc', kind: 'dir' },
  { path: 'etc/fstab', kind: 'file' },
  { path: 'root', kind: 'dir' },
  { path: 'root/.bash_history', kind: 'file' },
  { path: 'sbin', kind: 'dir' },
  { path: 'sbin/init', kind: 'link' },
  { path: 'srv', kind: 'dir' },
  { path: 'srv/m', kind: 'dir' },
  { path: 'srv/m/data', kind: 'dir' },
];
const NODES = 'dhcp-host=b8:27:eb:cb:63:18,,rpinode01,192.168.2.1,1h\nb8:27:eb:c2:9f:19 rpinode02 192.168.2.2\n';

/** A Raspberry Pi OS machine before init: programs installed, nothing of clusterboot. */
function fresh(): InitFacts {
  return {
    programs: Object.fromEntries(Object.values(PROGRAMS).map((p) => [p, true])),
    packages: { dnsmasq: '2.90-4', 'openssh-server': '1:9.2p1-2', rsync: '3.5.0' },
    versions: {
      rsync: 'rsync  version 3.5.0  protocol version 32',
      dnsmasq: 'Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley',
      ssh: 'OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19',
    },
    systemd: false,
    dnsmasq: { running: false, enabled: false },
    sshd: true,
    addresses: ['192.168.2.254/24'],
    exists: {
      [o0.masterHostKey]: true,
      ...Object.fromEntries(Object.keys(TOOL_PACKAGE).map((t) => [t, true])),
    },
    nonEmpty: {},
    nodesText: NODES,
    kernel: { path: '/boot/vmlinuz-6.1.0-arm64', modules: '/lib/modules/6.1.0-arm64' },
    firmware: {
      dir: '/boot/firmware',
      names: ['start4.elf', 'fixup4.dat', 'kernel8.img'],
      overlays: ['a.dtbo'],
      config: '',
    },
    uBoot: '/usr/lib/u-boot/rpi_arm64/u-boot.bin',
    system: { entries: SYSTEM, texts: { 'etc/fstab': 'PARTUUID=1-02 / ext4 defaults 0 1\n' } },
    clusterKeys: [],
    packInputs: null,
    stageInputs: null,
    record: null,
  };
}

/** The same machine after the actions: what gatherFacts would see then. */
function after(f: InitFacts, actions: Action[], o: InitOptions = o0): InitFacts {
  const g: InitFacts = structuredClone(f);
  for (const a of actions) for (const p of filesOf(a, o)) g.exists[p.replace(/ \(.*$/, '')] = true;
  for (const d of ['rootfs', 'bootfs']) g.nonEmpty[join(root, d)] = true;
  g.dnsmasq = { running: true, enabled: true };
  g.packInputs = 'pack-hash';
  g.stageInputs = 'stage-hash';
  g.record = { pack: 'pack-hash', stage: 'stage-hash' };
  g.system = null; // gathered only when a template is to be made
  return g;
}

const kinds = (as: Action[]) => as.map((a) => (a.kind === 'publish' ? `publish ${a.name}` : a.kind));

describe('planInit', () => {
  test('a fresh machine: the whole list, in order', () => {
    const p = planInit(fresh(), o0);
    expect(p.problems).toEqual([]);
    expect(kinds(p.actions)).toEqual([
      'dirs',
      'keys',
      'table',
      'template',
      'bootfs',
      'publish rootfs',
      'publish bootfs',
      'pack',
      'stage',
      'dnsmasq',
    ]);
    expect(p.masterIp).toBe('192.168.2.254');
    expect(p.subnet).toBe('192.168.2.0/24');
    const t = p.actions.find((a) => a.kind === 'template');
    if (t?.kind !== 'template') throw new Error('no template action');
    expect(t.cleanup.exclude).toEqual(['root/.bash_history', 'srv/m']); // the prefix and its master tree too
    expect(t.copied.map((e) => e.path)).toEqual(['etc', 'etc/fstab', 'root', 'sbin', 'sbin/init', 'srv']);
    const b = p.actions.find((a) => a.kind === 'bootfs');
    if (b?.kind !== 'bootfs') throw new Error('no bootfs action');
    expect(b.copies.map((c) => c.to.slice(root.length + 1))).toEqual([
      'bootfs/fixup4.dat',
      'bootfs/start4.elf',
      'bootfs/overlays/a.dtbo',
      'bootfs/u-boot.bin',
    ]);
    const tab = p.actions.find((a) => a.kind === 'table');
    expect(tab?.kind === 'table' && tab.cardBytes).toBe(8e9); // the smallest card
  });

  test('a second plan on the result is empty', () => {
    const f = fresh();
    const p1 = planInit(f, o0);
    const p2 = planInit(after(f, p1.actions), o0);
    expect(p2.problems).toEqual([]);
    expect(p2.actions).toEqual([]);
  });

  test('--force: template, bootfs, table and first stage again, the keys kept', () => {
    const f = fresh();
    const done = after(f, planInit(f, o0).actions);
    done.system = f.system;
    const p = planInit(done, opts({ force: true }));
    expect(kinds(p.actions)).toEqual([
      'table',
      'template',
      'bootfs',
      'publish rootfs',
      'publish bootfs',
      'pack',
      'stage',
      'dnsmasq',
    ]);
    const t = p.actions.find((a) => a.kind === 'template');
    expect(t?.kind === 'template' && t.replace).toBe(true);
    expect(p.actions.some((a) => a.kind === 'keys')).toBe(false);
  });

  test('what changed decides: a new node list restages; a new agent or key repacks; dnsmasq down restarts', () => {
    const f = fresh();
    const done = after(f, planInit(f, o0).actions);
    expect(kinds(planInit({ ...done, stageInputs: 'other' }, o0).actions)).toEqual(['stage', 'dnsmasq']);
    expect(kinds(planInit({ ...done, packInputs: 'other' }, o0).actions)).toEqual(['pack', 'stage', 'dnsmasq']);
    expect(kinds(planInit({ ...done, dnsmasq: { running: false, enabled: true } }, o0).actions)).toEqual(['dnsmasq']);
    const gone = structuredClone(done);
    gone.exists[join(root, 'stamps/rootfs.stamp')] = false;
    expect(kinds(planInit(gone, o0).actions)).toEqual(['publish rootfs']);
    const key = structuredClone(done);
    key.exists[join(o0.keysDir, 'report_ed25519')] = false;
    expect(kinds(planInit(key, o0).actions)).toEqual(['keys', 'pack', 'stage', 'dnsmasq']);
  });

  test('systemd: enable and restart dnsmasq through it, start sshd', () => {
    const f = { ...fresh(), systemd: true, sshd: false };
    const p = planInit(f, o0);
    expect(kinds(p.actions).slice(-2)).toEqual(['dnsmasq', 'ssh']);
    expect(p.actions.at(-2)).toMatchObject({ kind: 'dnsmasq', how: 'systemd' });
    const done = { ...after(f, p.actions), sshd: true };
    expect(planInit(done, o0).actions).toEqual([]);
    expect(kinds(planInit({ ...done, dnsmasq: { running: true, enabled: false } }, o0).actions)).toEqual(['dnsmasq']);
  });

  test('no systemd and no sshd: a warning, not an action', () => {
    const p = planInit({ ...fresh(), sshd: false }, o0);
    expect(p.actions.some((a) => a.kind === 'ssh')).toBe(false);
    expect(p.warnings.join('\n')).toContain('start sshd yourself');
  });

  test('missing programs: apt installs them; --no-apt stops with what to install', () => {
    const f = fresh();
    f.programs[PROGRAMS.dnsmasq] = false;
    f.programs[PROGRAMS.rrsync] = false;
    f.exists['/bin/busybox'] = false;
    f.systemd = true;
    f.packages['openssh-server'] = null;
    const p = planInit(f, o0);
    expect(p.actions[0]).toEqual({ kind: 'apt', packages: ['busybox-static', 'dnsmasq', 'openssh-server', 'rsync'] });
    const q = planInit(f, opts({ apt: false }));
    expect(q.problems.join('\n')).toContain('apt-get install busybox-static dnsmasq openssh-server rsync');
    // the initramfs tools of another root are never apt's business
    const r = planInit(f, opts({ sysroot: '/srv/sysroot' }));
    expect(r.problems.join('\n')).toContain('the initramfs tools are not in /srv/sysroot');
  });

  test('bad inputs: every problem at once', () => {
    const f = fresh();
    f.nodesText = 'b8:27:eb:cb:63:18 rpinode01 10.0.0.1\nnot a line\n';
    f.firmware = null;
    f.uBoot = null;
    f.exists[o0.masterHostKey] = false;
    f.versions.rsync = 'rsync  version 3.0.9  protocol version 30';
    f.system = { entries: SYSTEM.filter((e) => e.path !== 'sbin/init'), texts: {} };
    const p = planInit(f, opts({ cardSizes: [512e6] }));
    const all = p.problems.join('\n');
    for (const s of [
      'outside the subnet',
      'line 2',
      'no Raspberry Pi boot firmware',
      'no U-Boot',
      'host key',
      'rsync 3.0.9 is older than 3.1',
      'too small',
      'has no /sbin/init',
    ])
      expect(all).toContain(s);
  });

  test('--dry-run lists every file: each copied template entry, the keys, the TFTP folder', () => {
    const p = planInit(fresh(), o0);
    const files = p.actions.flatMap((a) => filesOf(a, o0));
    for (const f of [
      join(root, 'rootfs/etc/fstab'),
      join(root, 'rootfs/sbin/init'),
      ...KEY_FILES.map((k) => join(o0.keysDir, k)),
      join(root, 'partitions.sfdisk'),
      join(root, 'bootfs/config.txt'),
      join(root, 'tftp/boot.scr.uimg'),
      join(root, 'stamps/rootfs.stamp'),
      o0.dnsmasqConf,
    ])
      expect(files).toContain(f);
    expect(files).toContain(
      `${join(root, 'rootfs/etc/fstab')} (rewritten: fstab without the /, /boot and /data lines)`,
    );
    expect(files.some((f) => f.includes('.bash_history'))).toBe(false);
    for (const a of p.actions) expect(describeAction(a).length).toBeGreaterThan(10);
  });
});

describe('the pieces', () => {
  test('the first table fits the smallest card and is valid for the agent', () => {
    for (const card of [2e9, 8e9, 16e9, 128e9]) {
      const t = cardTable(card);
      if (!('text' in t)) throw new Error(t.problem);
      const parsed = parseSfdiskDump(t.text);
      if (!parsed.ok) throw new Error(parsed.error);
      expect(parsed.table.labelId).toBe('0xc10b0070');
      expect(parsed.table.partitions.map((p) => [p.index, p.type, p.bootable])).toEqual([
        [1, 'c', true],
        [2, '83', false],
        [3, '83', false],
        [4, '83', false],
      ]);
      const sectors = Math.floor(card / 512);
      expect(validateTable(parsed.table, sectors)).toEqual([]);
      const [, p2, p3] = parsed.table.partitions;
      expect(p2?.size ?? 0).toBeGreaterThan(p3?.size ?? 0);
      expect(parsed.table.partitions.every((p) => p.start % 2048 === 0 && p.size % 2048 === 0)).toBe(true);
    }
    expect('problem' in cardTable(MIN_CARD_BYTES - 1)).toBe(true);
  });

  test('sizes as cards are sold', () => {
    expect(parseSize('16GB')).toBe(16e9);
    expect(parseSize('32G')).toBe(32e9);
    expect(parseSize('2GiB')).toBe(2 ** 31);
    expect(parseSize('15931539456')).toBe(15931539456);
    expect(parseSize('big')).toBe(null);
  });

  test("the master's address and subnet from the interface", () => {
    expect(addressOf(['10.77.0.1/24'], undefined)).toEqual({ ip: '10.77.0.1', subnet: '10.77.0.0/24' });
    expect(addressOf(['192.168.1.5/24', '10.77.0.1/16'], '10.77.0.0/16')).toEqual({
      ip: '10.77.0.1',
      subnet: '10.77.0.0/16',
    });
    expect('problem' in addressOf(['192.168.1.5/24', '10.77.0.1/16'], undefined)).toBe(true);
    expect('problem' in addressOf([], '10.0.0.0/8')).toBe(true);
  });

  test('versions: OpenSSH before restrict and an old dnsmasq fail, rsync before 3.5 warns', () => {
    expect(
      versionProblems({ rsync: 'rsync  version 3.2.7', dnsmasq: null, ssh: 'OpenSSH_9.2p1' }).warnings[0],
    ).toContain('3.5.0');
    const v = versionProblems({ rsync: null, dnsmasq: 'Dnsmasq version 2.79', ssh: 'OpenSSH_7.1p2' });
    expect(v.problems.join('\n')).toContain('OpenSSH 7.1 is older than 7.2');
    expect(v.problems.join('\n')).toContain('dnsmasq 2.79 is older than 2.80');
  });

  test("the kernel: the system's only vmlinuz with its modules", () => {
    expect(findKernel(['vmlinuz-6.1.0-arm64', 'config-6.1.0-arm64'], ['6.1.0-arm64'], '/')).toEqual({
      path: '/boot/vmlinuz-6.1.0-arm64',
      modules: '/lib/modules/6.1.0-arm64',
    });
    expect('problem' in findKernel(['vmlinuz-1', 'vmlinuz-2'], ['1', '2'], '/')).toBe(true);
    expect('problem' in findKernel([], ['6.6.51+rpt-rpi-v8'], '/')).toBe(true);
  });
});

// `builder doctor`'s verdicts (builder/master/doctor.ts), each from facts given here; the TFTP client against a
// small TFTP server in this process (options, the last empty block, block number rollover, errors, silence).
import { afterAll, describe, expect, test } from 'bun:test';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { crc32 } from 'node:zlib';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newStamp, renderStamp } from '../../../../agent/contract/stamp.ts';
import { scriptImage } from '../../../../agent/contract/uimage.ts';
import { checkMirror } from '../../../../builder/master/mirror.ts';
import {
  bootScriptProblem,
  checkDnsmasq,
  checkFreeSpace,
  checkInitramfsSize,
  checkKeyLine,
  checkKeyLines,
  checkKeyModes,
  checkReportKeyLine,
  checkRsyncVersion,
  checkSshRead,
  checkSshShell,
  checkSshWrite,
  checkStamp,
  checkTftp,
  checkTree,
  masterIpFromConf,
  renderDoctor,
  tftpGet,
  TFTP_CEILING,
  type EntryKind,
  type TftpResult,
  checkPrivateFiles,
  publicLeftovers,
  publicSecrets,
  checkMirrorServes,
} from '../../../../builder/master/doctor.ts';
import { parseKeyLine } from '../../../../builder/sshkeys.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx3Kk7tGl0o0b9p4HQq3HfS0W9vQe1J2j7m2h6H5c8x clusterboot-node';
const REPORT = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq1c2yq8m9Jm1w5vV3xk0H0dJ6Q3sYw2cW7n8Q1aZ9R clusterboot-report';
const ROOT = '/data/slaves';
const SLOT = '/var/lib/clusterboot/sync-slot 8 /var/lib/clusterboot/slots /usr/bin/rrsync -ro /data/slaves';
const line = (opts: string, key = KEY) => `${opts} ${key}`;

describe('checkKeyLine: exactly read-only rrsync of the master root, behind restrict', () => {
  test("stage's lines pass: plain rrsync, behind sync-slot, with from=", () => {
    const plain = checkKeyLine(line('restrict,from="10.77.0.0/24",command="/usr/bin/rrsync -ro /data/slaves"'), ROOT);
    expect(plain.level).toBe('ok');
    expect(plain.command).toEqual({ rrsync: '/usr/bin/rrsync', root: ROOT, syncSlot: null });
    const slot = checkKeyLine(line(`restrict,from="10.77.0.0/24",command="${SLOT}"`), ROOT);
    expect(slot.level).toBe('ok');
    expect(slot.detail).toContain('behind sync-slot (8 slots)');
    expect(slot.command?.syncSlot).toEqual({
      script: '/var/lib/clusterboot/sync-slot',
      slots: 8,
      slotsDir: '/var/lib/clusterboot/slots',
    });
    // a master root given with a trailing slash is the same root
    expect(checkKeyLine(line(`restrict,from="10.77.0.0/24",command="${SLOT}"`), '/data/slaves/').level).toBe('ok');
  });

  test('without from= it still passes, with a warning that the key works from anywhere', () => {
    const v = checkKeyLine(line('restrict,command="/usr/bin/rrsync -ro /data/slaves"'), ROOT);
    expect(v.level).toBe('warn');
    expect(v.detail).toContain('no from=');
  });

  const widened: Array<[string, string, string]> = [
    ['rrsync -wo', 'restrict,command="/usr/bin/rrsync -wo /data/slaves"', '`rrsync -wo`: the key can write'],
    ['no restrict', 'from="10.77.0.0/24",command="/usr/bin/rrsync -ro /data/slaves"', 'no `restrict`'],
    ['rrsync without -ro', 'restrict,command="/usr/bin/rrsync /data/slaves"', 'rrsync without -ro'],
    ['no-pty only', 'no-pty', 'no `restrict`'],
    ['no-pty only: and no command', 'no-pty', 'no forced command: the key gets a shell'],
    ['restrict, then pty', 'restrict,pty,command="/usr/bin/rrsync -ro /data/slaves"', '`pty` gives the key more'],
    ['port forwarding', 'restrict,permitopen="*:*",command="/usr/bin/rrsync -ro /data/slaves"', '`permitopen=…`'],
    [
      'environment',
      'restrict,environment="LD_PRELOAD=/x",command="/usr/bin/rrsync -ro /data/slaves"',
      '`environment=…`',
    ],
    ['a shell', 'restrict,command="/bin/sh"', 'not rrsync'],
    ['two commands chained', 'restrict,command="/usr/bin/rrsync -ro /data/slaves; sh"', 'not one of plain words'],
    ['another tree', 'restrict,command="/usr/bin/rrsync -ro /"', 'not the master root /data/slaves'],
    ['an rrsync option more', 'restrict,command="/usr/bin/rrsync -ro -no-lock /data/slaves"', 'is not `rrsync -ro'],
    [
      'sync-slot with a foreign slots folder',
      'restrict,command="/var/lib/clusterboot/sync-slot 8 /tmp /usr/bin/rrsync -ro /data/slaves"',
      'is not `sync-slot N',
    ],
    [
      'sync-slot in front of -wo',
      'restrict,command="/var/lib/clusterboot/sync-slot 8 /var/lib/clusterboot/slots /usr/bin/rrsync -wo /data/slaves"',
      '`rrsync -wo`',
    ],
    ['no options at all', '', 'no forced command'],
  ];
  for (const [what, opts, says] of widened)
    test(`fails: ${what}`, () => {
      const v = checkKeyLine(opts ? line(opts) : KEY, ROOT);
      expect(v.level).toBe('fail');
      expect(v.detail).toContain(says);
      expect(v.remedy).toContain('builder stage');
      expect(v.remedy).toContain('rrsync -ro /data/slaves');
    });

  test('not a key line at all', () => {
    expect(checkKeyLine('restrict,command="/usr/bin/rrsync -ro /data/slaves"', ROOT).level).toBe('fail');
    expect(checkKeyLine('restrict,,command="x" ' + KEY, ROOT).level).toBe('fail');
  });
});

describe('parseKeyLine: options as sshd splits them', () => {
  test('quoted values keep commas, spaces and escaped quotes', () => {
    const p = parseKeyLine(line('restrict,from="10.0.0.0/8,192.168.0.0/16",command="echo \\"a, b\\""'));
    expect(p?.options).toEqual([
      { name: 'restrict', value: null },
      { name: 'from', value: '10.0.0.0/8,192.168.0.0/16' },
      { name: 'command', value: 'echo "a, b"' },
    ]);
    expect(p?.type).toBe('ssh-ed25519');
    expect(p?.comment).toBe('clusterboot-node');
  });
  test('a bare key has no options; comments and blank lines are no key', () => {
    expect(parseKeyLine(KEY)?.options).toEqual([]);
    expect(parseKeyLine('# restrict ssh-ed25519 AAAA')).toBeNull();
    expect(parseKeyLine('   ')).toBeNull();
    expect(parseKeyLine('restrict,command="unterminated ' + KEY)).toBeNull();
  });
});

describe('checkKeyLines: every line of the key counts', () => {
  const blob = KEY.split(' ')[1] as string;
  const good = line(`restrict,from="10.77.0.0/24",command="${SLOT}"`);
  const check = (l: string) => checkKeyLine(l, ROOT);
  test('one good line passes and names its line number', () => {
    const v = checkKeyLines(
      `# keys\n${line('restrict,command="x"', REPORT)}\n${good}\n`,
      blob,
      '/root/.ssh/authorized_keys',
      'node key',
      check,
      'stage',
    );
    expect(v.level).toBe('ok');
    expect(v.detail).toContain('/root/.ssh/authorized_keys line 3');
  });
  test('a widened second line fails even after a good first one (sshd tries it when from= does not match)', () => {
    const text = `${good}\n${line('command="/usr/bin/rrsync -wo /data/slaves"')}\n`;
    const v = checkKeyLines(text, blob, '/root/.ssh/authorized_keys', 'node key', check, 'stage');
    expect(v.level).toBe('fail');
    expect(v.detail).toContain('line 2');
    expect(v.detail).toContain('2 lines for this key: 1, 2');
    expect(v.remedy).toContain('delete line 2 of /root/.ssh/authorized_keys');
  });
  test('no line for the key, or no file, fails with the stage remedy', () => {
    const none = checkKeyLines(`${line('restrict', REPORT)}\n`, blob, 'ak', 'node key', check, 'run builder stage');
    expect(none.level).toBe('fail');
    expect(none.detail).toContain('no line for the node key');
    expect(none.remedy).toBe('run builder stage');
    expect(checkKeyLines(null, blob, 'ak', 'node key', check, 'x').level).toBe('fail');
    expect(checkKeyLines('', null, 'ak', 'node key', check, 'x').level).toBe('fail');
  });
});

describe('checkReportKeyLine', () => {
  const sink =
    '/usr/bin/python3 -I /var/lib/clusterboot/report-sink /var/lib/clusterboot/reports nobody /var/lib/clusterboot/report-peers /var/lib/misc/dnsmasq.leases 260';
  test("the report sink passes; the older write-only rrsync warns; the node key's grant fails", () => {
    const v = checkReportKeyLine(line(`restrict,from="10.77.0.0/24",command="${sink}"`, REPORT), ROOT);
    expect(v.level).toBe('ok');
    expect(v.sink).toBe('/var/lib/clusterboot/report-sink');
    expect(v.detail).toContain('report sink into /var/lib/clusterboot/reports');
    // an older stage's sink wrote into the master root, which the node key reads: a warning that says so
    const inRoot = checkReportKeyLine(
      line(
        `restrict,from="10.77.0.0/24",command="${sink.replace('/var/lib/clusterboot/reports', '/data/slaves/reports')}"`,
        REPORT,
      ),
      ROOT,
    );
    expect(inRoot.level).toBe('warn');
    expect(inRoot.detail).toContain('which the node key (anyone with the initramfs) reads');
    // a sink writing anywhere else is not stage's
    expect(
      checkReportKeyLine(
        line(`restrict,command="${sink.replace('/var/lib/clusterboot/reports', '/etc')}"`, REPORT),
        ROOT,
      ).level,
    ).toBe('fail');
    const old = checkReportKeyLine(
      line('restrict,from="10.77.0.0/24",command="/usr/bin/rrsync -wo -no-lock -no-del /data/slaves/reports"', REPORT),
      ROOT,
    );
    expect(old.level).toBe('warn');
    expect(old.detail).toContain('older write-only rrsync');
    const widened = checkReportKeyLine(line(`restrict,from="10.77.0.0/24",command="${SLOT}"`, REPORT), ROOT);
    expect(widened.level).toBe('fail');
    expect(checkReportKeyLine(line(`command="${sink}"`, REPORT), ROOT).level).toBe('fail');
  });
});

describe('checkInitramfsSize: the firmware TFTP ceiling of 65535 blocks of 1 KiB', () => {
  test('the rule: a file fits when it is shorter than 65535 × 1024 bytes', () => {
    expect(TFTP_CEILING).toBe(67_107_839);
    expect(checkInitramfsSize(60_271_301).level).toBe('ok');
    expect(checkInitramfsSize(65535 * 1024 - 1).level).toBe('ok');
    // exactly 65535 full blocks needs a 65536th, empty, block to end the transfer
    expect(checkInitramfsSize(65535 * 1024).level).toBe('fail');
    const v = checkInitramfsSize(64 * 1048576);
    expect(v.level).toBe('fail');
    expect(v.detail).toContain('67108864 bytes (64.0 MiB) is over');
    expect(v.remedy).toContain('make the initramfs smaller');
    expect(checkInitramfsSize(65 * 1048576).level).toBe('fail');
  });
  test('no initramfs at all fails', () => {
    expect(checkInitramfsSize(null).remedy).toContain('builder pack');
  });
});

describe('checkStamp: parseStamp and the signature', () => {
  const stamp = renderStamp(newStamp('rootfs', 3, new Date('2026-11-25T09:00:00Z')));
  test('a stamp of `builder publish` passes, unsigned or signed', () => {
    const v = checkStamp('rootfs', stamp);
    expect(v.level).toBe('ok');
    expect(v.detail).toContain('3-20261125T090000Z');
    const k = generateKeyPairSync('ed25519');
    const pem = k.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const sig = sign(null, Buffer.from(stamp), k.privateKey).toString('base64');
    expect(checkStamp('rootfs', stamp, { sig, publicKeyPem: pem }).detail).toContain('signed and verified');
    const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const bad = checkStamp('rootfs', stamp, { sig, publicKeyPem: other, masterRoot: ROOT });
    expect(bad.level).toBe('fail');
    expect(bad.remedy).toBe('run `builder publish rootfs --master-root /data/slaves --sign <keys>/stamp_ed25519.pem`');
  });
  test('missing, garbage, the other name, a symlink: fail with `builder publish`', () => {
    const missing = checkStamp('rootfs', null, { masterRoot: ROOT });
    expect(missing.level).toBe('fail');
    expect(missing.detail).toContain('stamps/rootfs.stamp is missing');
    expect(missing.remedy).toContain('builder publish rootfs --master-root /data/slaves');
    expect(checkStamp('rootfs', 'hello\n').detail).toContain('not a clusterboot stamp');
    expect(checkStamp('bootfs', stamp).detail).toContain("names 'rootfs'");
    const link = checkStamp('rootfs', null, { unreadable: 'is a symbolic link' });
    expect(link.detail).toContain('is a symbolic link: nodes never fetch it');
  });
});

describe('checkPrivateFiles: what the node key reads is public', () => {
  test('a private key in nodes/<host>/files/ (by name or by its armour) is named; public files are not', () => {
    const root = mkdtempSync(join(tmpdir(), 'doctor-private-'));
    try {
      mkdirSync(join(root, 'nodes/n1/files/etc/ssh'), { recursive: true });
      mkdirSync(join(root, 'nodes/n2/files/etc'), { recursive: true });
      writeFileSync(join(root, 'nodes/n1/files/etc/ssh/ssh_host_ed25519_key'), 'x');
      writeFileSync(join(root, 'nodes/n1/files/etc/ssh/ssh_host_ed25519_key.pub'), 'ssh-ed25519 AAAA');
      writeFileSync(join(root, 'nodes/n2/files/etc/tls.pem'), '-----BEGIN EC PRIVATE KEY-----\nMHcC\n');
      writeFileSync(join(root, 'nodes/n2/files/etc/role'), 'storage\n');
      // nothing left from an older stage yet; then its nodes.list and reports/ are named
      expect(publicLeftovers(root)).toEqual([]);
      writeFileSync(join(root, 'nodes.list'), 'x\n');
      mkdirSync(join(root, 'reports'));
      expect(publicLeftovers(root)).toEqual(['nodes.list', 'reports']);
      const found = publicSecrets(root);
      expect(found).toEqual(['nodes/n1/files/etc/ssh/ssh_host_ed25519_key', 'nodes/n2/files/etc/tls.pem']);
      const v = checkPrivateFiles({ root, stateDir: '/var/lib/clusterboot', publicSecrets: found, enrolled: [] });
      expect(v.level).toBe('warn');
      expect(v.detail).toContain('nodes/n2/files/etc/tls.pem');
      expect(v.remedy).toContain('builder enrol <host>');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
  test('a state dir inside the master root fails: the node key would read the private files', () => {
    const v = checkPrivateFiles({
      root: '/data/slaves',
      stateDir: '/data/slaves/state',
      publicSecrets: [],
      enrolled: [],
    });
    expect(v.level).toBe('fail');
    const fine = checkPrivateFiles({
      root: '/data/slaves',
      stateDir: '/data/slaves-state',
      publicSecrets: [],
      enrolled: ['n1'],
    });
    expect(fine.level).toBe('ok');
    expect(fine.detail).toContain('1 node(s) enrolled');
  });
});

describe('checkRsyncVersion', () => {
  test('3.5.0 and later pass, 3.1..3.4 warn (the rrsync fix), older fails', () => {
    expect(checkRsyncVersion('rsync  version 3.5.0  protocol version 32').level).toBe('ok');
    expect(checkRsyncVersion('rsync  version v3.10.1  protocol version 33').level).toBe('ok');
    const w = checkRsyncVersion('rsync  version 3.2.7  protocol version 31');
    expect(w.level).toBe('warn');
    expect(w.detail).toContain('3.2.7');
    expect(w.remedy).toContain('3.5.0 or later');
    expect(checkRsyncVersion('rsync  version 3.1.0  protocol version 31').level).toBe('warn');
    expect(checkRsyncVersion('rsync  version 3.0.9  protocol version 30').level).toBe('fail');
    expect(checkRsyncVersion('openrsync: protocol version 29').level).toBe('fail');
    expect(checkRsyncVersion(null).remedy).toContain('apt install rsync');
  });
});

describe('checkKeyModes', () => {
  const facts = (over: Partial<Record<string, number | null>> = {}) => [
    { path: '/etc/clusterboot', kind: 'directory' as const, mode: over.dir ?? 0o40700, required: true },
    {
      path: '/etc/clusterboot/node_ed25519',
      kind: 'private key' as const,
      mode: 'node' in over ? (over.node ?? null) : 0o100600,
      required: true,
    },
    { path: '/etc/clusterboot/stamp_ed25519.pem', kind: 'private key' as const, mode: null, required: false },
    { path: '/root/.ssh/authorized_keys', kind: 'authorized_keys' as const, mode: over.ak ?? 0o100600, required: true },
  ];
  test('0600 keys, a 0700 folder and a 0600 authorized_keys pass; an absent optional key is skipped', () => {
    const v = checkKeyModes(facts());
    expect(v.level).toBe('ok');
    expect(v.detail).toBe('/etc/clusterboot 0700, node_ed25519 0600, authorized_keys 0600');
  });
  test('a readable private key, a writable authorized_keys or folder, a missing node key fail', () => {
    const k = checkKeyModes(facts({ node: 0o100644 }));
    expect(k.level).toBe('fail');
    expect(k.remedy).toBe('chmod 600 /etc/clusterboot/node_ed25519');
    expect(checkKeyModes(facts({ ak: 0o100664 })).remedy).toBe('chmod go-w /root/.ssh/authorized_keys');
    expect(checkKeyModes(facts({ dir: 0o40777 })).detail).toContain('others can write it');
    expect(checkKeyModes(facts({ node: null })).detail).toContain('node_ed25519 is missing');
  });
});

describe('checkFreeSpace', () => {
  const MiB = 1048576;
  const base = { root: ROOT, freeBytes: 10_000 * MiB, rootfsBytes: 2_000 * MiB, stageBytes: 100 * MiB };
  test('room for the template again passes; less warns; less than the next stage fails', () => {
    expect(checkFreeSpace(base).level).toBe('ok');
    expect(checkFreeSpace({ ...base, freeBytes: 1_000 * MiB }).level).toBe('warn');
    const f = checkFreeSpace({ ...base, freeBytes: 50 * MiB });
    expect(f.level).toBe('fail');
    expect(f.detail).toContain('less than 100.0 MiB');
    expect(checkFreeSpace({ ...base, stageBytes: 0, freeBytes: 60 * MiB }).detail).toContain('less than 64.0 MiB');
  });
  test('a full state dir leaves sync-slot without slot files', () => {
    const v = checkFreeSpace({ ...base, state: { dir: '/var/lib/clusterboot', freeBytes: 0, freeInodes: 0 } });
    expect(v.level).toBe('fail');
    expect(v.detail).toContain('sync-slot cannot create its slot files');
  });
});

describe('checkTree, checkDnsmasq, masterIpFromConf', () => {
  const all: Record<string, EntryKind> = {
    'partitions.sfdisk': 'file',
    bootfs: 'directory',
    rootfs: 'directory',
    'rootfs/sbin/init': 'symlink',
    stamps: 'directory',
    tftp: 'directory',
    'nodes.list': 'file',
    reports: 'directory',
  };
  test('the tree', () => {
    expect(checkTree(ROOT, all).level).toBe('ok');
    expect(checkTree(ROOT, { ...all, 'partitions.sfdisk': 'symlink' }).detail).toContain(
      'partitions.sfdisk is a symlink, not a file',
    );
    expect(checkTree(ROOT, { ...all, 'rootfs/sbin/init': 'missing' }).detail).toContain('fatal on every node');
    expect(checkTree(ROOT, { ...all, 'nodes.list': 'missing' }).level).toBe('warn');
  });
  const conf = [
    'interface=eth0',
    'dhcp-option=66,192.168.2.254',
    'enable-tftp',
    'tftp-root=/data/slaves/tftp',
    'dhcp-boot=boot.scr.uimg',
    '',
  ].join('\n');
  const f = {
    conf: '/etc/dnsmasq.d/clusterboot.conf',
    text: conf,
    tftpDir: '/data/slaves/tftp',
    masterIp: '192.168.2.254',
    pids: [42],
  };
  test('dnsmasq', () => {
    expect(masterIpFromConf(conf)).toBe('192.168.2.254');
    expect(masterIpFromConf(null)).toBeNull();
    expect(checkDnsmasq(f).level).toBe('ok');
    const down = checkDnsmasq({ ...f, pids: [] });
    expect(down.level).toBe('fail');
    expect(down.remedy).toContain('systemctl restart dnsmasq');
    expect(checkDnsmasq({ ...f, tftpDir: '/srv/tftp' }).detail).toContain('tftp-root=/data/slaves/tftp, not /srv/tftp');
    expect(checkDnsmasq({ ...f, masterIp: '10.0.0.1' }).detail).toContain('not 10.0.0.1');
    expect(checkDnsmasq({ ...f, text: null }).level).toBe('warn');
  });
});

describe('checkTftp and the boot script', () => {
  const o = { ip: '10.77.0.1', conf: '/etc/dnsmasq.d/clusterboot.conf', tftpDir: '/data/slaves/tftp' };
  const sha = 'a'.repeat(64);
  const got: TftpResult = { ok: true, bytes: 100, crc: 7, sha256: sha, ms: 10, blksize: 1468, data: null };
  test('no answer: dnsmasq is down, with the restart remedy', () => {
    const v = checkTftp('boot.scr.uimg', { ok: false, kind: 'timeout', message: 'no TFTP answer', bytes: 0 }, null, o);
    expect(v.level).toBe('fail');
    expect(v.detail).toContain('dnsmasq does not answer');
    expect(v.remedy).toContain('systemctl restart dnsmasq');
  });
  test("dnsmasq's error, and bytes other than the announced ones, fail", () => {
    const e = checkTftp('vmlinuz.gz', { ok: false, kind: 'server', message: 'file not found', bytes: 0 }, null, o);
    expect(e.detail).toContain('file not found');
    const want = { size: 100, sha256: sha, crc: 7, from: 'firststage.env' };
    expect(checkTftp('vmlinuz.gz', got, want, o).level).toBe('ok');
    const other = checkTftp('vmlinuz.gz', { ...got, sha256: 'b'.repeat(64) }, want, o);
    expect(other.level).toBe('fail');
    expect(other.detail).toContain('U-Boot on the nodes refuses it');
    expect(checkTftp('vmlinuz.gz', { ...got, bytes: 99 }, want, o).level).toBe('fail');
  });
  test('bootScriptProblem: a script image that announces the first stage', () => {
    const img = Buffer.from(
      scriptImage('echo "clusterboot: the master announces first stage 0123456789abcdef"\n', {
        arch: 'arm64',
        name: 'x',
      }),
    );
    expect(bootScriptProblem(img, '0123456789abcdef')).toBeNull();
    expect(bootScriptProblem(img, 'fedcba9876543210')).toContain('does not announce');
    expect(bootScriptProblem(Buffer.from('#!/bin/sh\n'.repeat(10)), null)).toContain('not a U-Boot image');
    const damaged = Buffer.from(img);
    damaged.writeUInt8(damaged.readUInt8(damaged.length - 3) ^ 1, damaged.length - 3);
    expect(bootScriptProblem(damaged, null)).toContain('data CRC');
  });
});

describe('the ssh verdicts', () => {
  const o = { ip: '10.77.0.1', port: 22, hostKey: '/etc/ssh/ssh_host_ed25519_key.pub' };
  const r = (status: number, stdout = '', stderr = '') => ({ status, stdout, stderr });
  test('read', () => {
    const listing =
      'drwxr-xr-x          4,096 2026/11/25 09:00:00 .\n-rw-r--r--            98 2026/11/25 09:00:00 rootfs.stamp\n';
    const v = checkSshRead(r(0, listing), { ...o, pinned: true });
    expect(v.level).toBe('ok');
    expect(v.detail).toContain('(rootfs.stamp), host key pinned');
    expect(checkSshRead(r(0, listing), { ...o, pinned: false }).level).toBe('warn');
    expect(
      checkSshRead(r(255, '', 'ssh: connect to host 10.77.0.1 port 22: Connection refused\r\n'), { ...o, pinned: true })
        .remedy,
    ).toContain('systemctl restart ssh');
    expect(
      checkSshRead(r(255, '', 'root@10.77.0.1: Permission denied (publickey).'), { ...o, pinned: true }).detail,
    ).toContain('refused the node key');
    expect(checkSshRead(r(255, '', 'Host key verification failed.'), { ...o, pinned: true }).detail).toContain(
      'another host key',
    );
    const wo = checkSshRead(
      r(
        12,
        '',
        '/usr/bin/rrsync error: reading from write-only server is not allowed\nrsync error: error in rsync protocol data stream (code 12)',
      ),
      { ...o, pinned: true },
    );
    expect(wo.detail).toContain('reading from write-only server is not allowed');
  });
  test('write', () => {
    const refused = checkSshWrite(r(1, '', '/usr/bin/rrsync error: sending to read-only server is not allowed'), {
      ...o,
      landed: false,
      probe: '/x',
    });
    expect(refused.level).toBe('ok');
    const landed = checkSshWrite(r(0), { ...o, landed: true, probe: '/data/slaves/.probe' });
    expect(landed.level).toBe('fail');
    expect(landed.detail).toContain('it wrote /data/slaves/.probe; removed again');
    expect(checkSshWrite(r(255, '', 'Connection refused'), { ...o, landed: false, probe: '/x' }).level).toBe('warn');
  });
  test('shell', () => {
    expect(checkSshShell(r(1, '', 'rrsync error: SSH_ORIGINAL_COMMAND does not run rsync'), 'TOKEN', o).level).toBe(
      'ok',
    );
    expect(checkSshShell(r(0, 'TOKEN\n'), 'TOKEN', o).level).toBe('fail');
    expect(checkSshShell(r(255, '', 'Connection refused'), 'TOKEN', o).level).toBe('warn');
  });
});

test('renderDoctor: one line per check, remedies on warn and FAIL, a summary', () => {
  const text = renderDoctor({
    checks: [
      { name: 'a', level: 'ok', detail: 'fine' },
      { name: 'b', level: 'warn', detail: 'hmm', remedy: 'look' },
      { name: 'c', level: 'fail', detail: 'broken', remedy: 'fix it' },
    ],
    ok: 1,
    warn: 1,
    fail: 1,
  });
  expect(text).toBe(
    'ok   a: fine\nwarn b: hmm; remedy: look\nFAIL c: broken; remedy: fix it\ndoctor: 3 checks: 1 ok, 1 warning, 1 failed\n',
  );
});

// ---- the TFTP client against a TFTP server in this process

/** A lock-step TFTP server for one file name; `drop` loses the first ACK it gets for that block. */
function tftpServer(
  files: Record<string, Buffer>,
  o: { silent?: boolean; noOptions?: boolean; dropAck?: number } = {},
) {
  const sockets: Socket[] = [];
  const main = createSocket('udp4');
  sockets.push(main);
  const ready = new Promise<number>((res) => main.bind(0, '127.0.0.1', () => res(main.address().port)));
  main.on('message', (msg, rinfo) => {
    if (o.silent) return;
    const parts = msg.subarray(2).toString('latin1').split('\0');
    const name = parts[0] ?? '';
    const t = createSocket('udp4');
    sockets.push(t);
    t.bind(0, '127.0.0.1', () => {
      const data = files[name];
      if (!data) {
        t.send(Buffer.concat([Buffer.from([0, 5, 0, 1]), Buffer.from('file not found\0')]), rinfo.port, rinfo.address);
        return;
      }
      let blksize = 512;
      for (let i = 2; i + 1 < parts.length; i += 2)
        if (parts[i] === 'blksize') blksize = Math.min(Number(parts[i + 1]), 1468);
      if (o.noOptions) blksize = 512;
      let block = 0;
      let dropped = false;
      const sendBlock = (n: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt16BE(3, 0);
        b.writeUInt16BE(n & 0xffff, 2);
        t.send(Buffer.concat([b, data.subarray((n - 1) * blksize, n * blksize)]), rinfo.port, rinfo.address);
      };
      const last = Math.floor(data.length / blksize) + 1;
      t.on('message', (ack) => {
        if (ack.readUInt16BE(0) !== 4 || ack.readUInt16BE(2) !== (block & 0xffff)) return;
        if (o.dropAck === block && !dropped) {
          dropped = true;
          return;
        }
        if (block === last) return;
        block++;
        sendBlock(block);
      });
      if (o.noOptions) {
        block = 1;
        sendBlock(1);
      } else
        t.send(Buffer.from(`\0\x06blksize\0${blksize}\0tsize\0${data.length}\0`, 'latin1'), rinfo.port, rinfo.address);
    });
  });
  return { ready, close: () => sockets.forEach((s) => s.close()) };
}

describe('tftpGet', () => {
  const servers: Array<{ close: () => void }> = [];
  afterAll(() => servers.forEach((s) => s.close()));
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  test('a file with blksize, one of an exact multiple of the block size (it ends with an empty block), none', async () => {
    const files = { a: bytes(100_000), b: bytes(1468 * 3), empty: Buffer.alloc(0) };
    const s = tftpServer(files);
    servers.push(s);
    const port = await s.ready;
    for (const [name, data] of Object.entries(files)) {
      const r = await tftpGet('127.0.0.1', name, { port, keep: 64 });
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      expect(r.bytes).toBe(data.length);
      expect(r.sha256).toBe(sha(data));
      expect(r.crc).toBe(crc32(data));
      expect(r.blksize).toBe(1468);
      expect(r.data?.equals(data.subarray(0, 64))).toBe(true);
    }
  });

  test('past block 65535: the block number rolls over to 0', async () => {
    const data = bytes(512 * 70_000 + 5);
    const s = tftpServer({ big: data }, { noOptions: true });
    servers.push(s);
    const r = await tftpGet('127.0.0.1', 'big', { port: await s.ready });
    expect(r.ok && r.bytes === data.length && r.sha256 === sha(data) && r.blksize === 512).toBe(true);
  }, 60_000);

  test('a lost ACK: the client sends it again after its timeout and the transfer goes on', async () => {
    const data = bytes(5000);
    const s = tftpServer({ f: data }, { dropAck: 2 });
    servers.push(s);
    const r = await tftpGet('127.0.0.1', 'f', { port: await s.ready, timeoutMs: 200 });
    expect(r.ok && r.sha256 === sha(data)).toBe(true);
  });

  test("the server's error, and a server that never answers", async () => {
    const s = tftpServer({});
    servers.push(s);
    const e = await tftpGet('127.0.0.1', 'nope', { port: await s.ready });
    expect(e).toMatchObject({ ok: false, kind: 'server' });
    expect(!e.ok && e.message).toContain('file not found (TFTP error 1)');
    const quiet = tftpServer({}, { silent: true });
    servers.push(quiet);
    const t0 = Date.now();
    const t = await tftpGet('127.0.0.1', 'x', { port: await quiet.ready, timeoutMs: 100, retries: 2 });
    expect(t).toMatchObject({ ok: false, kind: 'timeout' });
    expect(Date.now() - t0).toBeLessThan(20_000); // it gives up; it does not wait on a server that never answers
  });
});

// #19: `builder doctor --mirror-of` on a mirror: current, behind, a snapshot missing, the primary unreachable
describe('checkMirrorServes', () => {
  const st = (mirror: string | null, primary: string | null, whole = true) => ({
    name: 'rootfs' as const,
    mirror,
    primary,
    whole,
  });
  const pulled = JSON.stringify({ stamps: { rootfs: 'r1' }, pulled: '2026-12-06T06:00:00.000Z' });
  test('current: ok, with the ids and the last pull', () => {
    const v = checkMirrorServes({ states: [st('r1', 'r1')] }, pulled, '10.77.0.1');
    expect(v.level).toBe('ok');
    expect(v.detail).toBe(
      'serves what the primary 10.77.0.1 published: rootfs r1 (current); last pull 2026-12-06T06:00:00.000Z',
    );
  });
  test("behind: a warning that names both ids, the last pull's error, and the remedy (pull, the timer)", () => {
    const failed = JSON.stringify({
      stamps: {},
      pulled: 'T',
      error: 'mirror: the content pass failed (rsync exit 12)',
    });
    const v = checkMirrorServes({ states: [st('r1', 'r2')] }, failed, '10.77.0.1');
    expect(v.level).toBe('warn');
    expect(v.detail).toContain('behind the primary 10.77.0.1: rootfs r1, the primary has r2 (behind)');
    expect(v.detail).toContain('last pull T failed: mirror: the content pass failed (rsync exit 12)');
    expect(v.remedy).toContain('builder mirror --primary 10.77.0.1');
    expect(v.remedy).toContain('clusterboot-mirror.timer');
  });
  test('a stamp naming a snapshot the mirror lacks fails: nodes would be refused', () => {
    expect(checkMirrorServes({ states: [st('r1', 'r1', false)] }, null, 'p').level).toBe('fail');
  });
  test('the primary cannot be read: a warning that says so (not "behind"), and how to let the mirror in', () => {
    const v = checkMirrorServes({ error: "cannot read the primary's stamps (rsync exit 255): refused" }, '{{', 'p');
    expect(v.level).toBe('warn');
    expect(v.detail).toContain('cannot compare with the primary p: cannot read');
    expect(v.detail).toContain('its pull state is unreadable');
    expect(v.remedy).toContain('builder mirror --allow');
  });
  test("checkMirror throws when the primary's tree cannot be read, instead of calling the mirror behind", () => {
    const dir = mkdtempSync(join(tmpdir(), 'cb-doctor-mirror-'));
    try {
      expect(() => checkMirror({ source: join(dir, 'no-such-primary'), dest: dir })).toThrow(
        "cannot read the primary's stamps",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

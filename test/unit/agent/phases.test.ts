// The small decisions inside the phases: whose disk, which NIC, which master, what to load, where init is.
import { describe, expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { classifySshError } from '../../../agent/net/link.ts';
import { diskVerdict, findDisk, hasOurLabelId, LABEL_ID } from '../../../agent/plans/disk.ts';
import { resolveInRoot } from '../../../agent/plans/rootpath.ts';
import { askAgain, backoff, masterAttempts, nextAttempt } from '../../../agent/plans/masters.ts';
import { loaderFor, moduleBase, planModules } from '../../../agent/phases/modules.ts';
import { chooseInterface, chooseMasters, parseLease } from '../../../agent/phases/network.ts';
import { parseStat, pidsWithPidfd } from '../../../agent/sys/reaper.ts';
import { IFREQ_SIZE, ifreq } from '../../../agent/sys/libc.ts';
import { parseCmdline } from '../../../agent/cmdline.ts';
import { lookaheadResult, type Ctx, type Phase } from '../../../agent/phase.ts';
import { retryWaitS, startLookaheads } from '../../../agent/runner.ts';
import { PHASE_NAMES, SEQUENCE } from '../../../agent/sequence.ts';

describe('disk identity', () => {
  const base = { blank: false, hasTable: true, p1Files: null, serial: 'S1' };
  test('blank disks, our label-id and the marker make a disk ours', () => {
    expect(diskVerdict({ ...base, blank: true, hasTable: false })).toEqual({
      ours: true,
      why: 'blank disk',
      wipe: false,
    });
    expect(diskVerdict({ ...base, ourLabel: true }).ours).toBe(true);
    expect(diskVerdict({ ...base, p1Files: ['clusterboot.marker'] }).ours).toBe(true);
    expect(diskVerdict({ ...base, p1Files: ['config.txt', 'CLUSTERBOOT.MARKER'] }).ours).toBe(true);
  });
  test('boot firmware alone (any Raspberry Pi OS card) is not ours: refused, with adopt= and wipe= by serial', () => {
    for (const p1Files of [['bootcode.bin', 'CONFIG.TXT', 'cmdline.txt'], ['u-boot.bin'], ['config.txt']]) {
      const v = diskVerdict({ ...base, p1Files });
      expect(v.ours).toBe(false);
      if (!v.ours) {
        expect(v.why).toContain('boot firmware but no clusterboot marker');
        expect(v.remedy).toContain('adopt=S1');
        expect(v.remedy).toContain('wipe=S1');
      }
    }
  });
  test('adopt=<serial> takes that disk with its partitions (no wipe) and says it marks it; another serial does not', () => {
    const pios = { ...base, p1Files: ['config.txt', 'start4.elf'] };
    const v = diskVerdict({ ...pios, adopt: 'S1' });
    expect(v).toMatchObject({ ours: true, wipe: false, adopt: true });
    expect(v.why).toContain('adopt=S1');
    expect(diskVerdict({ ...pios, adopt: 'S2' }).ours).toBe(false);
    expect(diskVerdict({ ...pios, serial: '', adopt: '' }).ours).toBe(false);
    // no table: nothing to adopt (data at the start of a bare disk is never taken without wipe=)
    expect(diskVerdict({ ...base, hasTable: false, p1Files: null, adopt: 'S1' }).ours).toBe(false);
    // a disk that is already ours needs no adopting
    expect(diskVerdict({ ...pios, ourLabel: true, adopt: 'S1' })).toEqual({
      ours: true,
      why: 'clusterboot disk identifier in the table',
      wipe: false,
    });
  });
  test('any other disk is refused, unless wipe= names its serial exactly', () => {
    expect(diskVerdict({ ...base, p1Files: ['photos'] })).toMatchObject({
      ours: false,
      why: 'p1 holds neither the clusterboot marker nor boot firmware',
    });
    expect(diskVerdict({ ...base, hasTable: false, p1Files: null }).ours).toBe(false);
    expect(diskVerdict({ ...base, p1Files: ['photos'], wipe: 'S2' }).ours).toBe(false);
    expect(diskVerdict({ ...base, serial: '', p1Files: ['photos'], wipe: '' }).ours).toBe(false);
    const none = diskVerdict({ ...base, serial: '', p1Files: ['photos'] });
    if (!none.ours) expect(none.remedy).toContain('erase its first MiB by hand');
    expect(diskVerdict({ ...base, p1Files: ['photos'], wipe: 'S1' })).toEqual({
      ours: true,
      why: 'wipe=S1 names this disk',
      wipe: true,
    });
  });
  test('disk= by path, serial: or wwid: finds the one disk reporting it, wherever the kernel named it', () => {
    const disks = [
      { name: 'mmcblk0', serial: '0x1234abcd', wwid: null },
      { name: 'sda', serial: 'USB-SSD-77', wwid: 'naa.5000c500a1b2c3d4' },
      { name: 'loop0', serial: null, wwid: null },
    ];
    expect(findDisk('/dev/mmcblk1', disks)).toEqual({ device: '/dev/mmcblk1' });
    expect(findDisk('serial:USB-SSD-77', disks)).toEqual({ device: '/dev/sda' });
    expect(findDisk('serial:0x1234abcd', disks)).toEqual({ device: '/dev/mmcblk0' });
    expect(findDisk('wwid:naa.5000c500a1b2c3d4', disks)).toEqual({ device: '/dev/sda' });
    expect(findDisk('serial:USB-SSD-7', disks)).toBeNull();
    expect(findDisk('wwid:USB-SSD-77', disks)).toBeNull();
    const twice = findDisk('serial:X', [
      { name: 'sda', serial: 'X', wwid: null },
      { name: 'sdb', serial: 'X', wwid: null },
    ]);
    expect(twice && 'error' in twice && twice.error).toContain('sda and sdb both report serial X');
  });
  test('our label-id is recognised in dos and gpt dumps, and nothing else is', () => {
    expect(hasOurLabelId(`label: dos\nlabel-id: ${LABEL_ID.dos}\n`)).toBe(true);
    expect(hasOurLabelId(`label: gpt\nlabel-id: ${LABEL_ID.gpt}\n`)).toBe(true);
    expect(hasOurLabelId('label: dos\nlabel-id: 0x12345678\n')).toBe(false);
    expect(hasOurLabelId(null)).toBe(false);
  });
});

describe('network choices', () => {
  test('wired interfaces first, in a stable order; none when only lo', () => {
    expect(chooseInterface(['lo', 'wlan0', 'eth1', 'eth0'])).toBe('eth0');
    expect(chooseInterface(['lo', 'end0', 'wlan0'])).toBe('end0');
    expect(chooseInterface(['lo', 'usb0'])).toBe('usb0');
    expect(chooseInterface(['lo'])).toBeNull();
  });
  test('the udhcpc hook output parses into a lease', () => {
    const l = parseLease(
      'interface=eth0\nip=192.168.2.5\nmask=24\nrouter=192.168.2.254\nserverid=192.168.2.1\nhostname=rpinode05\ntftp=\nbogus\n',
    );
    expect(l).toMatchObject({
      interface: 'eth0',
      ip: '192.168.2.5',
      mask: '24',
      hostname: 'rpinode05',
      serverid: '192.168.2.1',
      tftp: '',
      masters: '',
    });
  });
  test('masterip= wins, then option 66, next-server, the DHCP server', () => {
    const l = parseLease('serverid=10.0.0.1\nsiaddr=10.0.0.2\ntftp=10.0.0.3\n');
    expect(chooseMasters('192.168.2.1', l)).toEqual({ hosts: ['192.168.2.1'], from: 'masterip=' });
    expect(chooseMasters(undefined, l)).toEqual({ hosts: ['10.0.0.3'], from: 'DHCP option 66' });
    expect(chooseMasters(undefined, parseLease('serverid=10.0.0.1\nsiaddr=0.0.0.0\n'))).toEqual({
      hosts: ['10.0.0.1'],
      from: 'DHCP server',
    });
    expect(chooseMasters(undefined, parseLease(''))).toBeNull();
  });
  test('a list of masters keeps its order, each once, from masterip= or a DHCP option', () => {
    const l = parseLease('serverid=10.0.0.1\ntftp=10.0.0.7,10.0.0.8 10.0.0.7\n');
    expect(chooseMasters('10.0.0.5,10.0.0.6,10.0.0.5', l)).toEqual({
      hosts: ['10.0.0.5', '10.0.0.6'],
      from: 'masterip=',
    });
    expect(chooseMasters(undefined, l)).toEqual({ hosts: ['10.0.0.7', '10.0.0.8'], from: 'DHCP option 66' });
  });
  test('the master list of option 224 (hex from udhcpc) comes before option 66; garbage there counts as none', () => {
    const hex = Buffer.from('10.0.0.7,10.0.0.1').toString('hex');
    const l = parseLease(`serverid=10.0.0.1\ntftp=10.0.0.1\nmasters=${hex}\n`);
    expect(l.masters).toBe('10.0.0.7,10.0.0.1');
    expect(chooseMasters(undefined, l)).toEqual({ hosts: ['10.0.0.7', '10.0.0.1'], from: 'DHCP option 224' });
    expect(chooseMasters('10.0.0.5', l)).toEqual({ hosts: ['10.0.0.5'], from: 'masterip=' });
    for (const bad of ['zz', '4', Buffer.from('a\nb').toString('hex'), Buffer.from('-oProxyCommand=x').toString('hex')])
      expect(chooseMasters(undefined, parseLease(`tftp=10.0.0.1\nmasters=${bad}\n`))?.from).toBe('DHCP option 66');
  });
  test('option 66 names only hosts and addresses ssh may take: an option-like or garbage entry is dropped', () => {
    const hostile = parseLease('serverid=10.0.0.1\ntftp=-oProxyCommand=sh,m1.lan,a b\n');
    expect(chooseMasters(undefined, hostile)).toEqual({ hosts: ['m1.lan', 'a', 'b'], from: 'DHCP option 66' });
    expect(chooseMasters(undefined, parseLease('serverid=10.0.0.1\ntftp=-oX\n'))).toEqual({
      hosts: ['10.0.0.1'],
      from: 'DHCP server',
    });
  });
  test("link up builds the kernel's struct ifreq: the name NUL-padded in 16 bytes, flags zero, 40 bytes in all", () => {
    const req = ifreq('eth0');
    expect(req.length).toBe(IFREQ_SIZE);
    expect([...req.subarray(0, 16)]).toEqual([...Buffer.from('eth0'), ...new Array(12).fill(0)]);
    expect(req.readUInt16LE(16)).toBe(0);
    expect(ifreq('enx0123456789ab').subarray(0, 16).toString('latin1')).toBe('enx0123456789ab\0');
  });
  test('an interface name the kernel cannot hold is refused before any ioctl', () => {
    expect(() => ifreq('')).toThrow('bad interface name');
    expect(() => ifreq('enx0123456789abc')).toThrow('bad interface name'); // 16 bytes: no room for the NUL
    expect(() => ifreq('eth\u00000')).toThrow('bad interface name');
  });
  test('master retries back off exponentially up to 30 s', () => {
    expect([0, 1, 2, 3, 4, 10].map(backoff)).toEqual([2, 4, 8, 16, 30, 30]);
  });
  test('each master is asked once per round, in order; only the first of a later round waits', () => {
    expect(masterAttempts(['a', 'b', 'c'], 2)).toEqual([
      { host: 'a', round: 0, waitS: 0 },
      { host: 'b', round: 0, waitS: 0 },
      { host: 'c', round: 0, waitS: 0 },
      { host: 'a', round: 1, waitS: 2 },
      { host: 'b', round: 1, waitS: 0 },
      { host: 'c', round: 1, waitS: 0 },
    ]);
    expect(masterAttempts(['m'], 3).map((a) => a.waitS)).toEqual([0, 2, 4]);
    expect(masterAttempts(['m'], 0)).toEqual([{ host: 'm', round: 0, waitS: 0 }]);
  });
  test('a master that did not answer is asked again; one that refused (host key, node key) is passed over', () => {
    expect([askAgain('down'), askAgain('refused')]).toEqual([true, false]);
  });
  test('a passed-over master is skipped, and its round wait goes to the next one asked', () => {
    const plan = masterAttempts(['a', 'b'], 3);
    const walk = (skip: Set<string>) => {
      const out: string[] = [];
      for (let n = nextAttempt(plan, 0, skip); n; n = nextAttempt(plan, n.index + 1, skip))
        out.push(`${n.attempt.host}${n.waitS ? `+${n.waitS}s` : ''}`);
      return out;
    };
    expect(walk(new Set())).toEqual(['a', 'b', 'a+2s', 'b', 'a+4s', 'b']);
    expect(walk(new Set(['a']))).toEqual(['b', 'b+2s', 'b+4s']);
    expect(walk(new Set(['a', 'b']))).toEqual([]);
  });
  test('after a failure the node waits retrywait= seconds before it reboots, doubled per further failure, at most 300', () => {
    expect([0, 1, 2, 3, 4, 9].map((a) => retryWaitS(15, a))).toEqual([15, 30, 60, 120, 240, 240]);
    expect([0, 1, 4].map((a) => retryWaitS(1, a))).toEqual([1, 2, 16]);
    expect(retryWaitS(300, 1)).toBe(300);
  });
  test('ssh failures are told apart: host key, refused key, master down', () => {
    expect(
      classifySshError('@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.').kind,
    ).toBe('hostkey');
    expect(classifySshError('root@10.0.2.2: Permission denied (publickey).').kind).toBe('auth');
    expect(classifySshError('ssh: connect to host 10.0.2.2 port 22: Connection refused').kind).toBe('down');
  });
});

describe('modules and handoff', () => {
  test('modules already present are skipped; order and comments are kept', () => {
    const list = '# packed\nkernel/lib/crc16.ko\nkernel/fs/ext4/ext4.ko\nkernel/fs/nls/nls_iso8859-1.ko.xz\n';
    expect(planModules(list, (n) => n === 'crc16')).toEqual({
      load: ['kernel/fs/ext4/ext4.ko', 'kernel/fs/nls/nls_iso8859-1.ko.xz'],
      skip: ['kernel/lib/crc16.ko'],
    });
    expect(moduleBase('kernel/fs/nls/nls_iso8859-1.ko.xz')).toBe('nls_iso8859_1');
  });
  test('a plain .ko is loaded by init_module from the agent; a compressed one goes through insmod', () => {
    expect(loaderFor('/lib/modules/6.1.0-50-arm64/kernel/fs/ext4/ext4.ko')).toBe('syscall');
    expect(loaderFor('kernel/fs/nls/nls_ascii.ko.xz')).toBe('insmod');
    expect(loaderFor('kernel/fs/nls/nls_ascii.ko.zst')).toBe('insmod');
    expect(loaderFor('kernel/drivers/x.ko.gz')).toBe('insmod');
  });
  test('init is found through symlinks inside the new root, never outside it', () => {
    const fsys: Record<string, string | null> = {
      '/r/sbin': 'usr/sbin',
      '/r/usr': null,
      '/r/usr/sbin': null,
      '/r/usr/sbin/init': '/lib/systemd/systemd',
      '/r/lib': null,
      '/r/lib/systemd': null,
      '/r/lib/systemd/systemd': null,
    };
    const lstat = (p: string) => (p in fsys ? { exists: true, link: fsys[p] ?? null } : { exists: false, link: null });
    expect(resolveInRoot('/r', '/sbin/init', lstat)).toBe('/lib/systemd/systemd');
    expect(resolveInRoot('/r', '/bin/init', lstat)).toBeNull();
    const loop = (p: string) => ({ exists: true, link: p.endsWith('/a') ? '/a' : null });
    expect(resolveInRoot('/r', '/a', loop)).toBeNull();
  });
});

describe('reaper', () => {
  test('/proc/<pid>/stat parses even with spaces and parens in the name', () => {
    expect(parseStat('1234 (ssh (mux) x) Z 1 1234 1234 0 -1')).toEqual({ state: 'Z', ppid: 1, cpuTicks: null });
    expect(parseStat('garbage')).toBeNull();
  });
  test('pids Bun holds a pidfd for are read from fdinfo', () => {
    expect(pidsWithPidfd(['pos:\t0\nflags:\t02000002\nPid:\t77\n', 'pos:\t0\n', 'Pid:\t78\nNSpid:\t78\n'])).toEqual(
      new Set([77, 78]),
    );
  });
});

describe('watchdog heartbeat for silent tools', () => {
  test('/proc/<pid>/io parses; progress is told only while the I/O count grows', async () => {
    const { ioBytes, ioHeartbeat } = await import('../../../agent/sys/fsutil.ts');
    expect(ioBytes('rchar: 5\nread_bytes: 4096\nwrite_bytes: 8192\n')).toBe(12288);
    expect(ioBytes('garbage')).toBeNull();
    const counts = [100, 100, 200, null];
    const told: string[] = [];
    const beat = ioHeartbeat(
      'mkfs /dev/vda2',
      () => counts.shift() ?? null,
      (w) => told.push(w),
    );
    for (let i = 0; i < 4; i++) beat(42);
    expect(told).toEqual(['mkfs /dev/vda2 busy', 'mkfs /dev/vda2 busy']);
  });

  test('/proc/<pid>/stat gives the CPU ticks (utime + stime), whatever the command name holds', () => {
    // fields 14 and 15 (utime 7, stime 5) after a name with a space and a ')'
    const line = '42 (e2fsck x) y) R 1 42 42 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 1 0 99 1000 10';
    expect(parseStat(line)).toEqual({ state: 'R', ppid: 1, cpuTicks: 12 });
    const own = parseStat(readFileSync('/proc/self/stat', 'utf8'));
    expect(own?.cpuTicks).toBeGreaterThan(0); // this test process has used some CPU
  });
});

describe('look-aheads', () => {
  const ctxWith = (cmdline = '') => ({ params: parseCmdline(cmdline, PHASE_NAMES).params, facts: {} }) as Ctx;
  const phase = (name: string, after?: string, work?: () => Promise<unknown>): Phase => ({
    name,
    needs: {},
    run: async () => undefined,
    ...(after && work ? { lookahead: { after, run: work } } : {}),
  });

  test('the disk is read while the network and the master are under way: its look-ahead starts once the modules are loaded', () => {
    expect(SEQUENCE.find((p) => p.name === 'disk')?.lookahead?.after).toBe('modules');
    // it starts before the phases that wait on the wire, so it can overlap them
    expect(PHASE_NAMES.indexOf('modules')).toBeLessThan(PHASE_NAMES.indexOf('network'));
  });
  test('a look-ahead starts only after its phase, and its phase gets that result, once', async () => {
    const ctx = ctxWith();
    let calls = 0;
    const later = [phase('b', 'a', async () => ++calls)];
    startLookaheads(later, 'x', ctx);
    expect(calls).toBe(0);
    startLookaheads(later, 'a', ctx);
    expect(calls).toBe(1);
    expect(await lookaheadResult(ctx, 'b', async () => -1)).toBe(1);
    // taken: a second ask does the work itself
    expect(await lookaheadResult(ctx, 'b', async () => -1)).toBe(-1);
  });
  test('with break= nothing is read ahead: the admin finds the disk as it was', async () => {
    const ctx = ctxWith('break=disk');
    let calls = 0;
    startLookaheads([phase('disk', 'modules', async () => ++calls)], 'modules', ctx);
    expect(calls).toBe(0);
    expect(await lookaheadResult(ctx, 'disk', async () => 'now')).toBe('now');
  });
  test('a failing look-ahead fails its own phase when awaited, not the boot before', async () => {
    const ctx = ctxWith();
    startLookaheads(
      [
        phase('disk', 'modules', async () => {
          throw new Error('disk /dev/sda did not appear');
        }),
      ],
      'modules',
      ctx,
    );
    await Bun.sleep(5); // an unhandled rejection would surface here
    await expect(lookaheadResult(ctx, 'disk', async () => 'now')).rejects.toThrow('did not appear');
  });
});

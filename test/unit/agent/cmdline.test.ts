import { describe, expect, test } from 'bun:test';
import { PARAM_DOCS, parseCmdline, tokenizeCmdline } from '../../../agent/cmdline.ts';
import type { Params } from '../../../agent/cmdline.ts';

const SEED =
  'bcm2708_fb.fbwidth=1280 bcm2708_fb.fbheight=800 bcm2708_fb.fbdepth=8 dwc_otg.lpm_enable=0 console=ttyAMA0,115200 ' +
  'kgdboc=ttyAMA0,115200 console=tty1 elevator=deadline root=/dev/mmcblk0p2 rootwait quiet ' +
  'smsc95xx.macaddr=b8:27:eb:00:00:01 aufs=disk masterip=192.168.2.1';
const PHASES = ['early', 'modules', 'network', 'partitions', 'sync', 'switch'] as const;

const DEFAULTS: Params = {
  masterUser: 'root',
  masterPort: 22,
  masterRoot: '',
  transport: 'ssh',
  overlay: 'disk',
  disk: '/dev/mmcblk0',
  diskTimeout: 30,
  modules: [],
  init: '/sbin/init',
  rescue: false,
  dryRun: false,
  rollback: false,
  reset: false,
  newIdentity: false,
  quiet: false,
  retries: 5,
  retryWait: 15,
  watchdog: 15,
  leds: 'gpiochip0:22,23,24',
};

function one(text: string, phases?: readonly string[]) {
  return parseCmdline(text, phases);
}

describe('tokenizeCmdline', () => {
  test('splits on any kernel whitespace and drops the trailing newline', () => {
    expect(tokenizeCmdline(' a=1\tb  c\n')).toEqual(['a=1', 'b', 'c']);
    expect(tokenizeCmdline('')).toEqual([]);
    expect(tokenizeCmdline(' \n\t ')).toEqual([]);
  });
  test('double quotes group and are removed', () => {
    expect(tokenizeCmdline('foo="a b" bar')).toEqual(['foo=a b', 'bar']);
    expect(tokenizeCmdline('"x y"=1 z')).toEqual(['x y=1', 'z']);
    expect(tokenizeCmdline('a="b c')).toEqual(['a=b c']); // unterminated: to the end
    expect(tokenizeCmdline('x="" y')).toEqual(['x=', 'y']);
  });
});

describe('parseCmdline', () => {
  test('empty line gives the defaults, no warnings', () => {
    const r = one('');
    expect(r.params).toEqual(DEFAULTS);
    expect(r.warnings).toEqual([]);
    expect(r.unknown).toEqual([]);
  });

  test("the seed's bootargs parse cleanly", () => {
    const r = one(SEED + '\n', PHASES);
    expect(r.warnings).toEqual([]);
    expect(r.unknown).toEqual([]);
    expect(r.params).toEqual({ ...DEFAULTS, master: '192.168.2.1', overlay: 'disk', quiet: true });
  });

  test('each parameter', () => {
    const r = one(
      [
        'master=master.lan',
        'masteruser=boot',
        'masterport=2222',
        'masterroot=rack1/node',
        'transport=rsyncd',
        'overlay=tmpfs',
        'disk=/dev/nvme0n1',
        'disktimeout=90',
        'wipe=0x1234abcd',
        'modules=dwc2,g_ether,usb-storage',
        'init=/lib/systemd/systemd',
        'rescue',
        'break=sync',
        'clusterboot.dryrun',
        'rollback',
        'clusterboot.reset',
        'newidentity',
        'quiet',
        'retries=0',
        'retrywait=2',
        'hostname=node-07',
        'ip=10.0.0.7::10.0.0.1:255.255.255.0:node-07:eth0:off',
        'syslog=10.0.0.1:5514',
        'watchdog=0',
        'leds=off',
        'clusterboot.hang=network',
      ].join(' '),
      PHASES,
    );
    expect(r.warnings).toEqual([]);
    expect(r.unknown).toEqual([]);
    expect(r.params).toEqual({
      master: 'master.lan',
      masterUser: 'boot',
      masterPort: 2222,
      masterRoot: 'rack1/node',
      transport: 'rsyncd',
      overlay: 'tmpfs',
      disk: '/dev/nvme0n1',
      diskTimeout: 90,
      wipe: '0x1234abcd',
      modules: ['dwc2', 'g_ether', 'usb-storage'],
      init: '/lib/systemd/systemd',
      rescue: true,
      break: 'sync',
      dryRun: true,
      rollback: true,
      reset: true,
      newIdentity: true,
      quiet: true,
      retries: 0,
      retryWait: 2,
      hostname: 'node-07',
      ip: '10.0.0.7::10.0.0.1:255.255.255.0:node-07:eth0:off',
      syslog: '10.0.0.1:5514',
      watchdog: 0,
      leds: 'off',
      debugHang: 'network',
    });
  });

  test('aliases and flag values', () => {
    expect(one('dryrun reset').params).toMatchObject({ dryRun: true, reset: true });
    expect(one('rescue=1 rollback=yes quiet=0').params).toMatchObject({ rescue: true, rollback: true, quiet: false });
    expect(one('aufs=none').params.overlay).toBe('none');
    expect(one('ip=dhcp').params.ip).toBe('dhcp');
    expect(one('masterip=fd00::1').params.master).toBe('fd00::1');
    expect(one('masterip=10.0.0.1,10.0.0.2,10.0.0.1').params.master).toBe('10.0.0.1,10.0.0.2');
    expect(one('master=m1.lan,10.0.0.9').params.master).toBe('m1.lan,10.0.0.9');
    expect(one('syslog=[fd00::1]:514 leds=gpiochip1:5').params).toMatchObject({
      syslog: '[fd00::1]:514',
      leds: 'gpiochip1:5',
    });
    expect(one('modules=').params.modules).toEqual([]);
  });

  test('later occurrences override earlier ones', () => {
    expect(one('aufs=tmpfs aufs=disk overlay=none').params.overlay).toBe('none');
    expect(one('masterip=10.0.0.1 master=m2').params.master).toBe('m2');
    expect(one('rescue rescue=0').params.rescue).toBe(false);
    expect(one('modules=a,b modules=c').params.modules).toEqual(['c']);
  });

  test('malformed values keep the default and say so', () => {
    const cases: [string, Partial<Params>, string][] = [
      ['aufs=bogus', { overlay: 'disk' }, 'aufs=bogus: expected disk|tmpfs|none; using disk'],
      ['retries=abc', { retries: 5 }, 'retries=abc: expected an integer 0..100; using 5'],
      ['retrywait=0', { retryWait: 15 }, 'retrywait=0: expected an integer 1..300; using 15'],
      ['masterport=99999', { masterPort: 22 }, 'masterport=99999: expected a port 1..65535; using 22'],
      ['masterport=0', { masterPort: 22 }, 'masterport=0: expected a port 1..65535; using 22'],
      ['transport=ftp', { transport: 'ssh' }, 'transport=ftp: expected ssh|rsyncd; using ssh'],
      [
        'disk=sda',
        { disk: '/dev/mmcblk0' },
        'disk=sda: expected a /dev/... block device path, serial:<serial> or wwid:<wwid>; using /dev/mmcblk0',
      ],
      [
        'disk=serial:',
        { disk: '/dev/mmcblk0' },
        'disk=serial:: expected a /dev/... block device path, serial:<serial> or wwid:<wwid>; using /dev/mmcblk0',
      ],
      ['disktimeout=-1', { diskTimeout: 30 }, 'disktimeout=-1: expected seconds 0..3600; using 30'],
      ['watchdog=1.5', { watchdog: 15 }, 'watchdog=1.5: expected seconds 0..3600 (0 disables); using 15'],
      [
        'leds=blue',
        { leds: 'gpiochip0:22,23,24' },
        'leds=blue: expected off or gpiochipN:line[,line...]; using gpiochip0:22,23,24',
      ],
      [
        'masterip=999.1.1.1',
        {},
        'masterip=999.1.1.1: expected an IP address, or a comma-separated list of up to 8; using unset',
      ],
      ['masterroot=../etc', { masterRoot: '' }, `masterroot=../etc: expected a path without ".."; using ''`],
      ['init=sbin/init', { init: '/sbin/init' }, 'init=sbin/init: expected an absolute path; using /sbin/init'],
      ['rescue=maybe', { rescue: false }, 'rescue=maybe: expected a bare flag or rescue=0|1; using false'],
      ['hostname=-bad-', {}, 'hostname=-bad-: expected a host name (letters, digits, "-", dots); using unset'],
      ['syslog=host:0', {}, 'syslog=host:0: expected host[:port]; using unset'],
      ['modules=ok,b@d', { modules: [] }, 'modules=ok,b@d: expected comma-separated module names; using none'],
      ['masterip', {}, 'masterip: expected an IP address, or a comma-separated list of up to 8; using unset'],
      ['ip=bogus', {}, 'ip=bogus: expected dhcp or client:server:gw:netmask:host:dev:autoconf; using unset'],
    ];
    for (const [line, params, warning] of cases) {
      const r = one(line, PHASES);
      expect(r.warnings).toEqual([warning]);
      expect(r.unknown).toEqual([]);
      expect(r.params).toEqual({ ...DEFAULTS, ...params });
    }
  });

  test('a bad value after a good one keeps the good one', () => {
    const r = one('retries=3 retries=x');
    expect(r.params.retries).toBe(3);
    expect(r.warnings).toEqual(['retries=x: expected an integer 0..100; using 3']);
  });

  test('break= and clusterboot.hang= are checked against the phase list', () => {
    const bad = one('break=nosuchphase', PHASES);
    expect(bad.params.break).toBeUndefined();
    expect(bad.warnings).toEqual([
      'break=nosuchphase: expected break=<phase> with phase one of early|modules|network|partitions|sync|switch; using unset',
    ]);
    expect(one('clusterboot.hang=nope', PHASES).warnings[0]).toStartWith('clusterboot.hang=nope: expected');
    expect(one('break=anything').params.break).toBe('anything'); // no list given: any name
    expect(one('break', PHASES).warnings).toHaveLength(1);
  });

  test('kernel-owned and dotted parameters are accepted silently; others are unknown', () => {
    const r = one(
      'console=ttyS0,115200 root=/dev/nfs rootwait panic=10 loglevel=7 earlycon rw ro net.ifnames=0 ' +
        'smsc95xx.macaddr=b8:27:eb:00:00:02 dwc_otg.lpm_enable=0 bcm2708_fb.fbwidth=1 8250.nr_uarts=1 ' +
        'frobnicate=1 clusterboot.nosuch=1 plainflag',
    );
    expect(r.warnings).toEqual([]);
    expect(r.unknown).toEqual(['frobnicate=1', 'clusterboot.nosuch=1', 'plainflag']);
    expect(r.params).toEqual(DEFAULTS);
  });

  test('quoted values', () => {
    const r = one('masterroot="rack 1" wipe="SN 42" "hostname=n1"');
    expect(r.params.masterRoot).toBe(DEFAULTS.masterRoot); // a space is not allowed in a path prefix
    expect(r.warnings).toHaveLength(1);
    expect(r.params.wipe).toBe('SN 42'); // a serial may contain spaces
    expect(r.params.hostname).toBe('n1');
  });

  test('everything after -- belongs to init', () => {
    const r = one('aufs=tmpfs -- aufs=none single');
    expect(r.params.overlay).toBe('tmpfs');
    expect(r.unknown).toEqual([]);
  });

  test('control bytes are escaped in messages', () => {
    const r = one('aufs=\x1b[31m frob\x07');
    expect(r.warnings).toEqual(['aufs=\\x1b[31m: expected disk|tmpfs|none; using disk']);
    expect(r.unknown).toEqual(['frob\\x07']);
  });

  test('disk= by serial or WWID, and adopt=<serial>, are taken as given', () => {
    expect(one('disk=serial:USB-SSD-77 adopt=0x1234abcd', PHASES).params).toMatchObject({
      disk: 'serial:USB-SSD-77',
      adopt: '0x1234abcd',
    });
    expect(one('disk=wwid:naa.5000c500a1b2c3d4', PHASES).params.disk).toBe('wwid:naa.5000c500a1b2c3d4');
    expect(one('adopt=', PHASES).warnings).toEqual(['adopt=: expected adopt=<disk serial>; using unset']);
  });

  test('PARAM_DOCS has one row per Params field', () => {
    expect(PARAM_DOCS).toHaveLength(33);
    for (const row of PARAM_DOCS) {
      for (const v of [row.name, row.values, row.default, row.meaning]) expect(v.length).toBeGreaterThan(0);
    }
  });

  test('property: 2000 random lines never throw and always give well-typed params', () => {
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pieces = [
      'aufs=',
      'overlay=',
      'masterip=',
      'master=',
      'masterport=',
      'retries=',
      'watchdog=',
      'leds=',
      'break=',
      'clusterboot.hang=',
      'modules=',
      'rescue',
      'quiet',
      'init=',
      'disk=',
      '"',
      ' ',
      '=',
      ',',
      '.',
      ':',
      '--',
      'disk',
      'tmpfs',
      '65535',
      '99999',
      '-1',
      '\u0000',
      '\n',
      '\u00e9',
      '\ud800',
      'gpiochip0:',
      'clusterboot.',
    ];
    for (let i = 0; i < 2000; i++) {
      let s = '';
      const len = rand(40);
      for (let j = 0; j < len; j++) {
        s += rand(2) === 0 ? String.fromCharCode(rand(256)) : (pieces[rand(pieces.length)] ?? '');
      }
      const r = parseCmdline(s, rand(2) === 0 ? PHASES : undefined);
      const p = r.params;
      expect(Array.isArray(r.warnings) && Array.isArray(r.unknown)).toBe(true);
      expect(['disk', 'tmpfs', 'none']).toContain(p.overlay);
      expect(['ssh', 'rsyncd']).toContain(p.transport);
      for (const n of [p.masterPort, p.diskTimeout, p.retries, p.watchdog]) expect(Number.isInteger(n)).toBe(true);
      expect(p.masterPort).toBeGreaterThanOrEqual(1);
      expect(p.masterPort).toBeLessThanOrEqual(65535);
      for (const v of [p.masterUser, p.masterRoot, p.disk, p.init, p.leds]) expect(typeof v).toBe('string');
      for (const b of [p.rescue, p.dryRun, p.rollback, p.reset, p.quiet]) expect(typeof b).toBe('boolean');
      expect(Array.isArray(p.modules) && p.modules.every((m) => typeof m === 'string')).toBe(true);
      for (const o of [p.master, p.wipe, p.break, p.hostname, p.ip, p.syslog, p.debugHang])
        expect(o === undefined || typeof o === 'string').toBe(true);
    }
  });
});

describe('button=', () => {
  test('a chip and line are kept; a malformed value keeps the button off and says so', () => {
    expect(parseCmdline('button=gpiochip0:27').params.button).toBe('gpiochip0:27');
    const bad = parseCmdline('button=gpiochip0:banana');
    expect(bad.params.button).toBeUndefined();
    expect(bad.warnings.length).toBe(1);
  });
});

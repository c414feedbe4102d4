// Property 3: parseCmdline survives any text and keeps every parameter in range (runner.ts: seeds, replay).
import { describe } from 'bun:test';
import { parseCmdline, tokenizeCmdline, type Params } from '../../../agent/cmdline.ts';
import { PARAM_CASES, type ParamName } from '../../fixtures/tables.ts';
import { must, propertyRunner, type Rng } from './runner.ts';

const property = propertyRunner(import.meta.path);

const CMD_DEFAULTS = parseCmdline('').params;
const r0Phases = [
  'early',
  'modules',
  'network',
  'master',
  'disk',
  'partitions',
  'bootfs',
  'root',
  'overlay',
  'identity',
  'handoff',
] as const;

function randomCmdline(r: Rng): string {
  const pieces: string[] = [];
  const alphabet = [
    'a',
    'z',
    '=',
    '=',
    '"',
    '"',
    ' ',
    ' ',
    '\t',
    '\n',
    '\r',
    '\v',
    '\f',
    '.',
    ',',
    ':',
    '/',
    '-',
    '_',
    '0',
    '9',
    '\\',
    "'",
    '\u0000',
    '\u0007',
    '\u001b',
    '\u007f',
    '\u0085',
    '\u00a0',
    '\u00e9',
    '\u200b',
    '\u202e',
    '\ud83d\ude00',
    '\ufeff',
    '\ufffd',
    '\ud800',
  ];
  const keys = [
    'disk',
    'watchdog',
    'retries',
    'leds',
    'masterip',
    'master',
    'aufs',
    'overlay',
    'init',
    'modules',
    'break',
    'syslog',
    'button',
    'ip',
    'hostname',
    'wipe',
    'masterroot',
    'rescue',
    'clusterboot.hang',
    '--',
    'console',
    'root',
    'clusterboot',
    'foo.bar',
  ];
  for (let n = r.int(40); n > 0; n--) {
    switch (r.int(6)) {
      case 0:
        pieces.push(r.string(alphabet.join(''), 30));
        break;
      case 1:
        pieces.push(`${r.pick(keys)}=${r.string(alphabet.join(''), 20)}`);
        break;
      case 2:
        pieces.push('='.repeat(r.between(1, 50)));
        break;
      case 3:
        pieces.push(`${r.pick(keys)}="${r.string(alphabet.join(''), 10)}`);
        break;
      case 4:
        pieces.push(r.pick(alphabet).repeat(r.between(1, 300)));
        break;
      default:
        pieces.push(r.pick(keys));
        break;
    }
  }
  let s = pieces.join(r.pick([' ', '  ', '\t', '', '\n']));
  if (r.chance(0.02)) s = s.repeat(60); // very long
  return s;
}

const CONSOLE_UNSAFE = /[\u0000-\u001f\u007f-\u009f]/;

function checkParamsInRange(p: Params): void {
  must(
    Number.isInteger(p.masterPort) && p.masterPort >= 1 && p.masterPort <= 65535,
    `masterPort ${p.masterPort} in 1..65535`,
  );
  must(Number.isInteger(p.retries) && p.retries >= 0 && p.retries <= 100, `retries ${p.retries} in 0..100`);
  must(Number.isInteger(p.watchdog) && p.watchdog >= 0 && p.watchdog <= 3600, `watchdog ${p.watchdog} in 0..3600`);
  must(
    Number.isInteger(p.diskTimeout) && p.diskTimeout >= 0 && p.diskTimeout <= 3600,
    `disktimeout ${p.diskTimeout} in 0..3600`,
  );
  must(
    /^\/dev\/[A-Za-z0-9._:/-]+$/.test(p.disk) && !p.disk.split('/').includes('..'),
    `disk ${JSON.stringify(p.disk)} is a /dev path`,
  );
  must(
    p.leds === 'off' || /^gpiochip[0-9]{1,3}:[0-9]{1,4}(,[0-9]{1,4})*$/.test(p.leds),
    `leds ${JSON.stringify(p.leds)}`,
  );
  must(['disk', 'tmpfs', 'none'].includes(p.overlay), `overlay ${p.overlay}`);
  must(['ssh', 'rsyncd'].includes(p.transport), `transport ${p.transport}`);
  must(
    p.init.startsWith('/') && !/[\u0000-\u0020\u007f]/.test(p.init),
    `init ${JSON.stringify(p.init)} is an absolute path without blanks or C0 controls`,
  );
  must(
    p.modules.every((m) => /^[A-Za-z0-9_-]{1,64}$/.test(m)),
    'modules are module names',
  );
  must(!p.masterRoot.split('/').includes('..'), 'masterroot has no ..');
  for (const f of ['rescue', 'dryRun', 'rollback', 'reset', 'quiet'] as const)
    must(typeof p[f] === 'boolean', `${f} is a boolean`);
}

interface CmdToken {
  kind: 'valid' | 'bad' | 'bare' | 'unknown' | 'module' | 'kernel';
  param?: ParamName;
  value?: string;
  text: string; // the token as the kernel hands it over (quotes removed)
  raw: string; // as written on the command line
}

function genToken(r: Rng): CmdToken {
  const k = r.int(10);
  const quote = (name: string, value: string): string => {
    const q = r.int(4);
    return q === 0 ? `"${name}=${value}"` : q === 1 ? `${name}="${value}"` : `${name}=${value}`;
  };
  if (k <= 4) {
    const param = r.pick(Object.keys(PARAM_CASES) as ParamName[]);
    const c = PARAM_CASES[param];
    if (k === 4) return { kind: 'bare', param, text: param, raw: param };
    const good = k <= 1;
    const value = good ? r.pick(c.valid) : r.pick(c.bad);
    return { kind: good ? 'valid' : 'bad', param, value, text: `${param}=${value}`, raw: quote(param, value) };
  }
  if (k <= 6) {
    const name = r.chance(0.2)
      ? `clusterboot.${r.string('abcxyz', 6) || 'q'}`
      : `zz${r.string('abcdefghijklmnopqrstuvwxyz0123456789_-', 12)}`;
    if (r.chance(0.4)) return { kind: 'unknown', text: name, raw: name };
    const value = r.string('abc123=,:/-_', 20) + (r.chance(0.2) ? ' spaced' : '');
    return {
      kind: 'unknown',
      text: `${name}=${value}`,
      raw: value.includes(' ') ? `${name}="${value}"` : quote(name, value),
    };
  }
  if (k === 7) {
    const t = `${r.pick(['smsc95xx', 'dwc_otg', 'bcm2708_fb', 'usbcore'])}.${r.pick(['lpm_enable', 'macaddr', 'fbwidth'])}=${r.string('0123456789:ab', 17)}`;
    return { kind: 'module', text: t, raw: t };
  }
  const t = r.pick([
    'console=ttyAMA0,115200',
    'console=tty1',
    'root=/dev/mmcblk0p2',
    'rootwait',
    'elevator=deadline',
    'panic=10',
    'loglevel=3',
    'rw',
    'kgdboc=ttyAMA0,115200',
  ]);
  return { kind: 'kernel', text: t, raw: t };
}

describe('property 3: parseCmdline', () => {
  property(
    'parseCmdline never throws on random text, keeps every parameter in range, and prints only console-safe text',
    (r) => ({ text: randomCmdline(r) }),
    ({ text }) => {
      const res = parseCmdline(text, r0Phases);
      checkParamsInRange(res.params);
      for (const u of res.unknown)
        must(
          !CONSOLE_UNSAFE.test(u) && u.length <= 80,
          `unknown entry is console-safe and at most 80 chars: ${JSON.stringify(u)}`,
        );
      must(
        res.warnings.every((w) => typeof w === 'string' && w.length > 0),
        'warnings are text',
      );
      // tokens after a lone -- are init's arguments: they change nothing
      const cut = parseCmdline(`${text} -- disk=/dev/sdz watchdog=99 zzafter`, r0Phases);
      // (only when the text closes its quotes: an open quote would swallow the appended words)
      if (!tokenizeCmdline(text).includes('--') && (text.match(/"/g) ?? []).length % 2 === 0) {
        must(
          cut.params.disk === res.params.disk && cut.params.watchdog === res.params.watchdog,
          'after --: no parameter changes',
        );
        must(
          JSON.stringify(cut.unknown) === JSON.stringify(res.unknown) && cut.warnings.length === res.warnings.length,
          'after --: nothing unknown or warned',
        );
      }
    },
  );

  // Found by this file and fixed in cmdline.ts: masterroot= and init= accepted C1 controls (U+0080..U+009F,
  // e.g. U+009B, the 8-bit CSI), and a later bad value echoed the value in effect unescaped.
  property(
    'every warning is console-safe (no C0/C1 control characters)',
    (r) => ({
      text: r.chance(0.5)
        ? randomCmdline(r)
        : `${r.pick(['masterroot', 'init'])}=${r.pick(['a', '/sbin/'])}${r.pick(['\u0085', '\u009b', '\u0090'])}x ${r.pick(['masterroot=/a/../b', 'init=rel'])}`,
    }),
    ({ text }) => {
      for (const w of parseCmdline(text, r0Phases).warnings)
        must(!CONSOLE_UNSAFE.test(w), `warning is console-safe: ${JSON.stringify(w)}`);
    },
  );

  property(
    'unknown parameters go to unknown; malformed disk=/watchdog=/retries=/leds= warn and keep the value in effect',
    (r) => {
      const tokens = Array.from({ length: r.int(14) }, () => genToken(r));
      return { tokens, text: tokens.map((t) => t.raw).join(r.pick([' ', '  ', '\t', ' \n '])) };
    },
    ({ tokens, text }) => {
      must(
        JSON.stringify(tokenizeCmdline(text)) === JSON.stringify(tokens.map((t) => t.text)),
        'the kernel tokenization (quotes removed)',
      );
      const res = parseCmdline(text);
      // unknown: exactly the unknown tokens, in order; module.param and kernel-owned ones are silent
      const unknown = tokens.filter((t) => t.kind === 'unknown').map((t) => t.text);
      must(
        JSON.stringify(res.unknown) === JSON.stringify(unknown),
        `unknown = ${JSON.stringify(unknown)} (got ${JSON.stringify(res.unknown)})`,
      );
      // one warning per malformed token, naming it
      const bad = tokens.filter((t) => t.kind === 'bad' || t.kind === 'bare');
      must(res.warnings.length === bad.length, `${bad.length} warnings (got ${JSON.stringify(res.warnings)})`);
      bad.forEach((t, i) =>
        must(
          (res.warnings[i] ?? '').startsWith(`${t.param}${t.kind === 'bare' ? ':' : '='}`),
          `warning ${i} names ${t.param}`,
        ),
      );
      // each parameter: the last valid value given, else the default
      for (const param of Object.keys(PARAM_CASES) as ParamName[]) {
        const field = PARAM_CASES[param].field;
        const last = tokens.filter((t) => t.param === param && t.kind === 'valid').pop();
        const want =
          last === undefined
            ? CMD_DEFAULTS[field]
            : field === 'disk' || field === 'leds'
              ? last.value
              : Number(last.value);
        must(
          res.params[field] === want,
          `${param}: ${JSON.stringify(want)} (got ${JSON.stringify(res.params[field])})`,
        );
      }
      // everything else stays at its default
      for (const [k, v] of Object.entries(CMD_DEFAULTS)) {
        if (k in PARAM_CASES) continue;
        must(JSON.stringify(res.params[k as keyof Params]) === JSON.stringify(v), `${k} stays at its default`);
      }
    },
    {
      classify: ({ tokens }) => [...new Set(tokens.map((t) => t.kind))],
      cover: { valid: 1000, bad: 1000, bare: 500, unknown: 1000, module: 500, kernel: 500 },
    },
  );
});

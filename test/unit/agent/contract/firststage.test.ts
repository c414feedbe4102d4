// The first-stage contract: announcement and cache record round trips, CRC byte order, and the U-Boot scripts.
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 } from '../../../../agent/contract/crc32.ts';
import {
  type Announcement,
  bootargsProblem,
  type CacheRecord,
  cachedFrom,
  isStageId,
  parseAnnouncement,
  parseRecord,
  parseTries,
  renderAnnouncement,
  fallbackInScript,
  renderLocalScript,
  renderNetScript,
  renderRecord,
  stageFile,
  stageId,
  swappedCrc,
} from '../../../../agent/contract/firststage.ts';

const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed * 17 + 5) & 0xff);
const sha = (d: Uint8Array | string) => createHash('sha256').update(d).digest('hex');

function announcement(seed = 1, over: Partial<Announcement> = {}): Announcement {
  const kernel = stageFile(bytes(3000 + seed, seed));
  const kernelGz = stageFile(bytes(1000 + seed, seed + 1));
  const initramfs = stageFile(bytes(2000 + seed, seed + 2));
  return {
    id: stageId(kernel.sha256, initramfs.sha256),
    kernel,
    kernelGz,
    initramfs,
    bootargs: 'console=ttyAMA0 panic=10 aufs=disk',
    tries: 3,
    ...over,
  };
}

// Replace one key's value in a key=value text (the key must be there, so a typo cannot pass silently).
function setKey(text: string, key: string, value: string | null): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.startsWith(`${key}=`));
  if (i < 0) throw new Error(`no ${key} in the text`);
  if (value === null) lines.splice(i, 1);
  else lines[i] = `${key}=${value}`;
  return lines.join('\n');
}

// The shell words of a script: comments and double-quoted strings removed (an echo may say "then").
const code = (script: string) =>
  script
    .split('\n')
    .filter((l) => !l.trim().startsWith('#'))
    .map((l) => l.replace(/"[^"]*"/g, '""'));

// if/fi balance: `if` opens at a line start or after `then`/`else`/`;`, `fi` closes wherever it stands as a word.
function ifBalance(script: string): { opens: number; closes: number } {
  let opens = 0;
  let closes = 0;
  for (const raw of code(script)) {
    const line = raw.trim();
    opens += (line.match(/(^|\bthen\s+|\belse\s+|;\s*)if\s/g) ?? []).length;
    closes += (line.match(/(^|[\s;])fi\b/g) ?? []).length;
  }
  return { opens, closes };
}

// then/fi balance: each if..fi holds one `then`, plus one per `elif`.
function thenBalance(script: string): { thens: number; fis: number } {
  const words = code(script).join('\n');
  const thens = (words.match(/\bthen\b/g) ?? []).length - (words.match(/\belif\b/g) ?? []).length;
  return { thens, fis: (words.match(/(^|[\s;])fi\b/gm) ?? []).length };
}

const longestLine = (script: string) => Math.max(...script.split('\n').map((l) => l.length));

describe('swappedCrc', () => {
  test('the CRC of a known buffer matches zlib and the IEEE check value', () => {
    const data = new TextEncoder().encode('123456789');
    expect(crc32(data)).toBe(0xcbf43926);
    const buf = bytes(5003, 9);
    expect(crc32(buf)).toBe(zlibCrc32(buf));
    expect(swappedCrc(crc32(data))).toBe('0x2639f4cb');
  });
  test('swaps the byte order', () => {
    expect(swappedCrc(0x12345678)).toBe('0x78563412');
    expect(swappedCrc(0xffffffff)).toBe('0xffffffff');
  });
  test('keeps leading zeros: always 8 hex digits', () => {
    expect(swappedCrc(0x12000000)).toBe('0x00000012');
    expect(swappedCrc(0)).toBe('0x00000000');
    expect(swappedCrc(0x01)).toBe('0x01000000');
  });
});

describe('stageFile', () => {
  test('size, CRC-32 and sha256 of the data', () => {
    const data = bytes(4097, 3);
    expect(stageFile(data)).toEqual({ size: 4097, crc: crc32(data), sha256: sha(data) });
  });
});

describe('stageId', () => {
  const k = sha('kernel');
  const r = sha('initramfs');
  test('16 hex digits, the same for the same input', () => {
    expect(stageId(k, r)).toMatch(/^[0-9a-f]{16}$/);
    expect(stageId(k, r)).toBe(stageId(k, r));
    expect(stageId(k, r)).toBe(sha(`${k}\n${r}\n`).slice(0, 16));
  });
  test('differs when either sha differs', () => {
    expect(stageId(sha('kernel2'), r)).not.toBe(stageId(k, r));
    expect(stageId(k, sha('initramfs2'))).not.toBe(stageId(k, r));
    expect(stageId(r, k)).not.toBe(stageId(k, r));
  });
  test('isStageId accepts 16 lower-case hex digits only', () => {
    expect(isStageId(stageId(k, r))).toBe(true);
    expect(isStageId('0123456789abcdef')).toBe(true);
    const bads = ['', '0123456789abcde', '0123456789abcdef0', '0123456789ABCDEF', '0123456789abcdeg'];
    bads.push(' 0123456789abcdef');
    for (const bad of bads) {
      expect(isStageId(bad)).toBe(false);
    }
  });
});

describe('announcement', () => {
  const a = announcement();
  const text = renderAnnouncement(a);
  test('round trip', () => {
    expect(parseAnnouncement(text)).toEqual({ ok: true, announcement: a });
  });
  test('round trip of a CRC with leading zeros and a single try', () => {
    const b = announcement(2, { kernel: { size: 7, crc: 0x5, sha256: sha('x') }, tries: 1 });
    expect(parseAnnouncement(renderAnnouncement(b))).toEqual({ ok: true, announcement: b });
  });
  test('reads what U-Boot exports (NUL-terminated)', () => {
    expect(parseAnnouncement(`${text}\0`)).toEqual({ ok: true, announcement: a });
  });
  test('refuses a bad id', () => {
    const r = parseAnnouncement(setKey(text, 'cb_id', 'not-an-id'));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain('16 hex digits');
    expect(parseAnnouncement(setKey(text, 'cb_id', null)).ok).toBe(false);
  });
  test('refuses a missing sha256', () => {
    const r = parseAnnouncement(setKey(text, 'cb_initramfs_sha256', null));
    expect(r).toEqual({ ok: false, error: 'initramfs: no valid sha256' });
  });
  test('refuses a bad size or CRC', () => {
    expect(parseAnnouncement(setKey(text, 'cb_kernel_size', '0')).ok).toBe(false);
    expect(parseAnnouncement(setKey(text, 'cb_kernelgz_crc', '123456789')).ok).toBe(false);
    expect(parseAnnouncement(setKey(text, 'cb_kernelgz_crc', 'zz')).ok).toBe(false);
  });
  test('refuses tries outside 1..20', () => {
    for (const t of ['0', '21', '', '2.5', '-1']) {
      expect(parseAnnouncement(setKey(text, 'cb_tries', t))).toEqual({ ok: false, error: 'cb_tries is not 1..20' });
    }
    expect(parseAnnouncement(setKey(text, 'cb_tries', '20')).ok).toBe(true);
  });
  test('refuses bootargs with a quote', () => {
    const r = parseAnnouncement(setKey(text, 'cb_args', 'console=ttyAMA0 "x"'));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain('quotes');
  });
  test('refuses a text over 4096 characters', () => {
    expect(parseAnnouncement(`${text}#${'x'.repeat(4096)}\n`).ok).toBe(false);
  });
  test('never throws on random garbage', () => {
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const alphabet = 'cb_id=kernelgz_sizecrcsha256tries args\n\0=0123456789abcdef"\'$;\\\x01\u00e9';
    for (let i = 0; i < 400; i++) {
      const len = Math.floor(rnd() * (i % 10 === 0 ? 5000 : 300));
      let s = '';
      for (let j = 0; j < len; j++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      // mix in valid texts with one character damaged
      if (i % 4 === 0) s = text.slice(0, i % text.length) + s.slice(0, 1) + text.slice((i % text.length) + 1);
      const r = parseAnnouncement(s);
      expect(typeof r.ok).toBe('boolean');
    }
  });
});

describe('cache record', () => {
  const cur = cachedFrom(announcement(1));
  const prev = cachedFrom(announcement(2, { bootargs: 'console=ttyS0' }));
  const cases: [string, CacheRecord][] = [
    ['cur and prev', { cur, prev }],
    ['cur only', { cur, prev: null }],
    ['empty', { cur: null, prev: null }],
  ];
  for (const [name, r] of cases) {
    test(`round trip: ${name}`, () => {
      expect(parseRecord(renderRecord(r))).toEqual(r);
    });
  }
  test('cachedFrom takes the raw kernel, not the gz', () => {
    const a = announcement(4);
    expect(cachedFrom(a)).toEqual({
      id: a.id,
      kernel: { size: a.kernel.size, crc: a.kernel.crc },
      initramfs: { size: a.initramfs.size, crc: a.initramfs.crc },
      bootargs: a.bootargs,
    });
  });
  test('stores sizes in hex and CRCs byte-swapped for itest.l', () => {
    const text = renderRecord({ cur, prev: null });
    expect(text).toContain(`cb_cur_ksize=${cur.kernel.size.toString(16)}\n`);
    expect(text).toContain(`cb_cur_kcrc=${swappedCrc(cur.kernel.crc)}\n`);
    expect(text).toContain(`cb_cur_rcrc=${swappedCrc(cur.initramfs.crc)}\n`);
    expect(text).toContain('cb_prev_id=\n');
  });
  test('a damaged cur entry reads as absent; prev survives', () => {
    const text = setKey(renderRecord({ cur, prev }), 'cb_cur_kcrc', 'zz');
    expect(parseRecord(text)).toEqual({ cur: null, prev });
  });
  test('a cur entry with a bad id or bootargs reads as absent', () => {
    const text = renderRecord({ cur, prev });
    expect(parseRecord(setKey(text, 'cb_cur_id', 'xyz'))).toEqual({ cur: null, prev });
    expect(parseRecord(setKey(text, 'cb_cur_args', 'a;b'))).toEqual({ cur: null, prev });
  });
  test('no record: empty', () => {
    expect(parseRecord(null)).toEqual({ cur: null, prev: null });
    expect(parseRecord('')).toEqual({ cur: null, prev: null });
  });
});

describe('parseTries', () => {
  const id = stageId(sha('k'), sha('r'));
  test('reads what env export -t writes', () => {
    expect(parseTries(`cb_try_id=${id}\ncb_try_n=2\n\0`)).toEqual({ id, n: 2 });
  });
  test('the count is hex, as setexpr writes it', () => {
    expect(parseTries(`cb_try_id=${id}\ncb_try_n=a\n\0`)).toEqual({ id, n: 10 });
  });
  test('garbage or nothing: null', () => {
    expect(parseTries('garbage')).toBeNull();
    expect(parseTries(`cb_try_id=nothex\ncb_try_n=1\n`)).toBeNull();
    expect(parseTries(`cb_try_id=${id}\ncb_try_n=zz\n`)).toBeNull();
    expect(parseTries(null)).toBeNull();
  });
});

describe('bootargsProblem', () => {
  test('normal bootargs are fine', () => {
    expect(bootargsProblem('console=ttyAMA0 panic=10 aufs=disk')).toBeNull();
    expect(bootargsProblem('')).toBeNull();
    expect(bootargsProblem('x'.repeat(360))).toBeNull();
  });
  test('refuses what U-Boot would read as shell', () => {
    for (const c of ["'", '"', '\\', '$', ';']) expect(bootargsProblem(`console=ttyS0 a${c}b`)).not.toBeNull();
  });
  test('refuses control and non-ASCII characters', () => {
    for (const c of ['\t', '\n', '\r', '\0', '\x7f', '\u00e9', '\u2028']) {
      expect(bootargsProblem(`console=ttyS0${c}`)).toContain('control or non-ASCII');
    }
  });
  test('refuses over 360 characters (the longest script line must stay under 512)', () => {
    expect(bootargsProblem('x'.repeat(361))).toContain('360');
  });
});

describe('renderNetScript', () => {
  const a = announcement(5, { tries: 12 });
  const s = renderNetScript(a);
  test('boots the cache with the announced bootargs and its marks', () => {
    expect(s).toContain(`setenv bootargs "${a.bootargs} clusterboot.fs=${a.id} clusterboot.from=cache"`);
  });
  test('TFTPs the gz kernel and checks its size and byte-swapped CRC', () => {
    expect(s).toContain('tftp ${kernel_addr_r} vmlinuz.gz');
    expect(s).toContain(`itest \${filesize} == ${a.kernelGz.size.toString(16)}`);
    expect(s).toContain(`itest.l *\${cb_scratch} == ${swappedCrc(a.kernelGz.crc)}`);
  });
  test('checks the initramfs size and byte-swapped CRC', () => {
    expect(s).toContain(`itest \${filesize} == ${a.initramfs.size.toString(16)}`);
    expect(s).toContain(`itest.l *\${cb_scratch} == ${swappedCrc(a.initramfs.crc)}`);
  });
  test('counts tries (in hex, as itest reads them) and rolls back with the failed id', () => {
    expect(s).toContain('itest ${cb_try_n} -ge c;');
    expect(s).toContain('fatwrite');
    expect(s).toContain('clusterboot.tries');
    expect(s).toContain(`clusterboot.failed=${a.id}`);
  });
  test('ends with the reset for a blank disk', () => {
    const lines = s.trimEnd().split('\n');
    expect(lines.at(-1)).toStartWith('if test -z "${cb_devtype}"; then echo ');
    expect(lines.at(-1)).toEndWith('; sleep 10; reset; fi');
  });
  test("every line fits U-Boot's 512-character command buffer", () => {
    expect(longestLine(s)).toBeLessThan(512);
  });
  test('with the longest bootargs allowed, every line still fits', () => {
    const long = renderNetScript(announcement(6, { bootargs: 'x'.repeat(360) }));
    expect(longestLine(long)).toBeLessThan(512);
  });
  test('if/fi balance', () => {
    const { opens, closes } = ifBalance(s);
    expect(opens).toBeGreaterThan(10);
    expect(opens).toBe(closes);
  });
  test('then/fi balance', () => {
    const { thens, fis } = thenBalance(s);
    expect(thens).toBe(fis);
  });
});

describe('renderLocalScript', () => {
  const s = renderLocalScript();
  test('remembers its disk and asks the master first', () => {
    expect(s).toContain('setenv cb_devtype ${devtype}');
    expect(s).toContain('if dhcp; then');
    expect(s).toContain('source ${scriptaddr}');
    expect(s.indexOf('if dhcp; then')).toBeLessThan(s.indexOf('ext4load'));
  });
  test('boots cur, else prev, from the disk', () => {
    expect(s).toContain('clusterboot.from=offline');
    expect(s).toContain('/firststage/${cb_cur_id}/vmlinuz');
    expect(s).toContain('/firststage/${cb_prev_id}/vmlinuz');
    expect(s).toContain('/firststage/${cb_prev_id}/initramfs.igz.uimg');
    expect(s.indexOf('${cb_cur_id}/vmlinuz')).toBeLessThan(s.indexOf('${cb_prev_id}/vmlinuz'));
  });
  test("every line fits U-Boot's 512-character command buffer", () => {
    expect(longestLine(s)).toBeLessThan(512);
  });
  test('if/fi balance', () => {
    const { opens, closes } = ifBalance(s);
    expect(opens).toBeGreaterThan(5);
    expect(opens).toBe(closes);
  });
  test('then/fi balance', () => {
    const { thens, fis } = thenBalance(s);
    expect(thens).toBe(fis);
  });
});

// #19: a node a mirror serves gets its first stage by TFTP from the mirror (DHCP's next-server); its local script
// asks the primary when the mirror does not answer, before booting the cache
describe('renderLocalScript with a primary to fall back to', () => {
  const s = renderLocalScript('10.77.0.1');
  test('after the TFTP server DHCP named, the primary, once, and only when it is another address', () => {
    const first = s.indexOf('if tftp ${scriptaddr} boot.scr.uimg');
    const fallback = s.indexOf('setenv serverip 10.77.0.1');
    expect(first).toBeGreaterThan(s.indexOf('if dhcp; then'));
    expect(fallback).toBeGreaterThan(first);
    expect(s).toContain('if test "${serverip}" != "10.77.0.1"; then');
    expect(fallback).toBeLessThan(s.indexOf('ext4load'));
    expect(s.split('source ${scriptaddr}').length - 1).toBe(2);
  });
  test('the fallback reads back from the script; none without one; the script without one is the one before', () => {
    expect(fallbackInScript(s)).toBe('10.77.0.1');
    expect(fallbackInScript(renderLocalScript())).toBeNull();
    expect(fallbackInScript(null)).toBeNull();
    expect(renderLocalScript(null)).not.toContain('setenv serverip');
    expect(renderLocalScript(null)).toBe(renderLocalScript());
  });
  test('only an IPv4 address goes into the script', () => {
    expect(() => renderLocalScript('10.77.0.1; reset')).toThrow('not an IPv4 address');
    expect(() => renderLocalScript('999.1.1.1')).toThrow('not an IPv4 address');
  });
  test('balanced and within the command buffer', () => {
    expect(ifBalance(s).opens).toBe(ifBalance(s).closes);
    expect(thenBalance(s).thens).toBe(thenBalance(s).fis);
    expect(longestLine(s)).toBeLessThan(512);
  });
});

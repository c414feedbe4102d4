// Host names from DHCP or the command line: RFC 1123 only, and shown escaped when refused.
import { describe, expect, test } from 'bun:test';
import { isHostname, printable } from '../../../../agent/plans/hostname.ts';

describe('isHostname', () => {
  test('RFC 1123 names pass', () => {
    for (const ok of ['n1', 'node-07', 'Node07', '7', 'a.b.c', 'rack1.cluster.lan', 'x'.repeat(63), 'a-b-c']) {
      expect(isHostname(ok)).toBe(true);
    }
    expect(isHostname(Array(4).fill('x'.repeat(63)).join('.').slice(0, 253))).toBe(true);
  });

  test('too long names and labels fail', () => {
    expect(isHostname('x'.repeat(64))).toBe(false);
    expect(isHostname(`${Array(4).fill('x'.repeat(63)).join('.')}`)).toBe(false); // 255 chars
    expect(isHostname(`${'a.'.repeat(126)}ab`)).toBe(false); // 254 chars
  });

  test('bad characters, edges and empty labels fail', () => {
    for (const bad of ['', '-a', 'a-', 'a..b', '.a', 'a.', '..', '.', 'a_b', 'a b', 'ä', 'a:1', 'a*', "a'b"]) {
      expect(isHostname(bad)).toBe(false);
    }
  });

  test('paths and escape sequences fail', () => {
    for (const bad of ['/', '../etc', 'a/b', '/etc/passwd', '\x1b[2Jnode', 'node\n', 'node\r', 'a\x00b', 'n1\t']) {
      expect(isHostname(bad)).toBe(false);
    }
  });
});

describe('printable', () => {
  test('control bytes are shown as \\xNN, the rest as is, long values cut', () => {
    expect(printable('\x1b[2Jnode\n')).toBe('\\x1b[2Jnode\\x0a');
    expect(printable('a\x7fb\x9bc')).toBe('a\\x7fb\\x9bc');
    expect(printable('../etc/ä')).toBe('../etc/ä');
    expect(printable('x'.repeat(100))).toBe(`${'x'.repeat(77)}...`);
  });
});

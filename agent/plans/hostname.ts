// Host names from outside (kernel command line, DHCP) reach paths, /proc and rsync filters: only RFC 1123 ones do.

/** RFC 1123: dot-separated labels of letters, digits and '-', 1-63 chars, no '-' at either end; 253 chars at most. */
export function isHostname(value: string): boolean {
  if (value.length === 0 || value.length > 253) return false;
  return value.split('.').every((label) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

/** An untrusted value as a console line may show it: control bytes as \xNN, at most 80 chars. */
export function printable(value: string): string {
  let out = '';
  for (const ch of value) {
    const code = ch.codePointAt(0) ?? 0;
    out +=
      code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0) ? `\\x${code.toString(16).padStart(2, '0')}` : ch;
  }
  return out.length > 80 ? `${out.slice(0, 77)}...` : out;
}

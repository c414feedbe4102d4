// Status LEDs on GPIO lines through the GPIO v2 character device (bun:ffi ioctl): onoff cannot run in a
// compiled Bun binary and drives the deprecated sysfs numbering. A missing chip leaves the LEDs dark.
import { existsSync, openSync } from 'node:fs';
import {
  ERROR_PATTERNS,
  FINAL_PATTERN,
  ALARM_FINAL_PATTERN,
  ledsAt,
  parseLedsParam,
  PHASE_PATTERNS,
  syncPattern,
  type ErrorName,
  type Pattern,
} from '../plans/leds.ts';
import { info, onEvent, warn, type Event } from '../log.ts';
import { ioctl } from '../sys/libc.ts';

// _IOWR(0xB4, 0x07, struct gpio_v2_line_request) and _IOWR(0xB4, 0x0F, struct gpio_v2_line_values)
export const GPIO_V2_GET_LINE_IOCTL = 0xc250b407;
export const GPIO_V2_LINE_SET_VALUES_IOCTL = 0xc010b40f;
const REQUEST_SIZE = 592;
const FLAG_OUTPUT = 1n << 3n;
const O_CLOEXEC = 0o2000000;

/** struct gpio_v2_line_request for output lines: offsets[64], consumer[32], config{flags,...}, num_lines, ..., fd. */
export function lineRequest(lines: number[], consumer: string): Uint8Array {
  const buf = new Uint8Array(REQUEST_SIZE);
  const v = new DataView(buf.buffer);
  lines.forEach((l, i) => v.setUint32(i * 4, l, true));
  buf.set(Buffer.from(consumer.slice(0, 31), 'latin1'), 256);
  v.setBigUint64(288, FLAG_OUTPUT, true); // config.flags
  v.setUint32(560, lines.length, true); // num_lines
  return buf;
}

/** Which pattern an event calls for (null: keep the current one). */
export function patternFor(e: Event): Pattern | null {
  if (e.kind === 'phase-start') return PHASE_PATTERNS[e.phase] ?? null;
  if (e.kind === 'progress' && typeof e.percent === 'number' && (e.phase === 'root' || e.phase === 'bootfs'))
    return syncPattern(e.percent);
  if (e.kind === 'fatal') {
    const byCode: Record<string, ErrorName> = {
      master: 'master-unreachable',
      hostkey: 'hostkey',
      'disk-refused': 'disk-refused',
      sync: 'sync-failed',
      fsck: 'fsck-failed',
    };
    return ERROR_PATTERNS[byCode[e.code ?? ''] ?? 'fatal'];
  }
  if (e.kind === 'info' && e.phase === 'handoff' && e.message.startsWith('switch_root')) return FINAL_PATTERN;
  if (e.kind === 'info' && e.phase === 'recovery') return ERROR_PATTERNS.recovery;
  return null;
}

let lineFd = -1;
let current: Pattern | null = null;
let since = 0;
let last = -1;

function show(bits: number): void {
  if (bits === last || lineFd < 0) return;
  const vals = new Uint8Array(16);
  const v = new DataView(vals.buffer);
  v.setBigUint64(0, BigInt(bits), true);
  v.setBigUint64(8, 7n, true);
  ioctl(lineFd, GPIO_V2_LINE_SET_VALUES_IOCTL, vals);
  last = bits;
}

function tick(): void {
  if (!current) return;
  const s = ledsAt(current, Date.now() - since);
  show((s.red ? 1 : 0) | (s.green ? 2 : 0) | (s.yellow ? 4 : 0));
}

/** Take the LED lines and follow the boot's events; never throws. */
export function startLeds(param: string): void {
  const p = parseLedsParam(param);
  if ('error' in p) return warn('early', `leds=${param}: ${p.error}; LEDs stay dark`);
  if (p.off) return;
  const dev = `/dev/${p.chip}`;
  if (!existsSync(dev)) return info('early', `no ${dev}: LEDs stay dark`);
  try {
    const chipFd = openSync(dev, 0 | O_CLOEXEC);
    const req = lineRequest(p.lines, 'clusterboot');
    ioctl(chipFd, GPIO_V2_GET_LINE_IOCTL, req);
    lineFd = new DataView(req.buffer).getInt32(588, true);
    info('early', `LEDs on ${p.chip} lines ${p.lines.join(',')} (red, green, yellow)`);
  } catch (e) {
    return warn('early', `LEDs unavailable (${(e as Error).message}); they stay dark`);
  }
  onEvent((e) => {
    const next = patternFor(e);
    if (!next || (next.name === current?.name && next.name !== 'syncing')) return;
    current = next;
    since = Date.now();
    tick();
  });
  setInterval(tick, 50);
}

/** Before exec: show the final pattern for good (the kernel keeps the last value after the fd closes). */
export function finalLeds(alarm = false): void {
  current = alarm ? ALARM_FINAL_PATTERN : FINAL_PATTERN;
  tick();
}

// The recovery button: sampled at power-on through the GPIO v2 character device; held 2 s, it asks
// for a wiped writable layer and a full root resync. No chip or no button: no recovery, boot goes on.
import { closeSync, existsSync, openSync } from 'node:fs';
import { parseButtonParam, recoveryRequested, SAMPLE_MS, WINDOW_MS } from '../plans/button.ts';
import { GPIO_V2_GET_LINE_IOCTL } from './leds.ts';
import { info, warn } from '../log.ts';
import { ioctl } from '../sys/libc.ts';

// _IOWR(0xB4, 0x0E, struct gpio_v2_line_values)
export const GPIO_V2_LINE_GET_VALUES_IOCTL = 0xc010b40e;
const FLAG_INPUT = 1n << 2n;
const O_CLOEXEC = 0o2000000;

function inputRequest(line: number): Uint8Array {
  const buf = new Uint8Array(592);
  const v = new DataView(buf.buffer);
  v.setUint32(0, line, true);
  buf.set(Buffer.from('clusterboot-button', 'latin1'), 256);
  v.setBigUint64(288, FLAG_INPUT, true);
  v.setUint32(560, 1, true);
  return buf;
}

/** True when the button is held at boot; sampling stops at once when it is not pressed. */
export async function buttonHeld(param: string | undefined): Promise<boolean> {
  const b = parseButtonParam(param);
  if ('error' in b || !b.enabled) return false;
  const dev = `/dev/${b.chip}`;
  if (!existsSync(dev)) {
    warn('early', `button=${param}: no ${dev}; no recovery button`);
    return false;
  }
  let chipFd = -1;
  let lineFd = -1;
  try {
    chipFd = openSync(dev, 0 | O_CLOEXEC);
    const req = inputRequest(b.line);
    ioctl(chipFd, GPIO_V2_GET_LINE_IOCTL, req);
    lineFd = new DataView(req.buffer).getInt32(588, true);
    const samples: boolean[] = [];
    for (let t = 0; t < WINDOW_MS; t += SAMPLE_MS) {
      const vals = new Uint8Array(16);
      new DataView(vals.buffer).setBigUint64(8, 1n, true);
      ioctl(lineFd, GPIO_V2_LINE_GET_VALUES_IOCTL, vals);
      const high = (new DataView(vals.buffer).getBigUint64(0, true) & 1n) === 1n;
      const pressed = b.activeLow ? !high : high;
      samples.push(pressed);
      if (t === 0 && !pressed) break;
      await Bun.sleep(SAMPLE_MS);
    }
    const held = recoveryRequested(samples);
    if (samples.length > 1)
      info(
        'early',
        `recovery button ${held ? 'held' : 'released too early'} (${samples.filter(Boolean).length * SAMPLE_MS} ms pressed)`,
      );
    return held;
  } catch (e) {
    warn('early', `button=${param}: ${(e as Error).message}; no recovery button`);
    return false;
  } finally {
    if (lineFd >= 0) closeSync(lineFd);
    if (chipFd >= 0) closeSync(chipFd);
  }
}

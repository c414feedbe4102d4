// The recovery button: a GPIO input held at power-on asks for recovery (wipe the writable layer, full root
// resync). Pure: the caller samples the line and decodes active-low; this file decides from the samples.
import { MAX_GPIO_LINE } from './leds.ts';

// A hold is a stretch that starts and ends pressed and lasts at least minHeldMs. Inside it, releases shorter
// than BOUNCE_MS are contact bounce and tolerated, as long as they stay rare (at most 10 % of the samples):
// a floating or noisy input then cannot pass for a deliberate press.

// Why: the caller's sampling rhythm and window, shared so the effect code and this logic agree.
export const SAMPLE_MS = 100;
// Why: how long after the agent starts the button is sampled.
export const WINDOW_MS = 3000;
// Why: a release at least this long ends a hold (shorter ones are bounce).
export const BOUNCE_MS = 200;
const DEFAULT_HELD_MS = 2000;
const MAX_RELEASED_FRACTION = 0.1;

// Why: decide "recovery" only on a deliberate, continuous press, never on a glitch or a floating line.
export function recoveryRequested(samples: boolean[], minHeldMs: number = DEFAULT_HELD_MS): boolean {
  const held = Number.isFinite(minHeldMs) && minHeldMs > 0 ? minHeldMs : DEFAULT_HELD_MS;
  const need = Math.max(1, Math.ceil(held / SAMPLE_MS));
  const maxGap = Math.max(0, Math.ceil(BOUNCE_MS / SAMPLE_MS) - 1);
  const n = samples.length;
  // released[i] = released samples among the first i.
  const released = [0];
  for (let i = 0; i < n; i++) released.push((released[i] ?? 0) + (samples[i] === true ? 0 : 1));
  for (let start = 0; start < n; start++) {
    if (samples[start] !== true) continue;
    let gap = 0;
    for (let end = start; end < n; end++) {
      if (samples[end] !== true) {
        if (++gap > maxGap) break;
        continue;
      }
      gap = 0;
      const len = end - start + 1;
      const off = (released[end + 1] ?? 0) - (released[start] ?? 0);
      if (len >= need && off <= Math.floor(len * MAX_RELEASED_FRACTION)) return true;
    }
  }
  return false;
}

const CHIP = /^[A-Za-z0-9_.-]{1,64}$/;

// Why: the `button=` kernel parameter: 'off' or absent, or '<chip>:<line>[:low|:high]' (active low by default,
// i.e. a button that pulls the line to ground against the pull-up).
export function parseButtonParam(
  v: string | undefined,
): { enabled: false } | { enabled: true; chip: string; line: number; activeLow: boolean } | { error: string } {
  if (v === undefined) return { enabled: false };
  if (typeof v !== 'string') return { error: 'button= is not text' };
  const s = v.trim();
  if (s === 'off') return { enabled: false };
  const usage = `expected 'off' or <chip>:<line>[:high] like gpiochip0:27`;
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3) return { error: `button=${s}: ${usage}` };
  const [chip = '', lineText = '', polarity] = parts;
  if (!CHIP.test(chip)) return { error: `button=${s}: bad chip name '${chip}' (letters, digits, . _ - only)` };
  if (!/^\d{1,3}$/.test(lineText)) return { error: `button=${s}: '${lineText}' is not a line number` };
  const line = Number(lineText);
  if (line > MAX_GPIO_LINE) return { error: `button=${s}: line ${line} is above ${MAX_GPIO_LINE}` };
  if (polarity !== undefined && polarity !== 'low' && polarity !== 'high') {
    return { error: `button=${s}: polarity '${polarity}' is neither low nor high` };
  }
  return { enabled: true, chip, line, activeLow: polarity !== 'high' };
}

// One place that builds every console message: a line for people, a JSON line for tests and the master.
import { readFileSync, writeSync } from 'node:fs';

export type Event =
  | { kind: 'phase-start'; phase: string; n: number; of: number }
  | { kind: 'phase-done'; phase: string; n: number; of: number; seconds: number; summary?: string }
  | { kind: 'phase-failed'; phase: string; error: string; remedy?: string }
  | { kind: 'info'; phase: string; message: string; data?: Record<string, unknown> }
  | { kind: 'warn'; phase: string; message: string }
  | { kind: 'progress'; phase: string; message: string; percent?: number }
  | { kind: 'fatal'; phase: string; error: string; remedy?: string; next: string; code?: string };

let current = { phase: 'init', n: 0, of: 0 };
let machineLines = true;
const history: Array<Event & { t: number }> = [];

export function uptime(): number {
  try {
    return Number.parseFloat(readFileSync('/proc/uptime', 'utf8').split(' ')[0] ?? '0');
  } catch {
    return performance.now() / 1000;
  }
}

function tag(phase: string): string {
  return current.phase === phase && current.n > 0 ? `[${current.n}/${current.of} ${phase}]` : `[${phase}]`;
}

const human: { [K in Event['kind']]: (e: Extract<Event, { kind: K }>) => string } = {
  'phase-start': (e) => `[${e.n}/${e.of} ${e.phase}] start`,
  'phase-done': (e) =>
    `[${e.n}/${e.of} ${e.phase}] done in ${e.seconds.toFixed(1)}s${e.summary ? `: ${e.summary}` : ''}`,
  'phase-failed': (e) => `${tag(e.phase)} FAILED: ${e.error}${e.remedy ? `\n  remedy: ${e.remedy}` : ''}`,
  info: (e) => `${tag(e.phase)} ${e.message}`,
  warn: (e) => `${tag(e.phase)} warning: ${e.message}`,
  progress: (e) => `${tag(e.phase)} ${e.message}${e.percent !== undefined ? ` (${Math.round(e.percent)}%)` : ''}`,
  fatal: (e) => `${tag(e.phase)} FATAL: ${e.error}${e.remedy ? `\n  remedy: ${e.remedy}` : ''}\n  next: ${e.next}`,
};

function write(text: string): void {
  try {
    writeSync(1, text);
  } catch {
    // the console went away: nothing useful left to do with the message
  }
}

const listeners: Array<(e: Event) => void> = [];

/** Called with every event: the watchdog counts them as progress, the LEDs follow them. */
export function onEvent(f: (e: Event) => void): void {
  listeners.push(f);
}

/** The text people read for an event (the console line without its prefix). */
export function humanLine(e: Event): string {
  return (human[e.kind] as (x: Event) => string)(e);
}

export function emit(e: Event): void {
  const t = uptime();
  for (const f of listeners) {
    try {
      f(e);
    } catch {
      // a listener (LEDs, watchdog) must never break the console
    }
  }
  if (e.kind === 'phase-start') current = { phase: e.phase, n: e.n, of: e.of };
  history.push({ ...e, t });
  const line = humanLine(e);
  write(`clusterboot: ${t.toFixed(2).padStart(7)}s ${line}\n`);
  if (machineLines) write(`@@clusterboot ${JSON.stringify({ ...e, t })}\n`);
}

export function info(phase: string, message: string, data?: Record<string, unknown>): void {
  emit(data ? { kind: 'info', phase, message, data } : { kind: 'info', phase, message });
}

export function warn(phase: string, message: string): void {
  emit({ kind: 'warn', phase, message });
}

export function progress(phase: string, message: string, percent?: number): void {
  emit(percent === undefined ? { kind: 'progress', phase, message } : { kind: 'progress', phase, message, percent });
}

export function setMachineLines(on: boolean): void {
  machineLines = on;
}

/** Everything said so far: the boot report is built from it. */
export function events(): ReadonlyArray<Event & { t: number }> {
  return history;
}

// `builder watch`: the live fleet view. Polls reports/ (through status.ts's readers) and the syslog file the nodes
// write to, and draws fleetview.ts's rows: in place on a terminal, as changed lines otherwise.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { readStatus } from './status.ts';
import { changedLines, fleetRows, foldSyslog, redraw, renderFrame, type FleetRow, type NodeLive } from './fleetview.ts';

/** At most this much of the syslog is read at the start (its tail) and per poll. */
export const SYSLOG_CHUNK = 4 * 1024 * 1024;

/** Follows a growing log file by offset: the whole lines added since the last call. A shorter file starts over. */
export class LogFollower {
  private offset = -1;
  private ino = -1;
  private partial = '';
  problem: string | null = null;

  constructor(readonly path: string) {}

  /** New whole lines (text ending in '\n'), '' when none. Never throws: a problem is kept in `problem`. */
  read(): string {
    let fd: number;
    try {
      fd = openSync(this.path, constants.O_RDONLY | constants.O_NONBLOCK | (constants.O_NOCTTY ?? 0));
    } catch (e) {
      this.problem = `cannot read ${this.path}: ${(e as Error).message}`;
      return '';
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) {
        this.problem = `${this.path} is not a regular file`;
        return '';
      }
      this.problem = null;
      if (st.ino !== this.ino || st.size < this.offset) {
        // first read, a new file (rotated) or truncated: from its tail, the first partial line dropped
        this.ino = st.ino;
        this.offset = Math.max(0, st.size - SYSLOG_CHUNK);
        this.partial = '';
        if (this.offset > 0) this.partial = '\0skip';
      }
      const want = Math.min(SYSLOG_CHUNK, st.size - this.offset);
      if (want <= 0) return '';
      const buf = Buffer.alloc(want);
      const got = readSync(fd, buf, 0, want, this.offset);
      this.offset += got;
      let text = this.partial + buf.subarray(0, got).toString('utf8');
      const end = text.lastIndexOf('\n');
      if (end < 0) {
        this.partial = text.length > 65536 ? '\0skip' : text;
        return '';
      }
      this.partial = text.slice(end + 1);
      text = text.slice(0, end + 1);
      if (text.startsWith('\0skip')) text = text.slice(text.indexOf('\n') + 1);
      return text;
    } catch (e) {
      this.problem = `cannot read ${this.path}: ${(e as Error).message}`;
      return '';
    } finally {
      closeSync(fd);
    }
  }
}

export interface WatchOptions {
  masterRoot: string;
  /** Holds nodes.list and reports/. */
  stateDir: string;
  syslog?: string | undefined;
  intervalMs: number;
  once: boolean;
  /** Draw in place (a terminal) or print changed lines. */
  tty: boolean;
  columns: () => number;
  write: (s: string) => void;
  warn: (s: string) => void;
}

/** One poll: the rows now, and the follower's state carried on. */
export function poll(
  o: Pick<WatchOptions, 'masterRoot' | 'stateDir'>,
  follower: LogFollower | null,
  live: Map<string, NodeLive>,
): { rows: FleetRow[]; live: Map<string, NodeLive>; warnings: string[] } {
  const s = readStatus({ masterRoot: o.masterRoot, stateDir: o.stateDir });
  const next = follower ? foldSyslog(live, follower.read()) : live;
  const warnings = [...s.warnings, ...(follower?.problem ? [follower.problem] : [])];
  return { rows: fleetRows(s.rows, next), live: next, warnings };
}

// Why: the loop's I/O in one place; every poll re-reads reports/ (small files) and only the new syslog bytes.
export async function watch(o: WatchOptions): Promise<void> {
  const follower = o.syslog ? new LogFollower(o.syslog) : null;
  let live = new Map<string, NodeLive>();
  let seen = new Map<string, string>();
  let drawn = 0;
  const warned = new Set<string>();
  let stop = false;
  const end = () => {
    stop = true;
  };
  process.on('SIGINT', end);
  process.on('SIGTERM', end);
  if (o.tty && !o.once) o.write('\x1b[?25l'); // hide the cursor while redrawing
  try {
    for (;;) {
      const p = poll(o, follower, live);
      live = p.live;
      for (const w of p.warnings)
        if (!warned.has(w)) {
          warned.add(w);
          // on a terminal a warning would shift the frame: it goes to stderr before the first frame only
          if (!o.tty || drawn === 0) o.warn(w);
        }
      if (o.tty) {
        const frame = renderFrame(p.rows, {
          columns: o.columns(),
          color: true,
          title: `${new Date().toISOString().slice(11, 19)}Z, every ${o.intervalMs / 1000}s, Ctrl-C ends`,
        });
        o.write(redraw(frame, drawn));
        drawn = frame.length;
      } else {
        const c = changedLines(p.rows, seen);
        seen = c.seen;
        for (const l of c.lines) o.write(`${l}\n`);
      }
      if (o.once || stop) break;
      const until = Date.now() + o.intervalMs;
      while (!stop && Date.now() < until) await Bun.sleep(Math.min(100, o.intervalMs));
      if (stop) break;
    }
  } finally {
    if (o.tty && !o.once) o.write('\x1b[?25h');
    process.off('SIGINT', end);
    process.off('SIGTERM', end);
  }
}

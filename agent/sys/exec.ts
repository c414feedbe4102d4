// One wrapper over execa for every external tool: absolute paths, timeouts, errors with argv and stderr.
import { closeSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { TOOLS, type ToolName } from './tools.ts';

export class ToolError extends Error {
  /** The whole output, stdout and stderr, for callers that classify a failure by what the tool said. */
  output = '';
  constructor(
    readonly argv: string[],
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
    readonly timedOut: boolean,
    options?: { cause?: unknown },
  ) {
    super(
      `${argv.join(' ')} ${timedOut ? 'timed out' : `exited ${exitCode ?? 'by signal'}`}` +
        (stderrTail ? `: ${stderrTail}` : ''),
      options,
    );
  }
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string | Uint8Array;
  env?: Record<string, string>;
  /** Called with each stdout line as it arrives (progress of long work). */
  onLine?: (line: string) => void;
  /** Exit codes that count as success. */
  okCodes?: number[];
  /** Called every 2 s with the child's pid while it runs (e.g. to tell the watchdog a silent tool is busy). */
  heartbeat?: (pid: number) => void;
  inherit?: boolean;
  /**
   * stdout goes to this file (made anew) instead of through PID 1, and the result's stdout is its last 64 KiB.
   * For chatty tools: e2fsck -y prints a line per fix, and under emulation reading them from a pipe kept PID 1's
   * event loop busy for seconds at a time, long enough to starve the watchdog's feeder (a reset in the middle of a
   * repair). Without stdin or input.
   */
  outputFile?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

function tail(s: string, lines = 6): string {
  return s.trim().split('\n').slice(-lines).join(' | ');
}

/** The last `max` bytes of an open file, as text. */
export function fileTail(fd: number, max = 64 * 1024): string {
  const size = fstatSync(fd).size;
  const n = Math.min(size, max);
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = readSync(fd, buf, got, n - got, size - n + got);
    if (r <= 0) break;
    got += r;
  }
  return buf.subarray(0, got).toString('utf8');
}

/**
 * A tool whose stdout the kernel writes straight to a file (Bun.spawn with an fd): no byte of it passes through JS.
 * Its stderr (a tool's few error lines) is still read, natively, for the error message.
 */
async function runToFile(argv: string[], path: string, opts: RunOptions): Promise<RunResult & { timedOut: boolean }> {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'w+');
  try {
    let timedOut = false;
    const proc = Bun.spawn(argv, {
      stdin: 'ignore',
      stdout: fd,
      stderr: 'pipe',
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', ...opts.env },
    });
    const limit = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    const beat = opts.heartbeat ? setInterval(() => opts.heartbeat?.(proc.pid), 2000) : null;
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]).finally(() => {
      clearTimeout(limit);
      if (beat) clearInterval(beat);
    });
    return { stdout: fileTail(fd), stderr: stderr.slice(-64 * 1024), exitCode: proc.signalCode ? -1 : code, timedOut };
  } finally {
    closeSync(fd);
  }
}

/** Run a tool from TOOLS (or an absolute path) and fail loudly with the command and stderr tail. */
export async function run(tool: ToolName | `/${string}`, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const file = tool.startsWith('/') ? tool : TOOLS[tool as ToolName];
  const argv = [file, ...args];
  if (opts.outputFile !== undefined) {
    let r;
    try {
      r = await runToFile(argv, opts.outputFile, opts);
    } catch (cause) {
      throw new ToolError(argv, undefined, String(cause), false, { cause });
    }
    if (r.timedOut || !(opts.okCodes ?? [0]).includes(r.exitCode)) {
      const err = new ToolError(argv, r.exitCode < 0 ? undefined : r.exitCode, tail(r.stderr || r.stdout), r.timedOut);
      err.output = `${r.stdout}\n${r.stderr}`;
      throw err;
    }
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  }
  let child: ResultPromise;
  try {
    child = execa(file, args, {
      reject: false,
      timeout: opts.timeoutMs ?? 120_000,
      input: opts.input,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', ...opts.env },
      extendEnv: false,
      stdio: opts.inherit ? 'inherit' : 'pipe',
      stripFinalNewline: false,
      buffer: true,
      encoding: 'utf8',
    });
  } catch (cause) {
    throw new ToolError(argv, undefined, String(cause), false, { cause });
  }
  if (opts.onLine && child.stdout) {
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const parts = pending.split(/\r|\n/);
      pending = parts.pop() ?? '';
      for (const p of parts) if (p.trim()) opts.onLine?.(p);
    });
  }
  const beat =
    opts.heartbeat && child.pid !== undefined ? setInterval(() => opts.heartbeat?.(child.pid as number), 2000) : null;
  const r = await child.finally(() => {
    if (beat) clearInterval(beat);
  });
  const stdout = typeof r.stdout === 'string' ? r.stdout : '';
  const stderr = typeof r.stderr === 'string' ? r.stderr : '';
  const code = r.exitCode ?? -1;
  if (r.timedOut || !(opts.okCodes ?? [0]).includes(code)) {
    const err = new ToolError(argv, r.exitCode, tail(stderr || stdout), Boolean(r.timedOut));
    err.output = `${stdout}\n${stderr}`.slice(-64 * 1024);
    throw err;
  }
  return { stdout, stderr, exitCode: code };
}

/** Shell-like rendering of a command for logs and dry runs. */
export function describe(tool: ToolName | `/${string}`, args: string[]): string {
  const file = tool.startsWith('/') ? tool : TOOLS[tool as ToolName];
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

// One wrapper over execa for every external tool: absolute paths, timeouts, errors with argv and stderr.
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
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

function tail(s: string, lines = 6): string {
  return s.trim().split('\n').slice(-lines).join(' | ');
}

/** Run a tool from TOOLS (or an absolute path) and fail loudly with the command and stderr tail. */
export async function run(tool: ToolName | `/${string}`, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const file = tool.startsWith('/') ? tool : TOOLS[tool as ToolName];
  const argv = [file, ...args];
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

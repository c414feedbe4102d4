// The node's one SSH connection to the master: a ControlMaster every rsync of the boot reuses
// (each handshake costs seconds on a Pi), host key pinned, read-only key, never a password.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import type { Subprocess } from 'bun';
import { run, ToolError, type RunOptions } from '../sys/exec.ts';
import { info } from '../log.ts';
import { PhaseFailure } from '../errors.ts';
import { TOOLS } from '../sys/tools.ts';
import { SOCKET } from '../paths.ts';
import { HOST_ALIAS, KNOWN_HOSTS, NODE_KEY, RSYNCD_MODULE } from '../contract/initramfs.ts';

export interface LinkTarget {
  host: string;
  user: string;
  port: number;
}

/** ssh options: pinned host key under an alias (whatever address DHCP gives the master), chacha20 first for the Pi 4. */
export function sshOptions(t: LinkTarget, o: { key?: string; shared?: boolean; control?: string } = {}): string[] {
  return [
    '-F',
    '/dev/null',
    '-i',
    o.key ?? NODE_KEY,
    '-p',
    String(t.port),
    '-l',
    t.user,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    `UserKnownHostsFile=${KNOWN_HOSTS}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    `HostKeyAlias=${HOST_ALIAS}`,
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'ConnectTimeout=10',
    '-o',
    'ServerAliveInterval=10',
    '-o',
    'ServerAliveCountMax=3',
    '-o',
    'Ciphers=chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr',
    // the report key must never ride on the node key's shared connection: its own, unshared one
    ...(o.control !== undefined
      ? ['-o', `ControlPath=${o.control}`]
      : o.shared === false
        ? ['-o', 'ControlPath=none', '-o', 'ControlMaster=no']
        : ['-o', `ControlPath=${SOCKET}`]),
    '-o',
    'LogLevel=ERROR',
  ];
}

/** What an ssh failure means for the admin. */
export function classifySshError(stderr: string): {
  kind: 'hostkey' | 'auth' | 'down';
  message: string;
  remedy: string;
} {
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|No .* host key is known/i.test(stderr)) {
    return {
      kind: 'hostkey',
      message: "the master's host key does not match the key packed in the initramfs",
      remedy:
        'if the master was reinstalled, run `builder pack` again so the new host key is pinned; otherwise someone else answers as the master',
    };
  }
  if (/Permission denied|Too many authentication failures/i.test(stderr)) {
    return {
      kind: 'auth',
      message: 'the master refused the node key',
      remedy: "add the line printed by `builder keys --authorized-keys` to root's authorized_keys on the master",
    };
  }
  return {
    kind: 'down',
    message: `master unreachable: ${stderr.trim().split('\n').pop() ?? 'no answer'}`,
    remedy: 'check that the master is up, sshd listens, and the network between them',
  };
}

export class MasterLink implements Link {
  private proc: Subprocess | null = null;
  private stderr = '';
  handshakes = 0;

  constructor(readonly target: LinkTarget) {}

  /** Open the ControlMaster and wait until it answers `ssh -O check`, or say why not. */
  async open(timeoutMs = 20_000): Promise<void> {
    if (!existsSync(NODE_KEY))
      throw new PhaseFailure(
        `no node key at ${NODE_KEY}`,
        'pack the initramfs with `builder pack --keys DIR`',
        'master',
      );
    mkdirSync('/run/clusterboot', { recursive: true });
    // a socket left by an earlier attempt's master would pass for this one's
    rmSync(SOCKET, { force: true });
    this.stderr = '';
    this.handshakes++;
    const proc = Bun.spawn(
      [TOOLS.ssh, ...sshOptions(this.target), '-M', '-N', '-o', 'ControlPersist=no', this.target.host],
      {
        stdin: 'ignore',
        stdout: 'ignore',
        stderr: 'pipe',
        env: { HOME: '/root', PATH: '/usr/bin:/bin:/usr/sbin:/sbin' },
      },
    );
    this.proc = proc;
    void (async () => {
      for await (const c of proc.stderr as ReadableStream<Uint8Array>) this.stderr += new TextDecoder().decode(c);
    })();
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (proc.exitCode !== null || proc.killed) {
        await Bun.sleep(100);
        const c = classifySshError(this.stderr);
        this.proc = null;
        throw new PhaseFailure(c.message, c.remedy, c.kind === 'down' ? 'master' : 'hostkey');
      }
      // ssh makes the control socket only once authenticated, listening under a temporary name and
      // then linked into place: its existence means the master is ready (no `ssh -O check` spawn).
      if (existsSync(SOCKET)) return;
      if (Date.now() > end) {
        proc.kill();
        this.proc = null;
        throw new PhaseFailure(
          `master ${this.target.host}:${this.target.port} did not answer within ${timeoutMs / 1000}s`,
          'check that the master is up and sshd listens',
          'master',
        );
      }
      await Bun.sleep(25);
    }
  }

  get isOpen(): boolean {
    return this.proc !== null && this.proc.exitCode === null;
  }

  /** The -e argument for rsync: ssh over the shared connection. */
  rsh(): string {
    return [TOOLS.ssh, ...sshOptions(this.target)].join(' ');
  }

  /** rsync from the master (paths relative to the rrsync root on the master). */
  async rsync(args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
    try {
      return await run('rsync', ['-e', this.rsh(), ...args], { timeoutMs: 3_600_000, ...opts });
    } catch (e) {
      if (e instanceof ToolError && /host key|Permission denied/i.test(e.stderrTail)) {
        const c = classifySshError(e.stderrTail);
        throw new PhaseFailure(c.message, c.remedy, 'master', { cause: e });
      }
      throw e;
    }
  }

  remote(path: string): string {
    return `${this.target.host}:${path}`;
  }

  /**
   * rsync with another key (the node's enrolment key) over a connection of its own: the shared one is the node
   * key's, and sshd picks the forced command by the key that logged in. Paths are relative to that key's rrsync root.
   * `host`: another master than the one this link serves from (the primary, for a node a mirror serves).
   */
  rsyncAs(
    key: string,
    args: string[],
    opts: RunOptions = {},
    host = this.target.host,
  ): Promise<{ stdout: string; stderr: string }> {
    this.handshakes++;
    const rsh = [TOOLS.ssh, ...sshOptions({ ...this.target, host }, { key, shared: false })].join(' ');
    return run('rsync', ['-e', rsh, ...args], { timeoutMs: 600_000, ...opts });
  }

  /** Close the shared connection: nothing of ours may outlive the handoff. */
  async close(): Promise<void> {
    if (!this.proc) return;
    // SIGTERM makes the master close the connection and remove its socket, as `ssh -O exit` would, without a spawn
    this.proc.kill('SIGTERM');
    if ((await Promise.race([this.proc.exited, Bun.sleep(3000).then(() => 'late' as const)])) === 'late')
      this.proc.kill('SIGKILL');
    this.proc = null;
    info('master', 'connection to the master closed');
  }
}

/** What the phases need from a way to reach the master (SSH + rrsync, or an rsync daemon). */
export interface Link {
  readonly target: LinkTarget;
  handshakes: number;
  open(timeoutMs?: number): Promise<void>;
  rsync(args: string[], opts?: RunOptions): Promise<{ stdout: string; stderr: string }>;
  remote(path: string): string;
  close(): Promise<void>;
}

/** transport=rsyncd: a read-only rsync daemon module, for labs that prefer it (no host key, no encryption). */
export class RsyncdLink implements Link {
  handshakes = 0;
  constructor(readonly target: LinkTarget) {}

  remote(path: string): string {
    return `rsync://${this.target.host}:${this.target.port}/${RSYNCD_MODULE}/${path.replace(/^\/+/, '')}`;
  }

  /** A module listing proves the daemon answers and serves the module. */
  async open(timeoutMs = 20_000): Promise<void> {
    this.handshakes++;
    try {
      await run('rsync', ['--contimeout=10', '--list-only', this.remote('')], { timeoutMs });
    } catch (e) {
      throw new PhaseFailure(
        `rsync daemon ${this.target.host}:${this.target.port} module ${RSYNCD_MODULE} did not answer: ${(e as Error).message}`,
        `check rsyncd on the master: a read-only module [${RSYNCD_MODULE}] whose path is the master root`,
        'master',
        { cause: e },
      );
    }
  }

  rsync(args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
    return run('rsync', ['--contimeout=10', ...args], { timeoutMs: 3_600_000, ...opts });
  }

  async close(): Promise<void> {
    // one TCP connection per rsync: nothing stays open
  }
}

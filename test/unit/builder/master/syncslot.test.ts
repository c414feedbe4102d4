// Sync slots (builder/syncslot.ts): the script run for real by /bin/sh with util-linux flock, slots held by other
// processes; then a real rsync pull through the node key's forced command.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  readlinkSync,
  realpathSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_SYNC_LEASE,
  DEFAULT_SYNC_STALL,
  installSyncSlot,
  syncSlotKeysLine,
  syncSlotPaths,
  syncSlotProblems,
  syncSlotScript,
  type SyncSlotLimits,
} from '../../../../builder/master/syncslot.ts';
import {
  leaseOverMessage,
  noAddressSlotMessage,
  noSlotMessage,
  NO_ADDRESS_SYNC_SLOT,
  NO_SYNC_SLOT,
  SYNC_LEASE_OVER,
  SYNC_SLOT_BUSY,
} from '../../../../agent/contract/syncslot.ts';

let tmp = '';
let n = 0;
const holders: ChildProcess[] = [];
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'syncslot-test-'));
});
afterAll(() => {
  for (const h of holders) h.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

const PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node\n';
// what the agent's root pull sends (rsync's server command line), plain and under a master-root prefix
const ROOT_PULL = 'rsync --server --sender -logDtpre.iLsfxCIvu --numeric-ids . rootfs/';
const ROOT_PULL_PREFIX = 'rsync --server --sender -logDtpre.iLsfxCIvu . data/slaves/rootfs/';
const OTHER_PULL = 'rsync --server --sender -rte.iLsfxCIvu --timeout=60 . partitions.sfdisk stamps';
const PULL = 'rsync --server --sender -logDtpre.iLsfxCIvu';
/** Every one names rootfs or something in it (with the tree of the spellings test: current -> rootfs, etc.). */
const ROOT_PULL_SPELLINGS = [
  ...[
    'rootfs',
    'rootfs/',
    './rootfs/.',
    '//rootfs//',
    'rootfs/x/..',
    '/rootfs',
    '/rootfs/',
    'rootfs/etc',
    'rootfs/sbin/',
    'rootfs/./etc/',
    'stamps rootfs/',
    'partitions.sfdisk stamps ./rootfs',
    'data/slaves/rootfs/',
    'data//slaves/./rootfs',
    'current/', // symlinks into rootfs (rrsync lets an in-tree symlink through)
    'current',
    'etc-link/',
    'stamps/up/',
    'r*', // rrsync expands globs, braces and backslashes
    'root?s/',
    '[r]ootfs',
    '{rootfs,stamps}',
    'r\\ootfs/',
    '../tree/rootfs', // .. (rrsync refuses it; counted all the same)
    'stamps/../rootfs',
  ].map((a) => `${PULL} . ${a}`),
  `${PULL} --files-from=- --from0 . .`, // the client sends the names
  `${PULL} --timeout=120 --numeric-ids . rootfs/`,
  'rsync --server --sender -nlHogDtpAXre.iLsfxCIvu --numeric-ids . rootfs/', // the agent's dry run
];
/** Never a root pull: stamps, the table, the whole tree (the agent's filtered fetch), look-alikes, no rsync. */
const NOT_ROOT_PULLS = [
  OTHER_PULL,
  undefined,
  'true',
  `${PULL} . myrootfs/x`,
  `${PULL} . rootfsx`,
  `${PULL} . stamps/rootfs.stamp`,
  `${PULL} . bootfs/`,
  `${PULL} . tftp/`,
  `${PULL} . ./`,
  `${PULL} . data/slaves/`,
  `${PULL} .`,
  'rsync --server --sender -ltpre.iLsfxCIvu --timeout=60 . ./',
  'rsync --server -logDtpre.iLsfxCIvu . rootfs/', // a push: not a pull (rrsync -ro refuses it)
  'scp -f rootfs/x',
];

/** A fresh state dir with the script installed. */
function state(limits: SyncSlotLimits = {}): { dir: string; script: string; slots: string } {
  const dir = join(tmp, `state${n++}`);
  const p = installSyncSlot(dir, limits);
  return { dir, script: p.script, slots: p.slotsDir };
}

/** Takes the lock on `file` in a separate process, resolved once it holds it; returns a release function. */
async function hold(file: string): Promise<() => Promise<void>> {
  const p = spawn('/bin/sh', ['-c', 'exec 9>>"$0"; /usr/bin/flock -n 9 || exit 3; echo locked; exec sleep 60', file], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  holders.push(p);
  await new Promise<void>((res, rej) => {
    p.stdout?.once('data', () => res());
    p.once('exit', (c) => rej(new Error(`holder of ${file} exited with ${c}`)));
  });
  return async () => {
    const gone = once(p, 'exit');
    p.kill('SIGKILL');
    await gone;
  };
}

const isLocked = (file: string) => spawnSync('/usr/bin/flock', ['-n', file, 'true']).status !== 0;

function run(s: { script: string; slots: string }, slots: number, original: string | undefined, ...cmd: string[]) {
  return runEnv(s, slots, original !== undefined ? { SSH_ORIGINAL_COMMAND: original } : {}, ...cmd);
}

/** run, with SSH_CONNECTION and the like as sshd sets them. */
function runEnv(s: { script: string; slots: string }, slots: number, env: Record<string, string>, ...cmd: string[]) {
  const t = Date.now();
  const r = spawnSync(s.script, [String(slots), s.slots, ...cmd], {
    env: { PATH: '/usr/bin:/bin', ...env },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t };
}

/** sshd's SSH_CONNECTION for a client at `addr`. */
const from = (addr: string) => `${addr} 50123 10.0.0.1 22`;

/**
 * A pull through the script that keeps running: `cmd` must print a line once it runs (it then holds its slots).
 * Resolves with the process, its first line, and its exit and stderr to come.
 */
async function startPull(
  s: { script: string; slots: string },
  slots: number,
  env: Record<string, string>,
  ...cmd: string[]
): Promise<{ p: ChildProcess; line: string; exited: Promise<{ code: number | null; stderr: string }> }> {
  const p = spawn(s.script, [String(slots), s.slots, ...cmd], {
    env: { PATH: '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  holders.push(p);
  let stderr = '';
  p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; stderr: string }>((res) =>
    p.once('exit', (code) => setTimeout(() => res({ code, stderr }), 50)),
  );
  const line = await new Promise<string>((res, rej) => {
    p.stdout?.once('data', (d: Buffer) => res(d.toString().trim()));
    p.once('exit', (c) => rej(new Error(`the pull exited with ${c} before it ran: ${stderr}`)));
  });
  return { p, line, exited };
}

/** Ends a startPull whose command said its pid: SIGKILL to the command, as a crashed rsync; waits for the script. */
async function endPull(h: { line: string; exited: Promise<unknown> }): Promise<void> {
  process.kill(Number(h.line), 'SIGKILL');
  await h.exited;
}

/** Polls until `file` can be locked (and so is free); the milliseconds that took, or -1 after `ms`. */
async function freedWithin(file: string, ms: number): Promise<number> {
  const t = Date.now();
  while (Date.now() - t < ms) {
    if (!isLocked(file)) return Date.now() - t;
    await Bun.sleep(50);
  }
  return -1;
}

/** Whether a process is gone (or a zombie nobody reaps: it runs nothing and holds nothing). */
function gone(pid: number): boolean {
  const st = statSync(`/proc/${pid}`, { throwIfNoEntry: false });
  if (!st) return true;
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

describe('syncSlotKeysLine', () => {
  test('the forced command puts sync-slot N <state>/slots in front of the read-only rrsync', () => {
    expect(syncSlotKeysLine(PUB, '/data/slaves', '/var/lib/clusterboot', 8)).toBe(
      'restrict,command="/var/lib/clusterboot/sync-slot 8 /var/lib/clusterboot/slots /usr/bin/rrsync -ro /data/slaves" ' +
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtKFx3FZ7gn4H7fb0iTQqtGwrhXr8EBXpgktLnjNqhC clusterboot-node',
    );
    expect(syncSlotKeysLine(PUB, '/data/slaves', '/var/lib/clusterboot/', 1, '/usr/local/bin/rrsync')).toStartWith(
      'restrict,command="/var/lib/clusterboot/sync-slot 1 /var/lib/clusterboot/slots /usr/local/bin/rrsync -ro /data/slaves" ',
    );
  });
  test('refuses what would not be safe inside command="...", and slot counts that are not 1 to 1000', () => {
    for (const d of ['/var/lib/my state', 'var/lib', '/var/"x', '/var/../etc', ''])
      expect(() => syncSlotKeysLine(PUB, '/data/slaves', d, 2)).toThrow(/stateDir/);
    expect(() => syncSlotKeysLine(PUB, '/data/x y', '/var/lib/clusterboot', 2)).toThrow(/masterRoot/);
    for (const k of [0, -1, 1.5, 1001, Number.NaN])
      expect(() => syncSlotKeysLine(PUB, '/data/slaves', '/var/lib/clusterboot', k)).toThrow(
        /whole number from 1 to 1000/,
      );
    expect(() => syncSlotKeysLine('', '/data/slaves', '/var/lib/clusterboot', 2)).toThrow(
      /one OpenSSH public key line/,
    );
  });
});

describe('installSyncSlot', () => {
  test('writes the script 0755 and the slots folder 0755 whatever the umask; again: same bytes, slot files kept', () => {
    const old = process.umask(0o077);
    try {
      const s = state();
      expect({ script: s.script, slotsDir: s.slots }).toEqual(syncSlotPaths(s.dir));
      expect(statSync(s.script).mode & 0o777).toBe(0o755);
      expect(statSync(s.slots).mode & 0o777).toBe(0o755);
      expect(statSync(s.dir).mode & 0o777).toBe(0o755);
      expect(readFileSync(s.script, 'utf8')).toBe(syncSlotScript());
      writeFileSync(join(s.slots, 'slot0'), '');
      installSyncSlot(s.dir);
      expect(readdirSync(s.slots)).toEqual(['slot0']);
      expect(readdirSync(s.dir).sort()).toEqual(['slots', 'sync-slot']); // no temp file left
    } finally {
      process.umask(old);
    }
  });
  test('syncSlotProblems: a file where the folder belongs, a folder where the script belongs, an unsafe path', () => {
    const d = join(tmp, `state${n++}`);
    mkdirSync(join(d, 'sync-slot'), { recursive: true });
    writeFileSync(join(d, 'slots'), '');
    expect(syncSlotProblems(d)).toEqual([
      `${d}/slots exists and is not a directory: move it away`,
      `${d}/sync-slot exists and is not a regular file: move it away`,
    ]);
    expect(syncSlotProblems('/var/lib/a b')[0]).toMatch(/state dir '\/var\/lib\/a b' must be an absolute path/);
    expect(syncSlotProblems(join(tmp, 'not-yet'))).toEqual([]);
  });
  test('the script is POSIX sh: dash and bash --posix parse it', () => {
    const s = state();
    expect(spawnSync('/bin/dash', ['-n', s.script]).status).toBe(0);
    expect(spawnSync('bash', ['--posix', '-n', s.script]).status).toBe(0);
  });
});

describe('sync-slot (the script, for real)', () => {
  test('N=1, slot held: a root pull exits 75 with the message and does not run; released: it runs', async () => {
    const s = state();
    const release = await hold(join(s.slots, 'slot0'));
    for (const original of [ROOT_PULL, ROOT_PULL_PREFIX]) {
      const r = run(s, 1, original, '/bin/echo', 'ran');
      expect(r.status).toBe(SYNC_SLOT_BUSY);
      expect(r.stderr).toBe(`${noSlotMessage(1)}\n`);
      expect(r.stderr).toBe('clusterboot: no sync slot free (1 in use); retry later\n');
      expect(r.stdout).toBe('');
      expect(r.ms).toBeLessThan(30_000); // turned away, not queued behind a holder that never lets go
    }
    await release();
    const r = run(s, 1, ROOT_PULL, '/bin/echo', 'ran', 'with args');
    expect(r).toMatchObject({ status: 0, stdout: 'ran with args\n', stderr: '' });
  });

  test('any other command never waits for a slot, even with every slot taken', async () => {
    const s = state();
    const release = await hold(join(s.slots, 'slot0'));
    // stamps and table, no command at all (ssh without one), and look-alikes that are not the root template
    // (`rootfs` and `rootfs/sbin/` were here once: they are root pulls, see the spellings test below)
    for (const original of NOT_ROOT_PULLS) {
      const r = run(s, 1, original, '/bin/echo', 'ran');
      expect([original, r.status, r.stdout]).toEqual([original, 0, 'ran\n']);
    }
    await release();
  });

  test('every spelling of the root template takes a slot: held, each is turned away; free, each runs holding it', async () => {
    const s = state();
    const slot0 = join(s.slots, 'slot0');
    const tree = join(tmp, `tree${n++}`);
    mkdirSync(join(tree, 'rootfs/etc'), { recursive: true });
    mkdirSync(join(tree, 'stamps'));
    mkdirSync(join(tree, 'data/slaves/rootfs'), { recursive: true });
    symlinkSync('rootfs', join(tree, 'current'));
    symlinkSync('rootfs/etc', join(tree, 'etc-link'));
    symlinkSync('../rootfs', join(tree, 'stamps/up'));
    // the command's last word is rrsync's tree, as in the node key's line: symlinks resolve against it
    const probe = ['/bin/sh', '-c', 'if /usr/bin/flock -n "$0" true; then echo free; else echo held; fi', slot0, tree];
    const release = await hold(slot0);
    for (const original of ROOT_PULL_SPELLINGS) {
      const r = run(s, 1, original, ...probe);
      expect([original, r.status, r.stdout, r.stderr]).toEqual([original, SYNC_SLOT_BUSY, '', `${noSlotMessage(1)}\n`]);
    }
    // the same with the tree's look-alikes: they never wait
    for (const original of NOT_ROOT_PULLS) {
      const r = run(s, 1, original, ...probe);
      expect([original, r.status, r.stdout]).toEqual([original, 0, 'held\n']); // held by the holder
    }
    await release();
    for (const original of ROOT_PULL_SPELLINGS) {
      const r = run(s, 1, original, ...probe);
      expect([original, r.status, r.stdout]).toEqual([original, 0, 'held\n']); // by the pull itself
      expect(isLocked(slot0)).toBe(false);
    }
  });

  test("the exec'd command holds the slot until it exits (fd 9 inherited), and a killed one frees it", async () => {
    const s = state();
    const slot0 = join(s.slots, 'slot0');
    // inside the command, a second lock on slot0 fails: the command itself holds it
    const probe = run(
      s,
      1,
      ROOT_PULL,
      '/bin/sh',
      '-c',
      'if /usr/bin/flock -n "$0" true; then echo free; else echo held; fi',
      slot0,
    );
    expect(probe).toMatchObject({ status: 0, stdout: 'held\n' });
    expect(isLocked(slot0)).toBe(false); // and it is free once the command exited

    // a "crash": the pull (the command, rsync's stand-in; it says its pid, which exec keeps) is killed with SIGKILL
    // mid-way; nothing cleans up, the kernel drops the lock. The script's own process is the shell that waits for
    // timeout(1) to say why a pull ended, no longer the command itself.
    // (wait for the command to say it runs; probing with flock meanwhile would itself take the slot for a moment)
    const pull = await startPull(s, 1, { SSH_ORIGINAL_COMMAND: ROOT_PULL }, '/bin/sh', '-c', 'echo $$; exec sleep 30');
    expect(isLocked(slot0)).toBe(true);
    expect(run(s, 1, ROOT_PULL, '/bin/echo', 'ran').status).toBe(SYNC_SLOT_BUSY);
    process.kill(Number(pull.line), 'SIGKILL');
    expect((await pull.exited).code).toBe(137); // the command's death, passed on
    expect(isLocked(slot0)).toBe(false);
    expect(run(s, 1, ROOT_PULL, '/bin/echo', 'ran')).toMatchObject({ status: 0, stdout: 'ran\n' });
  });

  test('N=2: one holder leaves slot1 to the pull; two holders fill both slots', async () => {
    const s = state();
    const r0 = await hold(join(s.slots, 'slot0'));
    const took = run(
      s,
      2,
      ROOT_PULL,
      '/bin/sh',
      '-c',
      'for f in slot0 slot1; do /usr/bin/flock -n "$0/$f" true || echo "$f taken"; done',
      s.slots,
    );
    expect(took).toMatchObject({ status: 0, stdout: 'slot0 taken\nslot1 taken\n' }); // slot0 by the holder, slot1 by this pull
    const r1 = await hold(join(s.slots, 'slot1'));
    const busy = run(s, 2, ROOT_PULL, '/bin/echo', 'ran');
    expect(busy).toMatchObject({
      status: SYNC_SLOT_BUSY,
      stdout: '',
      stderr: 'clusterboot: no sync slot free (2 in use); retry later\n',
    });
    await r0();
    expect(run(s, 2, ROOT_PULL, '/bin/echo', 'ran')).toMatchObject({ status: 0, stdout: 'ran\n' });
    await r1();
    expect(readdirSync(s.slots).sort()).toEqual(['slot0', 'slot1']); // never more slot files than N
  });

  test('a broken limiter lets the pull through with a warning; bad arguments are a usage error', () => {
    const s = state();
    rmSync(s.slots, { recursive: true });
    const r = run(s, 2, ROOT_PULL, '/bin/echo', 'ran');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('ran\n');
    expect(r.stderr).toContain('cannot open a slot file');
    expect(run(s, 2, ROOT_PULL).status).toBe(64);
    expect(run(s, Number.NaN, ROOT_PULL, '/bin/echo').status).toBe(64);
    // 0: no limit
    expect(run(s, 0, ROOT_PULL, '/bin/echo', 'ran')).toMatchObject({ status: 0, stdout: 'ran\n' });
  });
});

describe('sync-slot limits: lease, stall timeout, per address', () => {
  test('the limits are written into the script; out of range they are refused before anything is written', () => {
    expect(syncSlotScript()).toContain(`\nlease=${DEFAULT_SYNC_LEASE}\nstall=${DEFAULT_SYNC_STALL}\nper_addr=1\n`);
    expect(syncSlotScript({ leaseSeconds: 0, stallSeconds: 7, perAddress: 3 })).toContain(
      '\nlease=0\nstall=7\nper_addr=3\n',
    );
    for (const [l, want] of [
      [{ leaseSeconds: -1 }, /--sync-lease -1 must be a whole number of seconds from 0/],
      [{ leaseSeconds: 1.5 }, /--sync-lease 1.5/],
      [{ stallSeconds: 604801 }, /--sync-stall 604801/],
      [{ perAddress: 1001 }, /--sync-per-address 1001/],
      [{ perAddress: Number.NaN }, /--sync-per-address NaN/],
    ] as const) {
      expect(() => syncSlotScript(l)).toThrow(want);
      const d = join(tmp, `state${n++}`);
      expect(syncSlotProblems(d, l).join('\n')).toMatch(want);
      expect(() => installSyncSlot(d, l)).toThrow(want);
      expect(existsSync(d)).toBe(false);
    }
  });

  test('the master side of a root pull gets --timeout=STALL as its last option; other pulls are left as they came', () => {
    const echo = ['/bin/sh', '-c', 'printf "%s\\n" "$SSH_ORIGINAL_COMMAND"'];
    const s = state();
    expect(run(s, 1, ROOT_PULL, ...echo).stdout).toBe(
      `rsync --server --sender -logDtpre.iLsfxCIvu --numeric-ids --timeout=${DEFAULT_SYNC_STALL} . rootfs/\n`,
    );
    // after the client's own --timeout: rsync takes the last one
    const agent = 'rsync --server --sender -lHogDtpAXre.iLsfxCIvu --timeout=120 --numeric-ids . data/slaves/rootfs/';
    expect(run(s, 1, agent, ...echo).stdout).toBe(
      `rsync --server --sender -lHogDtpAXre.iLsfxCIvu --timeout=120 --numeric-ids --timeout=300 . data/slaves/rootfs/\n`,
    );
    expect(run(s, 1, OTHER_PULL, ...echo).stdout).toBe(`${OTHER_PULL}\n`);
    expect(run(state({ stallSeconds: 0 }), 1, ROOT_PULL, ...echo).stdout).toBe(`${ROOT_PULL}\n`);
  });

  test('a holder that outlives its lease is killed with all it started; its slot goes to the next pull', async () => {
    const s = state({ leaseSeconds: 2 });
    const slot0 = join(s.slots, 'slot0');
    const t = Date.now();
    // the command starts a child of its own (rrsync's rsync) and both would sleep for 10 minutes
    const pull = await startPull(
      s,
      1,
      { SSH_ORIGINAL_COMMAND: ROOT_PULL },
      '/bin/sh',
      '-c',
      'sleep 600 & echo $!; wait',
    );
    const child = Number(pull.line);
    expect(run(s, 1, ROOT_PULL, '/bin/echo', 'ran').status).toBe(SYNC_SLOT_BUSY);
    const end = await pull.exited;
    const ms = Date.now() - t;
    expect(end.code).toBe(137);
    expect(end.stderr).toContain(`${leaseOverMessage(2)}\n`);
    expect(SYNC_LEASE_OVER.exec(end.stderr)?.[1]).toBe('2');
    expect(ms).toBeGreaterThanOrEqual(1900);
    expect(ms).toBeLessThan(30_000); // killed at its lease, not left to run its sleep 600
    expect(gone(child)).toBe(true);
    expect(isLocked(slot0)).toBe(false);
    expect(run(s, 1, ROOT_PULL, '/bin/echo', 'ran')).toMatchObject({ status: 0, stdout: 'ran\n', stderr: '' });
    // a pull that ends in time says nothing about a lease, and a command of its own SIGKILL is not the lease
    const own = run(s, 1, ROOT_PULL, '/bin/sh', '-c', 'kill -KILL $$');
    expect(own.status).toBe(137);
    expect(own.stderr).not.toContain('lease');
  });

  test("lease 0: no timeout(1) in between, the command is exec'd with its slot", () => {
    const s = state({ leaseSeconds: 0 });
    // exec'd: the command's parent is whoever started the script (this test), not a shell or timeout
    const r = run(
      s,
      1,
      ROOT_PULL,
      '/bin/sh',
      '-c',
      'echo $PPID; /usr/bin/flock -n "$0" true || echo held',
      join(s.slots, 'slot0'),
    );
    expect(r.stdout).toBe(`${process.pid}\nheld\n`);
  });

  test('per address: a second root pull from one address is refused while the first runs; another address is not', async () => {
    const s = state();
    const sleeper = ['/bin/sh', '-c', 'echo $$; exec sleep 60']; // says its pid
    const first = await startPull(
      s,
      4,
      { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: from('10.0.0.5') },
      ...sleeper,
    );
    expect(first.line).toMatch(/^\d+$/);
    for (const addr of ['10.0.0.5', '::ffff:10.0.0.5', '10.0.0.5%eth0']) {
      const r = runEnv(s, 4, { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: from(addr) }, '/bin/echo', 'ran');
      expect([addr, r.status, r.stdout, r.stderr]).toEqual([
        addr,
        SYNC_SLOT_BUSY,
        '',
        `${noAddressSlotMessage(1, '10.0.0.5')}\n`,
      ]);
      expect(r.stderr).toBe(
        'clusterboot: no sync slot free (1 in use) for 10.0.0.5, at most 1 per address; retry later\n',
      );
      // agents that know only the plain line still recognise it, and retry
      expect(NO_SYNC_SLOT.exec(r.stderr)?.[1]).toBe('1');
      expect(NO_ADDRESS_SYNC_SLOT.exec(r.stderr)?.slice(1)).toEqual(['1', '10.0.0.5']);
      expect(r.ms).toBeLessThan(30_000); // turned away, not queued
    }
    expect(NO_ADDRESS_SYNC_SLOT.test(noSlotMessage(8))).toBe(false);
    // other addresses get the other slots; the same address's other pulls never wait
    for (const addr of ['10.0.0.6', 'fd00::6']) {
      const r = runEnv(s, 4, { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: from(addr) }, '/bin/echo', 'ran');
      expect([addr, r.status, r.stdout]).toEqual([addr, 0, 'ran\n']);
    }
    for (const original of NOT_ROOT_PULLS) {
      const r = runEnv(
        s,
        4,
        { ...(original ? { SSH_ORIGINAL_COMMAND: original } : {}), SSH_CONNECTION: from('10.0.0.5') },
        '/bin/echo',
        'ran',
      );
      expect([original, r.status, r.stdout]).toEqual([original, 0, 'ran\n']);
    }
    // an address is a file name of [0-9a-fA-F.:] only, inside the slots folder
    const odd = runEnv(
      s,
      4,
      { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: '../../x/y 1 2 3' },
      '/bin/echo',
      'ran',
    );
    expect(odd.status).toBe(0);
    expect(readdirSync(s.slots).sort()).toEqual([
      'addr-....-slot0',
      'addr-10.0.0.5-slot0',
      'addr-10.0.0.6-slot0',
      'addr-fd00::6-slot0',
      'slot0',
      'slot1',
    ]);
    expect(readdirSync(s.dir).sort()).toEqual(['slots', 'sync-slot']);
    await endPull(first);
    expect(isLocked(join(s.slots, 'addr-10.0.0.5-slot0'))).toBe(false);
    const again = runEnv(
      s,
      4,
      { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: from('10.0.0.5') },
      '/bin/echo',
      'ran',
    );
    expect(again).toMatchObject({ status: 0, stdout: 'ran\n', stderr: '' });
  });

  test('per address 2 lets a second pull from one address in and refuses a third; 0 has no per-address limit', async () => {
    const sleeper = ['/bin/sh', '-c', 'echo $$; exec sleep 60']; // says its pid
    const env = { SSH_ORIGINAL_COMMAND: ROOT_PULL, SSH_CONNECTION: from('10.0.0.7') };
    const two = state({ perAddress: 2 });
    const a = await startPull(two, 4, env, ...sleeper);
    const b = await startPull(two, 4, env, ...sleeper);
    expect([a.line, b.line]).toEqual([expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/)]);
    const third = runEnv(two, 4, env, '/bin/echo', 'ran');
    expect(third).toMatchObject({ status: SYNC_SLOT_BUSY, stderr: `${noAddressSlotMessage(2, '10.0.0.7')}\n` });
    const none = state({ perAddress: 0 });
    const c = await startPull(none, 4, env, ...sleeper);
    expect(runEnv(none, 4, env, '/bin/echo', 'ran')).toMatchObject({ status: 0, stdout: 'ran\n' });
    expect(readdirSync(none.slots).filter((f) => f.startsWith('addr-'))).toEqual([]);
    for (const h of [a, b, c]) await endPull(h);
  });
});

// The node key's exact forced command with a real rsync, through a fake "ssh" that runs it as sshd would
// (`sh -c <command>` with SSH_ORIGINAL_COMMAND set), like publish.test.ts does for the plain rrsync line.
describe('sync-slot in front of rrsync -ro', () => {
  const haveRsync = spawnSync('rsync', ['--version']).status === 0 && existsSync('/usr/bin/rrsync');
  test.skipIf(!haveRsync)(
    'a root pull works with a free slot and is turned away with the message when it is held; other pulls still work',
    async () => {
      const s = state();
      const root = join(tmp, `master${n++}`);
      mkdirSync(join(root, 'rootfs/sbin'), { recursive: true });
      mkdirSync(join(root, 'stamps'), { recursive: true });
      writeFileSync(join(root, 'rootfs/sbin/init'), '#!/bin/sh\n');
      writeFileSync(join(root, 'stamps/rootfs.stamp'), 'x\n');
      const forced = /command="([^"]+)"/.exec(syncSlotKeysLine(PUB, root, s.dir, 1))?.[1];
      expect(forced).toBe(`${s.dir}/sync-slot 1 ${s.dir}/slots /usr/bin/rrsync -ro ${root}`);
      const fakeSsh = join(tmp, `fakessh${n++}`);
      writeFileSync(fakeSsh, `#!/bin/sh\nshift\nSSH_ORIGINAL_COMMAND="$*" exec sh -c '${forced}'\n`);
      chmodSync(fakeSsh, 0o755);
      const rsync = (...args: string[]) =>
        spawnSync('rsync', ['-e', fakeSsh, ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
          encoding: 'utf8',
          timeout: 30_000,
        });

      const dst = join(tmp, `dst${n++}`);
      mkdirSync(dst);
      const pull = rsync('-a', '--delete', 'master:rootfs/', `${dst}/`);
      expect(pull.stderr).toBe('');
      expect(pull.status).toBe(0);
      expect(readFileSync(join(dst, 'sbin/init'), 'utf8')).toBe('#!/bin/sh\n');

      const release = await hold(join(s.slots, 'slot0'));
      const dst2 = join(tmp, `dst${n++}`);
      mkdirSync(dst2);
      const busy = rsync('-a', '--delete', 'master:rootfs/', `${dst2}/`);
      // ssh passes the forced command's status on, and rsync mostly exits with it (75); when it sees the closed pipe
      // before it reaps the transport it says 12 (protocol stream) instead: a race, seen 1 run in 3 on a loaded host.
      // The agent keys on the stderr line below, never on the status.
      expect([SYNC_SLOT_BUSY, 12]).toContain(busy.status ?? -1);
      expect(busy.stderr).toContain('clusterboot: no sync slot free (1 in use); retry later');
      expect(readdirSync(dst2)).toEqual([]);
      // the stamps are not a root pull: they come through while the slot is held
      const stamps = rsync('-rt', 'master:stamps', `${dst2}/`);
      expect(stamps.status).toBe(0);
      expect(readFileSync(join(dst2, 'stamps/rootfs.stamp'), 'utf8')).toBe('x\n');
      await release();
      const again = rsync('-a', '--delete', 'master:rootfs/', `${dst2}/`);
      expect(again.status).toBe(0);
      expect(readdirSync(dst2).sort()).toEqual(['sbin']);
    },
  );
  /** A master root with a 32 MB root file (sparse), the script with `limits`, and a fake ssh as above. */
  function master(limits: SyncSlotLimits) {
    const s = state(limits);
    const root = join(tmp, `master${n++}`);
    mkdirSync(join(root, 'rootfs'), { recursive: true });
    writeFileSync(join(root, 'rootfs/big.bin'), '');
    truncateSync(join(root, 'rootfs/big.bin'), 32 << 20);
    const forced = /command="([^"]+)"/.exec(syncSlotKeysLine(PUB, root, s.dir, 1))?.[1];
    const fakeSsh = join(tmp, `fakessh${n++}`);
    // sshd's SSH_CONNECTION comes from FAKE_CONN
    writeFileSync(
      fakeSsh,
      `#!/bin/sh\nshift\nSSH_CONNECTION="$FAKE_CONN" SSH_ORIGINAL_COMMAND="$*" exec sh -c '${forced}'\n`,
    );
    chmodSync(fakeSsh, 0o755);
    return { s, root: realpathSync(root), fakeSsh, slot0: join(s.slots, 'slot0') };
  }

  /** The master-side rsyncs serving `root` (they run in it, or in the folder they send), zombies left out. */
  function serverRsyncs(root: string): number[] {
    return readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e) && !gone(Number(e)))
      .filter((e) => {
        try {
          return (
            readFileSync(`/proc/${e}/comm`, 'utf8').trim() === 'rsync' &&
            `${readlinkSync(`/proc/${e}/cwd`)}/`.startsWith(`${root}/`)
          );
        } catch {
          return false;
        }
      })
      .map(Number);
  }

  /**
   * A root pull from `addr` that hangs once data flows: its rsync processes are stopped (SIGSTOP), and so read
   * nothing more, while the master's side (their child here, through the fake ssh) runs on.
   */
  async function stalledPull(m: ReturnType<typeof master>, addr: string) {
    const dst = join(tmp, `dst${n++}`);
    mkdirSync(dst);
    const client = spawn('rsync', ['-e', m.fakeSsh, '-a', '--bwlimit=4m', 'master:rootfs/', `${dst}/`], {
      env: { ...process.env, FAKE_CONN: from(addr) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    holders.push(client);
    let stderr = '';
    client.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = once(client, 'exit');
    const t = Date.now();
    const flowing = () =>
      readdirSync(dst).some((f) => (statSync(join(dst, f), { throwIfNoEntry: false })?.size ?? 0) > 0);
    while (!flowing()) {
      if (Date.now() - t > 10_000) throw new Error(`the pull never started: ${stderr}`);
      await Bun.sleep(20);
    }
    const pid = client.pid as number;
    const own = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter((c) => readFileSync(`/proc/${c}/comm`, 'utf8').trim() === 'rsync');
    expect(own.length).toBe(1); // rsync's receiver; the generator is the client itself
    for (const p of [pid, ...own]) process.kill(p, 'SIGSTOP');
    return {
      stoppedAt: Date.now(),
      stderr: () => stderr,
      /** SIGKILL the stopped client, and wait for it. */
      end: async () => {
        for (const p of [pid, ...own]) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        await exited;
      },
    };
  }

  /** A full root pull from `addr`, to a fresh folder; its status and whether big.bin arrived whole. */
  function fullPull(m: ReturnType<typeof master>, addr: string) {
    const dst = join(tmp, `dst${n++}`);
    mkdirSync(dst);
    const r = spawnSync('rsync', ['-e', m.fakeSsh, '-a', 'master:rootfs/', `${dst}/`], {
      env: { ...process.env, FAKE_CONN: from(addr) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    return {
      status: r.status,
      stderr: r.stderr,
      whole: statSync(join(dst, 'big.bin'), { throwIfNoEntry: false })?.size === 32 << 20,
    };
  }

  test.skipIf(!haveRsync)(
    'a root pull whose client stops reading loses its slot within the stall timeout; another node then pulls',
    async () => {
      const m = master({ stallSeconds: 2, leaseSeconds: 120 });
      const hung = await stalledPull(m, '10.0.0.8');
      try {
        expect(serverRsyncs(m.root).length).toBe(1);
        expect(isLocked(m.slot0)).toBe(true);
        expect(fullPull(m, '10.0.0.9')).toMatchObject({ status: expect.any(Number), whole: false }); // busy
        const ms = await freedWithin(m.slot0, 30_000);
        const after = Date.now() - hung.stoppedAt;
        // the master's rsync gave up on its own --timeout=2, long before the lease
        expect(ms).not.toBe(-1);
        expect(after).toBeGreaterThanOrEqual(1000);
        expect(after).toBeLessThan(30_000); // far from the other limit (lease 120 s, or never)
        expect(hung.stderr()).toContain('io timeout after 2 seconds');
        expect(hung.stderr()).not.toContain('lease');
        expect(serverRsyncs(m.root)).toEqual([]);
        expect(isLocked(join(m.s.slots, 'addr-10.0.0.8-slot0'))).toBe(false);
        const next = fullPull(m, '10.0.0.9');
        expect(next).toMatchObject({ status: 0, whole: true });
      } finally {
        await hung.end();
      }
    },
    90_000,
  );

  test.skipIf(!haveRsync)(
    'a root pull past its lease is killed with its rsync, stalled or not; the slot goes to the next node',
    async () => {
      const m = master({ stallSeconds: 0, leaseSeconds: 2 });
      const t = Date.now();
      const hung = await stalledPull(m, '10.0.0.8');
      try {
        expect(serverRsyncs(m.root).length).toBe(1);
        const ms = await freedWithin(m.slot0, 30_000);
        const after = Date.now() - t;
        expect(ms).not.toBe(-1);
        expect(after).toBeGreaterThanOrEqual(1900);
        expect(after).toBeLessThan(30_000); // killed at its lease, not left stalled (no stall timeout here)
        // the master's rsync does not linger (on SIGTERM it would, telling the stalled client)
        const t2 = Date.now();
        while (serverRsyncs(m.root).length && Date.now() - t2 < 2000) await Bun.sleep(50);
        expect(serverRsyncs(m.root)).toEqual([]);
        // the script frees the slots first, then says why (a stderr that blocks must not keep them)
        const t3 = Date.now();
        while (!hung.stderr().includes(leaseOverMessage(2)) && Date.now() - t3 < 2000) await Bun.sleep(20);
        expect(hung.stderr()).toContain(leaseOverMessage(2));
        expect(fullPull(m, '10.0.0.9')).toMatchObject({ status: 0, whole: true });
      } finally {
        await hung.end();
      }
    },
    90_000,
  );
});

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
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  installSyncSlot,
  syncSlotKeysLine,
  syncSlotPaths,
  syncSlotProblems,
  syncSlotScript,
} from '../../../../builder/master/syncslot.ts';
import { noSlotMessage, SYNC_SLOT_BUSY } from '../../../../agent/contract/syncslot.ts';

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

/** A fresh state dir with the script installed. */
function state(): { dir: string; script: string; slots: string } {
  const dir = join(tmp, `state${n++}`);
  const p = installSyncSlot(dir);
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
  const t = Date.now();
  const r = spawnSync(s.script, [String(slots), s.slots, ...cmd], {
    env: { PATH: '/usr/bin:/bin', ...(original !== undefined ? { SSH_ORIGINAL_COMMAND: original } : {}) },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t };
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
      expect(r.ms).toBeLessThan(5000); // turned away at once, not queued
    }
    await release();
    const r = run(s, 1, ROOT_PULL, '/bin/echo', 'ran', 'with args');
    expect(r).toMatchObject({ status: 0, stdout: 'ran with args\n', stderr: '' });
  });

  test('any other command never waits for a slot, even with every slot taken', async () => {
    const s = state();
    const release = await hold(join(s.slots, 'slot0'));
    // stamps and table, no command at all (ssh without one), and look-alikes that are not the root template
    for (const original of [
      OTHER_PULL,
      undefined,
      'rsync --server --sender . rootfs',
      'rsync --server --sender . rootfs/sbin/',
      'rsync --server --sender . myrootfs/x',
    ]) {
      const r = run(s, 1, original, '/bin/echo', 'ran');
      expect([original, r.status, r.stdout]).toEqual([original, 0, 'ran\n']);
    }
    await release();
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

    // a "crash": the pull is killed with SIGKILL mid-way; nothing cleans up, the kernel drops the lock
    // (wait for the command to say it runs; probing with flock meanwhile would itself take the slot for a moment)
    const p = spawn(s.script, ['1', s.slots, '/bin/sh', '-c', 'echo running; exec sleep 30'], {
      env: { PATH: '/usr/bin:/bin', SSH_ORIGINAL_COMMAND: ROOT_PULL },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    holders.push(p);
    await new Promise<void>((res, rej) => {
      p.stdout?.once('data', () => res());
      p.once('exit', (c) => rej(new Error(`the pull exited with ${c}`)));
    });
    expect(isLocked(slot0)).toBe(true);
    expect(run(s, 1, ROOT_PULL, '/bin/echo', 'ran').status).toBe(SYNC_SLOT_BUSY);
    const gone = once(p, 'exit');
    p.kill('SIGKILL');
    await gone;
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
});

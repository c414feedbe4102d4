// Phase "identity": this node's own files (hostname, machine-id, SSH host keys, the admin's extras)
// laid into the writable layer over the shared root.
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { run } from '../sys/exec.ts';
import { writeAtomic } from '../contract/atomic.ts';
import { machineId, planIdentity, type IdentityStep } from '../plans/identity.ts';
import { info, warn } from '../log.ts';
import type { Phase } from '../phase.ts';
import { syncDisks } from '../sys/libc.ts';
import { lstatLink, readSmall, writeInRoot } from '../sys/fsutil.ts';
import { resolveInRoot } from '../plans/rootpath.ts';
import { ROOT_MNT, FETCHED_FILES, KEPT, KEPT_ID, KEPT_KEYS, NEWROOT } from '../paths.ts';
import type { Ctx } from '../phase.ts';
import { HOST_KEY_LINE } from '../contract/report.ts';

/** The host key types a node makes for itself: fast to make on a Pi (RSA takes seconds) and what OpenSSH prefers. */
export const NODE_KEY_TYPES = ['ed25519', 'ecdsa'] as const;
const HOST_KEY = /^ssh_host_([a-z0-9]+)_key(\.pub)?$/;

async function apply(s: IdentityStep, ctx: Ctx): Promise<void> {
  switch (s.kind) {
    case 'mirror': {
      // into a fresh copy, then swap: a power cut leaves the old mirror or the new one, never half of one
      const tmp = `${KEPT}.new`;
      rmSync(tmp, { recursive: true, force: true });
      await run('rsync', ['-a', `${FETCHED_FILES}/`, `${tmp}/`], { timeoutMs: 120_000 });
      rmSync(`${KEPT}.old`, { recursive: true, force: true });
      if (existsSync(KEPT)) renameSync(KEPT, `${KEPT}.old`);
      renameSync(tmp, KEPT);
      rmSync(`${KEPT}.old`, { recursive: true, force: true });
      syncDisks();
      return;
    }
    case 'drop-mirror':
      info('identity', 'the master has no per-node files for this node any more: forgetting the kept copy');
      rmSync(KEPT, { recursive: true, force: true });
      return;
    case 'lay-files':
      // -a keeps the modes (host keys 0600); no --delete: the root's other files stay
      // the template's symlinks are safe here: rsync replaces a link it writes over and follows no dir link without -K
      await run('rsync', ['-a', `${KEPT}/`, `${NEWROOT}/`], { timeoutMs: 120_000 });
      return;
    case 'hostname':
      writeInRoot(NEWROOT, 'etc/hostname', `${s.name}\n`, 0o644);
      return;
    case 'make-machine-id':
      mkdirSync(`${ROOT_MNT}/identity`, { recursive: true });
      writeAtomic(KEPT_ID, `${machineId(crypto.getRandomValues(new Uint8Array(16)))}\n`);
      info(
        'identity',
        `made this node's machine-id (kept on the root partition): ${readFileSync(KEPT_ID, 'utf8').trim()}`,
      );
      return;
    case 'lay-machine-id':
      writeInRoot(NEWROOT, 'etc/machine-id', readFileSync(KEPT_ID), 0o444);
      return;
    case 'make-host-keys':
      await makeHostKeys(ctx.facts.hostname ?? 'node');
      return;
    case 'lay-host-keys':
      layHostKeys();
      return;
  }
}

// Made into a fresh folder, then swapped in: a power cut leaves the old keys or the new ones, never half a set.
async function makeHostKeys(host: string): Promise<void> {
  const tmp = `${KEPT_KEYS}.new`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  for (const t of NODE_KEY_TYPES)
    await run('sshKeygen', ['-q', '-t', t, '-N', '', '-C', `root@${host}`, '-f', `${tmp}/ssh_host_${t}_key`], {
      timeoutMs: 120_000,
    });
  syncDisks();
  rmSync(`${KEPT_KEYS}.old`, { recursive: true, force: true });
  if (existsSync(KEPT_KEYS)) renameSync(KEPT_KEYS, `${KEPT_KEYS}.old`);
  renameSync(tmp, KEPT_KEYS);
  rmSync(`${KEPT_KEYS}.old`, { recursive: true, force: true });
  syncDisks();
  info('identity', `made this node's own SSH host keys (${NODE_KEY_TYPES.join(', ')}), kept on the root partition`);
}

// The node's keys into the new root (0600 / 0644), and the template's other host keys hidden: a template copied
// from a running machine carries that machine's keys, which every node would otherwise share.
function layHostKeys(): void {
  for (const name of readdirSync(KEPT_KEYS).filter((n) => HOST_KEY.test(n)))
    writeInRoot(
      NEWROOT,
      `etc/ssh/${name}`,
      readFileSync(`${KEPT_KEYS}/${name}`),
      name.endsWith('.pub') ? 0o644 : 0o600,
    );
  const dir = resolveInRoot(NEWROOT, 'etc/ssh', lstatLink);
  if (dir === null) return;
  const ours = new Set<string>(NODE_KEY_TYPES);
  const hidden: string[] = [];
  for (const name of readdirSync(`${NEWROOT}${dir}`)) {
    const m = HOST_KEY.exec(name);
    if (!m || ours.has(m[1] ?? '')) continue;
    const p = `${NEWROOT}${dir}/${name}`;
    if (lstatSync(p).isDirectory()) continue;
    unlinkSync(p);
    hidden.push(name);
  }
  if (hidden.length)
    info('identity', `hid the template's own host keys (every node would share them): ${hidden.join(' ')}`);
}

/** The public host keys now in the new root, for the report (bounded reads: the template shapes etc/ssh). */
function laidPublicKeys(): string[] {
  const dir = resolveInRoot(NEWROOT, 'etc/ssh', lstatLink);
  if (dir === null || !existsSync(`${NEWROOT}${dir}`)) return [];
  return readdirSync(`${NEWROOT}${dir}`)
    .filter((n) => /^ssh_host_[a-z0-9]+_key\.pub$/.test(n))
    .sort()
    .map((n) => readSmall(`${NEWROOT}${dir}/${n}`, 16 * 1024).text?.trim() ?? '')
    .map((l) => l.split(' ').slice(0, 2).join(' '))
    .filter((l) => HOST_KEY_LINE.test(l));
}

export const identity: Phase = {
  name: 'identity',
  needs: { tools: ['rsync', 'sshKeygen'] },
  async run(ctx) {
    const online = Boolean(ctx.facts.online);
    const masterFiles = Boolean(ctx.facts.wanted?.nodeFiles) && existsSync(FETCHED_FILES);
    const source = online ? (masterFiles ? FETCHED_FILES : null) : existsSync(KEPT) ? KEPT : null;
    const plan = planIdentity({
      online,
      masterFiles,
      keptFiles: existsSync(KEPT),
      overlay: ctx.params.overlay,
      hostname: ctx.facts.hostname ?? null,
      filesHave: {
        hostname: source !== null && existsSync(`${source}/etc/hostname`),
        machineId: source !== null && existsSync(`${source}/etc/machine-id`),
        hostKeys: source !== null && existsSync(`${source}/etc/ssh/ssh_host_ed25519_key`),
      },
      keptMachineId: existsSync(KEPT_ID),
      keptHostKeys: NODE_KEY_TYPES.every(
        (t) => existsSync(`${KEPT_KEYS}/ssh_host_${t}_key`) && existsSync(`${KEPT_KEYS}/ssh_host_${t}_key.pub`),
      ),
      renew: ctx.params.newIdentity,
    });
    if (plan.skipped) warn('identity', plan.skipped);
    if (ctx.params.dryRun) {
      for (const s of plan.steps) info('identity', `dry run: ${s.kind}`);
      return 'dry run';
    }
    if (ctx.params.newIdentity) info('identity', 'newidentity: making new host keys and a new machine-id');
    for (const s of plan.steps) await apply(s, ctx);
    ctx.facts.hostKeys = laidPublicKeys();
    const laid = plan.steps.map((s) => s.kind).filter((k) => k.startsWith('lay') || k === 'hostname');
    // resolved inside the root and only a regular file: a template link to a disk would be read whole by PID 1
    const idAt = resolveInRoot(NEWROOT, 'etc/machine-id', lstatLink);
    const id =
      idAt !== null && statSync(`${NEWROOT}${idAt}`).isFile()
        ? readFileSync(`${NEWROOT}${idAt}`, 'utf8').trim().slice(0, 64)
        : '(none)';
    info(
      'identity',
      `machine-id ${id}; ${masterFiles ? 'per-node files from the master' : online ? 'no per-node files on the master' : existsSync(KEPT) ? 'per-node files kept from the last online boot' : 'no per-node files'}`,
    );
    return laid.length ? laid.join(', ') : 'nothing to lay';
  },
};

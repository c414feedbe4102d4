// Phase "identity": this node's own files (hostname, machine-id, SSH host keys, the admin's extras)
// laid into the writable layer over the shared root.
import {
  chmodSync,
  copyFileSync,
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
import { run, ToolError } from '../sys/exec.ts';
import { writeAtomic } from '../contract/atomic.ts';
import { machineId, planEnrolment, planIdentity, type EnrolPlan, type IdentityStep } from '../plans/identity.ts';
import { info, warn } from '../log.ts';
import type { Phase } from '../phase.ts';
import { syncDisks } from '../sys/libc.ts';
import { lstatLink, readSmall, writeInRoot } from '../sys/fsutil.ts';
import { resolveInRoot } from '../plans/rootpath.ts';
import {
  ROOT_MNT,
  ENROL_KEY,
  ENROL_REPORT_KEY,
  FETCHED_FILES,
  KEPT,
  KEPT_ENROL,
  KEPT_ID,
  KEPT_KEYS,
  NEWROOT,
} from '../paths.ts';
import type { Ctx } from '../phase.ts';
import { ENROL_KEY_LINE, HOST_KEY_LINE, keyFingerprint } from '../contract/report.ts';
import { FILES_DIR, NODE_FILES_MAX } from '../contract/tree.ts';
import { classifySshError, MasterLink } from '../net/link.ts';

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
async function makeKeys(dir: string, keys: Array<{ file: string; type: string; comment: string }>): Promise<void> {
  const tmp = `${dir}.new`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  for (const k of keys)
    await run('sshKeygen', ['-q', '-t', k.type, '-N', '', '-C', k.comment, '-f', `${tmp}/${k.file}`], {
      timeoutMs: 120_000,
    });
  syncDisks();
  rmSync(`${dir}.old`, { recursive: true, force: true });
  if (existsSync(dir)) renameSync(dir, `${dir}.old`);
  renameSync(tmp, dir);
  rmSync(`${dir}.old`, { recursive: true, force: true });
  syncDisks();
}

async function makeHostKeys(host: string): Promise<void> {
  await makeKeys(
    KEPT_KEYS,
    NODE_KEY_TYPES.map((t) => ({ file: `ssh_host_${t}_key`, type: t, comment: `root@${host}` })),
  );
  info('identity', `made this node's own SSH host keys (${NODE_KEY_TYPES.join(', ')}), kept on the root partition`);
}

/** The enrolment key's public half, `ssh-ed25519 base64`, or null (none, or not one). */
function enrolPublicKey(): string | null {
  const line = readSmall(`${ENROL_KEY}.pub`, 4096).text?.trim().split(/\s+/).slice(0, 2).join(' ') ?? '';
  return ENROL_KEY_LINE.test(line) ? line : null;
}

/**
 * This node's private files (`files/` under its enrolment key's rrsync root on the master, outside the master root)
 * over its own connection, into the fetched per-node files: they win over the public ones of the same name.
 * False when they could not come (the kept copy is laid instead, as on an offline boot).
 */
async function fetchPrivateFiles(ctx: Ctx, plan: EnrolPlan): Promise<boolean> {
  const link = ctx.facts.link;
  if (!(link instanceof MasterLink)) return false;
  const from = plan.from ?? link.target.host;
  const elsewhere = from !== link.target.host;
  mkdirSync(FETCHED_FILES, { recursive: true });
  try {
    await link.rsyncAs(
      ENROL_KEY,
      ['-rlpt', `--max-size=${NODE_FILES_MAX}`, '--timeout=60', `${from}:${FILES_DIR}/`, `${FETCHED_FILES}/`],
      {},
      from,
    );
    info(
      'identity',
      `private files fetched with this node's enrolment key${elsewhere ? ` from the primary ${from} (the mirror ${link.target.host} holds none)` : ''}`,
    );
    // the master took the key: the boot report goes with it too when it goes to that master (the sink then
    // stores it as this node's, proven); a mirror's sink does not know the key
    if (plan.reportWithKey) {
      copyFileSync(ENROL_KEY, ENROL_REPORT_KEY);
      chmodSync(ENROL_REPORT_KEY, 0o600);
      ctx.facts.enrolReport = true;
    }
    return true;
  } catch (e) {
    const tail = e instanceof ToolError ? e.stderrTail : String(e);
    warn(
      'identity',
      classifySshError(tail).kind === 'auth'
        ? `the master ${from} refused this node's enrolment key ${keyFingerprint(ctx.facts.enrolKey ?? '')} (enrolled with another key, or from another address). Remedy: compare the fingerprint and run \`builder enrol --replace ${ctx.facts.hostname ?? '<host>'}\` on the master. The kept copy of the per-node files is laid`
        : `could not fetch this node's private files from ${from}: ${tail.split('\n').pop() ?? tail}; the kept copy of the per-node files is laid`,
    );
    return false;
  }
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
    const host = ctx.facts.hostname ?? null;
    const enrol = planEnrolment({
      keptKey: existsSync(ENROL_KEY) && enrolPublicKey() !== null,
      renew: ctx.params.newIdentity,
      online: Boolean(ctx.facts.online),
      enrolled: Boolean(ctx.facts.wanted?.enrolled),
      transport: ctx.params.transport,
      overlay: ctx.params.overlay,
      hostname: host,
      masters: ctx.facts.masters ?? [],
      servedBy: ctx.facts.master ?? null,
    });
    if (enrol.make && !ctx.params.dryRun) {
      await makeKeys(KEPT_ENROL, [
        { file: 'id_ed25519', type: 'ed25519', comment: `clusterboot-enrol@${host ?? 'node'}` },
      ]);
    }
    const enrolKey = enrolPublicKey();
    if (enrolKey) {
      ctx.facts.enrolKey = enrolKey;
      info(
        'identity',
        `enrolment key ${keyFingerprint(enrolKey)}${enrol.make ? ' (made now)' : ''}${ctx.facts.wanted?.enrolled ? '' : `: \`builder enrol ${host ?? '<host>'}\` on the master gives this node its private files`}`,
      );
    }
    if (enrol.note) warn('identity', enrol.note);
    // enrolled, but the private files cannot come: the per-node files are laid from the kept copy, as offline
    const privateOk =
      enrol.privateFiles === 'fetch' && !ctx.params.dryRun
        ? await fetchPrivateFiles(ctx, enrol)
        : enrol.privateFiles !== 'unavailable';
    const online = Boolean(ctx.facts.online) && privateOk;
    const masterFiles =
      (Boolean(ctx.facts.wanted?.nodeFiles) || enrol.privateFiles === 'fetch') && existsSync(FETCHED_FILES);
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
      `machine-id ${id}; ${online && masterFiles ? 'per-node files from the master' : online ? 'no per-node files on the master' : existsSync(KEPT) ? 'per-node files kept from the last online boot' : 'no per-node files'}`,
    );
    return laid.length ? laid.join(', ') : 'nothing to lay';
  },
};

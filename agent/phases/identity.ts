// Phase "identity": this node's own files (hostname, machine-id, SSH host keys, the admin's extras)
// laid into the writable layer over the shared root.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { writeAtomic } from '../contract/atomic.ts';
import { machineId, planIdentity, type IdentityStep } from '../plans/identity.ts';
import { info, warn } from '../log.ts';
import type { Phase } from '../phase.ts';
import { syncDisks } from '../sys/libc.ts';
import { lstatLink, writeInRoot } from '../sys/fsutil.ts';
import { resolveInRoot } from '../plans/rootpath.ts';
import { ROOT_MNT, FETCHED_FILES, KEPT, KEPT_ID, NEWROOT } from '../paths.ts';

async function apply(s: IdentityStep): Promise<void> {
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
  }
}

export const identity: Phase = {
  name: 'identity',
  needs: { tools: ['rsync'] },
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
      },
      keptMachineId: existsSync(KEPT_ID),
    });
    if (plan.skipped) warn('identity', plan.skipped);
    if (ctx.params.dryRun) {
      for (const s of plan.steps) info('identity', `dry run: ${s.kind}`);
      return 'dry run';
    }
    for (const s of plan.steps) await apply(s);
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

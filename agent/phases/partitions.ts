// Phase "partitions": the master's table against the disk's; refuse on doubt, format only what moved.
import { run } from '../sys/exec.ts';
import { partName, planPartitions, renderDump, DEFAULT_ROLES, type Role } from '../plans/sfdisk.ts';
import { info, progress, warn } from '../log.ts';
import { mkfs, mountFs, readSmall, umountQuiet, waitForPath } from '../sys/fsutil.ts';
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync } from 'node:fs';
import { HEAD_BYTES, unformatted } from '../plans/fsprobe.ts';
import { approvalGate } from '../plans/approval.ts';
import { tableHash } from '../contract/approval.ts';
import type { ApprovalState } from '../contract/report.ts';
import { type Ctx, type Phase } from '../phase.ts';
import { PhaseFailure, RebootRequest } from '../errors.ts';
import { sendReport } from '../net/report.ts';
import { syncDisks } from '../sys/libc.ts';
import { fillBoot } from './bootfs.ts';
import { BOOT_MNT, FETCH_DIR } from '../paths.ts';
import { APPROVAL_REQUIRED, APPROVED_DIR, fetchFilter, masterBase, PARTITION_TABLE } from '../contract/tree.ts';
import { LABEL_ID } from '../plans/disk.ts';

/**
 * Approval mode: null to go ahead, or the summary when the disk stays as it is. Waits (polling the
 * master every 30 s) when there is no root to boot meanwhile.
 */
async function approval(ctx: Ctx, current: string | null, newDump: string): Promise<string | null> {
  const w = ctx.facts.wanted;
  const d = ctx.facts.disk;
  if (!w?.table || !d) return null;
  const wantedHash = tableHash(w.table);
  const facts = () => ({
    required: w.approvalRequired,
    approvedHash: w.approvedHash,
    wantedHash,
    hasTable: current !== null,
    hasRoot: existsSync(partName(d.device, 2)),
    hostname: ctx.facts.hostname ?? null,
  });
  let gate = approvalGate(facts());
  const state = (s: 'pending' | 'approved', meanwhile: ApprovalState['meanwhile']): ApprovalState => ({
    state: s,
    tableSha256: wantedHash,
    current,
    wanted: newDump,
    meanwhile,
  });
  if (gate.action === 'proceed') {
    if (gate.approved) ctx.facts.approval = state('approved', 'waiting');
    if (w.approvalRequired) info('partitions', gate.reason);
    return null;
  }
  if (gate.action === 'boot-current') {
    ctx.facts.approval = state('pending', 'booting the current root');
    warn('partitions', gate.reason);
    return 'table change waiting for approval; the disk is left as it is';
  }
  ctx.facts.approval = state('pending', 'waiting');
  const link = ctx.facts.link;
  if (!link) throw new PhaseFailure(gate.reason, 'approve the node on the master', 'disk-refused');
  await sendReport(ctx, 'waiting', gate.reason);
  for (let n = 1; gate.action === 'wait'; n++) {
    progress('partitions', `${gate.reason} (asked ${n} time${n > 1 ? 's' : ''}; next in 30 s)`);
    await Bun.sleep(30_000);
    const host = ctx.facts.hostname ?? '';
    const dir = `${FETCH_DIR}/poll`;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    await link
      .rsync(
        [
          '-rt',
          '--timeout=60',
          ...fetchFilter(host, ['table', 'approval']),
          link.remote(masterBase(ctx.params.masterRoot) || './'),
          `${dir}/`,
        ],
        { okCodes: [0, 23] },
      )
      .catch((e: unknown) => warn('partitions', `could not ask the master: ${(e as Error).message.slice(-160)}`));
    const table = readSmall(`${dir}/${PARTITION_TABLE}`).text;
    if (table !== null && table !== w.table)
      throw new RebootRequest("the master's table changed while waiting for approval");
    w.approvalRequired = existsSync(`${dir}/${APPROVAL_REQUIRED}`);
    w.approvedHash = readSmall(`${dir}/${APPROVED_DIR}/${host}`).text?.trim().toLowerCase() ?? null;
    gate = approvalGate(facts());
  }
  if (gate.action === 'boot-current') return 'table change waiting for approval; the disk is left as it is';
  ctx.facts.approval = state('approved', 'waiting');
  info('partitions', gate.reason);
  return null;
}

function readHead(dev: string): Uint8Array | null {
  try {
    const fd = openSync(dev, 'r');
    try {
      const b = new Uint8Array(HEAD_BYTES);
      // a short read leaves zeros that are not on the disk: unknown, so never "unformatted"
      return readSync(fd, b, 0, b.length, 0) === b.length ? b : null;
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
}

/**
 * The table is as wanted, but a power cut may have stopped the formatting that followed its writing:
 * a partition with no filesystem at all is formatted now (and p1 filled from the master), never one
 * that has any filesystem.
 */
async function finishInterruptedFormats(ctx: Ctx, summary: string): Promise<string> {
  const d = ctx.facts.disk;
  if (!d) return summary;
  const todo = unformatted(DEFAULT_ROLES, (i) => readHead(partName(d.device, i)));
  if (!todo.length) return summary;
  const names = todo.map((r) => `p${r.index} (${r.role})`).join(', ');
  warn(
    'partitions',
    `${names} hold${todo.length > 1 ? '' : 's'} no filesystem: an earlier repartition was interrupted; formatting ${todo.length > 1 ? 'them' : 'it'} now`,
  );
  if (ctx.params.dryRun) return `dry run: would format ${names}`;
  const boot = todo.find((r) => r.role === 'boot');
  if (boot && !ctx.facts.link) {
    throw new PhaseFailure(
      `the boot partition p${boot.index} holds no filesystem and the master is not reachable to fill it`,
      'bring the master back: the node formats and fills p1 then',
      'disk',
    );
  }
  await formatAndFill(ctx, todo);
  syncDisks();
  if (boot) throw new RebootRequest('the interrupted repartition is finished (boot partition formatted and filled)');
  return `${summary}; formatted ${names} (interrupted repartition)`;
}

/** Format the given partitions; when p1 is among them, fill it from the master's bootfs/. */
async function formatAndFill(ctx: Ctx, roles: readonly Role[]): Promise<void> {
  const d = ctx.facts.disk;
  if (!d) return;
  for (const role of roles) {
    const node = partName(d.device, role.index);
    progress('partitions', `formatting ${node} as ${role.fs} (${role.role})`);
    await mkfs(node, role.fs, LABELS[role.role]);
  }
  const boot = roles.find((r) => r.role === 'boot');
  if (!boot || !ctx.facts.link) return;
  const node = partName(d.device, boot.index);
  mountFs(node, BOOT_MNT, 'vfat');
  try {
    progress('partitions', `filling ${node} from the master's bootfs/`);
    await fillBoot(ctx.facts.link, masterBase(ctx.params.masterRoot), ctx.facts.wanted?.bootfs ?? null);
  } finally {
    umountQuiet(BOOT_MNT);
  }
}

const LABELS = { boot: 'boot', root: 'cb-root', writable: 'cb-rw', data: 'cb-data' } as const;

export const partitions: Phase = {
  name: 'partitions',
  needs: { tools: ['sfdisk', 'mke2fs', 'mkfsVfat'] },
  async run(ctx) {
    const d = ctx.facts.disk;
    if (!d) throw new PhaseFailure('no disk facts', 'internal: the disk phase must run first', 'disk');
    if (!ctx.facts.online || !ctx.facts.wanted?.table) {
      info('partitions', 'no table from the master: the disk is left as it is');
      return 'kept (master offline or no table)';
    }
    const plan = planPartitions({
      wantedText: ctx.facts.wanted.table,
      currentText: d.currentTable,
      diskSectors: d.sectors,
      roles: DEFAULT_ROLES,
    });
    if (plan.action === 'keep') return finishInterruptedFormats(ctx, `table unchanged (${plan.reason})`);
    if (plan.action === 'refuse') {
      if (d.currentTable) {
        warn(
          'partitions',
          `refused the master's table: ${plan.reason}; remedy: ${plan.remedy}. Booting with the current table.`,
        );
        return 'refused the new table; current one kept';
      }
      throw new PhaseFailure(`refused the master's table: ${plan.reason}`, plan.remedy, 'disk-refused');
    }
    const newDump = renderDump({ ...plan.table, labelId: LABEL_ID[plan.table.label] }, d.device);
    const gated = await approval(ctx, d.currentTable, newDump);
    if (gated) return gated;
    info(
      'partitions',
      `table change: ${plan.reason}; formatting ${plan.format.map((r) => `p${r.index} (${r.role})`).join(', ') || 'nothing'}` +
        `; keeping ${plan.keep.map((i) => `p${i}`).join(', ') || 'nothing'}`,
      { old: d.currentTable, new: newDump },
    );
    info('partitions', `previous table, saved for the record:\n${d.currentTable ?? '(none)'}`);
    if (ctx.params.dryRun) {
      info('partitions', `dry run: would write\n${newDump}`);
      return 'dry run';
    }
    progress('partitions', `writing the partition table to ${d.device}`);
    await run('sfdisk', ['--wipe-partitions', 'never', '--lock', d.device], { input: newDump, timeoutMs: 60_000 });
    for (const p of plan.table.partitions) {
      const node = partName(d.device, p.index);
      if (!(await waitForPath(node, 10_000))) {
        throw new PhaseFailure(
          `partition node ${node} did not appear after writing the table`,
          'reboot the node; the table is written',
          'disk',
        );
      }
    }
    await formatAndFill(ctx, plan.format);
    syncDisks();
    throw new RebootRequest('new partition table written');
  },
};

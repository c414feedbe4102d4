// Phase "partitions": the master's table against the disk's; refuse on doubt, format only what moved.
import { run } from '../exec.ts';
import { partName, planPartitions, renderDump, DEFAULT_ROLES } from '../lib/sfdisk.ts';
import { info, progress, warn } from '../log.ts';
import { mkfs, mountFs, umountQuiet, waitForPath } from '../fsutil.ts';
import { PhaseFailure, RebootRequest, type Phase } from '../phase.ts';
import { syncDisks } from '../sys/libc.ts';
import { BOOT_MNT, fillBoot } from './bootfs.ts';
import { masterBase } from './master.ts';
import { LABEL_ID } from './disk.ts';

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
    const plan = planPartitions({ wantedText: ctx.facts.wanted.table, currentText: d.currentTable, diskSectors: d.sectors, roles: DEFAULT_ROLES });
    if (plan.action === 'keep') return `table unchanged (${plan.reason})`;
    if (plan.action === 'refuse') {
      if (d.currentTable) {
        warn('partitions', `refused the master's table: ${plan.reason}; remedy: ${plan.remedy}. Booting with the current table.`);
        return 'refused the new table; current one kept';
      }
      throw new PhaseFailure(`refused the master's table: ${plan.reason}`, plan.remedy, 'disk-refused');
    }
    const newDump = renderDump({ ...plan.table, labelId: LABEL_ID[plan.table.label] }, d.device);
    info('partitions', `table change: ${plan.reason}; formatting ${plan.format.map((r) => `p${r.index} (${r.role})`).join(', ') || 'nothing'}` +
      `; keeping ${plan.keep.map((i) => `p${i}`).join(', ') || 'nothing'}`, { old: d.currentTable, new: newDump });
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
        throw new PhaseFailure(`partition node ${node} did not appear after writing the table`, 'reboot the node; the table is written', 'disk');
      }
    }
    for (const role of plan.format) {
      const node = partName(d.device, role.index);
      progress('partitions', `formatting ${node} as ${role.fs} (${role.role})`);
      await mkfs(node, role.fs, LABELS[role.role]);
    }
    const boot = plan.format.find((r) => r.role === 'boot');
    if (boot && ctx.facts.link) {
      const node = partName(d.device, boot.index);
      mountFs(node, BOOT_MNT, 'vfat');
      try {
        progress('partitions', `filling ${node} from the master's bootfs/`);
        await fillBoot(ctx.facts.link, masterBase(ctx), ctx.facts.wanted.bootfs);
      } finally {
        umountQuiet(BOOT_MNT);
      }
    }
    syncDisks();
    throw new RebootRequest('new partition table written');
  },
};

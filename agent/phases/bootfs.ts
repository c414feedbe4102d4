// Phase "bootfs": the boot (firmware) partition follows the master's bootfs stamp; new firmware means a reboot.
import { existsSync, readFileSync } from 'node:fs';
import type { Link } from '../net/link.ts';
import { partName } from '../plans/sfdisk.ts';
import { decideStamp, parseStamp } from '../contract/stamp.ts';
import { info, progress, warn } from '../log.ts';
import { mountFs, umountQuiet } from '../sys/fsutil.ts';
import { writeAtomic } from '../contract/atomic.ts';
import { type Phase, type StampFile } from '../phase.ts';
import { PhaseFailure, RebootRequest } from '../errors.ts';
import { stampKey } from '../contract/initramfs.ts';
import { syncDisks } from '../sys/libc.ts';
import { BOOTFS_DIR, masterBase } from '../contract/tree.ts';
import { MARKER, BOOT_MNT, BOOT_STAMP } from '../paths.ts';

/** rsync the master's bootfs/ into the mounted boot partition, then record its stamp and our marker. */
export async function fillBoot(link: Link, base: string, stamp: StampFile | null): Promise<void> {
  await link.rsync(
    [
      '-rt',
      '--modify-window=2',
      '--delete',
      '--exclude=/clusterboot.*',
      '--timeout=120',
      link.remote(`${base}${BOOTFS_DIR}/`),
      `${BOOT_MNT}/`,
    ],
    { timeoutMs: 30 * 60_000 },
  );
  writeAtomic(`${BOOT_MNT}/${MARKER}`, "clusterboot boot partition: its contents follow the master's bootfs/\n");
  if (stamp) writeAtomic(`${BOOT_MNT}/${BOOT_STAMP}`, stamp.text);
  syncDisks();
}

export const bootfs: Phase = {
  name: 'bootfs',
  needs: { tools: ['rsync', 'fsckVfat'] },
  async run(ctx) {
    const d = ctx.facts.disk;
    const w = ctx.facts.wanted;
    if (!d || !ctx.facts.online || !ctx.facts.link || !w) return 'skipped: master offline';
    if (!w.bootfs) {
      warn('bootfs', 'the master has no bootfs stamp: run `builder publish bootfs` on the master');
      return 'skipped: no bootfs stamp';
    }
    const p1 = partName(d.device, 1);
    try {
      // read-only for the check: a warm boot must not write a byte to p1 (vfat would store access dates)
      mountFs(p1, BOOT_MNT, 'vfat', true);
    } catch (e) {
      throw new PhaseFailure(
        `cannot mount the boot partition ${p1}: ${(e as Error).message}`,
        'the table has no vfat p1: check partitions.sfdisk (p1 type b or c)',
        'disk',
        { cause: e },
      );
    }
    try {
      const localText = existsSync(`${BOOT_MNT}/${BOOT_STAMP}`)
        ? readFileSync(`${BOOT_MNT}/${BOOT_STAMP}`, 'utf8')
        : null;
      const local = localText ? parseStamp(localText) : null;
      const decision = decideStamp({
        name: 'bootfs',
        masterText: w.bootfs.text,
        masterSig: w.bootfs.sig,
        publicKeyPem: stampKey(),
        local: local?.ok ? local.stamp : null,
        localComplete: Boolean(local?.ok),
      });
      if (decision.action === 'keep') return 'up to date';
      if (decision.action === 'refuse') {
        warn('bootfs', `${decision.reason}; keeping the boot partition as it is (${decision.remedy})`);
        return "refused the master's bootfs stamp";
      }
      if (ctx.params.dryRun) {
        info('bootfs', `dry run: would rsync bootfs/ into ${p1} and reboot (${decision.reason})`);
        return 'dry run';
      }
      progress('bootfs', `updating the boot partition ${p1}: ${decision.reason}`);
      umountQuiet(BOOT_MNT);
      mountFs(p1, BOOT_MNT, 'vfat');
      await fillBoot(ctx.facts.link, masterBase(ctx.params.masterRoot), w.bootfs);
    } finally {
      umountQuiet(BOOT_MNT);
    }
    throw new RebootRequest('new boot firmware written: it takes effect at the next boot');
  },
};

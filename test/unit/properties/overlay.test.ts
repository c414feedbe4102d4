// Property 6: the writable layer is only wiped after it is mounted, and never the slot (runner.ts: seeds, replay).
import { describe } from 'bun:test';
import { OVERLAY_PATHS, planOverlay, type OverlayFacts } from '../../../agent/plans/overlay.ts';
import { ID_POOL } from '../../fixtures/tables.ts';
import { must, propertyRunner } from './runner.ts';

const property = propertyRunner(import.meta.path);

describe('property 6: planOverlay', () => {
  property(
    'planOverlay never throws; it wipes only upper/work of a mounted writable partition on reset, never the slot',
    (r) => {
      const fsLines = r.shuffle([
        'nodev\tsysfs',
        '\text4',
        '\tvfat',
        ...(r.chance(0.7) ? ['nodev\toverlay'] : []),
        ...(r.chance(0.2) ? ['nodev\taufs'] : []),
        ...(r.chance(0.1) ? ['nodev\toverlayfs'] : []),
        ...(r.chance(0.1) ? [r.string('abc \t\n', 20)] : []),
      ]);
      const f: OverlayFacts = {
        mode: r.pick<OverlayFacts['mode']>(['disk', 'disk', 'tmpfs', 'none', 'bogus' as OverlayFacts['mode']]),
        kernelFilesystems: r.chance(0.05) ? '' : fsLines.join('\n'),
        writablePartition: r.chance(0.2) ? null : r.pick(['/dev/mmcblk0p3', '/dev/vda3', '/dev/sda3']),
        reset: r.chance(0.4),
        slotPath: r.chance(0.1)
          ? r.pick(['relative/slot', '', 'slots/1-a'])
          : `/run/clusterboot/rootdisk/slots/${r.pick(ID_POOL)}${r.chance(0.05) ? " it's" : ''}`,
      };
      return f;
    },
    (f) => {
      const plan = planOverlay(f);
      if (!plan.ok) {
        must(plan.remedy.length > 0, 'an impossible overlay carries a remedy');
        return;
      }
      must(f.slotPath.startsWith('/'), 'only an absolute slot path is used');
      const { rw: RW, upper: UPPER, work: WORK, newRoot: NEWROOT } = OVERLAY_PATHS;
      const rwMount = plan.steps.findIndex((s) => s.kind === 'mount' && s.target === RW);
      plan.steps.forEach((s, k) => {
        must(!s.describe().includes('\n'), 'describe() is one line');
        if (s.kind === 'wipe') {
          must(f.reset && f.mode === 'disk', 'wipe only on reset with the writable layer on disk');
          must(s.path === UPPER || s.path === WORK, `wipe only upper/work (${s.path})`);
          must(rwMount >= 0 && rwMount < k, 'wipe only after the writable partition is mounted on rw');
          const m = plan.steps[rwMount];
          must(
            m !== undefined && m.kind === 'mount' && m.source === f.writablePartition,
            'the mounted rw is the writable partition',
          );
        }
        if (s.kind === 'mount' || s.kind === 'bind') must(s.target !== f.slotPath, 'never mounts over the slot');
        if (s.kind === 'bind' && s.source === f.slotPath && plan.driver !== 'none')
          must(s.readonly, 'the slot is bound read-only under a union');
      });
      const last = plan.steps[plan.steps.length - 1];
      must(
        last !== undefined && (last.kind === 'mount' || last.kind === 'bind') && last.target === NEWROOT,
        'the last step assembles /newroot',
      );
      if (f.mode === 'disk' && plan.driver !== 'none')
        must(
          rwMount >= 0 && (plan.steps[rwMount] as { source: string }).source === f.writablePartition,
          'aufs=disk keeps the writable layer on the writable partition',
        );
    },
    {
      classify: (f) => (planOverlay(f).ok ? (f.reset && f.mode === 'disk' ? 'ok-reset-disk' : 'ok') : 'refused'),
      cover: { ok: 300, 'ok-reset-disk': 100, refused: 100 },
    },
  );
});

// The master's partitions.sfdisk for the seed's four roles (boot, root, writable, data), as an MBR (Pis) or as a
// GPT whose p1 is an EFI system partition (x86-64 PCs booting UEFI; BIOS machines read it as well). Pure.
import { LABEL_ID } from '../../agent/plans/disk.ts';
import { DEFAULT_ROLES, parseSfdiskDump, partName, renderDump, type TableSpec } from '../../agent/plans/sfdisk.ts';

/** The EFI system partition's GPT type (sfdisk's `U`): the boot role on a GPT disk. */
export const ESP_GUID = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
export const LINUX_GUID = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const MIB_SECTORS = 2048; // 512-byte sectors

export interface LayoutSizes {
  /** p1, the boot role: FAT (dos type c) or the ESP (gpt). */
  bootMiB: number;
  rootMiB: number;
  writableMiB: number;
  /** p4 (data); 0 leaves it out. */
  dataMiB?: number;
}

/**
 * A table in sectors, every partition on a MiB boundary from 1 MiB on, p1..p4 in the roles' order. gpt: p1 is
 * the ESP with the name "ESP" and the LegacyBIOSBootable attribute; p2..p4 are Linux filesystems named after their
 * role. dos: p1 FAT32 LBA (c), bootable; the rest 83.
 */
export function layoutTable(label: 'dos' | 'gpt', s: LayoutSizes): TableSpec {
  const sizes = [s.bootMiB, s.rootMiB, s.writableMiB, s.dataMiB ?? 0];
  for (const [i, mib] of sizes.entries())
    if (!Number.isInteger(mib) || mib < 0 || (i < 3 && mib === 0))
      throw new Error(`partition ${i + 1} (${DEFAULT_ROLES[i]?.role}): ${mib} MiB is not a whole number above 0`);
  let start = MIB_SECTORS;
  const partitions: TableSpec['partitions'] = [];
  sizes.forEach((mib, i) => {
    if (mib === 0) return;
    const role = DEFAULT_ROLES[i]?.role ?? 'data';
    const boot = i === 0;
    partitions.push({
      index: i + 1,
      start,
      size: mib * MIB_SECTORS,
      type: label === 'gpt' ? (boot ? ESP_GUID : LINUX_GUID) : boot ? 'c' : '83',
      bootable: boot,
      ...(label === 'gpt' ? { name: boot ? 'ESP' : role } : {}),
    });
    start += mib * MIB_SECTORS;
  });
  return { label, unit: 'sectors', sectorSize: 512, partitions, labelId: LABEL_ID[label] };
}

/** The dump `builder stage`'s master serves as partitions.sfdisk, naming partitions after `device`. */
export function renderLayout(label: 'dos' | 'gpt', s: LayoutSizes, device = '/dev/sda'): string {
  return renderDump(layoutTable(label, s), device);
}

/** A GPT table's boot role is the ESP: p1 must carry the ESP type, or UEFI firmware will not look at it. */
export function espProblem(text: string): string | null {
  const p = parseSfdiskDump(text);
  if (!p.ok) return p.error;
  if (p.table.label !== 'gpt') return null;
  const p1 = p.table.partitions.find((x) => x.index === 1);
  if (!p1) return 'the GPT table has no p1, the boot role (the EFI system partition)';
  if (p1.type !== ESP_GUID)
    return `p1 (${partName('/dev/sda', 1)}) is the boot role but has type ${p1.type}, not the EFI system partition's ${ESP_GUID} (sfdisk: type=U)`;
  return null;
}

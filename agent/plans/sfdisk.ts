// The partition-table model: parse `sfdisk -d` dumps (old and new dialects), validate, compare, render, plan.
// Pure: no I/O. The agent runs sfdisk and mkfs elsewhere and feeds the text here.
// What util-linux sfdisk (checked against 2.38.1 on image files) actually does, and this model follows:
// - Explicit start= and size= in sectors are written exactly as given, even unaligned (start=16, start=63,
//   start=1 are kept). Only omitted starts, '+' sizes and sizes with suffixes (16M) are aligned to the grain
//   (1 MiB): `start=16, size=16M` becomes size=32752 so the end lands on a MiB boundary. The parser therefore
//   accepts only explicit sector numbers, so what we compare is what sfdisk writes.
// - A line with start=0 and size=0 is ignored ("Ignoring partition"): that is how old dumps list unused
//   slots (`start= 0, size= 0, Id= 0`). We skip any size=0 line and any dos type 0 entry as an unused slot
//   (given a real start, sfdisk would create a 1-sector partition instead; renderDump never emits one).
// - The partition number comes from the device-name suffix (`foo3 :` creates partition 3, whatever the disk is
//   called); a line without a name takes the next slot.
// - In a script the type is tried as a shortcut first: `E` is extended (5), not 0x0e; `L` is linux.
// - dos: the first usable sector is 1 and the last partition may end on the disk's last sector.
// - gpt: a new GPT gets first-lba 2048 (the grain) on disks above 4 MiB, 34 on smaller ones, unless the
//   script has a `first-lba:` header; last-lba is always disk sectors - 34 (backup entries + header).
//   `bootable` is silently ignored for gpt; the equivalent is attrs="LegacyBIOSBootable", which is what we
//   read and write for the bootable flag.
// - The dump never states the disk size: `sfdisk -l` prints "Disk X: 4 GiB, 4294967296 bytes, 8388608
//   sectors", `sfdisk -s` prints 1 KiB blocks, and for gpt `last-lba:` is size - 34. /sys/block/X/size
//   is in 512-byte units whatever the logical sector size.

/** One partition as sfdisk writes it: exact sector numbers, normalised type. */
export interface PartitionSpec {
  /** 1-based partition number: from the device-name suffix, or the line's position. */
  index: number;
  start: number;
  size: number;
  /** dos: lowercase hex without 0x and leading zeros ('b', '83', 'c'); gpt: uppercase GUID. */
  type: string;
  bootable: boolean;
  name?: string;
  uuid?: string;
}

/** A whole partition table in sectors of sectorSize bytes. */
export interface TableSpec {
  label: 'dos' | 'gpt';
  unit: 'sectors';
  sectorSize: number;
  partitions: PartitionSpec[];
  labelId?: string;
  firstLba?: number;
  lastLba?: number;
}

/** Parse result: the table, or one message with the line number, what is wrong and what to do. */
export type ParseOutcome = { ok: true; table: TableSpec } | { ok: false; error: string };

/** What differs between the wanted and the current table, by partition index. */
export type TableDiff = { same: true } | { same: false; changed: number[]; removed: number[]; bootableOnly: number[] };

/** What a partition is used for, so the plan knows what to format after repartitioning. */
export interface Role {
  index: number;
  role: 'boot' | 'root' | 'writable' | 'data';
  fs: 'vfat' | 'ext4';
}

/** The seed layout: p1 boot vfat, p2 root ext4, p3 writable ext4, p4 data ext4. */
export const DEFAULT_ROLES: Role[] = [
  { index: 1, role: 'boot', fs: 'vfat' },
  { index: 2, role: 'root', fs: 'ext4' },
  { index: 3, role: 'writable', fs: 'ext4' },
  { index: 4, role: 'data', fs: 'ext4' },
];

/** The partitions phase's decision: leave the disk alone, refuse (with a remedy), or write a table. */
export type PartitionPlan =
  | { action: 'keep'; reason: string }
  | { action: 'refuse'; reason: string; remedy: string }
  | { action: 'repartition'; table: TableSpec; format: Role[]; keep: number[]; reason: string };

const MIB = 1024 * 1024;
const GPT_MAX_ENTRIES = 128;
const DOS_MAX_SECTORS = 0xffffffff; // 32-bit LBA fields in the MBR
const LINUX_GUID = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const GUID_RE = /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/;
const GPT_BOOTABLE_ATTR = 'LegacyBIOSBootable';
const HEADERS = new Set([
  'label',
  'label-id',
  'device',
  'unit',
  'first-lba',
  'last-lba',
  'table-length',
  'grain',
  'sector-size',
]);
const REMEDY_DUMP = 'write the table as `sfdisk -d` prints it';

// sfdisk's shortcuts and aliases (sfdisk(8) "Supported shortcuts and aliases"), tried before hex as sfdisk does.
const DOS_SHORTCUTS: Readonly<Record<string, string>> = {
  L: '83',
  linux: '83',
  S: '82',
  swap: '82',
  E: '5',
  Ex: '5',
  extended: '5',
  X: '85',
  U: 'ef',
  uefi: 'ef',
  R: 'fd',
  raid: 'fd',
  V: '8e',
  lvm: '8e',
};
const GPT_SHORTCUTS: Readonly<Record<string, string>> = {
  L: LINUX_GUID,
  linux: LINUX_GUID,
  S: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  H: '933AC7E1-2EB4-4F13-B844-0E14E2AEF915',
  home: '933AC7E1-2EB4-4F13-B844-0E14E2AEF915',
  U: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  uefi: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  R: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
  raid: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
  V: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  lvm: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
};

// A partition line before the label is known (types are normalised once the label is settled).
interface RawPartition {
  line: number;
  index: number;
  start: number;
  size: number;
  type?: string;
  bootable: boolean;
  attrsBootable: boolean;
  name?: string;
  uuid?: string;
}

type Step<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parse an sfdisk dump (old `Id=` dialect or today's `type=`/gpt one); never throws. */
export function parseSfdiskDump(text: string): ParseOutcome {
  if (typeof text !== 'string') return { ok: false, error: 'line 1: not text; ' + REMEDY_DUMP };
  let label: 'dos' | 'gpt' | undefined;
  let labelIdRaw: { line: number; value: string } | undefined;
  let sectorSize = 512;
  let firstLba: number | undefined;
  let lastLba: number | undefined;
  const raws: RawPartition[] = [];
  let position = 0;

  const lines = text.split(/\r\n|\n|\r/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const trimmed = (lines[i] ?? '').trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const at = `line ${lineNo}`;

    const colon = indexOutsideQuotes(trimmed, ':');
    let device: string | undefined;
    let body = trimmed;
    if (colon >= 0) {
      const left = trimmed.slice(0, colon).trim();
      const right = trimmed.slice(colon + 1).trim();
      if (!left.includes('=')) {
        const key = left.toLowerCase();
        if (HEADERS.has(key) && !right.includes('=')) {
          if (raws.length > 0 || position > 0)
            return {
              ok: false,
              error: `${at}: header "${left}" after partition lines; move all headers above the partitions`,
            };
          switch (key) {
            case 'label':
              if (right === 'dos' || right === 'gpt') label = right;
              else
                return { ok: false, error: `${at}: label "${right}" is not supported; use label: dos or label: gpt` };
              break;
            case 'label-id':
              labelIdRaw = { line: lineNo, value: right };
              break;
            case 'unit':
              if (right !== 'sectors')
                return { ok: false, error: `${at}: unit "${right}" is not supported; use unit: sectors` };
              break;
            case 'sector-size': {
              const n = parseNumber(right);
              if (!n.ok || !isSectorSize(n.value))
                return {
                  ok: false,
                  error: `${at}: sector-size "${right}" is not a power of two from 512 to 65536; use the value \`sfdisk -d\` prints`,
                };
              sectorSize = n.value;
              break;
            }
            case 'first-lba':
            case 'last-lba': {
              const n = parseNumber(right);
              if (!n.ok) return { ok: false, error: `${at}: ${key} "${right}": ${n.error}` };
              if (key === 'first-lba') firstLba = n.value;
              else lastLba = n.value;
              break;
            }
            default: // device, table-length, grain: informative for us
              break;
          }
          continue;
        }
        if (!right.includes('=') && right !== '' && !/^[0-9]/.test(right))
          return { ok: false, error: `${at}: unknown header "${left}"; known headers are ${[...HEADERS].join(', ')}` };
        device = left;
        body = right;
      }
    }

    position++;
    let index = position;
    if (device !== undefined) {
      const m = /([0-9]+)$/.exec(device);
      if (!m)
        return {
          ok: false,
          error: `${at}: cannot tell the partition number from "${device}"; name it like /dev/mmcblk0p1 or drop the name`,
        };
      index = Number(m[1]);
      if (!Number.isSafeInteger(index) || index < 1)
        return { ok: false, error: `${at}: partition number ${m[1]} in "${device}" must be 1 or more` };
    }
    const parsed = parsePartitionFields(body, at);
    if (!parsed.ok) return parsed;
    const p = parsed.value;
    if (p.size === 0) continue; // unused slot (old dumps: start= 0, size= 0, Id= 0)
    raws.push({ ...p, line: lineNo, index });
  }

  if (label === undefined) {
    const looksGpt =
      raws.some((r) => r.type !== undefined && GUID_RE.test(r.type)) || firstLba !== undefined || lastLba !== undefined;
    label = looksGpt ? 'gpt' : 'dos';
  }

  const partitions: PartitionSpec[] = [];
  for (const r of raws) {
    const t = normaliseType(r.type, label);
    if (!t.ok) return { ok: false, error: `line ${r.line}: ${t.error}` };
    if (label === 'dos' && t.value === '0') continue; // dos type 0 marks an unused slot
    const spec: PartitionSpec = {
      index: r.index,
      start: r.start,
      size: r.size,
      type: t.value,
      bootable: label === 'gpt' ? r.bootable || r.attrsBootable : r.bootable,
    };
    if (r.name !== undefined) spec.name = r.name;
    if (r.uuid !== undefined) spec.uuid = GUID_RE.test(r.uuid) ? r.uuid.toUpperCase() : r.uuid;
    partitions.push(spec);
  }

  partitions.sort((a, b) => a.index - b.index);
  const table: TableSpec = { label, unit: 'sectors', sectorSize, partitions };
  if (labelIdRaw !== undefined) {
    const id = normaliseLabelId(labelIdRaw.value, label);
    if (id === undefined) {
      const want = label === 'dos' ? 'a hex number like 0x1234abcd' : 'a GUID';
      return {
        ok: false,
        error: `line ${labelIdRaw.line}: label-id "${labelIdRaw.value}" is not ${want}; fix it or drop the line`,
      };
    }
    table.labelId = id;
  }
  if (firstLba !== undefined) table.firstLba = firstLba;
  if (lastLba !== undefined) table.lastLba = lastLba;
  return { ok: true, table };
}

// Fields of one partition line, named (`start=1, size=2, type=83, bootable`) or positional (`1 2 83 *`).
function parsePartitionFields(body: string, at: string): Step<Omit<RawPartition, 'line' | 'index'>> {
  const fields = splitOutsideQuotes(body, /[,;]/)
    .map((f) => f.trim())
    .filter((f) => f !== '');
  const named = fields.some((f) => f.includes('='));
  let start: string | undefined;
  let size: string | undefined;
  let type: string | undefined;
  let bootable = false;
  let attrsBootable = false;
  let name: string | undefined;
  let uuid: string | undefined;

  if (named) {
    for (const f of fields) {
      const eq = f.indexOf('=');
      if (eq < 0) {
        if (f.toLowerCase() === 'bootable') bootable = true;
        else
          return {
            ok: false,
            error: `${at}: unknown field "${f}"; expected start=, size=, type=, bootable, attrs=, uuid=, name=`,
          };
        continue;
      }
      const key = f.slice(0, eq).trim().toLowerCase();
      const value = unquote(f.slice(eq + 1).trim());
      switch (key) {
        case 'start':
          start = value;
          break;
        case 'size':
          size = value;
          break;
        case 'type':
        case 'id':
          type = value;
          break;
        case 'attrs':
          attrsBootable = value.split(/[\s,]+/).includes(GPT_BOOTABLE_ATTR);
          break;
        case 'uuid':
          uuid = value;
          break;
        case 'name':
          name = value;
          break;
        case 'bootable':
          bootable = true;
          break;
        default:
          return {
            ok: false,
            error: `${at}: unknown field "${key}="; expected start=, size=, type=, bootable, attrs=, uuid=, name=`,
          };
      }
    }
  } else {
    const words = fields.flatMap((f) => f.split(/\s+/)).filter((w) => w !== '');
    if (words.length > 4)
      return { ok: false, error: `${at}: too many fields in "${body}"; expected start size type [*] or named fields` };
    [start, size, type] = words;
    const flag = words[3];
    if (flag === '*') bootable = true;
    else if (flag !== undefined && flag !== '-')
      return { ok: false, error: `${at}: bootable field "${flag}" must be * or -` };
    if (type === '-') type = undefined;
  }

  if (start === undefined || start === '' || start === '-')
    return {
      ok: false,
      error: `${at}: no start=; every partition needs an explicit start sector (sfdisk would pick an aligned one) - ${REMEDY_DUMP}`,
    };
  if (size === undefined || size === '' || size === '-')
    return { ok: false, error: `${at}: no size=; every partition needs an explicit size in sectors - ${REMEDY_DUMP}` };
  const s = parseNumber(start);
  if (!s.ok) return { ok: false, error: `${at}: start=${start}: ${s.error}` };
  const z = parseNumber(size);
  if (!z.ok) return { ok: false, error: `${at}: size=${size}: ${z.error}` };
  if (s.value === 0 && z.value !== 0)
    return {
      ok: false,
      error: `${at}: start=0 would overwrite the partition table; start at sector 1 or later (2048 is usual)`,
    };
  const out: Omit<RawPartition, 'line' | 'index'> = { start: s.value, size: z.value, bootable, attrsBootable };
  if (type !== undefined && type !== '') out.type = type;
  if (name !== undefined) out.name = name;
  if (uuid !== undefined) out.uuid = uuid;
  return { ok: true, value: out };
}

// A sector count as sfdisk -d writes it; suffixes, signs and octal-looking numbers are refused.
function parseNumber(text: string): Step<number> {
  const t = text.trim();
  if (/^0x[0-9a-f]+$/i.test(t)) {
    const n = Number.parseInt(t.slice(2), 16);
    return Number.isSafeInteger(n) ? { ok: true, value: n } : { ok: false, error: 'number too large' };
  }
  if (/^[0-9]+$/.test(t)) {
    if (t.length > 1 && t.startsWith('0'))
      return {
        ok: false,
        error: 'a leading zero makes sfdisk read it as octal; write the decimal number without leading zeros',
      };
    const n = Number(t);
    return Number.isSafeInteger(n) ? { ok: true, value: n } : { ok: false, error: 'number too large' };
  }
  if (/^[+-]/.test(t) || /^[0-9]+(\.[0-9]+)?\s*[KMGTPEZY]/i.test(t))
    return {
      ok: false,
      error: `relative sizes, "+" and suffixes like M or GiB make sfdisk align the value; use plain sector counts - ${REMEDY_DUMP}`,
    };
  return { ok: false, error: `not a number of sectors - ${REMEDY_DUMP}` };
}

function isSectorSize(n: number): boolean {
  return n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

// Type text -> 'b' / '83' (dos) or an uppercase GUID (gpt); missing means linux, as in sfdisk.
function normaliseType(raw: string | undefined, label: 'dos' | 'gpt'): Step<string> {
  if (raw === undefined || raw === '') return { ok: true, value: label === 'dos' ? '83' : LINUX_GUID };
  const shortcuts = label === 'dos' ? DOS_SHORTCUTS : GPT_SHORTCUTS;
  const byShortcut = Object.hasOwn(shortcuts, raw)
    ? shortcuts[raw]
    : Object.hasOwn(shortcuts, raw.toLowerCase()) && raw.length > 1
      ? shortcuts[raw.toLowerCase()]
      : undefined;
  if (byShortcut !== undefined) return { ok: true, value: byShortcut };
  if (label === 'dos') {
    const hex = /^(?:0x)?([0-9a-f]{1,2})$/i.exec(raw);
    if (hex) return { ok: true, value: normaliseHexType(hex[1] ?? '0') };
    return {
      ok: false,
      error: `type "${raw}" is not an MBR type; use hex like 83 or c (type names are not supported)`,
    };
  }
  if (GUID_RE.test(raw)) return { ok: true, value: raw.toUpperCase() };
  return { ok: false, error: `type "${raw}" is not a GPT type; use a GUID like ${LINUX_GUID}` };
}

function normaliseHexType(hex: string): string {
  return Number.parseInt(hex, 16).toString(16);
}

// dos ids as sfdisk prints them (0x + 8 lowercase hex digits); gpt ids as uppercase GUIDs.
function normaliseLabelId(raw: string, label: 'dos' | 'gpt'): string | undefined {
  if (label === 'dos') {
    const m = /^0x([0-9a-f]{1,8})$/i.exec(raw);
    return m ? `0x${(m[1] ?? '').toLowerCase().padStart(8, '0')}` : undefined;
  }
  return GUID_RE.test(raw) ? raw.toUpperCase() : undefined;
}

function indexOutsideQuotes(s: string, ch: string): number {
  let inQuote = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"') inQuote = !inQuote;
    else if (!inQuote && c === ch) return i;
  }
  return -1;
}

function splitOutsideQuotes(s: string, sep: RegExp): string[] {
  const out: string[] = [];
  let cur = '';
  let inQuote = false;
  for (const c of s) {
    if (c === '"') inQuote = !inQuote;
    if (!inQuote && sep.test(c)) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v.replaceAll('"', '');
}

/** The sector just past the last partition (0 for none): how many sectors the table needs. */
export function tableEndSector(t: TableSpec): number {
  let end = 0;
  for (const p of t.partitions) end = Math.max(end, p.start + p.size);
  return end;
}

// Sectors taken by one copy of the GPT entry array (128 entries of 128 bytes).
function gptEntrySectors(sectorSize: number): number {
  return Math.ceil((GPT_MAX_ENTRIES * 128) / sectorSize);
}

// The smallest possible first usable LBA: protective MBR + header + entries (34 at 512-byte sectors).
function gptMinFirstLba(sectorSize: number): number {
  return 2 + gptEntrySectors(sectorSize);
}

// What sfdisk uses when the script has no first-lba header: the 1 MiB grain, or the minimum on disks <= 4 MiB.
function gptDefaultFirstLba(sectorSize: number, diskSectors: number): number {
  return diskSectors * sectorSize > 4 * MIB ? MIB / sectorSize : gptMinFirstLba(sectorSize);
}

// The last sector a gpt partition may use: before the backup entries and header.
function gptLastUsable(sectorSize: number, diskSectors: number): number {
  return diskSectors - 2 - gptEntrySectors(sectorSize);
}

function gb(sectors: number, sectorSize: number): string {
  return `${((sectors * sectorSize) / 1e9).toFixed(2)} GB`;
}

function range(p: PartitionSpec): string {
  return `sectors ${p.start}-${p.start + p.size - 1}`;
}

/** Problems that would make sfdisk refuse the table, or make it unsafe; [] means OK. diskSectors is in t.sectorSize units. */
export function validateTable(t: TableSpec, diskSectors: number): string[] {
  const problems: string[] = [];
  const ss = t.sectorSize;
  if (!isSectorSize(ss)) problems.push(`sector size ${ss} is not a power of two from 512 to 65536`);
  if (!Number.isSafeInteger(diskSectors) || diskSectors <= 0) {
    problems.push(`disk size is unknown (${diskSectors} sectors); cannot check the table against it`);
    return problems;
  }
  if (t.partitions.length === 0) problems.push('the table has no partitions');

  const seen = new Set<number>();
  for (const p of t.partitions) {
    if (seen.has(p.index)) problems.push(`partition index ${p.index} appears more than once`);
    seen.add(p.index);
  }
  if (t.label === 'dos' && t.partitions.length > 4)
    problems.push(
      `dos table has ${t.partitions.length} partitions; at most 4 primary partitions fit (use label: gpt for more)`,
    );

  const gptFirst = t.label === 'gpt' ? (t.firstLba ?? gptDefaultFirstLba(ss, diskSectors)) : 1;
  const gptLast = gptLastUsable(ss, diskSectors);
  if (t.label === 'gpt' && t.firstLba !== undefined && t.firstLba < gptMinFirstLba(ss))
    problems.push(`first-lba ${t.firstLba} is inside the GPT header area; it must be at least ${gptMinFirstLba(ss)}`);

  for (const p of t.partitions) {
    const n = `partition ${p.index}`;
    if (!Number.isSafeInteger(p.index) || p.index < 1) problems.push(`${n}: index must be a whole number from 1`);
    else if (t.label === 'dos' && p.index > 4)
      problems.push(
        `${n}: dos partitions above 4 are logical partitions inside an extended one, which is not supported; use 1..4 or label: gpt`,
      );
    else if (t.label === 'gpt' && p.index > GPT_MAX_ENTRIES)
      problems.push(`${n}: gpt holds at most ${GPT_MAX_ENTRIES} partitions`);
    if (!Number.isSafeInteger(p.size) || p.size <= 0) {
      problems.push(`${n}: size ${p.size} must be a positive whole number of sectors`);
      continue;
    }
    if (!Number.isSafeInteger(p.start)) {
      problems.push(`${n}: start ${p.start} must be a whole number of sectors`);
      continue;
    }
    if (t.label === 'dos') {
      if (p.start < 1) problems.push(`${n}: starts at sector ${p.start}, before sector 1 (sector 0 holds the MBR)`);
      if (!/^[0-9a-f]{1,2}$/.test(p.type) || p.type !== normaliseHexType(p.type))
        problems.push(`${n}: type "${p.type}" is not a normalised MBR type (lowercase hex, no leading zeros)`);
      else if (p.type === '0') problems.push(`${n}: type 0 marks an unused slot; use 83 for linux`);
      else if (['5', 'f', '85'].includes(p.type))
        problems.push(
          `${n}: type ${p.type} is an extended partition (in a script \`E\` means extended, not 0x0e), which holds no filesystem; use c for the boot partition, 83 for linux`,
        );
      if (p.start + p.size > DOS_MAX_SECTORS)
        problems.push(`${n}: ends beyond sector ${DOS_MAX_SECTORS}, the limit of a dos table; use label: gpt`);
    } else {
      if (p.start < gptFirst) {
        const hint =
          t.firstLba === undefined && p.start >= gptMinFirstLba(ss)
            ? `; sfdisk starts usable space at ${gptFirst} on a new GPT unless the table says first-lba: ${gptMinFirstLba(ss)}`
            : '';
        problems.push(`${n}: starts at sector ${p.start}, before the first usable sector ${gptFirst}${hint}`);
      }
      if (!GUID_RE.test(p.type) || p.type !== p.type.toUpperCase())
        problems.push(`${n}: type "${p.type}" is not an uppercase GPT GUID`);
      else if (/^[0-]+$/.test(p.type))
        problems.push(
          `${n}: the all-zero GUID marks an unused entry; use 0FC63DAF-8483-4772-8E79-3D69D8477DE4 for linux`,
        );
    }
  }

  const end = tableEndSector(t);
  const limit = t.label === 'gpt' ? gptLast + 1 : diskSectors;
  if (Number.isFinite(end) && end > limit) {
    const tail = t.label === 'gpt' ? ` (the last ${diskSectors - limit} sectors hold the backup GPT)` : '';
    const last = [...t.partitions]
      .filter((p) => p.start + p.size > limit)
      .map((p) => p.index)
      .sort((a, b) => a - b);
    problems.push(
      `table ends at ${gb(end, ss)}, disk is ${gb(diskSectors, ss)}: partition${last.length > 1 ? 's' : ''} ${last.join(', ')} ` +
        `end${last.length > 1 ? '' : 's'} at sector ${end - 1}, last usable sector is ${limit - 1}${tail}`,
    );
  }

  const sane = t.partitions.filter((p) => Number.isSafeInteger(p.start) && Number.isSafeInteger(p.size) && p.size > 0);
  for (let i = 0; i < sane.length; i++) {
    for (let j = i + 1; j < sane.length; j++) {
      const a = sane[i];
      const b = sane[j];
      if (a === undefined || b === undefined) continue;
      if (a.start < b.start + b.size && b.start < a.start + a.size) {
        const [x, y] = a.start <= b.start ? [a, b] : [b, a];
        problems.push(`partitions ${x.index} (${range(x)}) and ${y.index} (${range(y)}) overlap`);
      }
    }
  }
  return problems;
}

/** What repartitioning would change: start, size, type and bootable only (ids, names, uuids ignored). */
export function compareTables(wanted: TableSpec, current: TableSpec | null): TableDiff {
  const byIndex = (t: TableSpec): Map<number, PartitionSpec> => new Map(t.partitions.map((p) => [p.index, p]));
  const w = byIndex(wanted);
  const wantedIdx = [...w.keys()].sort((a, b) => a - b);
  if (current === null) return { same: false, changed: wantedIdx, removed: [], bootableOnly: [] };
  const c = byIndex(current);
  const labelChanged = wanted.label !== current.label;
  const changed: number[] = [];
  const bootableOnly: number[] = [];
  for (const i of wantedIdx) {
    const a = w.get(i);
    const b = c.get(i);
    if (a === undefined) continue;
    if (labelChanged || b === undefined || a.start !== b.start || a.size !== b.size || a.type !== b.type)
      changed.push(i);
    else if (a.bootable !== b.bootable) bootableOnly.push(i);
  }
  const removed = [...c.keys()].filter((i) => !w.has(i)).sort((a, b) => a - b);
  if (!labelChanged && changed.length === 0 && removed.length === 0 && bootableOnly.length === 0) return { same: true };
  return { same: false, changed, removed, bootableOnly };
}

/**
 * The table sfdisk will really write for this spec. With explicit sector starts and sizes (the only form
 * the parser accepts) sfdisk keeps every number exactly as given, aligned or not - verified: the seed table
 * (start=16, start=97728, ...) written to a 4 GiB image dumps back unchanged, and so do start=1 and start=63.
 * sfdisk aligns to the grain (default 1 MiB = 2048 sectors) only omitted starts, '+' sizes and sizes with
 * suffixes, e.g. `start=16, size=16M` is written as size=32752 so the end lands on a MiB boundary.
 * So this is a normalised copy (partitions in index order); grainSectors cannot move anything here.
 */
export function alignTable(t: TableSpec, grainSectors?: number): TableSpec {
  void grainSectors; // explicit sector numbers are never aligned by sfdisk (see above)
  return { ...t, partitions: [...t.partitions].sort((a, b) => a.index - b.index).map((p) => ({ ...p })) };
}

/** A dump in today's dialect that sfdisk accepts as input, naming partitions after `device`. */
export function renderDump(t: TableSpec, device: string): string {
  const lines: string[] = [`label: ${t.label}`];
  if (t.labelId !== undefined) lines.push(`label-id: ${t.labelId}`);
  lines.push(`device: ${device}`, 'unit: sectors');
  if (t.label === 'gpt' && t.firstLba !== undefined) lines.push(`first-lba: ${t.firstLba}`);
  // last-lba is left out on purpose: it is a property of the disk, sfdisk derives it from the size.
  lines.push(`sector-size: ${t.sectorSize}`, '');
  for (const p of [...t.partitions].sort((a, b) => a.index - b.index)) {
    let line = `${partName(device, p.index)} : start=${p.start}, size=${p.size}, type=${p.type}`;
    if (t.label === 'gpt') {
      if (p.uuid !== undefined && GUID_RE.test(p.uuid)) line += `, uuid=${p.uuid}`;
      if (p.name !== undefined) line += `, name="${p.name.replace(/["\x00-\x1f\x7f]/g, '')}"`;
      if (p.bootable) line += `, attrs="${GPT_BOOTABLE_ATTR}"`;
    } else if (p.bootable) line += ', bootable';
    lines.push(line);
  }
  return lines.join('\n') + '\n';
}

/** Kernel partition device name: a 'p' goes between when the disk name ends in a digit (mmcblk0p1, sda1). */
export function partName(disk: string, index: number): string {
  return /[0-9]$/.test(disk) ? `${disk}p${index}` : `${disk}${index}`;
}

/** Decide the partitions phase: never repartition on doubt, format only what moved or is new. */
export function planPartitions(facts: {
  wantedText: string | null;
  currentText: string | null;
  diskSectors: number;
  roles?: Role[];
}): PartitionPlan {
  const roles = facts.roles ?? DEFAULT_ROLES;
  if (typeof facts.wantedText !== 'string')
    return {
      action: 'refuse',
      reason: 'master sent no table',
      remedy: 'publish the wanted table on the master (an `sfdisk -d` dump of a correctly partitioned card)',
    };
  const wanted = parseSfdiskDump(facts.wantedText);
  if (!wanted.ok)
    return {
      action: 'refuse',
      reason: `the master's table is malformed: ${wanted.error}`,
      remedy: 'fix the table file on the master; the disk was left untouched',
    };
  const problems = validateTable(wanted.table, facts.diskSectors);
  if (problems.length > 0)
    return {
      action: 'refuse',
      reason: `the master's table does not fit this disk: ${problems.join('; ')}`,
      remedy:
        'fix the table file on the master (or, if the card is too small for it, use a bigger card); the disk was left untouched',
    };

  let current: TableSpec | null = null;
  if (typeof facts.currentText === 'string') {
    if (facts.currentText.trim() === '')
      return {
        action: 'refuse',
        reason: "the disk's current table came back empty, which is ambiguous",
        remedy: 'pass null when sfdisk reports no partition table; otherwise check the disk with `sfdisk -d`',
      };
    const parsed = parseSfdiskDump(facts.currentText);
    if (!parsed.ok)
      return {
        action: 'refuse',
        reason: `the disk's current table cannot be understood (${parsed.error}); not wiping on doubt`,
        remedy: 'inspect it with `sfdisk -d`; to start over, boot once with wipe=<disk serial>',
      };
    current = parsed.table;
    if (current.sectorSize !== wanted.table.sectorSize)
      return {
        action: 'refuse',
        reason: `the master's table is for ${wanted.table.sectorSize}-byte sectors, the disk uses ${current.sectorSize}-byte sectors`,
        remedy: `write the table on the master for ${current.sectorSize}-byte sectors (sector-size: ${current.sectorSize})`,
      };
  }

  const diff = compareTables(wanted.table, current);
  if (diff.same) return { action: 'keep', reason: 'the disk already has the wanted table' };
  const changed = new Set(diff.changed);
  const format = roles.filter((r) => changed.has(r.index) && wanted.table.partitions.some((p) => p.index === r.index));
  const keep = wanted.table.partitions
    .map((p) => p.index)
    .filter((i) => !changed.has(i))
    .sort((a, b) => a - b);
  const parts: string[] = [];
  if (current === null) parts.push('the disk has no partition table');
  else if (current.label !== wanted.table.label)
    parts.push(`label changes from ${current.label} to ${wanted.table.label}`);
  if (current !== null && diff.changed.length > 0)
    parts.push(`changed: ${diff.changed.map((i) => `p${i}`).join(', ')}`);
  if (diff.removed.length > 0) parts.push(`removed: ${diff.removed.map((i) => `p${i}`).join(', ')}`);
  if (diff.bootableOnly.length > 0)
    parts.push(`bootable flag only: ${diff.bootableOnly.map((i) => `p${i}`).join(', ')}`);
  return { action: 'repartition', table: alignTable(wanted.table), format, keep, reason: parts.join('; ') };
}

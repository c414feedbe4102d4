// Seeded property tests of the agent's pure boot decisions: whatever the master, the disk or the command line
// say, the plans stay safe. Each property draws PROPERTY_RUNS cases (default 2000) from a PRNG seeded with
// PROPERTY_SEED (default below); case i of a property has its own seed, derived from (seed, property, i).
// A failure prints the seed, the case number and the input, and replays alone with:
//   PROPERTY_SEED=<seed> PROPERTY_CASE=<i> bun test test/unit/properties/<file>.test.ts -t '<property name>'
// The oracles are written independently of the code under test (own validation, own comparison of
// tables from the generator's model), except where a parse is needed to read a mutated text.
// This file: the runner and the generators several properties share; one file per property beside it.
import { test } from 'bun:test';
import { relative, resolve } from 'node:path';
import { rng } from '../../fixtures/rng.ts';
import {
  EFI_GUID,
  HOME_GUID,
  LINUX_GUID,
  LVM_GUID,
  RAID_GUID,
  SHORTCUT_OF,
  SWAP_GUID,
  ZERO_GUID,
} from '../../fixtures/tables.ts';
import { partName } from '../../../agent/plans/sfdisk.ts';

// ---------------------------------------------------------------------------------------------------------------
// Seeded PRNG and the property runner
// ---------------------------------------------------------------------------------------------------------------

const DEFAULT_SEED = 0x20261125;

function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = /^0x[0-9a-f]+$/i.test(raw.trim()) ? Number.parseInt(raw.trim(), 16) : Number(raw.trim());
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name}=${raw} is not an integer >= ${min}`);
  return n;
}

export const SEED = envInt('PROPERTY_SEED', DEFAULT_SEED, 0) >>> 0;
export const RUNS = envInt('PROPERTY_RUNS', 2000, 1);
const ONLY_CASE = process.env.PROPERTY_CASE === undefined ? null : envInt('PROPERTY_CASE', 0, 0);
// The failure report names the test file relative to the repository, as `bun test` takes it.
const REPO = resolve(import.meta.dir, '../../..');

// FNV-1a over the text: mixes the property name into the case seed.
function hash32(text: string, h = 0x811c9dc5): number {
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The shared mulberry32 (test/fixtures/rng.ts) with the draws the generators need; deterministic per seed. */
export class Rng {
  /** [0, 1) */
  readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  /** 0 .. n-1 */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** lo .. hi inclusive */
  between(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from an empty list');
    return xs[this.int(xs.length)] as T;
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [out[i], out[j]] = [out[j] as T, out[i] as T];
    }
    return out;
  }
  string(alphabet: string, maxLen: number): string {
    const chars = [...alphabet];
    let s = '';
    for (let n = this.int(maxLen + 1); n > 0; n--) s += this.pick(chars);
    return s;
  }
  hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += '0123456789abcdef'[this.int(16)];
    return s;
  }
}

export function caseSeed(property: string, i: number): number {
  return hash32(`${property}#${i}`, hash32(String(SEED)));
}

// JSON for the failure report, with undefined/NaN/Infinity kept visible and long strings left whole.
function showInput(x: unknown): string {
  try {
    const text = JSON.stringify(x, (_k, v: unknown) => {
      if (v === undefined) return '<undefined>';
      if (typeof v === 'number' && !Number.isFinite(v)) return `<${v}>`;
      if (typeof v === 'function') return '<function>';
      return v;
    });
    return text.length > 6000 ? `${text.slice(0, 6000)}... (${text.length} chars)` : text;
  } catch {
    return String(x);
  }
}

export interface PropertyOptions<T> {
  classify?: (input: T) => string | string[];
  cover?: Record<string, number>;
  runs?: number;
  knownFailing?: boolean;
}

/**
 * Run `check` on RUNS generated inputs. `classify` labels each case; `cover` lists labels that must each be
 * reached at least `min` times (so the generator really exercises the branches the property is about).
 */
export type Property = <T>(
  name: string,
  gen: (r: Rng, i: number) => T,
  check: (input: T) => void,
  opts?: PropertyOptions<T>,
) => void;

/** The `property` of one test file (give its import.meta.path), so a failure prints the replay for that file. */
export function propertyRunner(testFile: string): Property {
  const file = relative(REPO, testFile);
  return (name, gen, check, opts = {}) => runProperty(file, name, gen, check, opts);
}

function runProperty<T>(
  file: string,
  name: string,
  gen: (r: Rng, i: number) => T,
  check: (input: T) => void,
  opts: PropertyOptions<T>,
): void {
  const runs = opts.runs ?? RUNS;
  // knownFailing: a reported finding in code we do not own; the test passes while the property fails, and
  // turns red once the code is fixed (then drop the flag). Its counterexample is not printed on every run.
  (opts.knownFailing ? test.failing : test)(
    `${name} [${ONLY_CASE === null ? runs : 1} cases, seed ${SEED}]`,
    () => {
      const counts: Record<string, number> = {};
      for (let i = 0; i < runs; i++) {
        if (ONLY_CASE !== null && i !== ONLY_CASE) continue;
        let input: T | undefined;
        try {
          input = gen(new Rng(caseSeed(name, i)), i);
          check(input);
        } catch (e) {
          const msg =
            `property "${name}" failed at case ${i} (PROPERTY_SEED=${SEED}); replay with\n` +
            `  PROPERTY_SEED=${SEED} PROPERTY_CASE=${i} bun test ${file} -t '${name.replace(/'/g, '.')}'\n` +
            `input: ${showInput(input)}\n${(e as Error)?.message ?? String(e)}`;
          if (!opts.knownFailing || process.env.PROPERTY_VERBOSE) console.error(msg);
          throw new Error(msg, { cause: e });
        }
        if (opts.classify) {
          const labels = opts.classify(input);
          for (const l of Array.isArray(labels) ? labels : [labels]) counts[l] = (counts[l] ?? 0) + 1;
        }
      }
      // Coverage only means something on a full run.
      if (ONLY_CASE === null && opts.cover && runs >= 500) {
        for (const [label, min] of Object.entries(opts.cover)) {
          const got = counts[label] ?? 0;
          if (got < Math.ceil((min * runs) / 2000)) {
            throw new Error(
              `property "${name}" (seed ${SEED}): the generator reached "${label}" ${got} times in ${runs} cases; counts ${JSON.stringify(counts)}`,
            );
          }
        }
      }
    },
    TIMEOUT_MS(runs),
  );
}

/** Generous: the suite shares the machine with QEMU runs, and PROPERTY_RUNS may be large for a soak. */
export function TIMEOUT_MS(runs: number): number {
  return 60_000 + runs * 25;
}

/** An assertion that names what it checks (the runner adds seed, case and input). */
export function must(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(`violated: ${what}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Shared generators: sfdisk tables as model and text (partitions, approval), random bytes (partitions, stamps)
// ---------------------------------------------------------------------------------------------------------------

/** The generator's model of a table: canonical types (dos: lowercase hex, no leading zeros; gpt: uppercase GUID). */
export interface MPart {
  index: number;
  start: number;
  size: number;
  type: string;
  bootable: boolean;
  uuid?: string;
  name?: string;
}
export interface MTable {
  label: 'dos' | 'gpt';
  sectorSize: number;
  firstLba?: number;
  labelId?: string;
  parts: MPart[];
}

export function randomGuid(r: Rng): string {
  return `${r.hex(8)}-${r.hex(4)}-${r.hex(4)}-${r.hex(4)}-${r.hex(12)}`.toUpperCase();
}

export function genType(r: Rng, label: 'dos' | 'gpt'): string {
  if (label === 'dos') {
    if (r.chance(0.03)) return r.pick(['0', '5', 'f', '85']); // not a filesystem: must never be written
    return r.pick(['83', '83', '83', '83', 'b', 'c', 'c', '82', '7', 'e', 'ef', 'fd', '8e', 'da', 'a5']);
  }
  if (r.chance(0.03)) return ZERO_GUID; // the unused-entry GUID: must never be written
  return r.pick([
    LINUX_GUID,
    LINUX_GUID,
    LINUX_GUID,
    EFI_GUID,
    SWAP_GUID,
    HOME_GUID,
    RAID_GUID,
    LVM_GUID,
    randomGuid(r),
  ]);
}

/** A mostly plausible table for a disk of about `disk` sectors; sometimes overlapping, oversized or odd. */
export function genModelTable(r: Rng, disk: number, opts: { clean?: boolean } = {}): MTable {
  const label = r.chance(0.72) ? 'dos' : 'gpt';
  const sectorSize = r.chance(0.9) ? 512 : r.pick([4096, 1024]);
  const t: MTable = { label, sectorSize, parts: [] };
  if (label === 'gpt' && r.chance(0.3)) t.firstLba = r.pick([34, 2048, 40, 6, r.between(1, 4096)]);
  if (r.chance(0.5)) t.labelId = label === 'dos' ? `0x${r.hex(8)}` : randomGuid(r);
  const n =
    label === 'dos'
      ? r.chance(0.95)
        ? r.between(1, 4)
        : r.between(5, 6)
      : r.chance(0.9)
        ? r.between(1, 6)
        : r.between(7, 12);
  const usable = Number.isFinite(disk) && disk > 4096 ? Math.min(disk, 2 ** 40) : r.between(4096, 70000000);
  let at =
    label === 'dos'
      ? r.pick([1, 16, 63, 2048, 2048, 2048, r.between(1, 8192)])
      : r.pick([t.firstLba ?? 2048, 2048, 34, r.between(34, 8192)]);
  for (let i = 1; i <= n; i++) {
    const share = Math.max(1, Math.floor((usable - at) / (n - i + 1)));
    let size = r.chance(0.6)
      ? Math.max(1, Math.floor(share * (0.2 + 0.8 * r.next())))
      : r.pick([1, 2048, 65536, 97712, 2000000, r.between(1, 4000000)]);
    if (r.chance(0.03)) size = r.pick([share * 3, 2 ** 32, 2 ** 33]); // too big for the disk or for dos
    let start = at;
    if (r.chance(0.06)) start = Math.max(1, at - r.between(1, 5000)); // overlaps the previous one
    let index = i;
    if (r.chance(0.05)) index = r.pick([i + 1, i + 4, Math.max(1, i - 1), 129]); // gap or duplicate
    const p: MPart = { index, start, size, type: genType(r, label), bootable: r.chance(0.2) };
    if (label === 'gpt' && r.chance(0.5)) p.uuid = randomGuid(r);
    if (label === 'gpt' && r.chance(0.3)) p.name = r.pick(['root', 'boot', 'my root, v2', 'data', 'x']);
    t.parts.push(p);
    at = start + size + r.pick([0, 0, 0, 1, 2048, r.between(0, 100000)]);
  }
  return opts.clean ? cleanModel(t) : t;
}

/**
 * For the model-based properties: the model must mean the same as its text. A dos type 0 line is an unused
 * slot in sfdisk's dialect (the parser drops it), and which of two lines with the same index wins depends on
 * the line order; so: no type 0, and increasing unique indices.
 */
export function cleanModel(t: MTable): MTable {
  let prev = 0;
  for (const p of t.parts) {
    if (p.type === '0') p.type = '83';
    if (p.index <= prev) p.index = prev + 1;
    prev = p.index;
  }
  return t;
}

/** Another spelling sfdisk reads as the same type (hex case, 0x, leading zero, shortcut). */
function typeSpelling(r: Rng, label: 'dos' | 'gpt', type: string): string {
  const options = [type];
  if (label === 'dos') {
    // Upper case, but never a lone 'E': in a script that is the extended-partition shortcut, not 0x0e.
    if (type.toUpperCase() !== 'E') options.push(type.toUpperCase(), `0x${type.toUpperCase()}`);
    options.push(`0x${type}`, type.length === 1 ? `0${type}` : type);
  } else {
    options.push(type.toLowerCase());
  }
  options.push(...(SHORTCUT_OF[type] ?? []));
  return r.pick(options);
}

function pad(r: Rng, n: number | string): string {
  return r.chance(0.5) ? String(n) : String(n).padStart(r.pick([9, 12, 13]));
}

/**
 * Render the model as an sfdisk script; `style` picks the dialect. 'old' is the seed's (Id=, unused slots
 * listed as start= 0, size= 0, Id= 0; dos only). All spellings of one model mean the same table.
 */
export function renderModel(r: Rng, t: MTable, dev: string, style: 'new' | 'old' | 'positional' | 'unnamed'): string {
  const eol = r.chance(0.1) ? '\r\n' : '\n';
  const lines: string[] = [];
  const sorted = [...t.parts].sort((a, b) => a.index - b.index);
  if (style === 'old') {
    lines.push(`# partition table of ${dev}`, 'unit: sectors', '');
    for (let i = 1; i <= 4; i++) {
      const p = sorted.find((x) => x.index === i);
      const name = `${partName(dev, i)} : `;
      if (!p) lines.push(`${name}start=${pad(r, 0)}, size=${pad(r, 0)}, Id= 0`);
      else
        lines.push(
          `${name}start=${pad(r, p.start)}, size=${pad(r, p.size)}, Id=${r.chance(0.5) ? ' ' : ''}${typeSpelling(r, 'dos', p.type)}${p.bootable ? ', bootable' : ''}`,
        );
    }
    return lines.join(eol) + eol;
  }
  if (t.label === 'gpt' || r.chance(0.7)) lines.push(`label: ${t.label}`);
  if (t.labelId !== undefined && r.chance(0.7)) lines.push(`label-id: ${t.labelId}`);
  if (r.chance(0.7)) lines.push(`device: ${dev}`);
  lines.push('unit: sectors');
  if (t.firstLba !== undefined) lines.push(`first-lba: ${t.firstLba}`);
  if (t.sectorSize !== 512 || r.chance(0.5)) lines.push(`sector-size: ${t.sectorSize}`);
  if (r.chance(0.2)) lines.push('# a comment');
  lines.push('');
  const body: string[] = [];
  for (const p of sorted) {
    const sep = r.pick([', ', ',', ' , ', ';']);
    if (style === 'positional') {
      body.push(
        `${p.start} ${p.size} ${typeSpelling(r, t.label, p.type)}${p.bootable ? ' *' : r.chance(0.3) ? ' -' : ''}`,
      );
      continue;
    }
    const fields = [`start=${pad(r, p.start)}`, `size=${pad(r, p.size)}`, `type=${typeSpelling(r, t.label, p.type)}`];
    if (t.label === 'gpt') {
      if (p.uuid !== undefined && r.chance(0.7)) fields.push(`uuid=${r.chance(0.5) ? p.uuid : p.uuid.toLowerCase()}`);
      if (p.name !== undefined && r.chance(0.7)) fields.push(`name="${p.name}"`);
      if (p.bootable)
        fields.push(r.pick(['attrs="LegacyBIOSBootable"', 'bootable', 'attrs="RequiredPartition LegacyBIOSBootable"']));
      else if (r.chance(0.1)) fields.push('attrs="RequiredPartition"');
    } else if (p.bootable) fields.push('bootable');
    const f = r.chance(0.2) ? [fields[1] as string, fields[0] as string, ...fields.slice(2)] : fields;
    body.push(style === 'unnamed' ? f.join(sep) : `${partName(dev, p.index)} : ${f.join(sep)}`);
  }
  // Named lines may come in any order: the index comes from the name.
  lines.push(...(style === 'new' && r.chance(0.3) ? r.shuffle(body) : body));
  return lines.join(eol) + eol;
}

/** Text-level damage: what a truncated download, a bad edit or a corrupt disk could produce. */
export function damage(r: Rng, text: string): string {
  let s = text;
  for (let k = r.between(1, 3); k > 0; k--) {
    const lines = s.split('\n');
    const li = r.int(lines.length);
    const line = lines[li] ?? '';
    switch (r.int(14)) {
      case 0: {
        // flip a digit
        const digits = [...line.matchAll(/[0-9]/g)];
        const d = digits.length ? r.pick(digits) : undefined;
        if (d && d.index !== undefined)
          lines[li] = line.slice(0, d.index) + String(r.int(10)) + line.slice(d.index + 1);
        break;
      }
      case 1:
        lines.splice(li, 1);
        break; // drop a line
      case 2:
        lines.splice(li, 0, line);
        break; // duplicate a line
      case 3: {
        // swap start and size
        const m = /start=\s*(\d+)\s*,\s*size=\s*(\d+)/.exec(line);
        if (m) lines[li] = line.replace(m[0], `start=${m[2]}, size=${m[1]}`);
        break;
      }
      case 4:
        lines[li] = line.replace(
          /(start|size)=\s*\d+/,
          (_m, k: string) =>
            `${k}=${r.pick(['-1', '-2048', '0', '99999999999999999999', '9007199254740993', '1e9', '1.5', '0x800', '+5', '016', '4294967296', '18446744073709551616'])}`,
        );
        break;
      case 5:
        lines[li] = `${line}, ${r.pick(['foo=bar', 'uuid=', 'size=7', 'bootable', 'attrs=', 'name="a,b"', '"', 'x'])}`;
        break; // unknown or repeated key
      case 6:
        lines.splice(
          li,
          0,
          r.pick([
            'bogus: 1',
            'label: gpt',
            'label: sun',
            'unit: bytes',
            'sector-size: 4096',
            'sector-size: 3',
            'first-lba: 34',
            'label-id: nope',
            'grain: 1M',
            'table-length: 4',
          ]),
        );
        break;
      case 7:
        lines[li] = line.replace(/Id=/, 'type=').replace(/type=/, r.pick(['Id=', 'type=', 'id=', 'TYPE=']));
        break; // the other dialect
      case 8:
        lines[li] = line.replace(
          /type=\s*\S+?(,|$)/,
          (_m, end: string) =>
            `type=${r.pick(['0', '5', 'E', 'zz', '100', '0FC63DAF', ZERO_GUID, LINUX_GUID, ''])}${end}`,
        );
        break;
      case 9:
        s = s.slice(0, r.int(s.length + 1));
        return s; // truncated
      case 10:
        lines[li] = line.replace(/p?(\d+)\s*:/, () => `p${r.pick(['0', '5', '129', '99999999999999999999', 'x'])} :`);
        break;
      case 11: {
        // random characters somewhere
        const at = r.int(s.length + 1);
        s = s.slice(0, at) + r.string('=,:;"\n #xM0123456789-', 4) + s.slice(at + r.int(3));
        return s;
      }
      case 12:
        lines[li] = line.replace(/,/g, r.pick([';', ' ', ',,', '']));
        break;
      default:
        lines[li] = line.replace(/\s+/g, r.pick(['', '  ', '\t']));
        break;
    }
    s = lines.join('\n');
  }
  return s;
}

export function randomBytesText(r: Rng): string {
  const n = r.int(600);
  const bytes = Uint8Array.from({ length: n }, () =>
    r.chance(0.7) ? r.pick([...'start=size,type:Id= 0123456789\n/dev/abp'].map((c) => c.charCodeAt(0))) : r.int(256),
  );
  return new TextDecoder(r.chance(0.5) ? 'utf-8' : 'latin1').decode(bytes);
}

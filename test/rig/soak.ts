// Power cuts at random moments of the dangerous phases, then boots until the node is up again: every
// trial must end with the template's init on a root whose files are the master's (checksums), or with
// a visible refusal; never a half root, never lost data on a partition whose geometry did not change.
// The bootfs phase is judged on p1 itself, read from the disk image on the host as the Pi firmware reads
// it (QEMU boots U-Boot from -bios, so a card whose p1 no longer boots would go unnoticed otherwise).
import { copyFileSync, mkdirSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { boot, type BootResult } from './boot.ts';
import type { Images } from './images.ts';
import { randomBytes, templateSum, TEST_TABLE, type TestMaster } from './master.ts';
import { blankDisk } from './qemu.ts';
import { rng } from '../fixtures/rng.ts';
import { sigPath, stampPath } from '../../agent/contract/stamp.ts';
import { BOOT_JOURNAL, BOOT_STAGING, BOOT_STAMP, MARKER } from '../../agent/paths.ts';
import { LOCAL_SCRIPT } from '../../agent/contract/firststage.ts';

export type SoakPhase = 'repartition' | 'format' | 'bootcopy' | 'rsync' | 'bootfs';
export const SOAK_PHASES: readonly SoakPhase[] = ['repartition', 'format', 'bootcopy', 'rsync', 'bootfs'];

/** The console line after which the cut falls, and the longest delay after it (ms). */
const CUT: Record<Exclude<SoakPhase, 'bootfs'>, { on: RegExp; maxDelayMs: number }> = {
  repartition: { on: /writing the partition table to/, maxDelayMs: 1200 },
  format: { on: /formatting \/dev\/vda2 as ext4/, maxDelayMs: 1500 },
  bootcopy: { on: /filling \/dev\/vda1 from the master/, maxDelayMs: 800 },
  rsync: { on: /\[\d+\/\d+ root\] syncing \d/, maxDelayMs: 3500 },
};

/**
 * A bootfs update has two windows: the staging (fsck, the listing, the rsync into /.cb-new/, the hashing)
 * and the switch (the journal, then one rename per file: a burst). Half the trials cut in each, so the burst
 * is not left to chance. Measured on the rig (QEMU TCG, the 2 MB set B): 0.7 s from the first line to the
 * staging rsync, 0.9 s for it and the hashing, 60 ms from the switch line to the reboot line.
 */
const BOOTFS_CUT = {
  staging: { on: /updating the boot partition \/dev\/vda1/, maxDelayMs: 1800 },
  switch: { on: /switching \d+ files into place/, maxDelayMs: 70 },
} as const;

/**
 * A Debian-size root for the rsync phase: the arm64 sysroot's tree (a real Debian userland: 511 MB, 8768 files,
 * the kernel's modules included; its usr/ alone is 161 MB in 4782 files) under the template's data, so the sum
 * the template's init prints covers it. The test table with p2 (the root, which holds the booted slot beside
 * the one being synced) grown to 1.5 GiB and p3, p4 moved up behind it. The whole tree syncs in about 110 s on
 * the rig (QEMU TCG, ~5 MB/s), so the cut may fall up to cutMaxMs into it.
 */
export const DEBIAN_ROOT = {
  table: TEST_TABLE.replace(/size= +786432/, 'size=     3145728')
    .replace(/start= +854016/, 'start=     3213312')
    .replace(/start= +1378304/, 'start=     3737600'),
  diskMb: 2100,
  cutMaxMs: 100_000,
} as const;

/**
 * Copies the sysroot, or one folder of it (`only`, e.g. 'usr'), into the master's rootfs/ (published by the
 * next trial); says how many regular files that is, and how many bytes.
 */
export function addDebianTree(
  masterRoot: string,
  sysroot: string,
  only?: string,
): { files: number; bytes: number; text: string } {
  const dst = join(masterRoot, 'rootfs/usr/share/data/debian', only ?? '');
  mkdirSync(dirname(dst), { recursive: true });
  const out = (cmd: string, ...args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || `exit ${r.status}`}`);
    return r.stdout;
  };
  out('/bin/cp', '-a', join(sysroot, only ?? ''), dst);
  const bytes = Number(out('/usr/bin/du', '-sb', '--apparent-size', dst).split('\t')[0]);
  // one walk: a type letter per entry below dst (f for a regular file)
  const types = out('/usr/bin/find', dst, '-mindepth', '1', '-printf', '%y\n').split('\n').filter(Boolean);
  const files = types.filter((y) => y === 'f').length;
  return { files, bytes, text: `${Math.round(bytes / (1 << 20))} MiB, ${files} files in ${types.length} entries` };
}

export type Outcome =
  | 'up-correct'
  | 'refused-visible'
  | 'up-wrong-root'
  | 'lost-data'
  | 'p1-changed'
  | 'warm-wrote-p1'
  | 'p1-bricked'
  | 'p1-mixed'
  | 'p1-not-new'
  | 'p1-fsck'
  | 'stuck';
export const GOOD: readonly Outcome[] = ['up-correct', 'refused-visible'];

export interface Trial {
  phase: SoakPhase;
  seed: number;
  delayMs: number;
  outcome: Outcome;
  boots: number;
  detail: string;
}

// The shared seeded generator: the printed seed replays a trial exactly.
export { rng } from '../fixtures/rng.ts';

/** p1 of the test table: sectors 2048..67583. */
const P1_START = 2048 * 512;
const P1_BYTES = 65536 * 512;

/** sha256 of the boot partition's bytes. */
export function p1Hash(disk: string): string {
  return createHash('sha256').update(p1Bytes(disk)).digest('hex');
}

/** The boot partition's bytes, read from the disk image. */
export function p1Bytes(disk: string): Buffer {
  const fd = openSync(disk, 'r');
  try {
    const b = Buffer.alloc(P1_BYTES);
    let got = 0;
    while (got < b.length) {
      const n = readSync(fd, b, got, b.length - got, P1_START + got);
      if (n <= 0) break;
      got += n;
    }
    return b;
  } finally {
    closeSync(fd);
  }
}

// ---- p1 as the firmware reads it ----

/** The files of a FAT image by path (as on the card), its directories, and what cannot be read whole. */
export interface FatView {
  files: Map<string, Buffer>;
  dirs: Set<string>;
  broken: { path: string; why: string }[];
}

/**
 * A read-only FAT12/16/32 reader (long names, the short names' lower-case flags), as a boot ROM reads a card:
 * directory entries and cluster chains, nothing repaired. A chain that ends before the file's size, runs
 * into a free or out-of-range cluster or loops is `broken`. Throws when there is no FAT at all.
 */
export function fatView(img: Buffer): FatView {
  const bps = img.readUInt16LE(11);
  const spc = img[13] ?? 0;
  const rsv = img.readUInt16LE(14);
  const nfats = img[16] ?? 0;
  const rootEnts = img.readUInt16LE(17);
  const total = img.readUInt16LE(19) || img.readUInt32LE(32);
  const fatSz = img.readUInt16LE(22) || img.readUInt32LE(36);
  if (img[510] !== 0x55 || img[511] !== 0xaa || !bps || !spc || !nfats || !fatSz || !total)
    throw new Error('no FAT boot sector');
  const rootSecs = Math.ceil((rootEnts * 32) / bps);
  const dataSec = rsv + nfats * fatSz + rootSecs;
  const clusters = Math.floor((total - dataSec) / spc);
  const bits = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
  const fat = rsv * bps;
  const next = (c: number): number => {
    if (bits === 16) return img.readUInt16LE(fat + c * 2);
    if (bits === 32) return img.readUInt32LE(fat + c * 4) & 0x0fffffff;
    const v = img.readUInt16LE(fat + Math.floor(c * 1.5));
    return c & 1 ? v >> 4 : v & 0xfff;
  };
  const eoc = bits === 12 ? 0xff8 : bits === 16 ? 0xfff8 : 0x0ffffff8;
  const csize = spc * bps;
  const chain = (start: number, size: number | null): Buffer => {
    const parts: Buffer[] = [];
    const seen = new Set<number>();
    for (let c = start; ;) {
      if (c < 2 || c >= clusters + 2) throw new Error(`cluster ${c} is free or out of range`);
      if (seen.has(c)) throw new Error(`cluster chain loops at ${c}`);
      seen.add(c);
      const off = (dataSec + (c - 2) * spc) * bps;
      parts.push(img.subarray(off, off + csize));
      if (size !== null && parts.length * csize >= size) break;
      const n = next(c);
      if (n >= eoc) break;
      c = n;
    }
    const all = Buffer.concat(parts);
    if (size !== null && all.length < size) throw new Error(`chain of ${all.length} bytes for a ${size}-byte file`);
    return size === null ? all : all.subarray(0, size);
  };
  const files = new Map<string, Buffer>();
  const dirs = new Set<string>();
  const broken: { path: string; why: string }[] = [];
  const readDir = (buf: Buffer, prefix: string, depth: number) => {
    if (depth > 32) throw new Error('directories nested too deep (a loop?)');
    let lfn: string[] = [];
    let lfnSum = -1;
    for (let o = 0; o + 32 <= buf.length; o += 32) {
      const b0 = buf[o] ?? 0;
      if (b0 === 0) break;
      const attr = buf[o + 11] ?? 0;
      if (b0 === 0xe5) {
        lfn = [];
        continue;
      }
      if (attr === 0x0f) {
        if (b0 & 0x40) lfn = [];
        let s = '';
        for (const off of [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]) {
          const u = buf.readUInt16LE(o + off);
          if (u === 0 || u === 0xffff) break;
          s += String.fromCharCode(u);
        }
        lfn[(b0 & 0x1f) - 1] = s;
        lfnSum = buf[o + 13] ?? -1;
        continue;
      }
      if (attr & 0x08) {
        lfn = [];
        continue;
      }
      const raw = buf.subarray(o, o + 11);
      let sum = 0;
      for (const x of raw) sum = (((sum & 1) << 7) + (sum >> 1) + x) & 0xff;
      const nt = buf[o + 12] ?? 0;
      let base = raw.subarray(0, 8).toString('latin1').trimEnd();
      if (raw[0] === 0x05) base = `\u00e5${base.slice(1)}`;
      const ext = raw.subarray(8, 11).toString('latin1').trimEnd();
      const short = (nt & 0x08 ? base.toLowerCase() : base) + (ext ? `.${nt & 0x10 ? ext.toLowerCase() : ext}` : '');
      const name = lfn.length && lfnSum === sum ? lfn.join('') : short;
      lfn = [];
      if (name === '.' || name === '..') continue;
      const start = (bits === 32 ? buf.readUInt16LE(o + 20) << 16 : 0) | buf.readUInt16LE(o + 26);
      const size = buf.readUInt32LE(o + 28);
      const path = prefix ? `${prefix}/${name}` : name;
      try {
        if (attr & 0x10) {
          dirs.add(path);
          readDir(chain(start, null), path, depth + 1);
        } else files.set(path, size === 0 ? Buffer.alloc(0) : chain(start, size));
      } catch (e) {
        broken.push({ path, why: (e as Error).message });
      }
    }
  };
  const rootStart = (rsv + nfats * fatSz) * bps;
  readDir(bits === 32 ? chain(img.readUInt32LE(44), null) : img.subarray(rootStart, rootStart + rootSecs * bps), '', 0);
  return { files, dirs, broken };
}

/** fsck.fat -n on a copy of p1 (the host's dosfstools): its exit code and what it said. */
export function fsckP1(p1: Buffer, work: string): { code: number; output: string } {
  const img = join(work, 'p1-check.img');
  writeFileSync(img, p1);
  try {
    const r = spawnSync('fsck.fat', ['-n', img], { encoding: 'utf8' });
    const output = `${r.stdout ?? ''}${r.stderr ?? ''}`
      .split('\n')
      .filter((l) => l.trim() && !/^fsck\.fat \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l))
      .join(' | ');
    return { code: r.status ?? -1, output };
  } finally {
    rmSync(img, { force: true });
  }
}

/** A boot set: path -> bytes. */
export type BootFiles = Map<string, Buffer>;

const lower = (p: string) => p.toLowerCase();
/** What the firmware never reads: the first stage's files, the staging, the agent's temp names. */
function notFirmware(path: string): boolean {
  const top = lower(path.split('/')[0] ?? '');
  return (
    top === lower(BOOT_STAGING) ||
    top === lower(LOCAL_SCRIPT) ||
    top.startsWith('clusterboot.') ||
    (!path.includes('/') && /^\..*\.tmp-\d+$/.test(path))
  );
}
const CRITICAL =
  /^(config\.txt|cmdline\.txt|bootcode\.bin|start.*\.elf|fixup.*\.dat|armstub.*\.bin|u-boot.*\.bin|kernel.*\.img)$/i;

function byName(set: BootFiles): Map<string, Buffer> {
  return new Map([...set].map(([p, b]) => [lower(p), b]));
}

/**
 * What the firmware would find on p1 right after a cut (before any boot repairs or finishes anything):
 * a readable FAT whose files (outside the first stage's) are each byte-equal to their old or new version,
 * with every file of the old set or every file of the new set present (so never a boot-critical one
 * missing), and p1 exactly the old set or the new set unless the agent's journal is there to finish it.
 * One allowance, from vfat itself: a rename to a name that did not exist writes the new entry empty first,
 * so with a journal a file only the new set has may be empty.
 */
export function judgeCut(p1: Buffer, a: BootFiles, b: BootFiles): { state: string; violation?: Outcome } {
  let v: FatView;
  try {
    v = fatView(p1);
  } catch (e) {
    return { state: `no readable FAT: ${(e as Error).message}`, violation: 'p1-bricked' };
  }
  const journal = [...v.files.keys()].some((p) => lower(p) === lower(BOOT_JOURNAL));
  const live = new Map([...v.files].filter(([p]) => !notFirmware(p)).map(([p, x]) => [lower(p), x]));
  const A = byName(a);
  const B = byName(b);
  const problems = v.broken.filter((x) => !notFirmware(x.path)).map((x) => `unreadable ${x.path}: ${x.why}`);
  for (const [p, x] of live) {
    if (A.get(p)?.equals(x) || B.get(p)?.equals(x)) continue;
    if (journal && !A.has(p) && B.has(p) && x.length === 0) continue;
    problems.push(`${p} (${x.length} bytes) is neither its old nor its new version`);
  }
  // every file of one set or the other is there, so are its boot-critical ones (named first when not)
  const lacks = (s: Map<string, Buffer>) =>
    [...s.keys()].filter((p) => !live.has(p)).sort((x, y) => Number(CRITICAL.test(y)) - Number(CRITICAL.test(x)));
  if (lacks(A).length && lacks(B).length)
    problems.push(
      `neither set complete: the old lacks ${lacks(A).slice(0, 3).join(', ')}; the new lacks ${lacks(B).slice(0, 3).join(', ')}`,
    );
  if (problems.length) return { state: problems.slice(0, 4).join('; '), violation: 'p1-bricked' };
  const exactly = (s: Map<string, Buffer>) => s.size === live.size && [...s].every(([p, x]) => live.get(p)?.equals(x));
  if (exactly(A)) return { state: `old set${journal ? ' (journal written)' : ''}` };
  if (exactly(B)) return { state: `new set${journal ? ' (journal still there)' : ''}` };
  const switched = [...B].filter(([p, x]) => live.get(p)?.equals(x) && !A.get(p)?.equals(x)).length;
  const changed = [...B].filter(([p, x]) => !A.get(p)?.equals(x)).length;
  const state = `between the sets (${switched} of ${changed} changed files switched)`;
  return journal ? { state: `${state}, journal there` } : { state: `${state}, no journal`, violation: 'p1-mixed' };
}

/** After the boot that followed the cut: p1 is exactly the new set, the update's traces gone, the first stage's file kept. */
export function judgeRecovered(p1: Buffer, b: BootFiles, localScript: Buffer | undefined): string | null {
  let v: FatView;
  try {
    v = fatView(p1);
  } catch (e) {
    return `no readable FAT: ${(e as Error).message}`;
  }
  if (v.broken.length)
    return `unreadable: ${v.broken
      .map((x) => `${x.path} (${x.why})`)
      .slice(0, 3)
      .join('; ')}`;
  const names = new Map([...v.files].map(([p, x]) => [lower(p), x]));
  const live = new Map([...names].filter(([p]) => !notFirmware(p)));
  const B = byName(b);
  const wrong = [...B].filter(([p, x]) => !live.get(p)?.equals(x)).map(([p]) => p);
  const extra = [...live.keys()].filter((p) => !B.has(p));
  if (wrong.length || extra.length)
    return `not the new set: ${[...wrong.map((p) => `${p} differs`), ...extra.map((p) => `${p} left over`)].slice(0, 4).join(', ')}`;
  if (names.has(lower(BOOT_JOURNAL))) return 'the journal is still there';
  if ([...v.dirs].some((d) => lower(d) === lower(BOOT_STAGING))) return `/${BOOT_STAGING}/ is still there`;
  if (!names.has(lower(MARKER)) || !names.has(lower(BOOT_STAMP))) return 'the marker or the stamp is missing';
  if (localScript && !names.get(lower(LOCAL_SCRIPT))?.equals(localScript))
    return `${LOCAL_SCRIPT} (the first stage's local script) did not survive`;
  return null;
}

/** The old boot set every trial starts from: the master's config.txt and U-Boot, with firmware and overlays beside. */
export function bootSetA(): BootFiles {
  const m: BootFiles = new Map([
    ['config.txt', Buffer.from('kernel=u-boot.bin\narm_64bit=1\n')],
    ['u-boot.bin', Buffer.alloc(4096, 7)],
    ['start4.elf', randomBytes(768 << 10, 501)],
    ['fixup4.dat', randomBytes(8 << 10, 502)],
    ['bcm2711-rpi-4-b.dtb', randomBytes(48 << 10, 503)],
    ['old-only.txt', Buffer.from('only the old set has this\n')],
    ['docs/old/README', Buffer.from('a directory the new set drops\n')],
  ]);
  for (let i = 0; i < 12; i++) m.set(`overlays/ov${i}.dtbo`, randomBytes((4 + 3 * i) << 10, 510 + i));
  return m;
}

/** A new boot set for one trial: every boot-critical file changed, overlays half changed, files gone and new. */
export function bootSetB(seed: number): BootFiles {
  const a = bootSetA();
  const m: BootFiles = new Map([...a].filter(([p]) => p !== 'old-only.txt' && !p.startsWith('docs/')));
  const s = (seed % 100_000) * 40;
  m.set('config.txt', Buffer.from(`kernel=u-boot.bin\narm_64bit=1\n# bootfs for soak seed ${seed}\n`));
  m.set('u-boot.bin', randomBytes(640 << 10, s + 1));
  m.set('start4.elf', randomBytes(768 << 10, s + 2));
  m.set('fixup4.dat', randomBytes(8 << 10, s + 3));
  for (let i = 0; i < 12; i += 2) m.set(`overlays/ov${i}.dtbo`, randomBytes((4 + 3 * i) << 10, s + 10 + i));
  m.set('overlays/new-only.dtbo', randomBytes(12 << 10, s + 30));
  m.set('newdir/sub/blob.bin', randomBytes(256 << 10, s + 31));
  m.set('new-only.txt', Buffer.from(`only the new set has this (${seed})\n`));
  return m;
}

function writeBootSet(masterRoot: string, set: BootFiles): void {
  const dir = join(masterRoot, 'bootfs');
  rmSync(dir, { recursive: true, force: true });
  for (const [p, b] of set) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), b);
  }
  mkdirSync(dir, { recursive: true });
}

export class Soak {
  private golden: string;
  /** The boot set the golden disk holds (the master's bootfs/ between bootfs trials). */
  readonly bootA = bootSetA();
  private stampA: { text: string; sig: string | null } | null = null;

  /** The disk size (MB): larger for a Debian-size root. */
  readonly diskMb: number;
  /** The root-sync cut: the console line it counts from and its longest delay (default CUT.rsync). */
  readonly rsyncCut: { on: RegExp; maxDelayMs: number };

  constructor(
    readonly img: Images,
    readonly master: TestMaster,
    readonly work: string,
    readonly bootargs: string,
    opts: { diskMb?: number; rsyncMaxDelayMs?: number; rsyncCutOn?: RegExp } = {},
  ) {
    this.golden = join(work, 'golden.img');
    this.diskMb = opts.diskMb ?? 1024;
    this.rsyncCut = {
      on: opts.rsyncCutOn ?? CUT.rsync.on,
      maxDelayMs: opts.rsyncMaxDelayMs ?? CUT.rsync.maxDelayMs,
    };
  }

  private go(disk: string, extra: { killOn?: RegExp; killDelayMs?: number } = {}): Promise<BootResult> {
    return boot(this.img, this.work, { disk, bootargs: this.bootargs, timeoutMs: 300_000, ...extra });
  }

  /** The golden disk image (after prepareGolden). */
  get goldenDisk(): string {
    return this.golden;
  }

  /** A provisioned disk with a complete root and the template's p4 probe, copied for each rsync trial. */
  async prepareGolden(): Promise<void> {
    // the boot set A: firmware and overlays beside the master's config.txt and U-Boot, so that a boot copy
    // and a bootfs update take long enough for a cut to fall inside them
    writeBootSet(this.master.root, this.bootA);
    await this.master.publish('bootfs');
    const read = (p: string) => {
      try {
        return readFileSync(join(this.master.root, p), 'utf8');
      } catch {
        return null;
      }
    };
    this.stampA = { text: read(stampPath('bootfs')) ?? '', sig: read(sigPath('bootfs')) };
    blankDisk(this.golden, this.diskMb);
    for (let i = 0; i < 4; i++) {
      const r = await this.go(this.golden);
      if (r.ending === 'template') return;
      if (r.ending !== 'reboot') throw new Error(`golden disk: boot ended ${r.ending}\n${r.console}`);
    }
    throw new Error('golden disk: not up after 4 boots');
  }

  /** The master's bootfs/ back to set A with A's very stamp, as the golden disk has it. */
  private restoreBootA(): void {
    writeBootSet(this.master.root, this.bootA);
    if (!this.stampA) return;
    writeFileSync(join(this.master.root, stampPath('bootfs')), this.stampA.text);
    if (this.stampA.sig !== null) writeFileSync(join(this.master.root, sigPath('bootfs')), this.stampA.sig);
    else rmSync(join(this.master.root, sigPath('bootfs')), { force: true });
  }

  /** Boots after the cut until the template's init runs (or a fatal end), then the root's checks. */
  private async untilUp(disk: string, t: Trial, cut: BootResult, want: string): Promise<BootResult | null> {
    let last = cut;
    for (let i = 0; i < 5 && last.ending !== 'template'; i++) {
      last = await this.go(disk);
      t.boots++;
      // what the retry sent again: a cut sync's finished files are salvaged, not fetched twice
      const synced = /slot \S+ synced: (.*)/.exec(last.console)?.[1];
      if (synced) t.detail = [t.detail, `boot ${t.boots}: ${synced}`].filter(Boolean).join('; ');
      if (last.ending === 'fatal' || last.ending === 'other') break;
    }
    if (last.ending === 'fatal') {
      const remedy = /remedy: (.*)/.exec(last.console)?.[1];
      t.outcome = remedy ? 'refused-visible' : 'stuck';
      t.detail = [t.detail, /FATAL: (.*)/.exec(last.console)?.[1] ?? ''].filter(Boolean).join('; ');
      return null;
    }
    if (last.ending !== 'template') {
      t.detail = [t.detail, `not up after ${t.boots} boots (${last.ending})`].filter(Boolean).join('; ');
      return null;
    }
    const sum = /TEMPLATE-SUM (\S+)/.exec(last.console)?.[1];
    if (sum !== want) {
      t.outcome = 'up-wrong-root';
      t.detail = `root sum ${sum ?? 'none'}, master ${want}`;
      return null;
    }
    return last;
  }

  async trial(phase: SoakPhase, seed: number): Promise<Trial> {
    // seed 0 ran as 1 before the shared generator: keeps every printed soak seed replaying the same cut
    const r = rng(seed >>> 0 || 1);
    if (phase === 'bootfs') return this.bootfsTrial(seed, r);
    const at = phase === 'rsync' ? this.rsyncCut : CUT[phase];
    const delayMs = Math.floor(r() * at.maxDelayMs);
    const disk = join(this.work, 'trial.img');
    rmSync(disk, { force: true });
    let p1Before: string | null = null;
    if (phase === 'rsync') {
      copyFileSync(this.golden, disk);
      p1Before = p1Hash(disk);
      // a new template (every data file rewritten) so the boot has a whole root to sync
      for (let i = 0; i < 20; i++)
        writeFileSync(
          join(this.master.root, `rootfs/usr/share/data/blob${i}`),
          randomBytes(1 << 20, seed * 100 + i + 1),
        );
      await this.master.publish('rootfs');
    } else {
      blankDisk(disk, this.diskMb);
    }
    const want = templateSum(this.master.root);
    const cut = await this.go(disk, { killOn: at.on, killDelayMs: delayMs });
    const t: Trial = { phase, seed, delayMs, outcome: 'stuck', boots: 1, detail: '' };
    if (cut.ending !== 'other') t.detail = `the boot ended ${cut.ending} before the cut`;
    const last = await this.untilUp(disk, t, cut, want);
    if (!last) return t;
    if (phase === 'rsync') {
      if (!/TEMPLATE-P4 before=yes/.test(last.console)) {
        t.outcome = 'lost-data';
        t.detail = 'p4 probe gone on a disk whose table did not change';
        return t;
      }
      if (p1Hash(disk) !== p1Before) {
        t.outcome = 'p1-changed';
        t.detail = 'the boot partition changed although the table and bootfs did not';
        return t;
      }
      // and a warm boot writes nothing to p1
      const warm = await this.go(disk);
      t.boots++;
      if (warm.ending !== 'template' || p1Hash(disk) !== p1Before) {
        t.outcome = 'warm-wrote-p1';
        t.detail = `warm boot ended ${warm.ending}; p1 ${p1Hash(disk) === p1Before ? 'same' : 'changed'}`;
        return t;
      }
    }
    t.outcome = 'up-correct';
    return t;
  }

  /**
   * A new bootfs published, the golden disk boots, the power is cut during the update. Then, from the host:
   * right after the cut, p1 as the firmware would read it (judgeCut); after the next boot (which finishes the
   * update from the journal, or stages it again), p1 is exactly the new set and `fsck.fat -n` is clean; and
   * the node comes up on the master's root.
   */
  private async bootfsTrial(seed: number, r: () => number): Promise<Trial> {
    const variant = r() < 0.5 ? 'staging' : 'switch';
    const cutAt = BOOTFS_CUT[variant];
    const delayMs = Math.floor(r() * cutAt.maxDelayMs);
    const t: Trial = { phase: 'bootfs', seed, delayMs, outcome: 'stuck', boots: 1, detail: `cut while ${variant}` };
    const disk = join(this.work, 'trial.img');
    rmSync(disk, { force: true });
    copyFileSync(this.golden, disk);
    const before = fatView(p1Bytes(disk));
    const localScript = [...before.files].find(([p]) => lower(p) === lower(LOCAL_SCRIPT))?.[1];
    const b = bootSetB(seed);
    writeBootSet(this.master.root, b);
    await this.master.publish('bootfs');
    try {
      const want = templateSum(this.master.root);
      let cut: BootResult;
      try {
        cut = await this.go(disk, { killOn: cutAt.on, killDelayMs: delayMs });
      } catch (e) {
        t.detail += `; the cut never came: ${(e as Error).message.split('\n')[0]}`;
        return t;
      }
      if (cut.ending !== 'other') t.detail += ` (the boot ended ${cut.ending} before the cut)`;
      const afterCut = p1Bytes(disk);
      const seen = judgeCut(afterCut, this.bootA, b);
      const f0 = fsckP1(afterCut, this.work);
      t.detail += `; after the cut: ${seen.state}; fsck.fat -n ${f0.code === 0 ? 'clean' : `exit ${f0.code}: ${f0.output.slice(0, 160)}`}`;
      if (seen.violation) {
        t.outcome = seen.violation;
        return t;
      }
      // the next boot finishes the update (or, cut before its commit point, does it again)
      const next = await this.go(disk);
      t.boots++;
      const recovered = p1Bytes(disk);
      const wrong = judgeRecovered(recovered, b, localScript);
      if (wrong) {
        t.outcome = 'p1-not-new';
        t.detail += `; after the next boot (${next.ending}): ${wrong}`;
        return t;
      }
      const f1 = fsckP1(recovered, this.work);
      if (f1.code !== 0) {
        t.outcome = 'p1-fsck';
        t.detail += `; after the next boot fsck.fat -n exits ${f1.code}: ${f1.output.slice(0, 200)}`;
        return t;
      }
      t.detail += `; the next boot (${next.ending}) left the new set, fsck clean`;
      if (!(await this.untilUp(disk, t, next, want))) return t;
      const end = judgeRecovered(p1Bytes(disk), b, localScript);
      if (end) {
        t.outcome = 'p1-not-new';
        t.detail += `; once up: ${end}`;
        return t;
      }
      t.outcome = 'up-correct';
      return t;
    } finally {
      this.restoreBootA();
    }
  }
}

// `builder stage --first-stage firmware`: what the Pi 4/5 EEPROM bootloader fetches by TFTP, without U-Boot.
// <tftp>/firmware-<id>/ holds one complete set (start4.elf, fixup4.dat, the DTBs and overlays from bootfs/,
// config.txt, cmdline.txt, the raw kernel and the initramfs as a plain cpio.gz); each node's TFTP prefix
// (the serial number, or with TFTP_PREFIX=2 the MAC) is a symlink to it, switched with one rename.
// The pure part (firmwareSet, tftpPrefix, parseSerials) decides; writeFirmwareStage writes.
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import {
  bootfsProblems,
  BOOTFS_AUTOBOOT,
  BOOTFS_CONFIG,
  FIRMWARE_TFTP_MAX,
  firmwareCmdline,
  firmwareId,
  FW_ANNOUNCEMENT,
  FW_CMDLINE,
  FW_CONFIG,
  FW_INITRAMFS,
  FW_KERNEL,
  FW_LOADERS,
  fwDir,
  renderFirmwareAnnouncement,
  renderTftpConfig,
  setPathOk,
  type FirmwareAnnouncement,
  type SetFile,
} from '../../agent/contract/firmware.ts';
import { readUImageHeader } from '../../agent/contract/uimage.ts';
import type { NodeEntry } from './nodelist.ts';

export type TftpPrefixMode = 'serial' | 'mac';

/** One file of the TFTP folder: its path there and its bytes. */
export interface OutFile {
  path: string;
  data: Uint8Array;
}

export interface FirmwareSet {
  announcement: FirmwareAnnouncement;
  /** Everything the TFTP folder holds, in write order (config.txt last). */
  files: OutFile[];
}

const sha = (d: Uint8Array) => new Bun.CryptoHasher('sha256').update(d).digest('hex');
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** The bytes of bootfs/ the set takes: start4.elf, fixup4.dat, top-level *.dtb, overlays/ (all of it). */
export function pickBootfs(files: ReadonlyMap<string, Uint8Array>): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const [p, d] of files) {
    if (FW_LOADERS.includes(p) || /^[^/]+\.dtb$/i.test(p) || p.startsWith('overlays/')) out.set(p, d);
  }
  return out;
}

/** The initramfs as the firmware loads it: a U-Boot ramdisk image from `builder pack` unwrapped, or a cpio.gz as is. */
export function plainInitramfs(data: Uint8Array): { ok: true; data: Uint8Array } | { ok: false; error: string } {
  if (data[0] === 0x1f && data[1] === 0x8b) return { ok: true, data };
  try {
    const h = readUImageHeader(data.subarray(0, 64));
    if (h.type !== 3) return { ok: false, error: `a U-Boot image of type ${h.type}, not a ramdisk` };
    const body = data.subarray(64, 64 + h.size);
    if (body.length !== h.size) return { ok: false, error: 'truncated U-Boot image' };
    if (!(body[0] === 0x1f && body[1] === 0x8b))
      return {
        ok: false,
        error: 'not gzip inside (the firmware unpacks a gzip cpio; pack with --compress gzip)',
      };
    return { ok: true, data: body };
  } catch (e) {
    return { ok: false, error: `neither a cpio.gz nor a U-Boot ramdisk image (${(e as Error).message})` };
  }
}

/** Refuse what the firmware's TFTP would silently cut: the rule, the size, and what to do instead. */
export function ceilingProblem(what: string, size: number): string | null {
  if (size <= FIRMWARE_TFTP_MAX) return null;
  return (
    `${what} is ${size} bytes (${mib(size)}), over the Pi firmware's TFTP ceiling of 65535 blocks of 1 KiB ` +
    `(${FIRMWARE_TFTP_MAX + 1} bytes): the firmware would silently truncate it and the kernel would fail to unpack it. ` +
    "Remedy: boot these nodes over HTTP with a signed boot.img (the EEPROM bootloader's HTTP boot, BOOT_ORDER nibble 7), " +
    'or make the image smaller (fewer modules or tools in `builder pack`, a smaller sysroot)'
  );
}

export interface FirmwareInputs {
  /** bootfs/ files by relative path (only the ones pickBootfs takes are used). */
  bootfs: ReadonlyMap<string, Uint8Array>;
  /** bootfs/config.txt and bootfs/autoboot.txt, for the SD sets' warning (null: absent). */
  bootfsConfig: string | null;
  bootfsAutoboot: string | null;
  kernel: Uint8Array;
  initramfs: Uint8Array;
  bootargs: string;
}

/** The set, or every problem (nothing is written then); warnings do not stop it. */
export function firmwareSet(
  i: FirmwareInputs,
): { ok: true; set: FirmwareSet; warnings: string[] } | { ok: false; problems: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  const picked = pickBootfs(i.bootfs);
  for (const need of FW_LOADERS)
    if (!picked.has(need))
      problems.push(
        `bootfs/${need} is missing: the Pi 4 firmware loads it by TFTP; copy the boot/ files of raspberrypi/firmware (or a Raspberry Pi OS bootfs) into bootfs/ and \`builder publish bootfs\``,
      );
  if (![...picked.keys()].some((p) => p.endsWith('.dtb')))
    problems.push(
      "bootfs/ has no *.dtb: the firmware needs the board's device tree (bcm2711-rpi-4-b.dtb, bcm2712-rpi-5-b.dtb)",
    );
  for (const p of picked.keys())
    if (!setPathOk(p)) problems.push(`bootfs/${p}: a name the set cannot carry (spaces or odd characters)`);
  const ird = plainInitramfs(i.initramfs);
  if (!ird.ok) problems.push(`initramfs: ${ird.error}`);
  else {
    const c = ceilingProblem(`the initramfs (${FW_INITRAMFS})`, ird.data.length);
    if (c) problems.push(c);
  }
  const kc = ceilingProblem(`the kernel (${FW_KERNEL})`, i.kernel.length);
  if (kc) problems.push(kc);
  for (const [p, d] of picked) {
    const c = ceilingProblem(`bootfs/${p}`, d.length);
    if (c) problems.push(c);
  }
  if (problems.length || !ird.ok) return { ok: false, problems };

  const sd = bootfsProblems(i.bootfsConfig, i.bootfsAutoboot);
  if (sd.length)
    warnings.push(
      `the nodes' SD cards cannot boot the cached first stage (${sd.join('; ')}): they will netboot every time. ` +
        `Put in bootfs/config.txt: ${JSON.stringify(BOOTFS_CONFIG)} and in bootfs/autoboot.txt: ${JSON.stringify(BOOTFS_AUTOBOOT)}, then \`builder publish bootfs\``,
    );

  const setFiles: OutFile[] = [
    { path: FW_KERNEL, data: i.kernel },
    { path: FW_INITRAMFS, data: ird.data },
    ...[...picked].filter(([p]) => !FW_LOADERS.includes(p)).map(([path, data]) => ({ path, data })),
  ].sort((a, b) => (a.path < b.path ? -1 : 1));
  const listed: SetFile[] = setFiles.map((f) => ({ path: f.path, size: f.data.length, sha256: sha(f.data) }));
  const id = firmwareId(i.bootargs, listed);
  const announcement: FirmwareAnnouncement = { id, bootargs: i.bootargs, files: listed };
  const enc = (s: string) => new TextEncoder().encode(s);
  const files: OutFile[] = [
    ...setFiles,
    ...FW_LOADERS.map((p) => ({ path: p, data: picked.get(p) as Uint8Array })),
    { path: FW_CMDLINE, data: enc(firmwareCmdline(i.bootargs, id, 'net')) },
    { path: FW_CONFIG, data: enc(renderTftpConfig(id)) },
  ];
  return { ok: true, set: { announcement, files }, warnings };
}

// ---- TFTP prefixes

/** The prefix the EEPROM bootloader asks under: the serial number (8 hex digits) or, TFTP_PREFIX=2, the MAC. */
export function tftpPrefix(mode: TftpPrefixMode, node: { mac: string; serial?: string }): string | null {
  if (mode === 'mac') return node.mac.toLowerCase().replace(/:/g, '-');
  const s = node.serial?.toLowerCase().replace(/^0x/, '');
  if (!s || !/^[0-9a-f]{1,16}$/.test(s)) return null;
  return s.slice(-8).padStart(8, '0');
}

/**
 * The serials file: `<hostname or MAC> <serial>` per line (# comments); the serial as `vcgencmd otp_dump | grep 28:`
 * or the last 8 hex digits of /proc/cpuinfo's Serial.
 */
export function parseSerials(text: string): { serials: Map<string, string>; errors: string[] } {
  const serials = new Map<string, string>();
  const errors: string[] = [];
  text.split('\n').forEach((raw, n) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const f = line.split(/\s+/);
    const serial = (f[1] ?? '').toLowerCase().replace(/^0x/, '');
    if (f.length !== 2 || !/^[0-9a-f]{8}$|^[0-9a-f]{16}$/.test(serial))
      return void errors.push(
        `line ${n + 1}: expected '<hostname or MAC> <serial: 8 hex digits>', got '${line.slice(0, 60)}'`,
      );
    serials.set((f[0] as string).toLowerCase(), serial.slice(-8));
  });
  return { serials, errors };
}

/** Each arm64 node's prefix, or the problems (a node without a serial in serial mode). */
export function nodePrefixes(
  nodes: readonly NodeEntry[],
  mode: TftpPrefixMode,
  serials: ReadonlyMap<string, string>,
): { prefixes: Array<{ hostname: string; prefix: string }>; problems: string[] } {
  const prefixes: Array<{ hostname: string; prefix: string }> = [];
  const problems: string[] = [];
  const seen = new Map<string, string>();
  for (const n of nodes) {
    if (n.arch === 'amd64') continue;
    const serial = serials.get(n.hostname.toLowerCase()) ?? serials.get(n.mac.toLowerCase());
    const p = tftpPrefix(mode, { mac: n.mac, ...(serial ? { serial } : {}) });
    if (!p) {
      problems.push(
        `node ${n.hostname}: no serial number for the TFTP prefix: add '${n.hostname} <serial>' to --serials (\`vcgencmd otp_dump | grep 28:\` on the Pi), or set TFTP_PREFIX=2 in its EEPROM and use --tftp-prefix mac`,
      );
      continue;
    }
    const dup = seen.get(p);
    if (dup) problems.push(`nodes ${dup} and ${n.hostname} have the same TFTP prefix ${p}`);
    seen.set(p, n.hostname);
    prefixes.push({ hostname: n.hostname, prefix: p });
  }
  return { prefixes, problems };
}

// ---- effects

/** Read bootfs/ into memory (the set's files are small besides the kernel and initramfs, which come apart). */
export function readBootfs(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const rel = relative(dir, p);
        if (pickBootfs(new Map([[rel, new Uint8Array()]])).size) out.set(rel, new Uint8Array(readFileSync(p)));
      }
    }
  };
  walk(dir);
  return out;
}

/**
 * Write the set into <tftp>/firmware-<id>/ (a temp folder renamed in whole), point every prefix at it (a symlink
 * made beside and renamed over: a node asking meanwhile gets the old set or the new one), write the announcement,
 * and remove the sets no prefix names any more. Returns what was written.
 */
export function writeFirmwareStage(
  tftp: string,
  set: FirmwareSet,
  prefixes: ReadonlyArray<{ prefix: string }>,
): string[] {
  const written: string[] = [];
  const dir = fwDir(set.announcement.id);
  const tmp = join(tftp, `.${dir}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  for (const f of set.files) {
    const p = join(tmp, f.path);
    mkdirSync(join(p, '..'), { recursive: true, mode: 0o755 });
    writeAtomic(p, f.data);
  }
  rmSync(join(tftp, dir), { recursive: true, force: true });
  renameSync(tmp, join(tftp, dir));
  written.push(join(tftp, dir));
  for (const { prefix } of prefixes) {
    const link = join(tftp, prefix);
    const st = lstatSync(link, { throwIfNoEntry: false });
    if (st && !st.isSymbolicLink()) throw new Error(`${link} exists and is not a symlink: move it away`);
    const t = join(tftp, `.${prefix}.tmp-${process.pid}`);
    rmSync(t, { force: true });
    symlinkSync(dir, t);
    renameSync(t, link);
    written.push(link);
  }
  writeAtomic(join(tftp, FW_ANNOUNCEMENT), renderFirmwareAnnouncement(set.announcement));
  written.push(join(tftp, FW_ANNOUNCEMENT));
  // every listed node now points at the new set: older sets go, and so do links of nodes no longer listed
  // (a node in the middle of fetching an old file finishes it from its open descriptor)
  for (const e of readdirSync(tftp, { withFileTypes: true })) {
    const p = join(tftp, e.name);
    if (e.isDirectory() && /^firmware-[0-9a-f]{16}$/.test(e.name) && e.name !== dir) rmSync(p, { recursive: true });
    else if (e.isSymbolicLink() && /^firmware-[0-9a-f]{16}$/.test(readlinkSync(p)) && readlinkSync(p) !== dir)
      rmSync(p);
  }
  return written;
}

/** Problems with the bootfs/ the stage reads, for StageError (missing folder). */
export function bootfsDirProblem(dir: string): string | null {
  return existsSync(dir)
    ? null
    : `${dir} does not exist: the firmware first stage takes start4.elf, fixup4.dat, the DTBs and overlays from the master's bootfs/`;
}

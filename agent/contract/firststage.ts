// The first stage (kernel + initramfs) as one verifiable unit: what the master announces, what a node keeps
// on its disk, and the two U-Boot scripts that choose between them. `builder stage` renders the announcement
// and the network script; the agent renders the local script and the cache record. Pure.
import { crc32 } from './crc32.ts';

// U-Boot 2023.01 (Debian's u-boot-qemu, and the Pi builds) has crc32 but no `hash` and no `crc32 -v`: the
// scripts compute a CRC-32 into memory and compare it with `itest.l *ADDR == 0x<crc byte-swapped>` (the
// digest is stored big-endian, itest reads a little-endian word). Sizes are compared too. sha256 is for the
// agent, which checks every file it caches against the announcement before the cache record names it.

/** One file of the first stage: its size in bytes, CRC-32 (for U-Boot) and sha256 hex (for the agent). */
export interface StageFile {
  size: number;
  crc: number;
  sha256: string;
}

/** What the master serves now: `builder stage` writes it as tftp/firststage.env and inside boot.scr.uimg. */
export interface Announcement {
  /** sha256 of the kernel and the initramfs, first 16 hex digits: names the unit everywhere. */
  id: string;
  /** The raw kernel Image (what a node caches and loads from its disk). */
  kernel: StageFile;
  /** The same kernel gzip'd (what a node TFTPs: a third of the bytes; booti decompresses it). */
  kernelGz: StageFile;
  initramfs: StageFile;
  bootargs: string;
  /** A new first stage that does not reach the commit point this many times in a row is abandoned. */
  tries: number;
}

/** On the master, in the TFTP folder (the node key reads it too). */
export const ANNOUNCEMENT_FILE = 'firststage.env';
export const KERNEL_GZ = 'vmlinuz.gz';
/** On the root partition (p2), outside the slots: <CACHE_DIR>/<id>/{vmlinuz,initramfs.igz.uimg} and the record. */
export const CACHE_DIR = 'firststage';
export const CACHE_RECORD = `${CACHE_DIR}/record.env`;
/** The cached files keep the master's TFTP names (contract/tree.ts KERNEL and INITRAMFS). */
export const CACHE_KERNEL = 'vmlinuz';
export const CACHE_INITRAMFS = 'initramfs.igz.uimg';
/** On the boot partition (p1): U-Boot counts its tries of a new first stage here (fatwrite); the agent clears it. */
export const TRIES_FILE = 'clusterboot.tries';
/** On p1: the local script U-Boot's distro boot runs first (its boot_targets scan the disk before dhcp). */
export const LOCAL_SCRIPT = 'boot.scr.uimg';
export const DEFAULT_TRIES = 3;

/** How the first stage this boot runs was loaded, as U-Boot says on the command line (clusterboot.from=). */
export type StageSource = 'tftp' | 'cache' | 'refetch' | 'rollback' | 'offline';
export const STAGE_SOURCES: readonly StageSource[] = ['tftp', 'cache', 'refetch', 'rollback', 'offline'];

/** What a boot report says about the first stage. */
export interface FirstStageReport {
  booted: string | null;
  from: StageSource | null;
  announced: string | null;
  /** The cached `cur` after this boot. */
  cached: string | null;
  /** A new first stage U-Boot abandoned after its tries (from=rollback). */
  failed?: string;
}

const ID_RE = /^[0-9a-f]{16}$/;
const SHA_RE = /^[0-9a-f]{64}$/;

export function stageId(kernelSha256: string, initramfsSha256: string): string {
  return new Bun.CryptoHasher('sha256').update(`${kernelSha256}\n${initramfsSha256}\n`).digest('hex').slice(0, 16);
}

export function isStageId(s: string): boolean {
  return ID_RE.test(s);
}

/** A file's size, CRC-32 and sha256. */
export function stageFile(data: Uint8Array): StageFile {
  return { size: data.length, crc: crc32(data), sha256: new Bun.CryptoHasher('sha256').update(data).digest('hex') };
}

/** The CRC as `itest.l *ADDR` reads U-Boot's big-endian digest on a little-endian CPU. */
export function swappedCrc(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return `0x${b.readUInt32LE(0).toString(16).padStart(8, '0')}`;
}

const hex = (n: number) => n.toString(16);

/** Bootargs that survive U-Boot's env import and hush quoting: printable, no quotes, backslashes or `$`. */
export function bootargsProblem(args: string): string | null {
  if (!/^[\x20-\x7e]*$/.test(args)) return 'bootargs hold a control or non-ASCII character';
  if (/["'\\$;]/.test(args))
    return "bootargs may not hold quotes, backslashes, '$' or ';' (U-Boot's shell would read them)";
  // the longest script line adds ~150 characters to them, and U-Boot's command buffer is 512
  if (args.length > 360) return 'bootargs are longer than 360 characters';
  return null;
}

// ---- the announcement file (key=value, as U-Boot's env import and the agent both read it)

const FILE_KEYS = ['kernel', 'kernelgz', 'initramfs'] as const;

export function renderAnnouncement(a: Announcement): string {
  const lines = [`cb_id=${a.id}`];
  const files: Record<(typeof FILE_KEYS)[number], StageFile> = {
    kernel: a.kernel,
    kernelgz: a.kernelGz,
    initramfs: a.initramfs,
  };
  for (const k of FILE_KEYS) {
    const f = files[k];
    lines.push(`cb_${k}_size=${f.size}`, `cb_${k}_crc=${hex(f.crc)}`, `cb_${k}_sha256=${f.sha256}`);
  }
  lines.push(`cb_tries=${a.tries}`, `cb_args=${a.bootargs}`);
  return `${lines.join('\n')}\n`;
}

function kv(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.replace(/\0/g, '').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && !line.startsWith('#')) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

function file(m: Map<string, string>, k: string): StageFile | string {
  const size = Number(m.get(`cb_${k}_size`));
  const crcText = m.get(`cb_${k}_crc`) ?? '';
  const sha256 = m.get(`cb_${k}_sha256`) ?? '';
  if (!Number.isSafeInteger(size) || size <= 0) return `${k}: no valid size`;
  if (!/^[0-9a-f]{1,8}$/.test(crcText)) return `${k}: no valid CRC`;
  if (!SHA_RE.test(sha256)) return `${k}: no valid sha256`;
  return { size, crc: Number.parseInt(crcText, 16), sha256 };
}

/** The announcement from its file text; never throws. */
export function parseAnnouncement(
  text: string,
): { ok: true; announcement: Announcement } | { ok: false; error: string } {
  if (typeof text !== 'string' || text.length > 4096)
    return { ok: false, error: 'not a first-stage announcement (too long)' };
  const m = kv(text);
  const id = m.get('cb_id') ?? '';
  if (!isStageId(id)) return { ok: false, error: `first-stage id '${id.slice(0, 20)}' is not 16 hex digits` };
  const kernel = file(m, 'kernel');
  const kernelGz = file(m, 'kernelgz');
  const initramfs = file(m, 'initramfs');
  for (const f of [kernel, kernelGz, initramfs]) if (typeof f === 'string') return { ok: false, error: f };
  const tries = Number(m.get('cb_tries'));
  if (!Number.isInteger(tries) || tries < 1 || tries > 20) return { ok: false, error: 'cb_tries is not 1..20' };
  const bootargs = m.get('cb_args') ?? '';
  const bad = bootargsProblem(bootargs);
  if (bad) return { ok: false, error: bad };
  return {
    ok: true,
    announcement: {
      id,
      kernel: kernel as StageFile,
      kernelGz: kernelGz as StageFile,
      initramfs: initramfs as StageFile,
      bootargs,
      tries,
    },
  };
}

// ---- the cache record on p2 (U-Boot imports it; the agent writes it atomically)

/** One cached first stage: the directory <CACHE_DIR>/<id>/ and what U-Boot checks its files against. */
export interface CachedStage {
  id: string;
  kernel: { size: number; crc: number };
  initramfs: { size: number; crc: number };
  bootargs: string;
}

/** `cur` booted well last (it reached the commit point); `prev` is the one before, kept for a damaged `cur`. */
export interface CacheRecord {
  cur: CachedStage | null;
  prev: CachedStage | null;
}

export function cachedFrom(a: Announcement): CachedStage {
  return {
    id: a.id,
    kernel: { size: a.kernel.size, crc: a.kernel.crc },
    initramfs: { size: a.initramfs.size, crc: a.initramfs.crc },
    bootargs: a.bootargs,
  };
}

export function renderRecord(r: CacheRecord): string {
  const lines = [
    '# clusterboot first-stage cache: written by the agent at the commit point; read by U-Boot (env import)',
  ];
  for (const slot of ['cur', 'prev'] as const) {
    const s = r[slot];
    // an empty value makes env import delete the variable, so a stale one from the network script cannot linger
    lines.push(`cb_${slot}_id=${s?.id ?? ''}`);
    if (!s) continue;
    lines.push(`cb_${slot}_ksize=${hex(s.kernel.size)}`, `cb_${slot}_kcrc=${swappedCrc(s.kernel.crc)}`);
    lines.push(`cb_${slot}_rsize=${hex(s.initramfs.size)}`, `cb_${slot}_rcrc=${swappedCrc(s.initramfs.crc)}`);
    lines.push(`cb_${slot}_args=${s.bootargs}`);
  }
  return `${lines.join('\n')}\n`;
}

function unswap(s: string | undefined): number | null {
  if (!s || !/^0x[0-9a-f]{8}$/.test(s)) return null;
  const b = Buffer.alloc(4);
  b.writeUInt32LE(Number.parseInt(s.slice(2), 16));
  return b.readUInt32BE(0);
}

/** The record from its text; a damaged entry reads as absent (the cache is then rebuilt at the next commit). */
export function parseRecord(text: string | null): CacheRecord {
  const out: CacheRecord = { cur: null, prev: null };
  if (text === null) return out;
  const m = kv(text);
  for (const slot of ['cur', 'prev'] as const) {
    const id = m.get(`cb_${slot}_id`) ?? '';
    const ksize = Number.parseInt(m.get(`cb_${slot}_ksize`) ?? '', 16);
    const rsize = Number.parseInt(m.get(`cb_${slot}_rsize`) ?? '', 16);
    const kcrc = unswap(m.get(`cb_${slot}_kcrc`));
    const rcrc = unswap(m.get(`cb_${slot}_rcrc`));
    const args = m.get(`cb_${slot}_args`) ?? '';
    if (!isStageId(id) || !(ksize > 0) || !(rsize > 0) || kcrc === null || rcrc === null || bootargsProblem(args))
      continue;
    out[slot] = { id, kernel: { size: ksize, crc: kcrc }, initramfs: { size: rsize, crc: rcrc }, bootargs: args };
  }
  return out;
}

/** U-Boot's tries file: `cb_try_id=<id>` and `cb_try_n=<n>` (env export -t, NUL-terminated). */
export function parseTries(text: string | null): { id: string; n: number } | null {
  if (text === null) return null;
  const m = kv(text);
  const id = m.get('cb_try_id') ?? '';
  const n = Number.parseInt(m.get('cb_try_n') ?? '', 16);
  return isStageId(id) && n >= 0 ? { id, n } : null;
}

// ---- the U-Boot scripts

/** Kernel parameters the scripts add, so the agent knows what it runs from (agent/cmdline.ts parses them). */
function stageArgs(id: string, from: string, extra = ''): string {
  return `clusterboot.fs=${id} clusterboot.from=${from}${extra}`;
}

/** Load <slot> (cur or prev) of the cache record into memory and check both files; sets cb_ok=1 when they verify. */
function loadCached(slot: 'cur' | 'prev'): string[] {
  const dir = `/${CACHE_DIR}/\${cb_${slot}_id}`;
  return [
    'setenv cb_ok 0',
    `if test -n "\${cb_${slot}_id}"; then`,
    `  if ext4load \${cb_devtype} \${cb_devnum}:2 \${kernel_addr_r} ${dir}/${CACHE_KERNEL}; then`,
    `    if itest \${filesize} == \${cb_${slot}_ksize}; then crc32 \${kernel_addr_r} \${filesize} \${cb_scratch}; fi`,
    `    if itest \${filesize} == \${cb_${slot}_ksize} && itest.l *\${cb_scratch} == \${cb_${slot}_kcrc}; then`,
    `      if ext4load \${cb_devtype} \${cb_devnum}:2 \${ramdisk_addr_r} ${dir}/${CACHE_INITRAMFS}; then`,
    `        if itest \${filesize} == \${cb_${slot}_rsize}; then crc32 \${ramdisk_addr_r} \${filesize} \${cb_scratch}; fi`,
    `        if itest \${filesize} == \${cb_${slot}_rsize} && itest.l *\${cb_scratch} == \${cb_${slot}_rcrc}; then setenv cb_ok 1; fi`,
    '      fi',
    '    fi',
    '  fi',
    `  if test "\${cb_ok}" = 0; then echo "clusterboot: cached first stage \${cb_${slot}_id} does not verify (damaged on the disk)"; fi`,
    'fi',
  ];
}

/** Boot what loadCached left in memory, raw kernel Image. */
function bootLoaded(args: string): string[] {
  return [`setenv bootargs "${args}"`, 'booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}'];
}

/** The memory and network settings both scripts need: a scratch word, the initrd left in place, short timeouts. */
function preamble(): string[] {
  return [
    'setenv autoload no',
    'setenv initrd_high 0xffffffffffffffff',
    'setexpr cb_scratch ${ramdisk_addr_r} - 0x100000',
    // a silent master costs seconds, not minutes: DHCP gives up after ~4 s, TFTP after 1 s x 3
    'setenv bootpretryperiod 3000',
    'setenv tftptimeout 1000',
    'setenv tftptimeoutcountmax 3',
    'setenv tftpblocksize 1468',
  ];
}

/** Read the cache record and the tries file, when the disk is known (the local script ran). */
function readState(): string[] {
  return [
    'setenv cb_cur_id',
    'setenv cb_prev_id',
    'setenv cb_try_id',
    'setenv cb_try_n 0',
    `if ext4load \${cb_devtype} \${cb_devnum}:2 \${cb_scratch} /${CACHE_RECORD}; then env import -t \${cb_scratch} \${filesize}; fi`,
    `if fatload \${cb_devtype} \${cb_devnum}:1 \${cb_scratch} /${TRIES_FILE}; then env import -t \${cb_scratch} \${filesize} cb_try_id cb_try_n; fi`,
  ];
}

/**
 * The network script (tftp/boot.scr.uimg): it names the first stage the master serves. Sourced by the local
 * script it compares that with the disk's cache: the same and intact, it boots from the disk; otherwise it
 * counts a try (abandoning a new first stage after `tries` failed ones) and TFTPs the new one. Run straight from
 * U-Boot's dhcp target (a blank disk, no local script) it only TFTPs. On a TFTP failure it returns to the local
 * script, which boots the cache, or resets the board when there is none.
 */
export function renderNetScript(a: Announcement): string {
  const want = a.id;
  return [
    `# clusterboot network script: generated by \`builder stage\`; first stage ${want}`,
    `echo "clusterboot: the master \${serverip} announces first stage ${want}"`,
    ...preamble(),
    `setenv cb_from tftp`,
    'if test -n "${cb_devtype}"; then',
    ...readState().map((l) => `  ${l}`),
    `  if test "\${cb_cur_id}" = "${want}"; then`,
    ...loadCached('cur').map((l) => `    ${l}`),
    '    if test "${cb_ok}" = 1; then',
    '      echo "clusterboot: first stage ${cb_cur_id} loaded from the disk (the announced one, checks passed)"',
    ...bootLoaded(`${a.bootargs} ${stageArgs(want, 'cache')}`).map((l) => `      ${l}`),
    '    fi',
    `    echo "clusterboot: fetching first stage ${want} again from the master"`,
    '    setenv cb_from refetch',
    `  elif test "\${cb_try_id}" = "${want}" && itest \${cb_try_n} -ge ${hex(a.tries)}; then`,
    `    echo "clusterboot: first stage ${want} failed \${cb_try_n} times in a row: abandoned until the master announces another"`,
    ...loadCached('cur').map((l) => `    ${l}`),
    '    if test "${cb_ok}" = 1; then',
    '      echo "clusterboot: booting the cached first stage ${cb_cur_id} instead"',
    ...bootLoaded(`\${cb_cur_args} ${stageArgs('${cb_cur_id}', 'rollback', ` clusterboot.failed=${want}`)}`).map(
      (l) => `      ${l}`,
    ),
    '    fi',
    '  else',
    `    if test "\${cb_try_id}" = "${want}"; then setexpr cb_try_n \${cb_try_n} + 1; else setenv cb_try_n 1; fi`,
    `    setenv cb_try_id ${want}`,
    '    env export -t ${cb_scratch} cb_try_id cb_try_n',
    `    fatwrite \${cb_devtype} \${cb_devnum}:1 \${cb_scratch} /${TRIES_FILE} \${filesize}`,
    `    echo "clusterboot: new first stage ${want}: try \${cb_try_n} of ${a.tries}"`,
    '  fi',
    'fi',
    `if tftp \${kernel_addr_r} ${KERNEL_GZ} && itest \${filesize} == ${hex(a.kernelGz.size)}; then`,
    '  crc32 ${kernel_addr_r} ${filesize} ${cb_scratch}',
    `  if itest.l *\${cb_scratch} == ${swappedCrc(a.kernelGz.crc)}; then`,
    '    setenv kernel_comp_size ${filesize}',
    '    if test -z "${kernel_comp_addr_r}"; then setexpr kernel_comp_addr_r ${ramdisk_addr_r} + 0x6000000; fi',
    `    if tftp \${ramdisk_addr_r} initramfs.igz.uimg && itest \${filesize} == ${hex(a.initramfs.size)}; then`,
    '      crc32 ${ramdisk_addr_r} ${filesize} ${cb_scratch}',
    `      if itest.l *\${cb_scratch} == ${swappedCrc(a.initramfs.crc)}; then`,
    `        echo "clusterboot: first stage ${want} loaded by TFTP (checks passed)"`,
    `        setenv bootargs "${a.bootargs} ${stageArgs(want, '${cb_from}', ' clusterboot.try=${cb_try_n}')}"`,
    '        booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}',
    '      fi',
    '    fi',
    '  fi',
    'fi',
    `echo "clusterboot: TFTP of first stage ${want} failed or did not verify"`,
    'if test -z "${cb_devtype}"; then echo "clusterboot: no local first stage: resetting in 10 s"; sleep 10; reset; fi',
    '',
  ].join('\n');
}

/** A dotted IPv4 address, as U-Boot's serverip takes it (no names: U-Boot's TFTP does not resolve). */
export const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** The primary a local script falls back to (its `setenv serverip` line), or null. */
export function fallbackInScript(script: string | null): string | null {
  const m = script === null ? null : /^ {4}setenv serverip (\S+)$/m.exec(script);
  return m && IPV4.test(m[1] as string) ? (m[1] as string) : null;
}

/**
 * The local script (p1:/boot.scr.uimg), written by the agent once the disk holds a verified cache. U-Boot's
 * distro boot runs it before its dhcp target. It asks the master first (the master stays authoritative): the
 * TFTP server DHCP names, then, for a node a mirror serves, the primary (`primary`); when DHCP or TFTP gets no
 * answer, or the network script returns, it boots the cache: `cur`, else `prev`.
 */
export function renderLocalScript(primary: string | null = null): string {
  if (primary !== null && !IPV4.test(primary)) throw new Error(`renderLocalScript: ${primary} is not an IPv4 address`);
  return [
    '# clusterboot local script: written by the agent beside its first-stage cache; do not edit',
    'setenv cb_devtype ${devtype}',
    'setenv cb_devnum ${devnum}',
    'echo "clusterboot: local script on ${cb_devtype} ${cb_devnum}:1; asking the master first"',
    ...preamble(),
    'if dhcp; then',
    '  if tftp ${scriptaddr} boot.scr.uimg; then source ${scriptaddr}; fi',
    // a node a mirror serves (DHCP's next-server): when the mirror's TFTP fails, ask the primary before the cache
    ...(primary === null
      ? []
      : [
          `  if test "\${serverip}" != "${primary}"; then`,
          `    echo "clusterboot: no first stage from \${serverip}: asking the primary ${primary}"`,
          `    setenv serverip ${primary}`,
          '    if tftp ${scriptaddr} boot.scr.uimg; then source ${scriptaddr}; fi',
          '  fi',
        ]),
    'fi',
    'echo "clusterboot: no first stage from the master (no DHCP or TFTP answer): booting the cached one"',
    ...readState(),
    ...loadCached('cur'),
    'if test "${cb_ok}" = 1; then',
    ...bootLoaded(`\${cb_cur_args} ${stageArgs('${cb_cur_id}', 'offline')}`).map((l) => `  ${l}`),
    'fi',
    ...loadCached('prev'),
    'if test "${cb_ok}" = 1; then',
    '  echo "clusterboot: booting the previous cached first stage ${cb_prev_id}"',
    ...bootLoaded(`\${cb_prev_args} ${stageArgs('${cb_prev_id}', 'offline')}`).map((l) => `  ${l}`),
    'fi',
    'echo "clusterboot: no cached first stage verifies; U-Boot goes on with its next boot target"',
    '',
  ].join('\n');
}

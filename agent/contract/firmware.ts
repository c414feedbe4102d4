// The Raspberry Pi firmware first stage (Pi 4/5 EEPROM bootloader, no U-Boot): what `builder stage
// --first-stage firmware` serves by TFTP, what it announces, and the A/B sets a node keeps on its p1. Pure.
//
// On the master, <tftp>/firmware-<id>/ holds one complete set and every node's TFTP prefix
// (<tftp>/<serial>/ or <tftp>/<mac>/) is a symlink to it, switched with one rename.
//
// On a node's p1 (FAT, filled from bootfs/ by the bootfs phase), in names the bootfs phase never touches
// (clusterboot.*, agent/plans/bootfs.ts ownedByFirstStage):
//   clusterboot.a/, clusterboot.b/   two sets: kernel, initramfs, cmdline.txt, DTBs, overlays/, and the set
//                                    record clusterboot.set (written last: a set without it is incomplete)
//   clusterboot.config.txt           the switch: `[all] os_prefix=<current>/`, `[tryboot] os_prefix=<trial>/`
// bootfs/config.txt includes the switch (`include clusterboot.config.txt`) and bootfs/autoboot.txt sets
// `tryboot_a_b=1`, so with the one-shot tryboot flag the firmware still reads config.txt, and the switch's
// `[tryboot]` section picks the trial set. A tryboot that fails (panic, watchdog, power cut) resets the flag:
// the next boot reads `[all]`, the current set.

/** Where the agent writes the sets on p1 (top-level names the bootfs phase keeps). */
export type SetName = 'a' | 'b';
export const SET_NAMES: readonly SetName[] = ['a', 'b'];
export const setDir = (s: SetName): string => `clusterboot.${s}`;
/** What this boot's cmdline.txt says it was loaded from: a set on p1, or the firmware's TFTP. */
export type BootSetSource = SetName | 'net';
export const BOOT_SET_SOURCES: readonly BootSetSource[] = ['a', 'b', 'net'];
export const SWITCH_FILE = 'clusterboot.config.txt';
export const SET_RECORD = 'clusterboot.set';
export const FW_KERNEL = 'vmlinuz';
export const FW_INITRAMFS = 'initramfs.cpio.gz';
export const FW_CMDLINE = 'cmdline.txt';
export const FW_CONFIG = 'config.txt';
/** On the master, in the TFTP folder: the firmware set's announcement (the agent fetches it). */
export const FW_ANNOUNCEMENT = 'firmware.env';
export const fwDir = (id: string): string => `firmware-${id}`;
/** The firmware files the bootloader loads first, from the prefix folder's top (never inside a set on p1). */
export const FW_LOADERS: readonly string[] = ['start4.elf', 'fixup4.dat'];
/** The line bootfs/config.txt needs, and what bootfs/autoboot.txt must say, for the p1 sets to boot. */
export const INCLUDE_LINE = `include ${SWITCH_FILE}`;

/**
 * The largest file the firmware's TFTP client loads whole: it asks for 1 KiB blocks and does not roll the
 * 16-bit block number over, so it gets at most 65535 blocks, and a file of exactly 65535 KiB would need a
 * 65536th, empty, one (raspberrypi/rpi-eeprom#375; builder/master/doctor.ts TFTP_CEILING is the same rule).
 */
export const FIRMWARE_TFTP_MAX = 65535 * 1024 - 1;

/** One file of a set, as announced: its path in the set, size and sha256. */
export interface SetFile {
  path: string;
  size: number;
  sha256: string;
}

/** What the master serves on the firmware path (tftp/firmware.env). */
export interface FirmwareAnnouncement {
  id: string;
  /** The agent's parameters (the same as --bootargs); the cmdline.txt files add the clusterboot.* ones. */
  bootargs: string;
  /** Every file of the set that p1 keeps: kernel, initramfs, DTBs, overlays (not config.txt, cmdline.txt, start4.elf). */
  files: SetFile[];
}

const ID_RE = /^[0-9a-f]{16}$/;
const SHA_RE = /^[0-9a-f]{64}$/;

/** A set path a FAT p1 holds: relative, no '..', no odd characters, no space (one token per line). */
export function setPathOk(p: string): boolean {
  return /^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/.test(p) && !p.split('/').some((x) => x === '.' || x === '..');
}

/** The set's id: over the bootargs and every file's path and sha256 (any change makes a new set). */
export function firmwareId(bootargs: string, files: readonly SetFile[]): string {
  const h = new Bun.CryptoHasher('sha256').update(`clusterboot firmware set\n${bootargs}\n`);
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)))
    h.update(`${f.sha256} ${f.path}\n`);
  return h.digest('hex').slice(0, 16);
}

export function renderFirmwareAnnouncement(a: FirmwareAnnouncement): string {
  const lines = [`fw_id=${a.id}`, `fw_args=${a.bootargs}`];
  for (const f of a.files) lines.push(`fw_file=${f.sha256} ${f.size} ${f.path}`);
  return `${lines.join('\n')}\n`;
}

export function parseFirmwareAnnouncement(
  text: string,
): { ok: true; announcement: FirmwareAnnouncement } | { ok: false; error: string } {
  if (typeof text !== 'string' || text.length > 256 * 1024) return { ok: false, error: 'not a firmware announcement' };
  let id = '';
  let bootargs: string | null = null;
  const files: SetFile[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('fw_id=')) id = line.slice(6);
    else if (line.startsWith('fw_args=')) bootargs = line.slice(8);
    else if (line.startsWith('fw_file=')) {
      const m = /^([0-9a-f]{64}) ([0-9]{1,12}) (\S+)$/.exec(line.slice(8));
      if (!m || !setPathOk(m[3] as string)) return { ok: false, error: `bad file line '${line.slice(0, 80)}'` };
      files.push({ sha256: m[1] as string, size: Number(m[2]), path: m[3] as string });
    }
  }
  if (!ID_RE.test(id)) return { ok: false, error: `firmware set id '${id.slice(0, 20)}' is not 16 hex digits` };
  if (bootargs === null) return { ok: false, error: 'no fw_args line' };
  for (const need of [FW_KERNEL, FW_INITRAMFS])
    if (!files.some((f) => f.path === need)) return { ok: false, error: `the set has no ${need}` };
  if (files.some((f) => !SHA_RE.test(f.sha256))) return { ok: false, error: 'bad sha256' };
  return { ok: true, announcement: { id, bootargs, files } };
}

/** The clusterboot.* parameters each cmdline.txt adds: which set this is and where the firmware loaded it from. */
export function firmwareCmdline(bootargs: string, id: string, from: BootSetSource): string {
  const how = from === 'net' ? 'tftp' : 'cache';
  return `${`${bootargs} clusterboot.fs=${id} clusterboot.from=${how} clusterboot.set=${from}`.trim()}\n`;
}

/** config.txt of the TFTP folder: the kernel and the initramfs right after it, nothing else to decide. */
export function renderTftpConfig(id: string): string {
  return [
    `# clusterboot firmware first stage ${id}: written by \`builder stage --first-stage firmware\``,
    'arm_64bit=1',
    'enable_uart=1',
    `kernel=${FW_KERNEL}`,
    `initramfs ${FW_INITRAMFS} followkernel`,
    '',
  ].join('\n');
}

// ---- the switch on p1 (clusterboot.config.txt): read by the firmware (config.txt syntax) and by the agent

/** Which set boots normally, which one a tryboot boots, and what the agent remembers about the trial. */
export interface SwitchState {
  current: SetName;
  trial: SetName;
  /** The id the trial set holds (when trial !== current). */
  trialId?: string;
  /** How many times the agent rebooted into this trial. */
  tries: number;
  /** A trial id that failed its tries: not tried again until the master announces another. */
  failed?: string;
}

export function renderSwitch(s: SwitchState): string {
  const meta = [
    `cb_current=${s.current}`,
    `cb_trial=${s.trial}`,
    `cb_tries=${s.tries}`,
    ...(s.trialId ? [`cb_trial_id=${s.trialId}`] : []),
    ...(s.failed ? [`cb_failed=${s.failed}`] : []),
  ];
  return [
    '# clusterboot first-stage switch: written by the agent (agent/contract/firmware.ts); included by config.txt',
    `# ${meta.join(' ')}`,
    '[all]',
    `kernel=${FW_KERNEL}`,
    `initramfs ${FW_INITRAMFS} followkernel`,
    `os_prefix=${setDir(s.current)}/`,
    '[tryboot]',
    `os_prefix=${setDir(s.trial)}/`,
    '[all]',
    '',
  ].join('\n');
}

const isSet = (x: string | undefined): x is SetName => x === 'a' || x === 'b';

/** The switch from its text; null when absent or not ours (the card then has no committed set). */
export function parseSwitch(text: string | null): SwitchState | null {
  if (text === null) return null;
  const meta = /^# (cb_current=.*)$/m.exec(text)?.[1];
  if (!meta) return null;
  const kv = new Map(meta.split(' ').map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)]));
  const current = kv.get('cb_current');
  const trial = kv.get('cb_trial');
  const tries = Number(kv.get('cb_tries') ?? '0');
  if (!isSet(current) || !isSet(trial) || !Number.isInteger(tries) || tries < 0) return null;
  // the firmware reads os_prefix, not the comment: both must agree, or the agent would reason about another card
  const allPrefix = /^\[all\]\n(?:.*\n)*?os_prefix=([^\n]*)\n\[tryboot\]\nos_prefix=([^\n]*)$/m.exec(text);
  if (!allPrefix || allPrefix[1] !== `${setDir(current)}/` || allPrefix[2] !== `${setDir(trial)}/`) return null;
  const trialId = kv.get('cb_trial_id');
  const failed = kv.get('cb_failed');
  return {
    current,
    trial,
    tries,
    ...(trialId && ID_RE.test(trialId) ? { trialId } : {}),
    ...(failed && ID_RE.test(failed) ? { failed } : {}),
  };
}

/** The set record (clusterboot.set in a set folder): the id it holds, written once every file is in and checked. */
export const renderSetRecord = (id: string): string => `cb_set_id=${id}\n`;
export function parseSetRecord(text: string | null): string | null {
  const id = text === null ? '' : (/^cb_set_id=([0-9a-f]{16})$/m.exec(text)?.[1] ?? '');
  return id || null;
}

// ---- what bootfs/ must hold for the p1 sets to boot

/** Problems with bootfs/config.txt and bootfs/autoboot.txt for the p1 sets (empty: they boot). */
export function bootfsProblems(configTxt: string | null, autobootTxt: string | null): string[] {
  const out: string[] = [];
  const lines = (t: string) =>
    t
      .split('\n')
      .map((l) => l.replace(/#.*$/, '').trim())
      .filter(Boolean);
  if (configTxt === null || !lines(configTxt).includes(INCLUDE_LINE))
    out.push(`bootfs/config.txt has no line '${INCLUDE_LINE}' (the p1 sets' switch)`);
  else if (lines(configTxt).some((l) => /^(kernel|os_prefix)=/.test(l) || /^initramfs\s/.test(l)))
    out.push('bootfs/config.txt sets kernel=, initramfs or os_prefix itself: leave them to clusterboot.config.txt');
  const auto = autobootTxt === null ? [] : lines(autobootTxt);
  if (!auto.includes('tryboot_a_b=1'))
    out.push(
      "bootfs/autoboot.txt has no 'tryboot_a_b=1' (without it a tryboot reads tryboot.txt, not the switch's [tryboot])",
    );
  const parts = auto.filter((l) => l.startsWith('boot_partition=')).map((l) => l.slice('boot_partition='.length));
  if (parts.some((p) => p !== '0' && p !== '1'))
    out.push('bootfs/autoboot.txt names another boot_partition than p1: both sets live on p1');
  return out;
}

/** The bootfs/ lines for the firmware path, for a remedy text. */
export const BOOTFS_AUTOBOOT = '[all]\ntryboot_a_b=1\nboot_partition=1\n';
export const BOOTFS_CONFIG = `arm_64bit=1\n${INCLUDE_LINE}\n`;

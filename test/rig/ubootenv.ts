// A U-Boot environment for QEMU's second pflash bank with bootdelay=0: qemu_arm64's U-Boot keeps its
// environment there (CONFIG_ENV_IS_IN_FLASH, offset 0, CONFIG_ENV_SIZE 0x40000). Without one it runs its built-in
// default, whose bootdelay=2 waits two idle seconds on every boot of every test. A Pi's uboot.env with
// bootdelay=0 saves the same two seconds per boot (README). Nothing here changes what U-Boot runs: the
// environment is the firmware's own default, read out of u-boot.bin, with that one variable changed.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const ENV_SIZE = 0x40000; // qemu_arm64_defconfig: CONFIG_ENV_SIZE
const FLASH_SIZE = 64 * 1024 * 1024; // QEMU's virt board wants each pflash unit exactly 64 MiB

/**
 * The default environment compiled into a U-Boot binary: the NUL-separated `key=value` block that starts with
 * `bootcmd=` and holds `bootdelay=`. Null when it cannot be found unambiguously.
 */
export function defaultEnv(bin: Uint8Array): string[] | null {
  const text = Buffer.from(bin).toString('latin1');
  const delay = text.indexOf('\0bootdelay=');
  if (delay < 0) return null;
  const start = text.lastIndexOf('bootcmd=', delay);
  if (start < 0 || delay - start > 4096 || text[start - 1] !== '\0') return null;
  const end = text.indexOf('\0\0', start);
  if (end < 0) return null;
  const vars = text.slice(start, end).split('\0');
  if (!vars.every((v) => /^[A-Za-z0-9_.-]+=[\x20-\x7e\t\n]*$/.test(v))) return null;
  return vars;
}

/** A flash environment image: CRC32 (little-endian) of the data, then the data (vars, NUL-padded to ENV_SIZE - 4). */
export function envImage(vars: string[]): Buffer {
  const data = Buffer.alloc(ENV_SIZE - 4);
  const body = Buffer.from(vars.join('\0') + '\0\0', 'latin1');
  if (body.length > data.length) throw new Error(`U-Boot environment too large (${body.length} bytes)`);
  body.copy(data);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(Bun.hash.crc32(data) >>> 0);
  return Buffer.concat([crc, data]);
}

/** `vars` with bootdelay set (added when missing). */
export function withBootdelay(vars: string[], seconds: number): string[] {
  const out = vars.filter((v) => !v.startsWith('bootdelay='));
  out.splice(1, 0, `bootdelay=${seconds}`);
  return out;
}

/**
 * The path of a 64 MiB sparse pflash image holding `ubootBin`'s default environment with bootdelay=0, written once
 * into `cacheDir`. Null when the binary's environment cannot be read: the node then boots with the built-in one.
 */
export function fastEnvFlash(ubootBin: string, cacheDir: string): string | null {
  if (!existsSync(ubootBin)) return null;
  const st = statSync(ubootBin);
  const path = join(cacheDir, `uboot-env-${st.size}-${Math.floor(st.mtimeMs)}.img`);
  if (existsSync(path)) return path;
  const vars = defaultEnv(readFileSync(ubootBin));
  if (!vars) return null;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, envImage(withBootdelay(vars, 0)));
  Bun.spawnSync(['truncate', '-s', String(FLASH_SIZE), tmp]);
  renameSync(tmp, path);
  return path;
}

// Raw syscalls through glibc: mount, umount2, reboot, ioctl, waitpid, sync, init_module, socket (link up).
// Bun has no API for these; bun:ffi works inside the compiled binary (docs/design.md, "Bun as PID 1").
import { dlopen, FFIType, ptr, read, type Pointer } from 'bun:ffi';

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_REMOUNT = 32;
export const MS_BIND = 4096;
export const MS_MOVE = 8192;
export const MNT_DETACH = 2;
export const RB_AUTOBOOT = 0x01234567;
export const RB_POWER_OFF = 0x4321fedc;
/** LINUX_REBOOT_CMD_RESTART2: restart with a command string for the firmware. */
export const RB_RESTART2 = 0xa1b2c3d4;
export const WNOHANG = 1;

type Lib = ReturnType<typeof open>;
let lib: Lib | null = null;

function open() {
  return dlopen('libc.so.6', {
    mount: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    reboot: { args: [FFIType.i32], returns: FFIType.i32 },
    syscall: { args: [FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.ptr], returns: FFIType.i64 },
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    waitpid: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    sync: { args: [], returns: FFIType.void },
    init_module: { args: [FFIType.ptr, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    strerror: { args: [FFIType.i32], returns: FFIType.cstring },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

function libc(): Lib['symbols'] {
  lib ??= open();
  return lib.symbols;
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

/** An errno failure carries the call in shell-like form so the console says what failed. */
export class SysError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    text: string,
  ) {
    super(`${call}: ${text} (errno ${errno})`);
  }
}

function check(call: string, rc: number): void {
  if (rc === 0) return;
  const s = libc();
  const loc = s.__errno_location() as Pointer;
  const errno = read.i32(loc, 0);
  throw new SysError(call, errno, String(s.strerror(errno)));
}

export function mount(source: string, target: string, fstype: string, flags = 0, data = ''): void {
  const d = cstr(data);
  check(
    `mount -t ${fstype} ${source} ${target}${data ? ` -o ${data}` : ''}`,
    libc().mount(cstr(source), cstr(target), cstr(fstype), flags, data ? d : null),
  );
}

export function moveMount(source: string, target: string): void {
  check(`mount --move ${source} ${target}`, libc().mount(cstr(source), cstr(target), null, MS_MOVE, null));
}

export function bindMount(source: string, target: string, readonly = false): void {
  check(`mount --bind ${source} ${target}`, libc().mount(cstr(source), cstr(target), null, MS_BIND, null));
  if (readonly)
    check(
      `mount -o remount,bind,ro ${target}`,
      libc().mount(cstr(source), cstr(target), null, MS_BIND | MS_REMOUNT | MS_RDONLY, null),
    );
}

export function umount(target: string, flags = 0): void {
  check(`umount ${target}`, libc().umount2(cstr(target), flags));
}

export function syncDisks(): void {
  libc().sync();
}

/** reboot(2): never returns when it works. With restartArg: LINUX_REBOOT_CMD_RESTART2 and that argument. */
export function hardReboot(how: 'reboot' | 'poweroff' = 'reboot', restartArg?: string): void {
  libc().sync();
  if (how === 'reboot' && restartArg !== undefined) {
    // glibc's reboot() takes no argument: the raw syscall does (the Pi firmware reads "0 tryboot" from it)
    const nr = process.arch === 'arm64' ? 142 : process.arch === 'x64' ? 169 : -1;
    if (nr > 0) libc().syscall(nr, 0xfee1dead, 0x28121969, RB_RESTART2, cstr(restartArg));
  }
  check('reboot', libc().reboot(how === 'reboot' ? RB_AUTOBOOT : RB_POWER_OFF));
}

/** ioctl with an in/out buffer; returns the buffer for reading results. */
export function ioctl(fd: number, request: number | bigint, arg: Uint8Array | null): number {
  const rc = libc().ioctl(fd, request, arg ? ptr(arg) : null);
  check(`ioctl(${fd}, 0x${request.toString(16)})`, rc < 0 ? rc : 0);
  return rc;
}

/** waitpid(pid, WNOHANG) for one known zombie: returns true when reaped. */
export function reapPid(pid: number): boolean {
  const status = new Int32Array(1);
  return libc().waitpid(pid, status, WNOHANG) === pid;
}

export const EEXIST = 17;

/**
 * init_module(2) with the module's bytes: loads one module without spawning insmod (a spawn from Bun
 * costs about 0.1 s under emulation, a module load through here a few ms). Returns 'present' when
 * the kernel already has it (EEXIST); throws SysError otherwise (ENOENT for an unknown symbol:
 * a dependency is missing).
 */
export function loadModule(image: Uint8Array, name: string, params = ''): 'loaded' | 'present' {
  const s = libc();
  if (s.init_module(ptr(image), image.byteLength, cstr(params)) === 0) return 'loaded';
  const errno = read.i32(s.__errno_location() as Pointer, 0);
  if (errno === EEXIST) return 'present';
  throw new SysError(`init_module ${name}`, errno, String(s.strerror(errno)));
}

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
export const IFF_UP = 0x1;
/** struct ifreq on 64-bit Linux: the name (16 bytes, NUL-terminated), then a 24-byte union whose first member is the flags. */
export const IFREQ_SIZE = 40;
const IFNAMSIZ = 16;

/** An ifreq naming one interface (the flags are filled in by SIOCGIFFLAGS). */
export function ifreq(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length >= IFNAMSIZ || bytes.includes(0))
    throw new Error(`bad interface name ${JSON.stringify(name)}`);
  const req = Buffer.alloc(IFREQ_SIZE);
  bytes.copy(req, 0);
  return req;
}

/**
 * `ip link set NAME up` without a process: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP added. A spawn
 * of busybox ip costs a tenth of a second or more under emulation, twice in every boot.
 */
export function linkUp(name: string): void {
  const s = libc();
  const req = ifreq(name);
  const fd = s.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  check(`socket(AF_INET, SOCK_DGRAM)`, fd < 0 ? fd : 0);
  try {
    check(`ioctl(SIOCGIFFLAGS, ${name})`, s.ioctl(fd, SIOCGIFFLAGS, ptr(req)));
    req.writeUInt16LE(req.readUInt16LE(IFNAMSIZ) | IFF_UP, IFNAMSIZ);
    check(`ip link set ${name} up`, s.ioctl(fd, SIOCSIFFLAGS, ptr(req)));
  } finally {
    s.close(fd);
  }
}

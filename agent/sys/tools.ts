// Every external tool the agent runs, by absolute path: busybox's shell would pick its own applets.
export const TOOLS = {
  busybox: '/bin/busybox',
  sh: '/bin/sh',
  rsync: '/usr/bin/rsync',
  ssh: '/usr/bin/ssh',
  sfdisk: '/sbin/sfdisk',
  mke2fs: '/sbin/mke2fs',
  e2fsck: '/sbin/e2fsck',
  mkfsVfat: '/sbin/mkfs.fat',
  fsckVfat: '/sbin/fsck.fat',
} as const;

export type ToolName = keyof typeof TOOLS;

/** The busybox applets the agent calls (links are made for the rescue shell's comfort too). */
export const APPLETS = [
  'sh', 'ash', 'mount', 'umount', 'ip', 'ifconfig', 'route', 'udhcpc', 'hostname', 'insmod', 'modprobe',
  'lsmod', 'switch_root', 'ls', 'cat', 'echo', 'mkdir', 'rm', 'mv', 'cp', 'ln', 'sleep', 'dmesg', 'ps',
  'kill', 'sync', 'reboot', 'poweroff', 'blkid', 'df', 'du', 'grep', 'sed', 'awk', 'head', 'tail', 'vi',
  'stat', 'find', 'wc', 'sort', 'uname', 'free', 'top', 'mdev', 'ping', 'nc', 'wget', 'chroot', 'date',
] as const;

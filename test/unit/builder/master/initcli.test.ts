// `builder init --dry-run` through the command line, on a small made-up system root: every action and every file it
// would write is printed, and nothing is written; a bad node list stops it with the line, before anything is written.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import { TOOL_PACKAGE } from '../../../../builder/master/init.ts';

let work = '';
const put = (rel: string, data = 'x\n') => {
  const p = join(work, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, data);
};

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'cb-initcli-'));
  for (const t of Object.keys(TOOL_PACKAGE)) put(`system${t}`);
  put('system/sbin/init', '#!/bin/sh\n');
  put('system/boot/vmlinuz-6.1.0-arm64', 'kernel');
  put('system/lib/modules/6.1.0-arm64/modules.dep', '');
  put('system/boot/firmware/start4.elf');
  put('system/boot/firmware/config.txt', 'initramfs initrd.img\n');
  put('system/usr/lib/u-boot/rpi_arm64/u-boot.bin');
  put('system/etc/fstab', 'UUID=1 / ext4 defaults 0 1\n');
  put('system/root/.bash_history');
  put('host_ed25519_key.pub', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey test\n');
  put('nodes.txt', 'b8:27:eb:cb:63:18 rpinode01 10.9.0.11\n');
  put('bad-nodes.txt', 'b8:27:eb:cb:63:18 rpinode01 10.9.0.11\nb8:27:eb:cb:63:18 rpinode02 10.9.0.12\n');
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

function init(...extra: string[]): { status: number; out: string; err: string } {
  const r = spawnSync(
    join(REPO, 'node_modules/.bin/bun'),
    [
      ...[
        join(REPO, 'builder/cli.ts'),
        'init',
        '--interface',
        'lo',
        '--master-ip',
        '10.9.0.1',
        '--subnet',
        '10.9.0.0/24',
      ],
      ...['--prefix', join(work, 'm'), '--system-root', join(work, 'system'), '--no-apt'],
      ...['--master-host-key', join(work, 'host_ed25519_key.pub'), '--card-size', '4GB'],
      ...extra,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  return { status: r.status ?? -1, out: r.stdout, err: r.stderr };
}

describe('builder init (command line)', () => {
  test('--dry-run prints every action and file, and writes nothing', () => {
    const r = init('--nodes', join(work, 'nodes.txt'), '--dry-run');
    if (r.status !== 0) console.error(r.err);
    expect(r.status).toBe(0);
    const m = join(work, 'm');
    expect(r.out).toContain('(--dry-run: nothing written)');
    for (const f of [
      `${m}/etc/clusterboot/node_ed25519`,
      `${m}/data/slaves/partitions.sfdisk`,
      `${m}/data/slaves/rootfs/sbin/init`,
      `${m}/data/slaves/rootfs/etc/fstab (rewritten: fstab without the /, /boot and /data lines)`,
      `${m}/data/slaves/bootfs/u-boot.bin`,
      `${m}/data/slaves/bootfs/config.txt`,
      `${m}/data/slaves/tftp/initramfs.igz.uimg`,
      `${m}/etc/dnsmasq.d/clusterboot.conf`,
    ])
      expect(r.out).toContain(`\n    ${f}\n`);
    expect(r.out).not.toContain('.bash_history');
    expect(r.out).toContain('sfdisk /dev/sdX');
    expect(existsSync(m)).toBe(false);
  });

  test('a bad node list: every problem named, exit 1, nothing written', () => {
    const r = init('--nodes', join(work, 'bad-nodes.txt'));
    expect(r.status).toBe(1);
    expect(r.err).toContain('nothing done');
    expect(r.err).toContain('line 2');
    expect(existsSync(join(work, 'm'))).toBe(false);
  });
});

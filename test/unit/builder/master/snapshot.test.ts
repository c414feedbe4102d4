import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { createHash, generateKeyPairSync } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkFileList,
  decideManifest,
  fileListPath,
  parseManifest,
  snapshotPath,
} from '../../../../agent/contract/manifest.ts';
import { tableHash } from '../../../../agent/contract/approval.ts';
import { publish } from '../../../../builder/master/publish.ts';
import { KEEP_SNAPSHOTS } from '../../../../builder/master/snapshot.ts';

let tmp = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'snapshot-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const keys = generateKeyPairSync('ed25519');
const priv = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const pub = keys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const TABLE = 'label: dos\n/dev/mmcblk0p1 : start=2048, size=65536, type=c\n';

function master(): string {
  const root = join(tmp, `m${Math.random().toString(36).slice(2)}`);
  mkdirSync(join(root, 'rootfs/sbin'), { recursive: true });
  mkdirSync(join(root, 'rootfs/etc'), { recursive: true });
  writeFileSync(join(root, 'rootfs/sbin/init'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(root, 'rootfs/etc/big'), Buffer.alloc(300_000, 1));
  writeFileSync(join(root, 'rootfs/etc/small'), 'v1\n');
  symlinkSync('../sbin/init', join(root, 'rootfs/etc/init-link'));
  writeFileSync(join(root, 'partitions.sfdisk'), TABLE);
  mkdirSync(join(root, 'nodes/node7'), { recursive: true });
  writeFileSync(join(root, 'nodes/node7/reset'), '');
  mkdirSync(join(root, 'nodes/node8'), { recursive: true });
  return root;
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('publish freezes a snapshot and signs its manifest', () => {
  test('the snapshot, its file list and the signed header describe the live tree at publish time', async () => {
    const root = master();
    const s = await publish({ masterRoot: root, name: 'rootfs', signKeyPem: priv });
    const snap = join(root, snapshotPath('rootfs', s.id));
    expect(readFileSync(join(snap, 'etc/small'), 'utf8')).toBe('v1\n');
    const text = readFileSync(join(root, 'stamps/rootfs.manifest'), 'utf8');
    const sig = readFileSync(join(root, 'stamps/rootfs.manifest.sig'), 'utf8');
    const v = decideManifest({
      text,
      sig,
      publicKeyPem: pub,
      stamp: { id: s.id, seq: s.seq },
      state: { tableSha256: tableHash(TABLE), approvalRequired: false, reset: true, host: 'node7' },
    });
    expect(v.ok && v.stateMismatch).toEqual([]);
    if (!v.ok) return;
    expect(v.header.reset).toEqual(['node7']);
    const list = readFileSync(join(root, fileListPath('rootfs', s.id)));
    const c = checkFileList(list, v.header);
    expect(c.ok).toBe(true);
    if (!c.ok) return;
    const big = c.entries.find((e) => e.path === 'etc/big');
    expect(big?.sha256).toBe(sha(Buffer.alloc(300_000, 1)));
    expect(c.entries.find((e) => e.path === 'etc/init-link')?.target).toBe('../sbin/init');
    expect(c.entries.find((e) => e.path === 'sbin/init')?.mode).toBe(0o755);
    expect(c.entries.map((e) => e.path).sort()).toEqual(
      ['.', 'etc', 'etc/big', 'etc/init-link', 'etc/small', 'sbin', 'sbin/init'].sort(),
    );

    // an edit of the live tree after publishing changes nothing a node receives
    writeFileSync(join(root, 'rootfs/etc/small'), 'half-edited\n');
    expect(readFileSync(join(snap, 'etc/small'), 'utf8')).toBe('v1\n');
  });

  test('the next publish hard-links unchanged files to the previous snapshot and lists the change', async () => {
    const root = master();
    const a = await publish({ masterRoot: root, name: 'rootfs' });
    writeFileSync(join(root, 'rootfs/etc/small'), 'v2 longer\n');
    const b = await publish({ masterRoot: root, name: 'rootfs' });
    const ino = (id: string, p: string) => lstatSync(join(root, snapshotPath('rootfs', id), p)).ino;
    expect(ino(b.id, 'etc/big')).toBe(ino(a.id, 'etc/big'));
    expect(ino(b.id, 'etc/small')).not.toBe(ino(a.id, 'etc/small'));
    const h = parseManifest(readFileSync(join(root, 'stamps/rootfs.manifest'), 'utf8'));
    expect(h.ok && h.header.id).toBe(b.id);
    // unsigned: no .sig, the sum still guards the header
    expect(existsSync(join(root, 'stamps/rootfs.manifest.sig'))).toBe(false);
    const list = readFileSync(join(root, fileListPath('rootfs', b.id)), 'latin1');
    expect(list).toContain(` ${sha('v2 longer\n')} - etc/small `);
  });

  test(`only the newest ${KEEP_SNAPSHOTS} snapshots stay`, async () => {
    const root = master();
    const ids: string[] = [];
    for (let i = 0; i < KEEP_SNAPSHOTS + 2; i++) {
      writeFileSync(join(root, 'rootfs/etc/small'), `v${i}\n`);
      ids.push((await publish({ masterRoot: root, name: 'rootfs', now: new Date(Date.UTC(2026, 0, 1, 0, 0, i)) })).id);
    }
    expect(readdirSync(join(root, 'snapshots/rootfs')).sort()).toEqual(
      ids
        .slice(-KEEP_SNAPSHOTS)
        .flatMap((id) => [id, `${id}.files`])
        .sort(),
    );
  });
});

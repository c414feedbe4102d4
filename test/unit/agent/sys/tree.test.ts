// The manifest's effects on a real tree: the walker, the slot check (hash and metadata), and the delta's local part.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFileList, renderFileList, type Entry } from '../../../../agent/contract/manifest.ts';
import { hashFile, walkTree } from '../../../../agent/sys/tree.ts';
import { prepareDelta, SlotRefused, verifySlot } from '../../../../agent/phases/rootverify.ts';

let tmp = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tree-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A small tree, and its entries as publish would list them. */
async function tree(name: string): Promise<{ dir: string; entries: Entry[] }> {
  const dir = join(tmp, name);
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  writeFileSync(join(dir, 'etc/a'), 'alpha\n');
  writeFileSync(join(dir, 'bin/tool'), Buffer.alloc(3 << 20, 5));
  chmodSync(join(dir, 'bin/tool'), 0o4755);
  // a name that is not UTF-8 (byte 0xe9 alone): kept byte for byte
  writeFileSync(Buffer.from(`${dir}/etc/caf\xe9 x`, 'latin1'), 'odd name\n');
  symlinkSync('tool', join(dir, 'bin/link'));
  const seen = await walkTree(dir);
  const entries: Entry[] = [];
  for (const [path, o] of seen)
    entries.push({
      ...o,
      path,
      sha256: o.type === 'f' ? await hashFile(`${dir}/${path}`) : null,
    } as Entry);
  // what renderFileList accepts parses back to the same
  const p = parseFileList(renderFileList(entries));
  if (!p.ok) throw new Error(p.error);
  return { dir, entries: p.entries };
}

describe('walkTree and hashFile', () => {
  test('every path with its metadata; sha256 streamed equals the one-shot hash', async () => {
    const { dir, entries } = await tree('walk');
    expect(entries.map((e) => e.path).sort()).toEqual(
      ['.', 'bin', 'bin/link', 'bin/tool', 'etc', 'etc/a', 'etc/caf\xe9 x'].sort(),
    );
    const tool = entries.find((e) => e.path === 'bin/tool');
    expect(tool?.mode).toBe(0o4755);
    expect(tool?.sha256).toBe(
      createHash('sha256')
        .update(readFileSync(join(dir, 'bin/tool')))
        .digest('hex'),
    );
    expect(entries.find((e) => e.path === 'bin/link')?.target).toBe('tool');
  });
});

describe('verifySlot', () => {
  test('a faithful copy passes; a changed byte, mode or extra file is refused with the path', async () => {
    const { dir, entries } = await tree('slot');
    const ok = await verifySlot(dir, entries, null);
    expect(ok.hashed).toBe(3);
    expect(ok.hashedBytes).toBe((3 << 20) + 6 + 9);

    writeFileSync(join(dir, 'etc/a'), 'alphA\n');
    const e1 = await verifySlot(dir, entries, null).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(SlotRefused);
    expect((e1 as Error).message).toMatch(/"etc\/a" has sha256 [0-9a-f]{12}…, the manifest says/);
    writeFileSync(join(dir, 'etc/a'), 'alpha\n');

    chmodSync(join(dir, 'bin/tool'), 0o755);
    writeFileSync(join(dir, 'etc/planted'), 'x');
    const e2 = (await verifySlot(dir, entries, null).catch((e: unknown) => e)) as Error;
    expect(e2.message).toContain('"bin/tool" has mode 755, the manifest says 4755');
    expect(e2.message).toContain('"etc/planted" is not in the manifest');
  });
});

describe('prepareDelta', () => {
  test('links the unchanged files and links, makes the directories, lists only what changed', async () => {
    const { dir: prevDir, entries: prev } = await tree('prev');
    const next = prev.map((e) => (e.path === 'etc/a' ? { ...e, size: 5, sha256: 'f'.repeat(64) } : e));
    const dest = join(tmp, 'next');
    mkdirSync(dest);
    const d = prepareDelta(dest, prevDir, next, new Map(prev.map((e) => [e.path, e])));
    expect(d.list.split('\0').filter(Boolean).sort()).toEqual(['.', 'bin', 'etc', 'etc/a'].sort());
    expect(d.bytes).toBe(5);
    expect(d.linked).toBe(3);
    expect(lstatSync(join(dest, 'bin/tool')).ino).toBe(lstatSync(join(prevDir, 'bin/tool')).ino);
    expect(lstatSync(join(dest, 'bin/link')).isSymbolicLink()).toBe(true);
    expect(() => lstatSync(join(dest, 'etc/a'))).toThrow();
  });
});

// The master tree: what the master phase fetches of it, and nothing more.
import { describe, expect, test } from 'bun:test';
import { fetchFilter } from '../../../../agent/contract/tree.ts';

describe('what the master phase fetches', () => {
  test("only the table, the stamps, the approval switch, and this node's approval and files", () => {
    const f = fetchFilter('node1');
    expect(f.at(-1)).toBe('--exclude=*');
    // the files/ folder itself only: its content is the second, per-node fetch
    expect(f).toContain('--include=/nodes/node1/files/');
    expect(f).toContain('--include=/nodes/node1/reset');
    // the public marker that this node is enrolled (its private files are outside the master root)
    expect(f).toContain('--include=/nodes/node1/enrolled');
    expect(f.some((r) => r.includes('***'))).toBe(false);
    expect(f).toContain('--include=/approved/node1');
    expect(f.some((r) => r.includes('/rootfs/') || r.includes('snapshots'))).toBe(false);
    // the small signed manifest header, not the file list (that comes with the root sync)
    expect(f).toContain('--include=/stamps/rootfs.manifest');
    expect(f).toContain('--include=/stamps/rootfs.manifest.sig');
    expect(fetchFilter(undefined).some((r) => r.includes('nodes') || r.includes('approved'))).toBe(false);
  });
  test('the first-stage announcement and nothing else of the TFTP folder (no kernel, no initramfs)', () => {
    const f = fetchFilter('node1');
    expect(f.filter((r) => r.includes('tftp'))).toEqual(['--include=/tftp/', '--include=/tftp/firststage.env']);
    expect(fetchFilter('node1', ['table', 'approval']).some((r) => r.includes('tftp') || r.includes('stamps'))).toBe(
      false,
    );
  });
});

// resolveInRoot with a fake filesystem: the template's links are followed inside the root, never onto the host.
import { describe, expect, test } from 'bun:test';
import { normalise, resolveInRoot } from '../../../../agent/plans/rootpath.ts';

const fake = (fsys: Record<string, string | null>) => (p: string) =>
  p in fsys ? { exists: true, link: fsys[p] ?? null } : { exists: false, link: null };

describe('resolveInRoot', () => {
  test('etc -> / is the root itself, not the host root', () => {
    const lstat = fake({ '/r/etc': '/', '/r/hostname': null });
    expect(resolveInRoot('/r', '/etc/hostname', lstat)).toBe('/hostname');
    expect(resolveInRoot('/r', '/etc', lstat)).toBe('/');
  });

  test("'..' in a link or in the path stops at the root", () => {
    const lstat = fake({ '/r/etc': '../../../x', '/r/x': null, '/r/x/hostname': null });
    expect(resolveInRoot('/r', '/etc/hostname', lstat)).toBe('/x/hostname');
    expect(resolveInRoot('/r', '/../../x/hostname', lstat)).toBe('/x/hostname');
  });

  test('a relative link resolves from its own directory', () => {
    const lstat = fake({ '/r/a': null, '/r/a/b': 'c/d', '/r/a/c': null, '/r/a/c/d': null });
    expect(resolveInRoot('/r', 'a/b', lstat)).toBe('/a/c/d');
  });

  test('without mkdir a missing component is null; with it, it is made inside the root, through links', () => {
    const fsys: Record<string, string | null> = { '/r/etc': '/etc-elsewhere' };
    const made: string[] = [];
    const mkdir = (p: string) => {
      made.push(p);
      fsys[p] = null;
    };
    expect(resolveInRoot('/r', '/etc/ssh', fake(fsys))).toBeNull();
    expect(resolveInRoot('/r', '/etc/ssh', fake(fsys), mkdir)).toBe('/etc-elsewhere/ssh');
    expect(made).toEqual(['/r/etc-elsewhere', '/r/etc-elsewhere/ssh']);
  });

  test('a link loop gives null', () => {
    expect(resolveInRoot('/r', '/a/b', fake({ '/r/a': '/a' }))).toBeNull();
  });

  test('normalise drops ., empty parts and .. above /', () => {
    expect(normalise('//a/./b/../../..//c/')).toBe('/c');
    expect(normalise('')).toBe('/');
  });
});

// Paths inside another root (the node's union root): symlinks are followed as that root's init would see them.

export type RootLstat = (p: string) => { link: string | null; exists: boolean };

/**
 * Resolve a path inside root (absolute symlinks point inside it, '..' stops at it); null if a component is missing
 * or links loop. With mkdir, a missing component is created (through it) instead, so a file can be laid there.
 */
export function resolveInRoot(
  root: string,
  path: string,
  lstat: RootLstat,
  mkdir?: (p: string) => void,
  depth = 0,
): string | null {
  if (depth > 20) return null;
  const parts = normalise(path).split('/').filter(Boolean);
  let cur = '';
  for (const [i, part] of parts.entries()) {
    const next = `${cur}/${part}`;
    const st = lstat(root + next);
    if (!st.exists) {
      if (!mkdir) return null;
      mkdir(root + next);
    } else if (st.link !== null) {
      const target = st.link.startsWith('/') ? st.link : `${cur}/${st.link}`;
      const rest = parts.slice(i + 1).join('/');
      return resolveInRoot(root, normalise(`${target}${rest ? `/${rest}` : ''}`), lstat, mkdir, depth + 1);
    }
    cur = next;
  }
  return cur || '/';
}

/** Lexically clean an absolute path: no '.', no empty parts, '..' never above '/'. */
export function normalise(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (!part || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return `/${out.join('/')}`;
}

// Kernel module selection from depmod's modules.dep / modules.builtin, without running modprobe.

// Reads depmod's dependency table so we can pick modules for the initramfs offline.
export function parseModulesDep(text: string): Map<string, string[]> {
  const dep = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new Error(`modules.dep: malformed line ${JSON.stringify(raw)}`);
    const deps = line.slice(colon + 1).trim();
    dep.set(line.slice(0, colon).trim(), deps === '' ? [] : deps.split(/\s+/));
  }
  return dep;
}

// Canonical module name, the key users and the kernel refer to modules by.
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replaceAll('-', '_');
}

// Lists built-in "modules" so asking for one is not reported as missing.
export function parseModulesBuiltin(text: string): Set<string> {
  const names = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) names.add(moduleName(line));
  }
  return names;
}

// Resolves wanted names to a load order (dependencies first), like modprobe would.
export function moduleClosure(
  dep: Map<string, string[]>,
  wanted: string[],
  builtin: Set<string> = new Set(),
): { order: string[]; missing: string[]; builtin: string[] } {
  const byName = new Map<string, string>();
  for (const path of dep.keys()) byName.set(moduleName(path), path);

  const order: string[] = [];
  const done = new Set<string>();
  const active = new Set<string>();
  // Depth-first; a module's deps are visited last-listed first, matching modprobe's reverse load.
  const visit = (path: string) => {
    if (done.has(path)) return;
    if (active.has(path)) throw new Error(`modules.dep: dependency cycle through ${path}`);
    active.add(path);
    const deps = dep.get(path) ?? [];
    for (let i = deps.length - 1; i >= 0; i--) visit(deps[i]!);
    active.delete(path);
    done.add(path);
    order.push(path);
  };

  const missing: string[] = [];
  const inKernel: string[] = [];
  for (const w of wanted) {
    const name = moduleName(w);
    const path = byName.get(name);
    if (path !== undefined) visit(path);
    else if (builtin.has(name)) {
      if (!inKernel.includes(name)) inKernel.push(name);
    } else if (!missing.includes(name)) missing.push(name);
  }
  return { order, missing, builtin: inKernel };
}

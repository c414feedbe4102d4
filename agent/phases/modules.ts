// Phase "modules": load the packed module list (dependencies first), then any modules= extras.
import { existsSync, readFileSync } from 'node:fs';
import { run } from '../sys/exec.ts';
import { info, warn } from '../log.ts';
import { armWatchdog } from '../devices/watchdog.ts';
import { loadModule, SysError } from '../sys/libc.ts';
import type { Phase } from '../phase.ts';
import { MODULE_LIST } from '../contract/initramfs.ts';

/** The loader's plan: relative module paths in order, minus those already present in /sys/module. */
export function planModules(listText: string, loaded: (name: string) => boolean): { load: string[]; skip: string[] } {
  const load: string[] = [];
  const skip: string[] = [];
  for (const raw of listText.split('\n')) {
    const path = raw.trim();
    if (!path || path.startsWith('#')) continue;
    const name = moduleBase(path);
    (loaded(name) ? skip : load).push(path);
  }
  return { load, skip };
}

export function moduleBase(path: string): string {
  const file = path.split('/').pop() ?? path;
  return file.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/**
 * How one module is loaded: a plain .ko goes to init_module(2) straight from the agent; a compressed
 * one (.ko.xz/.zst/.gz, which init_module cannot take) goes through busybox insmod.
 */
export function loaderFor(path: string): 'syscall' | 'insmod' {
  return /\.ko$/.test(path) ? 'syscall' : 'insmod';
}

/** Loads one module and says how; the syscall path falls back to insmod only when ffi itself is unusable. */
async function loadOne(
  path: string,
  name: string,
): Promise<{ result: 'loaded' | 'present'; via: 'syscall' | 'insmod' }> {
  if (loaderFor(path) === 'syscall') {
    try {
      return { result: loadModule(readFileSync(path), name), via: 'syscall' };
    } catch (e) {
      if (e instanceof SysError) throw e;
      warn('modules', `init_module through ffi unusable (${(e as Error).message}); using busybox insmod`);
    }
  }
  await run('busybox', ['insmod', path], { timeoutMs: 30_000 });
  return { result: 'loaded', via: 'insmod' };
}

export const modules: Phase = {
  name: 'modules',
  needs: {},
  async run(ctx) {
    const kernel = ctx.facts.kernel ?? readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    const base = `/lib/modules/${kernel}`;
    const listText = existsSync(MODULE_LIST) ? readFileSync(MODULE_LIST, 'utf8') : '';
    const plan = planModules(listText, (n) => existsSync(`/sys/module/${n}`));
    const loaded: string[] = [];
    const viaInsmod: string[] = [];
    for (const rel of plan.load) {
      const name = moduleBase(rel);
      if (existsSync(`/sys/module/${name}`)) continue;
      try {
        const { result, via } = await loadOne(`${base}/${rel}`, name);
        if (result === 'loaded') loaded.push(name);
        if (via === 'insmod') viaInsmod.push(name);
      } catch (e) {
        warn('modules', `could not load ${name}: ${(e as Error).message}`);
      }
    }
    for (const extra of ctx.params.modules) {
      try {
        await run('busybox', ['modprobe', extra], { timeoutMs: 30_000 });
        loaded.push(extra);
      } catch (e) {
        warn('modules', `modules=${extra}: ${(e as Error).message}`);
      }
    }
    ctx.facts.modulesLoaded = loaded;
    armWatchdog(ctx.params.watchdog);
    info('modules', `loaded ${loaded.length}: ${loaded.join(' ') || '(none)'}`, {
      loaded,
      viaInsmod,
      builtinOrPresent: plan.skip.map(moduleBase),
    });
    return `${loaded.length} loaded`;
  },
};

// One builder at a time in .cache/: scripts/test runs two boot-test lanes at once (two bun processes), and both
// may want the same sysroot, agent or initramfs built. The lock is a directory (mkdir is atomic) holding the
// owner's pid; one whose owner is gone is taken over. Whoever gets it second finds the result and reuses it.
// Never nested: callers take it around one build each (sysroot, agent, pack), and check again once they hold it.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function withCacheLock<T>(cacheDir: string, what: string, fn: () => Promise<T>): Promise<T> {
  const dir = join(cacheDir, '.build.lock');
  mkdirSync(cacheDir, { recursive: true });
  let said = false;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = 0;
      try {
        owner = Number(readFileSync(join(dir, 'pid'), 'utf8'));
      } catch {
        // the owner has made the directory and not yet written its pid
      }
      // not nested: two builds of one process wait for each other too (the lock's pid is then our own)
      if (owner > 0 && owner !== process.pid && !alive(owner)) {
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      if (!said) console.error(`cache: ${what}: waiting for another test process building in ${cacheDir}`);
      said = true;
      await Bun.sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

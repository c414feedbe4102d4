// What U-Boot spent on loading the first stage during one boot, from its console: each TFTP transfer with its
// bytes and wall time (timed on the host as the lines arrive: U-Boot prints `Filename '...'` when a transfer
// starts and `Bytes transferred = N` when it ends), and each load from the disk (`N bytes read in M ms`, U-Boot's
// own timer). The benchmark's Pi 4 model swaps QEMU's TFTP time for the same bytes at a Pi's TFTP rate.
import type { QemuNode } from '../test/rig/qemu.ts';

export interface Transfer {
  file: string;
  bytes: number;
  seconds: number;
}

export interface UBootLoads {
  tftp: Transfer[];
  disk: Array<{ bytes: number; seconds: number }>;
  /** Wall seconds from the network script's first line to its `loaded from the disk` (reads and CRC-32 checks); NaN when it did not load from the disk. */
  cacheSeconds: number;
}

export const sumBytes = (xs: Array<{ bytes: number }>) => xs.reduce((a, x) => a + x.bytes, 0);
export const sumSeconds = (xs: Array<{ seconds: number }>) => xs.reduce((a, x) => a + x.seconds, 0);

/**
 * Watch a node from its power-on until U-Boot starts the kernel. `done` resolves with the loads once the kernel
 * started (or QEMU exited); a line matching `failOn` (a reference init that fell into its shell) powers the node off.
 */
export function watchUBoot(node: QemuNode, o: { failOn?: RegExp; timeoutMs?: number } = {}): Promise<UBootLoads> {
  const timeout = o.timeoutMs ?? 900_000;
  const tftp: Transfer[] = [];
  if (o.failOn) {
    const re = o.failOn;
    void node
      .waitFor(re, timeout)
      .then(() => node.kill())
      .catch(() => undefined);
  }
  const follow = async () => {
    let from = 0;
    for (;;) {
      const start = await node.waitFor(/Filename '([^']*)'\.|Starting kernel/, timeout, from);
      if (start[0] === 'Starting kernel') return;
      const t0 = performance.now();
      from += (start.index ?? 0) + start[0].length;
      const end = await node.waitFor(
        // the whole line: a console chunk may end inside the number
        /Bytes transferred = (\d+) \(|TFTP error|Retry count exceeded|Starting kernel/,
        timeout,
        from,
      );
      from += (end.index ?? 0) + end[0].length;
      if (end[1]) tftp.push({ file: start[1] ?? '?', bytes: Number(end[1]), seconds: (performance.now() - t0) / 1000 });
      if (end[0] === 'Starting kernel') return;
    }
  };
  const cache = (async () => {
    const a = await node.waitFor(/announces first stage|Starting kernel/, timeout);
    if (a[0] === 'Starting kernel') return Number.NaN;
    const t0 = performance.now();
    const b = await node.waitFor(/first stage \S+ loaded from the disk|Starting kernel/, timeout);
    return b[0] === 'Starting kernel' ? Number.NaN : (performance.now() - t0) / 1000;
  })().catch(() => Number.NaN);
  return Promise.all([follow().catch(() => undefined), cache]).then(([, cacheSeconds]) => {
    const upToKernel = node.console.split('Starting kernel')[0] ?? '';
    const disk = [...upToKernel.matchAll(/^(\d+) bytes read in (\d+) ms/gm)].map((m) => ({
      bytes: Number(m[1]),
      seconds: Number(m[2]) / 1000,
    }));
    return { tftp, disk, cacheSeconds };
  });
}

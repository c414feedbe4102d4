// `builder status --html` in a real browser: headless Chromium (Debian's `chromium`, installed by scripts/setup)
// loads the page from a file:// URL with the network features off, dumps its DOM and takes a screenshot. The DOM
// must hold the fleet rows and the phase bars; the screenshot must show them: the pixels of the root phase's
// colour span the cold node's long sync, the failed node's bar is red. FLEETVIEW_CAPTURE=<dir> keeps the PNG.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { REPO } from '../../../../builder/image/agentbuild.ts';
import { BOOT_PHASES } from '../../../../builder/master/fleetview.ts';
import { PHASE_COLORS } from '../../../../builder/master/statushtml.ts';
import { bootEvents, COLD, masterTree, NODES, reportFor, WARM, writeReport } from './fleetfixture.ts';

const CHROMIUM = '/usr/bin/chromium';
const BUN = join(REPO, 'node_modules/.bin/bun');
let tmp = '';
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'fleetview-chromium-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function chromium(...args: string[]): { stdout: string; stderr: string } {
  const profile = mkdtempSync(join(tmp, 'profile-'));
  const r = spawnSync(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--hide-scrollbars',
      `--user-data-dir=${profile}`,
      ...args,
    ],
    { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0) throw new Error(`chromium ${args.join(' ')}: exit ${r.status} ${r.signal ?? ''}\n${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** RGBA pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes). */
export function decodePng(png: Buffer): { width: number; height: number; rgba: Uint8Array } {
  if (png.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a') throw new Error('not a PNG');
  let off = 8;
  let width = 0;
  let height = 0;
  let type = 0;
  const idat: Buffer[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const kind = png.subarray(off + 4, off + 8).toString('latin1');
    const data = png.subarray(off + 8, off + 8 + len);
    if (kind === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      type = data[9] as number;
      if (data[8] !== 8 || data[12] !== 0 || (type !== 2 && type !== 6))
        throw new Error(`PNG depth ${data[8]} type ${type} interlace ${data[12]}: not decoded here`);
    } else if (kind === 'IDAT') idat.push(data);
    else if (kind === 'IEND') break;
    off += 12 + len;
  }
  const bpp = type === 6 ? 4 : 3;
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = new Uint8Array(width * height * 4);
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)] as number;
    const line = new Uint8Array(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? (line[i - bpp] as number) : 0;
      const b = prev[i] as number;
      const c = i >= bpp ? (prev[i - bpp] as number) : 0;
      const p = a + b - c;
      const pa = Math.abs(p - a);
      const pb = Math.abs(p - b);
      const pc = Math.abs(p - c);
      const pred =
        f === 1
          ? a
          : f === 2
            ? b
            : f === 3
              ? (a + b) >> 1
              : f === 4
                ? pa <= pb && pa <= pc
                  ? a
                  : pb <= pc
                    ? b
                    : c
                : 0;
      line[i] = ((line[i] as number) + pred) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      out.set(
        [
          line[x * bpp] as number,
          line[x * bpp + 1] as number,
          line[x * bpp + 2] as number,
          bpp === 4 ? (line[x * bpp + 3] as number) : 255,
        ],
        (y * width + x) * 4,
      );
    }
    prev = line;
  }
  return { width, height, rgba: out };
}

const rgb = (hex: string) => [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];

/** Per screen row, how many pixels have exactly this colour. */
function rowsOfColor(img: ReturnType<typeof decodePng>, hex: string): number[] {
  const [r, g, b] = rgb(hex);
  const rows: number[] = [];
  for (let y = 0; y < img.height; y++) {
    let n = 0;
    for (let x = 0; x < img.width; x++) {
      const i = (y * img.width + x) * 4;
      if (img.rgba[i] === r && img.rgba[i + 1] === g && img.rgba[i + 2] === b) n++;
    }
    rows.push(n);
  }
  return rows;
}

describe('builder status --html in headless Chromium', () => {
  test('the page shows the fleet rows and the phase bars', () => {
    expect(existsSync(CHROMIUM)).toBe(true); // scripts/setup installs Debian's chromium
    const root = join(tmp, 'master');
    masterTree(root);
    const now = Date.now();
    writeReport(root, reportFor(NODES[0] as (typeof NODES)[number], bootEvents(COLD)), now - 300_000);
    writeReport(root, reportFor(NODES[1] as (typeof NODES)[number], bootEvents(WARM)), now - 40_000);
    writeReport(root, reportFor(NODES[2] as (typeof NODES)[number], bootEvents(COLD, 'root')), now - 90_000);
    const page = join(tmp, 'status.html');
    const r = spawnSync(
      BUN,
      [join(REPO, 'builder/cli.ts'), 'status', '--master-root', root, '--state-dir', root, '--html', page],
      {
        encoding: 'utf8',
      },
    );
    expect([r.status, r.stderr]).toEqual([0, `builder: wrote ${page} (3 nodes)\n`]);
    expect(r.stdout).toMatch(/^NODE +MAC/); // the table is still printed

    const dom = chromium('--dump-dom', `file://${page}`).stdout;
    const rows = [...dom.matchAll(/<tr data-node="([^"]+)"><td>[^<]*<\/td>.*?<span class="res (\w+)">([^<]+)</g)];
    expect(rows.map((m) => [m[1], m[2], m[3]])).toEqual([
      ['node1', 'ok', 'ok'],
      ['node2', 'ok', 'ok'],
      ['node3', 'fatal', 'FATAL'],
    ]);
    const bar = (node: string) =>
      [
        ...(dom
          .split(`<div class="tl-row" data-node="${node}">`)[1]
          ?.split('<div class="tl-total">')[0]
          ?.matchAll(/<div class="seg( failed)?" data-phase="(\w+)"/g) ?? []),
      ].map((m) => `${m[2]}${m[1] ? '!' : ''}`);
    expect(bar('node1')).toEqual([...BOOT_PHASES]);
    expect(bar('node2')).toEqual([...BOOT_PHASES]);
    expect(bar('node3')).toEqual([...BOOT_PHASES.slice(0, 7), 'root!']);

    const png = join(tmp, 'status.png');
    chromium(`--screenshot=${png}`, '--window-size=1200,800', `file://${page}`);
    const img = decodePng(readFileSync(png));
    expect([img.width, img.height]).toEqual([1200, 800]);
    // node1's root sync is 41.2 of its 47.6 s on a track of about 860 px: a long run of the root colour
    const green = rowsOfColor(img, PHASE_COLORS.root as string);
    const longest = Math.max(...green);
    expect(longest).toBeGreaterThan(600);
    // node2's warm root (1.9 s) is a short run on another line; the bars are about 22 px high
    expect(green.filter((n) => n > 600).length).toBeGreaterThanOrEqual(15);
    expect(green.filter((n) => n > 600).length).toBeLessThanOrEqual(30);
    expect(green.some((n) => n > 10 && n < 80)).toBe(true);
    // node3's failed root phase is red (hatched: some of its pixels keep the plain colour)
    expect(Math.max(...rowsOfColor(img, '#e53935'))).toBeGreaterThan(20);
    // the ok badges of the table
    expect(Math.max(...rowsOfColor(img, '#c8e6c9'))).toBeGreaterThan(20);
    const out = process.env.FLEETVIEW_CAPTURE;
    if (out) {
      mkdirSync(out, { recursive: true });
      copyFileSync(png, join(out, 'status-page.png'));
      copyFileSync(page, join(out, 'status-page.html'));
    }
  }, 180_000);
});

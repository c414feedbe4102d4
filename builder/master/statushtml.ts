// `builder status --html FILE`: the fleet as one self-contained page (no script, no network: a CSP forbids both),
// the same rows as the table, and a timeline per node whose bars are the phases of its last boot, widths in
// proportion to their seconds on one scale for the whole fleet. Every string from a node is HTML-escaped after
// escapeName, so neither markup nor control characters from a report reach the page.
import { escapeName } from './approve.ts';
import { formatAge, type Status, type StatusRow } from './status.ts';

/** Text for HTML content and attribute values. */
export function html(s: string): string {
  return escapeName(s).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}

/** The agent's phases in boot order (fleetview.ts BOOT_PHASES), each with its colour on the timeline. */
export const PHASE_COLORS: Record<string, string> = {
  early: '#9e9e9e',
  modules: '#8d6e63',
  network: '#42a5f5',
  master: '#26c6da',
  disk: '#7e57c2',
  partitions: '#ab47bc',
  bootfs: '#ec407a',
  root: '#66bb6a',
  firststage: '#d4e157',
  overlay: '#ffa726',
  identity: '#5c6bc0',
  handoff: '#26a69a',
};
const OTHER = '#bdbdbd';
const FAILED = '#e53935';

const RESULT_CLASS: Record<StatusRow['result'], string> = {
  ok: 'ok',
  ALARM: 'alarm',
  reboot: 'reboot',
  WAITING: 'waiting',
  FATAL: 'fatal',
  'never booted': 'none',
  'unreadable report': 'bad',
};

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212121;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#616161;margin-bottom:16px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:4px 10px;border-bottom:1px solid #e0e0e0;text-align:left;white-space:nowrap}
th{background:#eeeeee;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.res{font-weight:600;border-radius:3px;padding:1px 6px}
.ok{background:#c8e6c9}.alarm{background:#ffcc80}.reboot{background:#fff59d}.waiting{background:#fff59d}
.fatal{background:#ef9a9a}.none{background:#e0e0e0}.bad{background:#ef9a9a}
.timeline{background:#fff;box-shadow:0 1px 2px #0002;padding:8px 12px;width:1080px;box-sizing:border-box}
.tl-row{display:flex;align-items:center;margin:6px 0}
.tl-name{width:120px;flex:none;font-weight:600;overflow:hidden;text-overflow:ellipsis}
.tl-track{flex:1;display:flex;height:22px;background:#f5f5f5;border-radius:3px;overflow:hidden}
.tl-total{width:70px;flex:none;text-align:right;font-variant-numeric:tabular-nums;color:#424242}
.tl-axis{flex:1;position:relative;height:16px;margin-bottom:6px;border-top:1px solid #9e9e9e;font-size:11px;color:#616161}
.tl-axis span{position:absolute;transform:translateX(-50%);top:1px;white-space:nowrap}
.tl-axis span:first-child{transform:none}.tl-axis span:last-child{transform:translateX(-100%)}
.seg{height:100%;box-sizing:border-box;border-right:1px solid #fff;color:#000b;font-size:11px;line-height:22px;
  overflow:hidden;white-space:nowrap;text-overflow:clip;padding-left:3px}
.seg.failed{background-image:repeating-linear-gradient(45deg,#0003 0 4px,transparent 4px 8px)}
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:12px;height:12px;
  vertical-align:-2px;margin-right:4px;border-radius:2px}
ul.notes{margin:4px 0;padding-left:20px;color:#424242}
.empty{color:#757575;font-style:italic}
`;

/** One node's timeline bar: phase segments, width = seconds / `scale` of the track. */
export function timelineRow(r: StatusRow, scale: number): string {
  const name = html(r.hostname ?? r.mac);
  const phases = r.phaseTimes ?? [];
  const total = phases.reduce((s, p) => s + p.seconds, 0);
  const segs = phases
    .map((p) => {
      const pct = scale > 0 ? (p.seconds / scale) * 100 : 0;
      const color = p.failed ? FAILED : (PHASE_COLORS[p.name] ?? OTHER);
      const title = `${p.name} ${p.seconds.toFixed(2)} s${p.failed ? ' (failed)' : ''}`;
      return `<div class="seg${p.failed ? ' failed' : ''}" data-phase="${html(p.name)}" data-seconds="${p.seconds}" style="width:${pct.toFixed(3)}%;background-color:${color}" title="${html(title)}">${pct >= 5 ? html(p.name) : ''}</div>`;
    })
    .join('');
  const track = phases.length ? segs : '<span class="empty">&nbsp;no phases reported</span>';
  return `<div class="tl-row" data-node="${name}"><div class="tl-name" title="${name}">${name}</div><div class="tl-track">${track}</div><div class="tl-total">${phases.length ? `${total.toFixed(1)} s` : '-'}</div></div>`;
}

/** Seconds under the tracks: 0, a quarter, ... the longest boot. */
function axis(scale: number): string {
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => `<span style="left:${f * 100}%">${(scale * f).toFixed(f === 0 ? 0 : 1)} s</span>`)
    .join('');
  return `<div class="tl-row"><div class="tl-name"></div><div class="tl-axis">${ticks}</div><div class="tl-total"></div></div>`;
}

// Why: a page a person would rather look at than read: the result colours and the bars carry the news.
export function renderStatusHtml(s: Status, now: number): string {
  const rows = s.rows;
  const scale = Math.max(0, ...rows.map((r) => (r.phaseTimes ?? []).reduce((a, p) => a + p.seconds, 0)));
  const when = (r: StatusRow) =>
    r.lastBootMs === null
      ? r.report === null
        ? '-'
        : 'time unknown'
      : `${new Date(r.lastBootMs).toISOString().slice(0, 16).replace('T', ' ')}Z (${formatAge(Math.max(0, Math.round((now - r.lastBootMs) / 1000)))} ago)`;
  const head = ['Node', 'MAC', 'IP', 'Last boot', 'Result', 'Root', 'Overlay', 'Time'];
  const tr = rows
    .map(
      (r) =>
        `<tr data-node="${html(r.hostname ?? r.mac)}"><td>${html(r.hostname ?? '?')}</td><td>${html(r.mac)}</td><td>${html(r.ip ?? '-')}</td><td>${html(when(r))}</td><td><span class="res ${RESULT_CLASS[r.result]}">${html(r.result)}</span></td><td>${html(r.root)}</td><td>${html(r.overlay ?? '-')}</td><td class="num">${r.totalSeconds === null ? '-' : `${r.totalSeconds.toFixed(1)} s`}</td></tr>`,
    )
    .join('\n');
  const notes = rows.flatMap((r) => r.notes.map((n) => `<li>${html(`${r.hostname ?? r.mac}: ${n}`)}</li>`));
  const legend = Object.entries(PHASE_COLORS)
    .map(([k, c]) => `<span><i style="background:${c}"></i>${html(k)}</span>`)
    .join('');
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.result, (counts.get(r.result) ?? 0) + 1);
  const summary = `${rows.length} node${rows.length === 1 ? '' : 's'}: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ') || 'none listed and no reports'}; ${
    s.masterStamp.id !== null
      ? `master rootfs stamp ${s.masterStamp.id}`
      : `master: ${s.masterStamp.problem ?? 'no rootfs stamp'}`
  }`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>clusterboot fleet</title><style>${CSS}</style></head>
<body>
<h1>clusterboot fleet</h1>
<div class="sub" id="summary">${html(summary)} — generated ${html(new Date(now).toISOString().slice(0, 19).replace('T', ' '))}Z by builder status --html</div>
<table id="fleet"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead>
<tbody>
${tr || `<tr><td colspan="${head.length}" class="empty">no nodes listed and no reports</td></tr>`}
</tbody></table>
<h2>Last boot, phase by phase</h2>
<div class="timeline" id="timeline">
${rows.map((r) => timelineRow(r, scale)).join('\n')}
${scale > 0 ? axis(scale) : ''}
<div class="legend">${legend}<span><i style="background:${FAILED}"></i>failed</span></div>
</div>
${notes.length ? `<h2>Notes</h2><ul class="notes">${notes.join('')}</ul>` : ''}
${s.mirrors.length ? `<h2>Mirrors</h2><ul class="notes" id="mirrors">${s.mirrors.map((m) => `<li class="mirror-${m.state}">${html(`${m.mirror}: ${m.text}`)}</li>`).join('')}</ul>` : ''}
${s.warnings.length ? `<h2>Warnings</h2><ul class="notes">${s.warnings.map((w) => `<li>${html(w)}</li>`).join('')}</ul>` : ''}
</body></html>
`;
}

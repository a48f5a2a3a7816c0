/**
 * The benchmark report's chart: one row per case, its per-round ratio `peer / tvm-node` on a
 * log axis — min–max whisker, p25–p75 box, median dot and value — with a line at 1 (parity).
 *
 * Plain SVG built as a string: a dozen primitives, no fonts or scripts to fetch, renders on
 * GitHub and in any browser, and keeps the benchmarks free of a charting dependency (the
 * npm charting libraries either need a DOM/canvas to render or pull in far more than a
 * box plot needs).
 */
import type { BenchCase, BenchReport } from './types';

const WIDTH = 1180;
const LABEL_W = 600; // case names, left
const VALUE_W = 70; // median value, right
const ROW_H = 18;
const GROUP_H = 26;
const TOP = 76;
const BOTTOM = 48;
const MAX_LABEL = 96; // characters

const FASTER = '#1b7f6b'; // median ratio >= 1: tvm-node faster
const SLOWER = '#c8553d';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmtRatio(x: number): string {
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  if (x >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

/** 1-2-5 ticks covering [lo, hi]. */
function ticks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)) + 1; e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo * 0.999 && t <= hi * 1.001) out.push(Number(t.toPrecision(3)));
    }
  }
  return out;
}

/** The SVG document (UTF-8 text) for a report's cases. */
export function ratioChart(r: BenchReport): string {
  const groups = r.settings.groups.filter((g) => r.cases.some((c) => c.group === g));
  const rows: Array<{ group: string } | { c: BenchCase }> = [];
  for (const g of groups) {
    rows.push({ group: g });
    for (const c of r.cases.filter((x) => x.group === g)) rows.push({ c });
  }
  const cases = r.cases;
  const finite = (xs: number[]) => xs.filter((x) => Number.isFinite(x) && x > 0);
  const values = finite(cases.flatMap((c) => [c.ratio.min, c.ratio.max]));
  // Domain: every whisker, parity, and at least [1/2, 2]; snapped outward to 1-2-5 steps.
  let lo = Math.min(0.5, ...values);
  let hi = Math.max(2, ...values);
  const t0 = ticks(lo / 2.5, hi * 2.5);
  lo = Math.max(...t0.filter((t) => t <= lo));
  hi = Math.min(...t0.filter((t) => t >= hi));
  const plotX0 = LABEL_W + 10;
  const plotX1 = WIDTH - VALUE_W - 10;
  const x = (v: number) => plotX0 + ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * (plotX1 - plotX0);
  const clampX = (v: number) => x(Math.min(hi, Math.max(lo, v)));

  const height = TOP + rows.reduce((h, row) => h + ('group' in row ? GROUP_H : ROW_H), 0) + BOTTOM;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">tvm-node vs peers${r.quick ? ' (quick run: figures mean nothing)' : ''}: ` +
      `peer time / tvm-node time, per round (&gt; 1: tvm-node faster)</text>`,
    `<text x="12" y="40" fill="#555">${esc(
      `${r.startedAt.slice(0, 16).replace('T', ' ')} UTC · ${r.machine.cpuModel}, ${r.machine.cores} cores · ` +
        `${r.settings.rounds} rounds · TVM_NUM_THREADS=${r.settings.threads.tvmNumThreads}, onnxruntime intraOpNumThreads=${r.settings.threads.ortIntraOpNumThreads}`,
    )}</text>`,
    `<text x="12" y="56" fill="#555">${esc(
      'dot: median, box: p25–p75, whisker: min–max over rounds (log scale); green: tvm-node faster, red: the peer faster',
    )}</text>`,
  );
  const plotTop = TOP - 6;
  const plotBottom = height - BOTTOM + 4;
  // Grid and axis labels.
  for (const t of ticks(lo, hi)) {
    const tx = x(t).toFixed(1);
    const strong = t === 1;
    out.push(
      `<line x1="${tx}" y1="${plotTop}" x2="${tx}" y2="${plotBottom}" stroke="${strong ? '#333' : '#ddd'}" ` +
        `stroke-width="${strong ? 1.2 : 1}"${strong ? ' stroke-dasharray="4 3"' : ''}/>`,
      `<text x="${tx}" y="${plotBottom + 16}" text-anchor="middle" fill="#333">${String(Number(t.toPrecision(2)))}</text>`,
    );
  }
  out.push(
    `<text x="${((plotX0 + plotX1) / 2).toFixed(1)}" y="${plotBottom + 34}" text-anchor="middle" fill="#333">` +
      `ratio (log scale); left of 1: the peer is faster, right of 1: tvm-node is faster</text>`,
  );

  let y = TOP;
  rows.forEach((row, i) => {
    if ('group' in row) {
      out.push(
        `<text x="12" y="${y + 18}" font-size="13" font-weight="bold">${esc(row.group)}</text>`,
        `<line x1="12" y1="${y + 22}" x2="${WIDTH - 12}" y2="${y + 22}" stroke="#999"/>`,
      );
      y += GROUP_H;
      return;
    }
    const c = row.c;
    const mid = y + ROW_H / 2;
    if (i % 2 === 0) out.push(`<rect x="8" y="${y}" width="${WIDTH - 16}" height="${ROW_H}" fill="#f6f6f6"/>`);
    const label = c.name.length > MAX_LABEL ? `${c.name.slice(0, MAX_LABEL - 1)}…` : c.name;
    const color = c.ratio.median >= 1 ? FASTER : SLOWER;
    const s = c.ratio;
    out.push(
      `<g><title>${esc(
        `${c.group}: ${c.name}\nratio median ${fmtRatio(s.median)}, p25–p75 ${fmtRatio(s.p25)}–${fmtRatio(s.p75)}, ` +
          `min–max ${fmtRatio(s.min)}–${fmtRatio(s.max)} over ${s.rounds} rounds\ntvm-node: ${c.subject.name}\npeer: ${c.peer.name}`,
      )}</title>`,
      `<text x="${LABEL_W}" y="${mid + 4}" text-anchor="end">${esc(label)}</text>`,
      `<line x1="${clampX(s.min).toFixed(1)}" y1="${mid}" x2="${clampX(s.max).toFixed(1)}" y2="${mid}" stroke="${color}" stroke-width="1.2"/>`,
      `<rect x="${clampX(s.p25).toFixed(1)}" y="${mid - 5}" width="${Math.max(1, clampX(s.p75) - clampX(s.p25)).toFixed(1)}" ` +
        `height="10" fill="${color}" fill-opacity="0.35" stroke="${color}"/>`,
      `<circle cx="${clampX(s.median).toFixed(1)}" cy="${mid}" r="3.5" fill="${color}"/>`,
      `<text x="${WIDTH - 12}" y="${mid + 4}" text-anchor="end" fill="${color}" font-weight="bold">${fmtRatio(s.median)}</text>`,
      `</g>`,
    );
    y += ROW_H;
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

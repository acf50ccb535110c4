// The spend chart: stacked bars drawn by uPlot on a canvas. The canvas is
// a picture; the exact figures are beside it and in a table under it, and
// the legend shows the exact amounts of the bar under the cursor.
import uPlot from 'uplot';
import * as dec from './decimal.js';

// Okabe–Ito: told apart with the common colour-vision deficiencies. The
// last is for "Other". styles.css repeats them for the legend swatches.
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#8C8C8C'];

const HEIGHT = 320;

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v * 100) / 100);
}

/**
 * stackedBars draws series stacked per bucket into container: positive
 * amounts stack up from zero, negative ones (credits) down. buckets are
 * [{key, from}], series [{label, exact: [decimal string per bucket], color}].
 * It returns a handle whose destroy() removes the chart.
 */
export function stackedBars(container, { buckets, series, interval, currency }) {
  const xs = buckets.map((b) => Date.UTC(+b.from.slice(0, 4), +b.from.slice(5, 7) - 1, +b.from.slice(8, 10)) / 1000);
  const n = xs.length;
  const pos = new Array(n).fill(0);
  const negs = new Array(n).fill(0);
  const bands = series.map((s) => {
    const y0 = new Array(n);
    const y1 = new Array(n);
    const raw = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = dec.toNumber(s.exact[i] ?? '0');
      raw[i] = v;
      if (v >= 0) {
        y0[i] = pos[i];
        pos[i] += v;
        y1[i] = pos[i];
      } else {
        y0[i] = negs[i];
        negs[i] += v;
        y1[i] = negs[i];
      }
    }
    return { y0, y1, raw };
  });
  const top = Math.max(0, ...pos);
  const bottom = Math.min(0, ...negs);
  const pad = (top - bottom) * 0.05 || 1;
  const half = interval === 'month' ? 14 * 86400 : 43200;
  const labelOf = (i) => (i == null ? '' : buckets[i].key);

  const opts = {
    width: Math.max(container.clientWidth, 280),
    height: HEIGHT,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: {
      x: { time: true, range: (u, min, max) => [min - half, max + half] },
      y: { range: () => [bottom < 0 ? bottom - pad : 0, top + pad] },
    },
    axes: [
      {},
      { values: (u, vals) => vals.map(compact), size: 60, label: currency, labelSize: 18 },
    ],
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    legend: { live: true },
    series: [
      { label: interval === 'month' ? 'Month' : 'Day', value: (u, v, si, i) => labelOf(i) },
      ...series.map((s, k) => ({
        label: s.label,
        fill: s.color,
        stroke: s.color,
        width: 0,
        points: { show: false },
        value: (u, v, si, i) => (i == null ? '' : dec.format(s.exact[i] ?? '0')),
        paths: uPlot.paths.bars({
          size: [0.7, 64],
          disp: {
            y0: { unit: 1, values: () => bands[k].y0 },
            y1: { unit: 1, values: () => bands[k].y1 },
          },
        }),
      })),
    ],
  };
  const plot = new uPlot(opts, [xs, ...bands.map((b) => b.raw)], container);
  const resize = new ResizeObserver(() => {
    const width = Math.max(container.clientWidth, 280);
    if (width !== plot.width) plot.setSize({ width, height: HEIGHT });
  });
  resize.observe(container);
  let live = true;
  return {
    destroy() {
      if (!live) return;
      live = false;
      resize.disconnect();
      plot.destroy();
    },
  };
}

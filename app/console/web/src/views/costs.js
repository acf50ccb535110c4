// The costs dashboard: spend over time stacked by a dimension, the exact
// totals beside it, and the top services, accounts and regions against the
// previous period. Every figure is an aggregate the server computed; the
// browser never receives cost rows.
import * as dec from '../decimal.js';
import * as dates from '../dates.js';
import { h, replace, table, message } from '../dom.js';
import { stackedBars, PALETTE } from '../chart.js';
import { ApiError } from '../api.js';

// TOP is how many keys the chart draws on their own; the rest are "Other".
const TOP = 7;
// MAX_DAILY is the longest range drawn day by day.
const MAX_DAILY = 92;
const LABELS = {
  service: 'Service', account: 'Account', provider: 'Provider', region: 'Region',
  service_category: 'Service category', charge_category: 'Charge category',
  billing_account: 'Billing account', day: 'Day', month: 'Month',
};

/** label names a dimension for people. */
export function label(dim) {
  if (LABELS[dim]) return LABELS[dim];
  if (dim.startsWith('tag:')) return `Tag ${dim.slice(4)}`;
  return dim.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
}

/** settings reads the dashboard's settings from the URL, with defaults. */
function settings(url, caps) {
  const q = url.searchParams;
  const to = dates.isDay(q.get('to')) ? q.get('to') : dates.today();
  const from = dates.isDay(q.get('from')) ? q.get('from') : dates.addDays(to, -29);
  const dims = caps.dimensions;
  let by = q.has('by') ? q.get('by') : (dims.includes('service') ? 'service' : '');
  if (by && !dims.includes(by) && !(caps.tagPrefix && by.startsWith(caps.tagPrefix))) by = '';
  let interval = q.get('interval') === 'month' ? 'month' : 'day';
  let note = null;
  if (interval === 'day' && from <= to && dates.days(from, to) > MAX_DAILY) {
    interval = 'month';
    note = `Daily view is limited to ${MAX_DAILY} days; showing months.`;
  }
  const metric = caps.metrics.includes(q.get('metric')) ? q.get('metric') : '';
  return {
    from, to, by, interval, metric, note,
    currency: /^[A-Z]{3}$/.test(q.get('currency') ?? '') ? q.get('currency') : '',
    account: q.get('account') ?? '',
  };
}

/** cells: per bucket, a Map of key → Map of currency → exact amount. */
function addCell(cell, key, currency, amount) {
  if (!cell.has(key)) cell.set(key, new Map());
  const m = cell.get(key);
  m.set(currency, m.has(currency) ? dec.add(m.get(currency), amount) : amount);
}

/**
 * loadTotals fetches the spend per bucket, not split: one summary by day
 * (or by month where the server has it; else the days are added up here,
 * exactly). It is the dashboard's first paint, whatever the stacking.
 */
async function loadTotals(ctx, s) {
  const buckets = dates.buckets(s.from, s.to, s.interval);
  const cells = buckets.map(() => new Map());
  const byMonth = s.interval === 'month' && ctx.caps.hasMonth;
  const res = await ctx.api.get('/v1/costs/summary', { ...filters(s), group_by: byMonth ? 'month' : 'day' }, { signal: ctx.signal });
  const index = new Map(buckets.map((b, i) => [b.key, i]));
  for (const it of res.items) {
    const key = s.interval === 'month' ? it.key.slice(0, 7) : it.key.slice(0, 10);
    const i = index.get(key);
    if (i !== undefined) addCell(cells[i], 'Total', it.currency, it.amount);
  }
  return { buckets, cells };
}

/**
 * loadStacked fetches the spend per bucket split by s.by: one summary per
 * bucket (a day or a month) grouped by that dimension, which works for
 * every dimension the server groups by.
 */
async function loadStacked(ctx, s) {
  const buckets = dates.buckets(s.from, s.to, s.interval);
  const cells = buckets.map(() => new Map());
  await Promise.all(buckets.map(async (b, i) => {
    const res = await ctx.api.get('/v1/costs/summary', { ...filters(s), from: b.from, to: b.to, group_by: s.by }, { signal: ctx.signal });
    for (const it of res.items) addCell(cells[i], it.key, it.currency, it.amount);
  }));
  return { buckets, cells };
}

/** filters are the summary parameters every request of the dashboard shares. */
function filters(s) {
  return { from: s.from, to: s.to, metric: s.metric || undefined, account_id: s.account || undefined };
}

/** totals adds the cells up per key and per currency, exactly. */
function totals(cells) {
  const byKey = new Map(); // currency → Map key → amount
  const byCurrency = new Map();
  for (const cell of cells) {
    for (const [key, m] of cell) {
      for (const [cur, amount] of m) {
        if (!byKey.has(cur)) byKey.set(cur, new Map());
        const k = byKey.get(cur);
        k.set(key, k.has(key) ? dec.add(k.get(key), amount) : amount);
        byCurrency.set(cur, byCurrency.has(cur) ? dec.add(byCurrency.get(cur), amount) : amount);
      }
    }
  }
  return { byKey, byCurrency };
}

function pickCurrency(wanted, byCurrency) {
  if (wanted && byCurrency.has(wanted)) return wanted;
  let best = '';
  for (const [cur, amount] of byCurrency) {
    if (!best || dec.cmp(dec.abs(amount), dec.abs(byCurrency.get(best))) > 0) best = cur;
  }
  return best || wanted || '';
}

/** ranked orders keys by amount, largest first, ties by key. */
function ranked(map) {
  return [...map.entries()].sort((a, b) => dec.cmp(b[1], a[1]) || a[0].localeCompare(b[0]));
}

export async function costsView(ctx) {
  const { caps } = ctx;
  const s = settings(ctx.url, caps);
  const root = h('div', { class: 'view costs' });
  const update = (changes) => {
    const next = new URL(ctx.url);
    for (const [k, v] of Object.entries(changes)) {
      if (v) next.searchParams.set(k, v);
      else next.searchParams.delete(k);
    }
    ctx.navigate(next.pathname + next.search, { replace: true });
  };

  const names = ctx.accountNames();
  const title = h('h1', { tabindex: '-1' }, 'Costs');
  root.append(title);
  ctx.mount(root);
  if (s.account) {
    const accountLine = h('p', { class: 'filter-note' }, 'Account: …');
    root.append(accountLine);
    try {
      const a = await ctx.api.get(`/v1/accounts/${encodeURIComponent(s.account)}`, null, { signal: ctx.signal });
      replace(accountLine, 'Only account ', h('strong', null, a.name), ` (${a.provider} ${a.external_id}). `,
        h('a', { href: ctx.link('/console/costs', { ...Object.fromEntries(ctx.url.searchParams), account: '' }) }, 'Show every account'));
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 400)) throw err;
      replace(root, title, message('No such account.', 'error'),
        h('p', null, h('a', { href: '/console/costs' }, 'Show every account')));
      root.dataset.state = 'missing';
      ctx.ready('costs');
      return root;
    }
  }

  root.append(controls(ctx, s, update));
  if (s.note) root.append(message(s.note));
  if (s.from > s.to) {
    root.append(message('The first day is after the last day.', 'error'));
    ctx.ready('costs');
    return root;
  }

  const chartSection = h('section', { class: 'spend', 'aria-labelledby': 'spend-h', dataset: { state: 'loading' } },
    h('h2', { id: 'spend-h' }, `Spend by ${s.interval === 'month' ? 'month' : 'day'}${s.by ? `, stacked by ${label(s.by).toLowerCase()}` : ''}`),
    h('p', { class: 'loading' }, 'Loading…'));
  const topSection = h('section', { class: 'movers', 'aria-labelledby': 'top-h', dataset: { state: 'loading' } },
    h('h2', { id: 'top-h' }, 'Top against the previous period'));
  root.append(chartSection, topSection);

  // First paint: the exact totals per bucket and currency, drawn unsplit;
  // then, when stacked, the split, which takes one summary per bucket.
  const unsplit = await loadTotals(ctx, s);
  let sums = totals(unsplit.cells);
  const currency = pickCurrency(s.currency, sums.byCurrency);
  await names; // account names for keys, fetched alongside
  renderSpend(ctx, chartSection, { ...s, by: '' }, unsplit, sums, currency, s.by ? label(s.by).toLowerCase() : null);
  ctx.ready('costs');
  if (s.by && sums.byCurrency.size > 0) {
    const spend = await loadStacked(ctx, s);
    sums = totals(spend.cells);
    renderSpend(ctx, chartSection, s, spend, sums, currency);
  }
  await renderTop(ctx, topSection, s, currency, sums);
  return root;
}

function controls(ctx, s, update) {
  const { caps } = ctx;
  const form = h('form', { class: 'controls', 'aria-label': 'What to show', onsubmit: (e) => e.preventDefault() });
  const field = (id, text, input) => h('div', { class: 'field' }, h('label', { for: id }, text), input);
  const onChange = (name) => (e) => update({ [name]: e.target.value });
  const from = h('input', { id: 'c-from', type: 'date', value: s.from, required: true, onchange: onChange('from') });
  const to = h('input', { id: 'c-to', type: 'date', value: s.to, required: true, onchange: onChange('to') });
  const interval = h('select', { id: 'c-interval', onchange: onChange('interval'), value: s.interval },
    h('option', { value: 'day' }, 'Daily'), h('option', { value: 'month' }, 'Monthly'));
  const dims = caps.dimensions;
  const byTag = caps.tagPrefix && s.by.startsWith(caps.tagPrefix);
  const by = h('select', { id: 'c-by', value: byTag ? '#tag' : s.by,
    onchange: (e) => {
      if (e.target.value === '#tag') tagField.hidden = false;
      else update({ by: e.target.value || 'none' });
    } },
  h('option', { value: '' }, 'Nothing (total)'),
  dims.map((d) => h('option', { value: d }, label(d))),
  caps.tagPrefix ? h('option', { value: '#tag' }, 'Tag…') : null);
  const tagInput = h('input', { id: 'c-tag', type: 'text', value: byTag ? s.by.slice(caps.tagPrefix.length) : '',
    onchange: (e) => e.target.value && update({ by: caps.tagPrefix + e.target.value.trim() }) });
  const tagField = field('c-tag', 'Tag key', tagInput);
  tagField.hidden = !byTag;
  const parts = [
    field('c-from', 'From', from), field('c-to', 'To', to),
    field('c-interval', 'Interval', interval), field('c-by', 'Stack by', by), tagField,
  ];
  if (caps.metrics.length) {
    parts.push(field('c-metric', 'Cost', h('select', { id: 'c-metric', onchange: onChange('metric'), value: s.metric },
      h('option', { value: '' }, 'Default'), caps.metrics.map((m) => h('option', { value: m }, label(m))))));
  }
  const cur = h('input', { id: 'c-currency', type: 'text', inputmode: 'text', maxlength: '3', size: '4', pattern: '[A-Z]{3}',
    value: s.currency, placeholder: 'auto', autocomplete: 'off', onchange: (e) => update({ currency: e.target.value.toUpperCase() }) });
  parts.push(field('c-currency', 'Currency', cur));
  form.append(h('div', { class: 'fields' }, parts));
  return form;
}

function keyLabel(ctx, dim, key) {
  if (dim === 'account') return ctx.accountName(key);
  return key;
}

// charts holds each section's chart, to replace it when the split arrives.
const charts = new WeakMap();

/**
 * renderSpend draws the chart, the exact totals and the data table into
 * section; splitting names the dimension still being fetched, if any.
 */
function renderSpend(ctx, section, s, spend, sums, currency, splitting = null) {
  const heading = section.querySelector('h2');
  charts.get(section)?.destroy();
  if (sums.byCurrency.size === 0) {
    replace(section, heading, message('No costs in this range.'));
    section.dataset.state = 'empty';
    return;
  }
  const keys = sums.byKey.get(currency) ?? new Map();
  const order = ranked(keys);
  const shown = order.slice(0, order.length > TOP + 1 ? TOP : TOP + 1).map(([k]) => k);
  const rest = order.slice(shown.length).map(([k]) => k);
  const series = shown.map((k, i) => ({ key: k, label: keyLabel(ctx, s.by, k), color: PALETTE[i], swatch: i }));
  if (rest.length) series.push({ key: null, label: `Other (${rest.length})`, color: PALETTE[PALETTE.length - 1], swatch: PALETTE.length - 1 });
  for (const se of series) {
    se.exact = spend.cells.map((cell) => {
      const ks = se.key === null ? rest : [se.key];
      return dec.sum(ks.map((k) => cell.get(k)?.get(currency)).filter(Boolean));
    });
    se.total = se.key === null ? dec.sum(rest.map((k) => keys.get(k))) : keys.get(se.key);
  }

  const chart = h('div', { class: 'chart', role: 'img',
    'aria-label': `Stacked bars of spend in ${currency} per ${s.interval}, ${s.from} to ${s.to}; the exact figures are in the totals and the data table.` });
  const figure = h('figure', { class: 'chart-figure' }, chart,
    h('figcaption', null, `${currency}, ${s.from} – ${s.to}`));

  const totalsList = h('dl', { class: 'totals' },
    [...sums.byCurrency.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([cur, amount]) => [
      h('dt', null, `Total ${cur}`),
      h('dd', { class: 'amount', dataset: { totalCurrency: cur, amount } }, dec.format(amount)),
    ]));
  const keyRows = series.map((se) => h('tr', { dataset: { key: se.key ?? '' } },
    h('th', { scope: 'row' }, h('span', { class: `swatch sw-${se.swatch}`, 'aria-hidden': 'true' }), ' ',
      se.key && s.by === 'account' ? h('a', { href: `/console/accounts/${encodeURIComponent(se.key)}` }, se.label) : se.label),
    h('td', { class: 'num amount', dataset: { amount: se.total } }, dec.format(se.total))));
  const aside = h('aside', { class: 'totals-panel', 'aria-label': 'Exact totals' },
    h('h3', null, 'Exact totals'), totalsList,
    s.by ? table({ caption: `By ${label(s.by).toLowerCase()}, ${currency}`, className: 'key-totals',
      columns: [{ title: label(s.by) }, { title: currency, num: true }], rows: keyRows }) : null,
    splitting ? h('p', { class: 'loading' }, `Splitting by ${splitting}…`) : null,
    sums.byCurrency.size > 1 ? h('p', { class: 'hint' }, `The chart shows ${currency}; set Currency to see another.`) : null);

  const dataRows = spend.buckets.map((b, i) => h('tr', null, h('th', { scope: 'row' }, b.key),
    series.map((se) => h('td', { class: 'num' }, dec.format(se.exact[i]))),
    h('td', { class: 'num', dataset: { bucketTotal: b.key, amount: dec.sum(series.map((se) => se.exact[i])) } },
      dec.format(dec.sum(series.map((se) => se.exact[i]))))));
  const data = h('details', { class: 'data-table' }, h('summary', null, 'Data table'),
    table({ caption: `Spend per ${s.interval} in ${currency}`, label: 'Spend data table',
      columns: [{ title: s.interval === 'month' ? 'Month' : 'Day' }, ...series.map((se) => ({ title: se.label, num: true })), { title: 'Total', num: true }],
      rows: dataRows }));

  replace(section, heading, h('div', { class: 'spend-grid' }, figure, aside), data);
  section.dataset.state = splitting ? 'totals' : 'ready';
  const plot = stackedBars(chart, { buckets: spend.buckets, series, interval: s.interval, currency });
  charts.set(section, plot);
  ctx.own(plot);
}

/** previous is the period of the same length just before [from, to]. */
function previous(from, to) {
  const n = dates.days(from, to);
  return { from: dates.addDays(from, -n), to: dates.addDays(from, -1) };
}

async function renderTop(ctx, section, s, currency, sums) {
  const heading = section.querySelector('h2');
  const dims = ['service', 'account', 'region'].filter((d) => ctx.caps.groupBy.includes(d));
  const prev = previous(s.from, s.to);
  const base = { metric: s.metric || undefined, account_id: s.account || undefined };
  const summary = async (dim, range) => {
    const res = await ctx.api.get('/v1/costs/summary', { ...base, ...range, group_by: dim }, { signal: ctx.signal });
    const m = new Map();
    for (const it of res.items) if (it.currency === currency) m.set(it.key, it.amount);
    return m;
  };
  const tables = await Promise.all(dims.map(async (dim) => {
    // Stacked by this dimension, the chart's totals are this period's already.
    const [now, before] = await Promise.all([
      dim === s.by ? Promise.resolve(sums.byKey.get(currency) ?? new Map()) : summary(dim, { from: s.from, to: s.to }),
      summary(dim, prev),
    ]);
    const rows = ranked(now).slice(0, 10).map(([key, amount]) => {
      const was = before.get(key) ?? '0';
      const change = dec.sub(amount, was);
      const pct = dec.isZero(was) ? 'new' : `${((dec.toNumber(change) / Math.abs(dec.toNumber(was))) * 100).toFixed(1)} %`;
      const name = keyLabel(ctx, dim, key);
      return h('tr', { dataset: { key } },
        h('th', { scope: 'row' }, dim === 'account' ? h('a', { href: `/console/accounts/${encodeURIComponent(key)}` }, name) : name),
        h('td', { class: 'num amount' }, dec.format(amount)),
        h('td', { class: 'num amount' }, dec.format(was)),
        h('td', { class: ['num', 'amount', dec.cmp(change, '0') > 0 ? 'up' : dec.cmp(change, '0') < 0 ? 'down' : null] },
          `${dec.cmp(change, '0') > 0 ? '+' : ''}${dec.format(change)}`),
        h('td', { class: 'num' }, pct));
    });
    if (!rows.length) return h('div', { class: 'top-table' }, h('h3', null, `Top ${label(dim).toLowerCase()}s`), message('Nothing in this period.'));
    return h('div', { class: 'top-table' }, table({
      caption: `Top ${label(dim).toLowerCase()}s, ${currency}`,
      columns: [{ title: label(dim) }, { title: 'This period', num: true }, { title: 'Previous', num: true },
        { title: 'Change', num: true }, { title: '%', num: true }],
      rows,
    }));
  }));
  replace(section, heading, h('p', { class: 'hint' }, `This period ${s.from} – ${s.to}, previous ${prev.from} – ${prev.to}, in ${currency}.`),
    h('div', { class: 'top-grid' }, tables));
  section.dataset.state = 'ready';
}

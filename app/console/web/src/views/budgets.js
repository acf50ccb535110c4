// Budgets: what each has spent and has left in its period, and where it is
// heading — a linear projection of the spend so far to the period's end.
import * as dec from '../decimal.js';
import * as dates from '../dates.js';
import { h, replace, table, message } from '../dom.js';
import { ApiError } from '../api.js';

/**
 * projection estimates spend at the end of the budget's period from the
 * spend so far, at the same daily rate: spent × days in period ÷ days
 * elapsed, to the cent. Past the period, it is what was spent.
 */
export function projection(b, today = dates.today()) {
  if (!b.period_start || !b.period_end || b.spent == null) return null;
  if (today < b.period_start) return null;
  const total = dates.days(b.period_start, b.period_end);
  if (today >= b.period_end) return b.spent;
  const elapsed = dates.days(b.period_start, today);
  return dec.mulDiv(b.spent, total, elapsed, 2);
}

function scope(ctx, b) {
  const parts = [];
  if (b.account_id) parts.push(`account ${ctx.accountName(b.account_id)}`);
  if (b.service) parts.push(`service ${b.service}`);
  return parts.length ? parts.join(', ') : 'everything';
}

function status(b, projected) {
  if (dec.cmp(b.remaining, '0') < 0) return { text: 'Over budget', cls: 'bad' };
  if (projected !== null && dec.cmp(projected, b.amount) > 0) return { text: 'Projected over', cls: 'warn' };
  return { text: 'On track', cls: 'ok' };
}

function meter(b) {
  const spent = Math.max(0, dec.toNumber(b.spent));
  const amount = dec.toNumber(b.amount);
  return h('meter', { min: '0', max: String(amount), low: String(amount * 0.8), high: String(amount * 0.999), optimum: '0',
    value: String(Math.min(spent, amount)), 'aria-label': `${b.name}: ${dec.format(b.spent)} of ${dec.format(b.amount)} ${b.currency} spent` });
}

function row(ctx, b) {
  const projected = projection(b);
  const st = status(b, projected);
  return h('tr', { dataset: { budget: b.id } },
    h('th', { scope: 'row' }, h('a', { href: `/console/budgets/${b.id}` }, b.name)),
    h('td', null, `${b.period}, ${b.period_start} – ${b.period_end}`),
    h('td', null, scope(ctx, b)),
    h('td', { class: 'num amount' }, `${dec.format(b.amount)} ${b.currency}`),
    h('td', { class: 'num amount', dataset: { spent: b.spent } }, h('span', { class: 'spent' }, dec.format(b.spent), h('br'), meter(b))),
    h('td', { class: 'num amount', dataset: { remaining: b.remaining } }, dec.format(b.remaining)),
    h('td', { class: 'num amount', dataset: { projected: projected ?? '' } }, projected === null ? '—' : `≈ ${dec.format(projected)}`),
    h('td', null, h('span', { class: `badge ${st.cls}` }, st.text)));
}

// MAX_SHOWN bounds the budgets shown with their spending.
const MAX_SHOWN = 200;

const COLUMNS = [
  { title: 'Budget' }, { title: 'Period' }, { title: 'Scope' }, { title: 'Amount', num: true }, { title: 'Spent', num: true },
  { title: 'Remaining', num: true }, { title: 'Projected at period end', num: true }, { title: 'Status' },
];

export async function budgetsView(ctx) {
  const root = h('div', { class: 'view budgets' }, h('h1', { tabindex: '-1' }, 'Budgets'));
  const section = h('section', { dataset: { state: 'loading' } }, h('p', { class: 'loading' }, 'Loading…'));
  root.append(section);
  ctx.mount(root);
  const list = await ctx.api.all('/v1/budgets', {}, { signal: ctx.signal, maxPages: 1 });
  await ctx.accountNames();
  if (!list.length) {
    replace(section, message('No budgets yet. Create one with POST /v1/budgets.'));
    section.dataset.state = 'empty';
    ctx.ready('budgets');
    return root;
  }
  // The list has no spending; each budget's own answer has: one request
  // each, so only the first MAX_SHOWN.
  const shown = list.slice(0, MAX_SHOWN);
  const full = await Promise.all(shown.map((b) => ctx.api.get(`/v1/budgets/${b.id}`, null, { signal: ctx.signal })));
  replace(section, table({ caption: 'Budgets in their current period', columns: COLUMNS, rows: full.map((b) => row(ctx, b)) }),
    list.length > shown.length ? message(`Showing the first ${shown.length} of ${list.length} budgets.`) : null,
    h('p', { class: 'hint' }, 'Projected: the spend so far at the same daily rate until the period ends.'));
  section.dataset.state = 'ready';
  ctx.ready('budgets');
  return root;
}

export async function budgetView(ctx, id) {
  const root = h('div', { class: 'view budget' }, h('h1', { tabindex: '-1' }, 'Budget'));
  ctx.mount(root);
  let b;
  try {
    b = await ctx.api.get(`/v1/budgets/${encodeURIComponent(id)}`, null, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 400)) {
      root.append(message('No such budget.', 'error'), h('p', null, h('a', { href: '/console/budgets' }, 'All budgets')));
      root.dataset.state = 'missing';
      ctx.ready('budget');
      return root;
    }
    throw err;
  }
  await ctx.accountNames();
  replace(root, h('h1', { tabindex: '-1' }, b.name),
    table({ caption: 'This period', columns: COLUMNS, rows: [row(ctx, b)] }),
    h('p', null, h('a', { href: ctx.link('/console/costs', { from: b.period_start, to: b.period_end, account: b.account_id ?? '' }) },
      'Costs in this period'), ' · ', h('a', { href: '/console/budgets' }, 'All budgets')));
  root.dataset.state = 'ready';
  ctx.ready('budget');
  return root;
}

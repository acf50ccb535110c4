// The operator console: every tenant with where it lives and how it is
// doing, suspend and resume, the busiest tenants and verify's findings when
// the server reports them. It speaks only the admin API.
import { h, replace, table, message } from '../dom.js';
import { ApiError } from '../api.js';

function placement(t) {
  if (t.server && t.placement) return `${t.server} / ${t.placement}`;
  return t.placement || t.server || (t.isolation === 'rls' ? 'shared tables' : '—');
}

function tenantRow(ctx, t, refresh) {
  const actions = h('td', { class: 'actions' });
  const act = t.status === 'suspended' ? 'resume' : t.status === 'active' ? 'suspend' : null;
  const idle = () => {
    if (!act) return replace(actions, '—');
    return replace(actions, h('button', { type: 'button', class: act === 'suspend' ? 'danger' : null,
      'aria-label': `${act === 'suspend' ? 'Suspend' : 'Resume'} tenant ${t.slug}`,
      onclick: () => confirmStep() }, act === 'suspend' ? 'Suspend' : 'Resume'));
  };
  const confirmStep = () => {
    const yes = h('button', { type: 'button', class: act === 'suspend' ? 'danger' : 'primary',
      'aria-label': `Confirm: ${act} tenant ${t.slug}`,
      onclick: async () => {
        yes.disabled = true;
        try {
          await ctx.api.post(`/admin/v1/tenants/${encodeURIComponent(t.slug)}/${act}`, undefined, { signal: ctx.signal });
          ctx.announce(`Tenant ${t.slug} ${act === 'suspend' ? 'suspended' : 'resumed'}.`);
          await refresh();
        } catch (err) {
          replace(actions, message(err.message, 'error'));
        }
      } }, act === 'suspend' ? 'Yes, suspend' : 'Yes, resume');
    replace(actions, h('span', { class: 'confirm' }, `${act === 'suspend' ? 'Suspend' : 'Resume'} ${t.slug}? `), yes, ' ',
      h('button', { type: 'button', onclick: () => { idle(); } }, 'Cancel'));
    yes.focus();
  };
  idle();
  return h('tr', { dataset: { tenant: t.slug, status: t.status } },
    h('th', { scope: 'row' }, t.slug),
    h('td', null, t.name),
    h('td', null, t.isolation),
    h('td', null, placement(t)),
    h('td', null, h('span', { class: `badge ${t.status === 'active' ? 'ok' : t.status === 'suspended' ? 'bad' : 'warn'}` }, t.status)),
    h('td', { class: 'num' }, t.version ?? '—', t.migrate_error ? h('span', { class: 'error' }, ` (${t.migrate_error})`) : null),
    h('td', null, t.created_at ? t.created_at.slice(0, 10) : '—'),
    actions);
}

async function tenantsSection(ctx) {
  const section = h('section', { 'aria-labelledby': 'tenants-h', dataset: { state: 'loading' } }, h('h2', { id: 'tenants-h' }, 'Tenants'));
  const body = h('div', null, h('p', { class: 'loading' }, 'Loading…'));
  section.append(body);
  const refresh = async () => {
    const res = await ctx.api.get('/admin/v1/tenants', null, { signal: ctx.signal });
    const items = res.items ?? [];
    replace(body, table({ caption: `${items.length} tenants`, className: 'tenants',
      columns: [{ title: 'Slug' }, { title: 'Name' }, { title: 'Strategy' }, { title: 'Placement' }, { title: 'Status' },
        { title: 'Migration', num: true }, { title: 'Created' }, { title: 'Actions' }],
      rows: items.map((t) => tenantRow(ctx, t, refresh)) }));
    section.dataset.state = 'ready';
  };
  return { section, refresh };
}

function cell(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** genericTable shows a list the console has no special view for: its fields as columns. */
function genericTable(caption, items) {
  const cols = [];
  for (const it of items) for (const k of Object.keys(it)) if (!cols.includes(k)) cols.push(k);
  return table({ caption, columns: cols.map((c) => ({ title: c.replace(/_/g, ' '), num: items.some((it) => typeof it[c] === 'number') })),
    rows: items.map((it) => h('tr', null, cols.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, cell(it[c]))
      : h('td', { class: typeof it[c] === 'number' ? 'num' : null }, cell(it[c])))))) });
}

function firstList(res) {
  if (Array.isArray(res)) return res;
  if (Array.isArray(res?.items)) return res.items;
  return Object.values(res ?? {}).find(Array.isArray) ?? [];
}

/** seconds shows a duration in seconds to the millisecond. */
function seconds(v) {
  return typeof v === 'number' ? v.toFixed(3) : cell(v);
}

/**
 * statsTable shows GET /admin/v1/tenants/stats: one row a tenant, busiest
 * first, named by slug ("(others)" for the tenants added up together).
 */
function statsTable(res, items) {
  const cols = [{ title: 'Tenant' }, { title: 'Requests', num: true }, { title: 'Database time (s)', num: true },
    { title: 'Waits', num: true }, { title: 'Wait time (s)', num: true }, { title: 'Rejections', num: true }];
  return table({ caption: `Top tenants by ${String(res.by ?? 'requests').replace(/_/g, ' ')}, last ${res.minutes ?? 5} minutes`,
    className: 'stats', columns: cols,
    rows: items.map((it) => h('tr', { dataset: { busy: it.tenant || it.tenant_id, requests: String(it.requests ?? 0) } },
      h('th', { scope: 'row' }, it.tenant || h('span', { title: it.tenant_id }, '(deleted tenant)')),
      h('td', { class: 'num' }, cell(it.requests)),
      h('td', { class: 'num' }, seconds(it.db_seconds)),
      h('td', { class: 'num' }, cell(it.waits)),
      h('td', { class: 'num' }, seconds(it.wait_seconds)),
      h('td', { class: 'num' }, cell(it.rejections)))) });
}

async function statsSection(ctx) {
  const section = h('section', { 'aria-labelledby': 'stats-h', dataset: { state: 'loading' } }, h('h2', { id: 'stats-h' }, 'Busiest tenants'));
  if (!ctx.caps.has('get', '/admin/v1/tenants/stats')) {
    section.append(message('This server does not report tenant statistics yet.'));
    section.dataset.state = 'unavailable';
    return { section, load: async () => {} };
  }
  return {
    section,
    load: async () => {
      try {
        const res = await ctx.api.get('/admin/v1/tenants/stats', null, { signal: ctx.signal });
        const items = firstList(res);
        const known = items.length && items.every((it) => 'tenant' in it && 'requests' in it);
        section.append(!items.length ? message('No requests recorded yet.')
          : known ? statsTable(res, items) : genericTable('Top tenants, busiest first', items));
        section.dataset.state = 'ready';
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          section.append(message('This server does not report tenant statistics.'));
          section.dataset.state = 'unavailable';
          return;
        }
        throw err;
      }
    },
  };
}

async function verifySection(ctx) {
  const section = h('section', { 'aria-labelledby': 'verify-h', dataset: { state: 'loading' } }, h('h2', { id: 'verify-h' }, 'Verify'));
  if (!ctx.caps.has('get', '/admin/v1/verify')) {
    section.append(message('This server does not report verify findings; run bulkhead verify.'));
    section.dataset.state = 'unavailable';
    return { section, load: async () => {} };
  }
  const out = h('div');
  const run = async () => {
    button.disabled = true;
    replace(out, h('p', { class: 'loading' }, 'Checking the live database…'));
    try {
      const res = await ctx.api.get('/admin/v1/verify', null, { signal: ctx.signal });
      const items = res.items ?? [];
      replace(out, h('p', { class: items.length ? 'msg msg-warn' : 'msg msg-ok' },
        `${items.length} findings, ${res.critical ?? 0} critical (checked ${res.checked_at ? `${res.checked_at.slice(0, 19).replace('T', ' ')} UTC` : 'now'}).`),
      items.length ? table({ caption: 'Findings, critical first',
        columns: [{ title: 'Code' }, { title: 'Severity' }, { title: 'Object' }, { title: 'Detail' }, { title: 'Fix' }],
        rows: items.map((f) => h('tr', { dataset: { code: f.code } }, h('th', { scope: 'row' }, f.code),
          h('td', null, h('span', { class: `badge ${f.severity === 'critical' ? 'bad' : 'warn'}` }, f.severity)),
          h('td', null, f.object), h('td', null, f.detail), h('td', null, f.fix))) }) : null);
      section.dataset.state = 'ready';
    } catch (err) {
      if (err.name === 'AbortError') return;
      replace(out, message(err.message, 'error'));
      section.dataset.state = 'error';
    } finally {
      button.disabled = false;
    }
  };
  const button = h('button', { type: 'button', onclick: run }, 'Run verify again');
  section.append(out, button);
  return { section, load: run };
}

export async function adminView(ctx) {
  const root = h('div', { class: 'view admin' }, h('h1', { tabindex: '-1' }, 'Operator console'));
  const tenants = await tenantsSection(ctx);
  const stats = await statsSection(ctx);
  const verify = await verifySection(ctx);
  root.append(tenants.section, stats.section, verify.section);
  ctx.mount(root);
  await tenants.refresh();
  ctx.ready('admin');
  await Promise.all([stats.load(), verify.load()]);
  return root;
}

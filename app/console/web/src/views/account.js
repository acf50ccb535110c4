// One cloud account, and a way to its costs.
import { h, table, message } from '../dom.js';
import { ApiError } from '../api.js';

export async function accountView(ctx, id) {
  const root = h('div', { class: 'view account' }, h('h1', { tabindex: '-1' }, 'Account'));
  ctx.mount(root);
  let a;
  try {
    a = await ctx.api.get(`/v1/accounts/${encodeURIComponent(id)}`, null, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 400)) {
      root.append(message('No such account.', 'error'), h('p', null, h('a', { href: '/console/costs' }, 'Costs')));
      root.dataset.state = 'missing';
      ctx.ready('account');
      return root;
    }
    throw err;
  }
  root.replaceChildren(h('h1', { tabindex: '-1' }, a.name),
    table({ caption: 'Account', columns: [{ title: 'Provider' }, { title: 'Provider id' }, { title: 'Created' }],
      rows: [h('tr', null, h('td', null, a.provider), h('td', null, a.external_id), h('td', null, a.created_at.slice(0, 10)))] }),
    h('p', null, h('a', { href: ctx.link('/console/costs', { account: a.id }) }, 'Costs of this account')));
  root.dataset.state = 'ready';
  ctx.ready('account');
  return root;
}

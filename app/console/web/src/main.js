// Bulkhead's web console: a client of the public API and nothing more. The
// key decides the tenant, exactly as for any other client: nothing in a
// console URL can name another tenant, and an id of another tenant's is
// "not found" here because the API says so.
import { Client, ApiError, query } from './api.js';
import { loadCapabilities } from './spec.js';
import { session } from './session.js';
import { CALLBACK, SignInError, begin, complete, providers, takeCallback } from './oidc.js';
import { h, replace, message } from './dom.js';
import { signInView } from './views/signin.js';
import { costsView } from './views/costs.js';
import { budgetsView, budgetView } from './views/budgets.js';
import { uploadView } from './views/upload.js';
import { accountView } from './views/account.js';
import { adminView } from './views/admin.js';

const BASE = '/console';
const state = {
  caps: null,
  me: null, // GET /v1/me of the signed-in key
  names: null, // promise of account id → name
  controller: null,
  owned: [],
  path: null,
  providers: null, // promise of GET /v1/identity-providers' items
  // An identity provider's answer, taken from the address bar before
  // anything else happens (it holds a code).
  callback: takeCallback(),
};

const main = () => document.getElementById('main');
const nav = () => document.getElementById('nav');

/** announce says something to screen readers (and shows it briefly). */
function announce(text) {
  const el = document.getElementById('status');
  el.textContent = text;
}

/** navigate moves to a console URL without reloading. */
function navigate(url, { replace: rep = false } = {}) {
  window.history[rep ? 'replaceState' : 'pushState'](null, '', url);
  render();
}

function link(path, params) {
  return path + query(params);
}

function onClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, window.location.href);
  if (url.origin !== window.location.origin || !url.pathname.startsWith(`${BASE}/`) && url.pathname !== BASE) return;
  if (url.pathname === window.location.pathname && url.search === window.location.search && url.hash) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
}

function signOut() {
  session.key = null;
  state.me = null;
  state.names = null;
  navigate(`${BASE}/`);
}

function adminSignOut() {
  session.admin = null;
  navigate(`${BASE}/admin`);
}

function renderNav(items, who, onSignOut) {
  const here = window.location.pathname.replace(/\/+$/, '');
  replace(nav(),
    h('ul', null, items.map(([href, text]) => h('li', null,
      h('a', { href, 'aria-current': here === href || (href !== `${BASE}/admin` && here.startsWith(`${href}/`)) ? 'page' : null }, text)))),
    who ? h('span', { class: 'who' }, who) : null,
    onSignOut ? h('button', { type: 'button', class: 'link', onclick: onSignOut }, 'Sign out') : null);
}

function tenantNav() {
  const items = [[`${BASE}/costs`, 'Costs'], [`${BASE}/budgets`, 'Budgets']];
  if (state.me?.role === 'editor') items.push([`${BASE}/upload`, 'Upload']);
  renderNav(items, `${state.me.tenant.name || state.me.tenant.slug} · ${state.me.role}`, signOut);
}

/** context is what a view gets: the API, the server's capabilities, the URL and a way to say it is done. */
function context(api, signal, extra = {}) {
  return {
    api,
    caps: state.caps,
    url: new URL(window.location.href),
    signal,
    navigate,
    link,
    announce,
    mount(root) {
      if (!signal.aborted && root.parentNode !== main()) replace(main(), root);
    },
    own(handle) {
      state.owned.push(handle);
    },
    ready(name) {
      if (signal.aborted) return;
      // After the next frame is painted: what a person sees, and what
      // make bench times as the dashboard's first meaningful paint.
      window.requestAnimationFrame(() => window.requestAnimationFrame(() => {
        if (signal.aborted) return;
        window.performance.mark(`bulkhead:${name}-ready`);
        document.body.dataset.view = name;
        document.body.dataset.ready = 'true';
      }));
    },
    ...extra,
  };
}

function tenantClient() {
  return new Client(session.key, {
    onUnauthorized: () => {
      session.key = null;
      state.me = null;
      state.signInError = 'The key was refused; sign in again.';
    },
  });
}

async function accountNames(api) {
  if (!state.names) {
    state.names = api.all('/v1/accounts', {}).then(
      (list) => new Map(list.map((a) => [a.id, a.name])),
      () => new Map(),
    );
  }
  return state.names;
}

/**
 * renderCallback finishes signing in with an identity provider: the token
 * it gives is this tab's bearer once the API accepts it.
 */
async function renderCallback() {
  replace(nav());
  state.mePromise = null;
  try {
    const params = state.callback;
    state.callback = null; // one answer, one try
    const { token, returnTo } = await complete(params);
    session.key = token;
    try {
      state.me = await tenantClient().get('/v1/me');
    } catch (err) {
      session.key = null;
      state.me = null;
      throw new SignInError(err instanceof ApiError ? `The server refused the identity provider's token: ${err.message}` : err.message);
    }
    state.signInError = null;
    state.names = null;
    navigate(returnTo, { replace: true });
  } catch (err) {
    state.signInError = err instanceof SignInError ? err.message : `Signing in failed: ${err.message}`;
    navigate(`${BASE}/`, { replace: true });
  }
}

async function renderTenant(path, signal) {
  if (!session.key) {
    replace(nav());
    state.providers ??= providers(state.caps);
    const idps = await state.providers;
    if (signal.aborted) return;
    const returnTo = path === BASE ? `${BASE}/costs` : window.location.pathname + window.location.search;
    replace(main(), signInView({
      title: 'Sign in', labelText: 'API key',
      hint: 'A tenant API key (bh_…). It is kept in this tab only, until you sign out or close it.',
      error: state.signInError,
      providers: idps.map((p) => ({ name: p.name, start: () => begin(p, returnTo) })),
      check: async (key) => {
        session.key = key;
        try {
          state.me = await tenantClient().get('/v1/me');
        } catch (err) {
          session.key = null;
          state.me = null;
          throw new Error(err instanceof ApiError && err.status === 401 ? 'That key was not accepted.' : err.message);
        }
        state.signInError = null;
        navigate(path === BASE ? `${BASE}/costs` : window.location.pathname + window.location.search, { replace: true });
      },
      footer: h('p', { class: 'hint' }, 'Operators: ', h('a', { href: `${BASE}/admin` }, 'sign in with the admin token'), '.'),
    }));
    focusHeading();
    return;
  }
  const api = tenantClient();
  if (!state.me) {
    try {
      state.me = await (state.mePromise ?? api.get('/v1/me', null, { signal }));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        state.signInError = 'The key was refused; sign in again.';
        return render();
      }
      if (err instanceof ApiError && err.status === 403) {
        // A suspended tenant: say so, and let the person sign out.
        renderNav([], null, signOut);
        replace(main(), h('div', { class: 'view', dataset: { state: 'refused' } }, h('h1', { tabindex: '-1' }, 'Refused'),
          message(`The server refuses this key: ${err.message}.`, 'error')));
        document.body.dataset.ready = 'true';
        return undefined;
      }
      throw err;
    } finally {
      state.mePromise = null;
    }
  }
  tenantNav();
  let names = null;
  const ctx = context(api, signal, {
    me: state.me,
    key: session.key,
    accountNames: () => accountNames(api).then((m) => {
      names = m;
      return m;
    }),
    accountName: (id) => names?.get(id) ?? id,
  });
  const m = /^\/console\/(budgets|accounts)\/([^/]+)$/.exec(path);
  if (path === BASE || path === `${BASE}/costs`) await costsView(ctx);
  else if (path === `${BASE}/budgets`) await budgetsView(ctx);
  else if (m && m[1] === 'budgets') await budgetView(ctx, decodeURIComponent(m[2]));
  else if (m && m[1] === 'accounts') await accountView(ctx, decodeURIComponent(m[2]));
  else if (path === `${BASE}/upload`) await uploadView(ctx);
  else notFound(ctx);
}

async function renderAdmin(path, signal) {
  if (!session.admin) {
    replace(nav());
    replace(main(), signInView({
      title: 'Operator sign in', labelText: 'Admin token',
      hint: 'The server\'s admin token (admin.token). It is kept in this tab only.',
      error: state.adminError,
      check: async (token) => {
        try {
          await new Client(token).get('/admin/v1/tenants');
        } catch (err) {
          if (err instanceof ApiError && err.status === 404) throw new Error('The admin API is off on this server: it has no admin token.');
          if (err instanceof ApiError && err.status === 401) throw new Error('That token was not accepted.');
          throw err;
        }
        session.admin = token;
        state.adminError = null;
        navigate(`${BASE}/admin`, { replace: true });
      },
      footer: h('p', { class: 'hint' }, 'Tenants: ', h('a', { href: `${BASE}/` }, 'sign in with an API key'), '.'),
    }));
    focusHeading();
    return;
  }
  renderNav([[`${BASE}/admin`, 'Tenants']], 'operator', adminSignOut);
  const api = new Client(session.admin, {
    onUnauthorized: () => {
      session.admin = null;
      state.adminError = 'The admin token was refused; sign in again.';
    },
  });
  const ctx = context(api, signal);
  if (path === `${BASE}/admin`) await adminView(ctx);
  else notFound(ctx);
}

function notFound(ctx) {
  ctx.mount(h('div', { class: 'view', dataset: { state: 'missing' } }, h('h1', { tabindex: '-1' }, 'Not found'),
    message('The console has no such page.'), h('p', null, h('a', { href: `${BASE}/` }, 'Start'))));
  ctx.ready('missing');
}

function focusHeading() {
  const h1 = main().querySelector('h1');
  if (h1) h1.focus({ preventScroll: true });
}

async function render() {
  state.controller?.abort();
  for (const o of state.owned.splice(0)) o.destroy();
  const controller = new AbortController();
  state.controller = controller;
  const { signal } = controller;
  const path = window.location.pathname.replace(/\/+$/, '') || BASE;
  const moved = path !== state.path;
  state.path = path;
  state.search = window.location.search;
  delete document.body.dataset.ready;
  delete document.body.dataset.settled;
  const titled = (t) => {
    document.title = `${t} · Bulkhead`;
  };
  titled(path.startsWith(`${BASE}/admin`) ? 'Operator console' : 'Console');
  replace(main(), h('p', { class: 'loading' }, 'Loading…'));
  try {
    if (!state.caps) {
      // Who the key is and what the server can do, asked at once.
      const isAdmin = path === `${BASE}/admin` || path.startsWith(`${BASE}/admin/`);
      if (!isAdmin && path !== CALLBACK && session.key && !state.me) {
        state.mePromise = tenantClient().get('/v1/me', null, { signal });
        state.mePromise.catch(() => {}); // handled where it is awaited
      }
      state.caps = await loadCapabilities();
    }
    if (path === CALLBACK) {
      await renderCallback();
      return;
    }
    if (path === `${BASE}/admin` || path.startsWith(`${BASE}/admin/`)) await renderAdmin(path, signal);
    else await renderTenant(path, signal);
    if (moved && !signal.aborted) focusHeading();
    const h1 = main().querySelector('h1');
    if (h1) titled(h1.textContent);
    // Everything the view asked for has arrived (tests wait for this).
    if (!signal.aborted) {
      window.performance.mark('bulkhead:settled');
      document.body.dataset.settled = 'true';
    }
  } catch (err) {
    if (signal.aborted || err?.name === 'AbortError') return;
    if (err instanceof ApiError && err.status === 401) {
      render();
      return;
    }
    const text = err instanceof ApiError && err.status === 403 && !path.startsWith(`${BASE}/admin`)
      ? `Refused: ${err.message}` : `Something went wrong: ${err.message}`;
    const view = main().querySelector('.view') ?? main();
    view.append(message(text, 'error'));
    document.body.dataset.ready = 'error';
    document.body.dataset.settled = 'true';
    announce(text);
  }
}

document.addEventListener('click', onClick);
window.addEventListener('popstate', () => {
  const path = window.location.pathname.replace(/\/+$/, '') || BASE;
  if (path !== state.path || window.location.search !== state.search) render();
});
render();

// Signing in with an identity provider: the OAuth 2.0 Authorization Code
// flow with PKCE (RFC 7636, S256) and OpenID Connect, run by this page as a
// public client — no secret, no server-side session. The server names the
// providers (GET /v1/identity-providers); each one's endpoints come from
// its discovery document, fetched from its issuer.
//
// What protects the flow here:
// - state (random, kept in this tab's sessionStorage) must come back
//   unchanged, or the answer is not to our request (CSRF, mix-up);
// - the code is useless without the PKCE verifier, which never leaves this
//   tab but for the token endpoint;
// - the ID token's nonce must be ours, its iss the issuer's, its aud our
//   client id: it answers this very sign-in. Its signature is not checked
//   here — it came straight from the token endpoint over the connection
//   the browser made (OpenID Connect Core §3.1.3.7 allows exactly this) —
//   and the server verifies the bearer it is sent in full;
// - the callback's query (code, state) is wiped from the address bar and
//   the history with replaceState before anything else, and the page sends
//   no Referer; the token lives in sessionStorage (this tab) only.

const PENDING = 'bulkhead.console.signin';
const MAX_PENDING_AGE_MS = 10 * 60 * 1000;
const CLOCK_SKEW_S = 300;

export const CALLBACK = '/console/signin/callback';

/** SignInError is a sign-in that failed, with a message fit to show. */
export class SignInError extends Error {}

function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return window.btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function random(n) {
  return b64url(window.crypto.getRandomValues(new Uint8Array(n)));
}

async function s256(verifier) {
  const digest = await window.crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return b64url(new Uint8Array(digest));
}

/** loopback says whether host is this machine (plain http is allowed there only). */
function loopback(host) {
  return host === 'localhost' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** endpoint checks a URL from a discovery document: absolute, https (or loopback http). */
function endpoint(doc, name) {
  let u;
  try {
    u = new URL(doc[name]);
  } catch {
    throw new SignInError(`The identity provider's discovery document has no usable ${name}.`);
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback(u.hostname))) {
    throw new SignInError(`The identity provider's ${name} must use https.`);
  }
  return u;
}

async function discover(provider) {
  const url = `${provider.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let doc;
  try {
    const res = await fetch(url, { credentials: 'omit', cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    doc = await res.json();
  } catch (err) {
    throw new SignInError(`The identity provider could not be reached (${err.message}).`);
  }
  // OpenID Connect Discovery §4.3: the document names the issuer it is for.
  if (doc.issuer !== provider.issuer) throw new SignInError('The identity provider\'s discovery document names another issuer.');
  const methods = doc.code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes('S256')) {
    throw new SignInError('The identity provider does not offer PKCE with S256.');
  }
  const authorize = endpoint(doc, 'authorization_endpoint');
  const token = endpoint(doc, 'token_endpoint');
  // The page may connect to the issuer's origin only (its
  // Content-Security-Policy): say so rather than fail on a refused fetch.
  if (token.origin !== new URL(provider.issuer).origin) {
    throw new SignInError('The identity provider\'s token endpoint is not on its issuer\'s origin, the only one the console may connect to.');
  }
  return { authorize, token };
}

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    throw new SignInError('This browser refuses the console session storage, which signing in needs.');
  }
}

/**
 * begin starts signing in with provider: it leaves the page for the
 * provider's authorization endpoint, to come back to the callback. returnTo
 * is the console path to land on afterwards.
 */
export async function begin(provider, returnTo) {
  if (!window.crypto?.subtle) throw new SignInError('Signing in needs a secure page (https, or this machine).');
  const { authorize, token } = await discover(provider);
  const pending = {
    issuer: provider.issuer,
    client_id: provider.client_id,
    token: provider.token,
    token_endpoint: token.href,
    redirect_uri: `${window.location.origin}${provider.redirect_path || CALLBACK}`,
    state: random(32),
    nonce: random(32),
    verifier: random(32), // 43 characters, as RFC 7636 §4.1 asks at least
    return_to: returnTo,
    at: Date.now(),
  };
  storage().setItem(PENDING, JSON.stringify(pending));
  const q = authorize.searchParams;
  q.set('response_type', 'code');
  q.set('client_id', pending.client_id);
  q.set('redirect_uri', pending.redirect_uri);
  q.set('scope', provider.scopes.join(' '));
  q.set('state', pending.state);
  q.set('nonce', pending.nonce);
  q.set('code_challenge', await s256(pending.verifier));
  q.set('code_challenge_method', 'S256');
  window.location.assign(authorize.href);
}

function claims(jwt) {
  const parts = `${jwt ?? ''}`.split('.');
  if (parts.length !== 3) return null;
  try {
    const bin = window.atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/**
 * takeCallback reads the provider's answer from the callback's query and
 * wipes it from the address bar and the history at once: the console calls
 * it first thing, before anything else loads. It returns null elsewhere.
 */
export function takeCallback() {
  if (window.location.pathname !== CALLBACK) return null;
  const params = new URLSearchParams(window.location.search);
  window.history.replaceState(null, '', CALLBACK);
  return params;
}

/**
 * complete finishes a sign-in with the answer takeCallback took: it checks
 * state, trades the code for tokens and checks the ID token. It resolves to
 * {token, returnTo}; a failure is a SignInError.
 */
export async function complete(params) {
  if (!params) throw new SignInError('No answer from an identity provider is waiting; sign in again.');
  const store = storage();
  const raw = store.getItem(PENDING);
  store.removeItem(PENDING); // one answer per request, whatever it is
  let pending = null;
  try {
    pending = JSON.parse(raw);
  } catch {
    // no sign-in of this tab is waiting
  }
  if (!pending || !pending.state || Date.now() - pending.at > MAX_PENDING_AGE_MS) {
    throw new SignInError('No sign-in of this tab was waiting for this answer; sign in again.');
  }
  if (params.get('state') !== pending.state) {
    throw new SignInError('The answer from the identity provider does not match the sign-in started here (state); sign in again.');
  }
  // RFC 9207: a provider that names itself must name the one asked.
  if (params.has('iss') && params.get('iss') !== pending.issuer) {
    throw new SignInError('The answer came from another identity provider than the one asked; sign in again.');
  }
  if (params.has('error')) {
    const why = [params.get('error'), params.get('error_description')].filter(Boolean).join(': ');
    throw new SignInError(`The identity provider refused: ${why}.`);
  }
  const code = params.get('code');
  if (!code) throw new SignInError('The identity provider sent no code; sign in again.');
  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: pending.redirect_uri,
    client_id: pending.client_id,
    code_verifier: pending.verifier,
  });
  let res;
  let answer;
  try {
    res = await fetch(pending.token_endpoint, {
      method: 'POST', body, credentials: 'omit', cache: 'no-store', headers: { Accept: 'application/json' },
    });
    answer = await res.json();
  } catch (err) {
    throw new SignInError(`The identity provider's token endpoint could not be reached (${err.message}).`);
  }
  if (!res.ok) {
    const why = [answer?.error, answer?.error_description].filter(Boolean).join(': ') || `HTTP ${res.status}`;
    throw new SignInError(`The identity provider refused the code: ${why}.`);
  }
  if (`${answer.token_type ?? ''}`.toLowerCase() !== 'bearer') throw new SignInError('The identity provider sent no bearer token.');
  const id = claims(answer.id_token);
  if (!id) throw new SignInError('The identity provider sent no ID token.');
  const aud = Array.isArray(id.aud) ? id.aud : [id.aud];
  const now = Date.now() / 1000;
  if (id.nonce !== pending.nonce) throw new SignInError('The ID token does not answer this sign-in (nonce); sign in again.');
  if (id.iss !== pending.issuer) throw new SignInError('The ID token names another issuer.');
  if (!aud.includes(pending.client_id) || (aud.length > 1 && id.azp && id.azp !== pending.client_id)) {
    throw new SignInError('The ID token is not for this console (aud).');
  }
  if (!(typeof id.exp === 'number' && id.exp + CLOCK_SKEW_S > now)) throw new SignInError('The ID token has expired.');
  const token = pending.token === 'id_token' ? answer.id_token : answer.access_token;
  if (!claims(token)) {
    throw new SignInError('The identity provider\'s access token is not a JWT, which the API needs (see oidc.issuers[].console.token).');
  }
  const returnTo = typeof pending.return_to === 'string' && pending.return_to.startsWith('/console/')
    && !pending.return_to.startsWith(CALLBACK) ? pending.return_to : '/console/costs';
  return { token, returnTo };
}

/** providers asks the server which identity providers it signs in with. */
export async function providers(caps) {
  if (!caps.has('get', '/v1/identity-providers')) return [];
  try {
    const res = await fetch('/v1/identity-providers', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!res.ok) return [];
    return (await res.json()).items ?? [];
  } catch {
    return [];
  }
}

// Signing in: the key (or the admin token) is typed into a password field,
// checked against the API, and kept in this tab's session only — or, for a
// tenant, a button per identity provider starts signing in there.
import { h, message } from '../dom.js';

/**
 * signInView asks for a secret. check(secret) resolves when the server
 * accepts it and throws an Error whose message is shown otherwise.
 * providers ({name, start}) are offered first: start() leaves the page for
 * the identity provider, or throws an Error whose message is shown.
 */
export function signInView({ title, labelText, hint, error, check, footer, providers = [] }) {
  const input = h('input', { id: 'secret', name: 'secret', type: 'password', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', required: true, 'aria-describedby': 'secret-hint' });
  const problem = h('div', { class: 'signin-problem' }, error ? message(error, 'error') : null);
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  // No action and no method: the secret never leaves in a URL or a form
  // post, even before the script runs (form-action 'none' in the CSP).
  const form = h('form', { class: 'signin', 'aria-labelledby': 'signin-h',
    onsubmit: async (e) => {
      e.preventDefault();
      const secret = input.value.trim();
      if (!secret) return;
      button.disabled = true;
      problem.replaceChildren();
      try {
        await check(secret);
      } catch (err) {
        problem.append(message(err.message, 'error'));
        input.focus();
      } finally {
        button.disabled = false;
      }
    } },
  h('h1', { id: 'signin-h', tabindex: '-1' }, title),
  providers.length ? h('div', { class: 'signin-providers' }, providers.map((p) => {
    const b = h('button', { type: 'button', class: 'primary', dataset: { provider: p.name },
      onclick: async () => {
        b.disabled = true;
        problem.replaceChildren();
        // Back from the provider to this very page (the back/forward cache): usable again.
        window.addEventListener('pageshow', () => {
          b.disabled = false;
        }, { once: true });
        try {
          await p.start();
        } catch (err) {
          problem.append(message(err.message, 'error'));
          b.disabled = false;
          b.focus();
        }
      } }, `Sign in with ${p.name}`);
    return b;
  }), h('p', { class: 'hint' }, 'Or with an API key:')) : null,
  h('div', { class: 'field' }, h('label', { for: 'secret' }, labelText), input),
  h('p', { id: 'secret-hint', class: 'hint' }, hint),
  problem,
  button);
  return h('div', { class: 'view signin-view', dataset: { state: 'signin' } }, form, footer ?? null);
}

// The console's only way to the server: the public API, same origin, with
// the bearer token of the session. Requests go through one small queue (at
// most MAX_IN_FLIGHT at once, the browser's own per-host limit) so a
// dashboard never floods the server, and a 429 is retried after the
// Retry-After it names, a bounded number of times.

const MAX_IN_FLIGHT = 6;
const MAX_RETRIES = 3;
const MAX_RETRY_WAIT_MS = 10000;

/** ApiError is a non-2xx answer, with the problem document when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem ?? null;
  }
}

let inFlight = 0;
const waiting = [];

async function slot(signal) {
  if (inFlight < MAX_IN_FLIGHT) {
    inFlight++;
    return;
  }
  await new Promise((resolve, reject) => {
    const entry = { resolve };
    waiting.push(entry);
    signal?.addEventListener('abort', () => {
      const i = waiting.indexOf(entry);
      if (i >= 0) waiting.splice(i, 1);
      reject(signal.reason);
    }, { once: true });
  });
}

function release() {
  const next = waiting.shift();
  if (next) next.resolve();
  else inFlight--;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

async function readProblem(res) {
  const type = res.headers.get('Content-Type') ?? '';
  if (!type.includes('json')) return null;
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/** query builds "?a=1&b=2" from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Client speaks to the API with one bearer token. onUnauthorized runs on a
 * 401, so the console can ask for the token again.
 */
export class Client {
  constructor(token, { onUnauthorized } = {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /** request sends one request and returns its decoded JSON (null for 204). */
  async request(method, path, { params, body, signal, headers } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers }, signal, cache: 'no-store' };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const url = path + query(params);
    for (let attempt = 0; ; attempt++) {
      await slot(signal);
      let res;
      try {
        res = await fetch(url, init);
      } finally {
        release();
      }
      if (res.status === 429 && attempt < MAX_RETRIES) {
        const after = Number(res.headers.get('Retry-After'));
        await sleep(Math.min(Number.isFinite(after) && after > 0 ? after * 1000 : 1000, MAX_RETRY_WAIT_MS), signal);
        continue;
      }
      if (res.status === 204) return null;
      if (!res.ok) {
        const problem = await readProblem(res);
        if (res.status === 401) this.onUnauthorized?.(problem);
        throw new ApiError(res.status, problem);
      }
      return res.json();
    }
  }

  get(path, params, opts = {}) {
    return this.request('GET', path, { ...opts, params });
  }

  post(path, body, opts = {}) {
    return this.request('POST', path, { ...opts, body });
  }

  /** all walks every page of a paginated list, up to maxPages pages. */
  async all(path, params, { signal, maxPages = 10 } = {}) {
    const items = [];
    let cursor;
    for (let page = 0; page < maxPages; page++) {
      const res = await this.get(path, { ...params, limit: 1000, cursor }, { signal });
      items.push(...res.items);
      cursor = res.next_cursor;
      if (!cursor) break;
    }
    return items;
  }
}

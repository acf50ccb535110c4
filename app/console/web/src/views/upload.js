// Billing-export upload: each file is one POST /v1/costs (all or nothing),
// sent with XMLHttpRequest because fetch reports no upload progress. A
// file's row shows the bytes sent, then the server's ingest, then what it
// answered — on a 422, the problem's detail and each bad row and field.
import { h, replace, table, message, labelCells } from '../dom.js';
import { ApiError } from '../api.js';

// TYPES maps file names to the media type POST /v1/costs reads them as.
const TYPES = [
  { re: /\.csv\.gz$/i, type: 'text/csv', encoding: 'gzip' },
  { re: /\.csv$/i, type: 'text/csv' },
  { re: /\.json$/i, type: 'application/json' },
  { re: /\.parquet$/i, type: 'application/vnd.apache.parquet' },
  { re: /\.gz$/i, type: 'text/csv', encoding: 'gzip' },
];

/** kindOf returns how a file is sent, or null when the server takes no such file. */
export function kindOf(name, caps) {
  const t = TYPES.find((k) => k.re.test(name));
  if (!t) return null;
  if (caps.ingestTypes.length && !caps.ingestTypes.includes(t.type)) return null;
  if (t.encoding && !caps.gzip) return null;
  return t;
}

function accepted(caps) {
  const exts = [];
  if (caps.ingestTypes.includes('text/csv')) exts.push('.csv');
  if (caps.ingestTypes.includes('application/json')) exts.push('.json');
  if (caps.ingestTypes.includes('application/vnd.apache.parquet')) exts.push('.parquet');
  if (caps.gzip) exts.push('.gz');
  return exts;
}

function size(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/**
 * send posts one file, reporting upload progress, and resolves with
 * {status, body, location}. It never rejects for an HTTP status. With an
 * importId, a FOCUS load is recorded under it (the server ignores it for
 * other files), so its progress can be read while the request runs.
 */
function send(file, kind, key, idempotencyKey, importId, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/costs');
    xhr.setRequestHeader('Authorization', `Bearer ${key}`);
    xhr.setRequestHeader('Content-Type', kind.type);
    xhr.setRequestHeader('Accept', 'application/json');
    if (kind.encoding) xhr.setRequestHeader('Content-Encoding', kind.encoding);
    xhr.setRequestHeader('Idempotency-Key', idempotencyKey);
    if (importId) xhr.setRequestHeader('Import-Id', importId);
    xhr.upload.addEventListener('progress', (e) => onProgress('upload', e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.upload.addEventListener('load', () => onProgress('ingest'));
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      resolve({ status: xhr.status, body, location: xhr.getResponseHeader('Location') });
    });
    xhr.addEventListener('error', () => reject(new Error('the connection failed')));
    xhr.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    signal?.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}

/**
 * idempotencyKey is a random key for one file's POST, so a retry cannot
 * write it twice. (crypto.randomUUID exists only in secure contexts; a
 * console served over plain HTTP on a private network has getRandomValues.)
 */
function idempotencyKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...b].map((x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * uuid4 is a random (version 4) UUID, for the Import-Id header. Made from
 * getRandomValues for the same reason as idempotencyKey.
 */
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// IMPORT_POLL_MS is how often a running load's progress is asked for: the
// server writes it every couple of seconds, so faster would see nothing new.
const IMPORT_POLL_MS = 1000;

/**
 * watchImport reads GET /v1/costs/imports/{id} every IMPORT_POLL_MS until
 * signal aborts (the POST answered, or the view went away). A 404 only
 * means the load has not been recorded yet, or the file is not FOCUS (the
 * server records only FOCUS loads): it keeps asking, quietly. One request
 * at a time, so a slow server is never asked twice at once.
 */
async function watchImport(ctx, id, show, signal) {
  while (!signal.aborted) {
    try {
      show(await ctx.api.get(`/v1/costs/imports/${id}`, null, { signal }));
    } catch (err) {
      if (signal.aborted || err.name === 'AbortError') return;
      if (!(err instanceof ApiError) || err.status !== 404) return; // progress is a nicety: the POST still answers
    }
    try {
      await new Promise((resolve, reject) => {
        const t = setTimeout(resolve, IMPORT_POLL_MS);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          reject(signal.reason);
        }, { once: true });
      });
    } catch {
      return;
    }
  }
}

/** track polls an import that the server runs after answering 202, until it ends. */
async function track(ctx, location, show) {
  for (let i = 0; i < 3600; i++) {
    const st = await ctx.api.get(location, null, { signal: ctx.signal });
    show(st);
    if (!['queued', 'running', 'pending'].includes(st.status)) return st;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return null;
}

const COLUMNS = [{ title: 'File' }, { title: 'Size', num: true }, { title: 'Progress' }, { title: 'Result' }];

export async function uploadView(ctx) {
  const root = h('div', { class: 'view upload' }, h('h1', { tabindex: '-1' }, 'Upload billing data'));
  if (ctx.me.role !== 'editor') {
    root.append(message('This key may only read (role viewer): uploading needs an editor key.'));
    root.dataset.state = 'readonly';
    ctx.mount(root);
    ctx.ready('upload');
    return root;
  }
  const exts = accepted(ctx.caps);
  const rows = h('tbody');
  const input = h('input', { id: 'u-files', type: 'file', multiple: true, accept: exts.join(',') || null });
  const button = h('button', { type: 'submit', class: 'primary', id: 'u-send' }, 'Upload');
  const form = h('form', { class: 'upload-form', 'aria-describedby': 'u-help',
    onsubmit: async (e) => {
      e.preventDefault();
      const files = [...input.files];
      if (!files.length) {
        ctx.announce('Choose a file first.');
        return;
      }
      button.disabled = true;
      input.value = '';
      root.querySelector('#u-list').hidden = false;
      try {
        // One at a time: each is all or nothing, and the server's ingest
        // is the bottleneck anyway.
        for (const f of files) await uploadOne(ctx, f, rows);
      } finally {
        button.disabled = false;
      }
    } },
  h('div', { class: 'field' }, h('label', { for: 'u-files' }, 'Billing export files'), input),
  button);
  root.append(
    h('p', { id: 'u-help' }, `Each file is ingested whole or not at all. This server takes ${exts.join(', ') || 'CSV'} files of cost rows`,
      ctx.caps.ingestTypes.includes('text/csv') ? ` (a header row of account_id, service, usage_date, amount, currency${ctx.caps.focus ? ', or a FOCUS export' : ''})` : '', '.'),
    form,
    h('section', { 'aria-labelledby': 'u-h', id: 'u-list', hidden: true }, h('h2', { id: 'u-h' }, 'Uploads'),
      table({ caption: 'Files sent in this session', className: 'uploads',
        columns: COLUMNS, rows })));
  ctx.mount(root);
  ctx.ready('upload');
  return root;
}

async function uploadOne(ctx, file, rows) {
  const progress = h('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
  // ingest is the server's side of a FOCUS load: rows written so far.
  const ingest = h('span', { class: 'ingest', hidden: true });
  const result = h('td', { class: 'result', 'aria-live': 'polite' }, 'Waiting');
  const tr = h('tr', { dataset: { file: file.name, state: 'sending' } },
    h('th', { scope: 'row' }, file.name), h('td', { class: 'num' }, size(file.size)), h('td', { class: 'progress' }, progress, ingest), result);
  rows.append(labelCells(tr, COLUMNS));
  const kind = kindOf(file.name, ctx.caps);
  if (!kind) {
    tr.dataset.state = 'failed';
    replace(result, h('span', { class: 'error' }, 'This server does not take files of this kind.'));
    progress.remove();
    return;
  }
  const key = idempotencyKey();
  const importId = ctx.caps.has('get', '/v1/costs/imports/{id}') ? uuid4() : null;
  const showImport = (st) => {
    if (!st || st.id !== importId) return;
    tr.dataset.importId = st.id;
    tr.dataset.importStatus = st.status;
    tr.dataset.importRows = String(st.rows_done ?? 0);
    ingest.hidden = false;
    const rows = Number(st.rows_done ?? 0).toLocaleString('en-US');
    replace(ingest, st.status === 'running' ? `Ingest: ${rows} rows written` : `Ingest ${st.status}: ${rows} rows`);
  };
  const watching = new AbortController();
  const stopWatching = () => watching.abort();
  ctx.signal?.addEventListener('abort', stopWatching, { once: true });
  const watched = importId ? watchImport(ctx, importId, showImport, watching.signal) : Promise.resolve();
  try {
    const res = await send(file, kind, ctx.key, key, importId, (phase, loaded, total) => {
      if (phase === 'upload') {
        progress.value = total ? Math.round((loaded / total) * 100) : 0;
        tr.dataset.sent = String(loaded);
        replace(result, `Sending ${size(loaded)} of ${size(total)}`);
      } else {
        progress.removeAttribute('value'); // indeterminate while the server ingests
        tr.dataset.state = 'ingesting';
        replace(result, 'Uploaded; the server is ingesting…');
      }
    }, ctx.signal);
    stopWatching();
    await watched;
    // The load's own record, once it has ended: its final row count, or that
    // it failed. A 201 names a recorded (FOCUS) load; after a 422 there may
    // be none (not FOCUS, or refused before loading): a 404, said nothing.
    if (importId && (res.body?.import_id === importId || res.status === 422)) {
      try {
        showImport(await ctx.api.get(`/v1/costs/imports/${importId}`, null, { signal: ctx.signal }));
      } catch (err) {
        if (err.name === 'AbortError') return;
      }
    }
    if (res.status === 201 || res.status === 200) {
      progress.value = 100;
      tr.dataset.state = 'done';
      const n = res.body?.inserted ?? res.body?.rows ?? '?';
      replace(result, h('span', { class: 'ok' }, `Ingested ${n} rows`));
      ctx.announce(`${file.name}: ingested ${n} rows.`);
    } else if (res.status === 202 && res.location) {
      tr.dataset.state = 'ingesting';
      const st = await track(ctx, res.location, (s) => replace(result, `Ingesting: ${s.rows_done ?? s.rows ?? 0} rows`));
      tr.dataset.state = st?.status === 'done' || st?.status === 'succeeded' ? 'done' : 'failed';
      replace(result, st?.detail ?? st?.status ?? 'unknown');
    } else {
      fail(tr, result, progress, res.status, res.body);
      ctx.announce(`${file.name}: refused (${res.status}).`);
    }
  } catch (err) {
    if (err.name === 'AbortError') return;
    fail(tr, result, progress, 0, { detail: err.message });
  } finally {
    stopWatching();
    ctx.signal?.removeEventListener('abort', stopWatching);
  }
}

function fail(tr, result, progress, status, problem) {
  tr.dataset.state = 'failed';
  tr.classList.add('failed');
  progress.value = 0;
  const errors = problem?.errors ?? [];
  replace(result,
    h('p', { class: 'error', dataset: { status: String(status) } }, `${status || 'Error'}: ${problem?.detail || problem?.title || 'the upload failed'}`),
    errors.length ? h('ul', { class: 'field-errors' }, errors.slice(0, 20).map((e) => h('li', null, h('code', null, e.field), ` ${e.detail}`)),
      errors.length > 20 ? h('li', null, `and ${errors.length - 20} more`) : null) : null);
}

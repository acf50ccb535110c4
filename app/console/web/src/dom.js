// DOM building without HTML strings: elements, attributes and text nodes
// only, so nothing the API returns is ever parsed as markup (and the
// Trusted Types policy of the Content-Security-Policy holds).

/**
 * h makes an element: h('a', {href: '/x', class: 'y', onclick: fn}, 'text', child).
 * Attributes of null, undefined or false are left out; true is "".
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'value') value = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  if (value !== undefined) el.value = value;
  return el;
}

/** append adds children (strings, numbers, nodes, nested arrays; null skipped). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** replace swaps el's children for the given ones. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * table makes an accessible table: a caption, column headers, and rows of
 * cells. Each cell is labelled with its column (data-label), which narrow
 * screens show beside the value when rows become cards.
 */
export function table({ caption, columns, rows, className, label }) {
  // rows may be a <tbody> that its owner fills later (labelCells then).
  const body = rows instanceof HTMLTableSectionElement ? rows : h('tbody', null, rows);
  for (const tr of body.rows) labelCells(tr, columns);
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': label ?? caption },
    h('table', { class: className },
      caption ? h('caption', null, caption) : null,
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.title)))),
      body));
}

/** labelCells labels each cell of a row with its column's title. */
export function labelCells(tr, columns) {
  [...tr.children].forEach((cell, i) => {
    if (columns[i] && !cell.dataset.label) cell.dataset.label = columns[i].title;
  });
  return tr;
}

/** message is a paragraph that says something about a section's state. */
export function message(text, kind = 'info') {
  return h('p', { class: `msg msg-${kind}`, role: kind === 'error' ? 'alert' : null }, text);
}

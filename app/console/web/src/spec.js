// What this server can do, read from its own OpenAPI document, so the
// console offers new dimensions, metrics, upload formats and admin views
// as the API gains them, and hides what the server does not have.

/** Capabilities is what the console learned from /openapi.json. */
export class Capabilities {
  constructor(doc) {
    this.doc = doc ?? { paths: {} };
    const summary = this.op('get', '/v1/costs/summary');
    const params = (summary?.parameters ?? []).map((p) => this.resolve(p));
    this.summaryParams = new Map(params.map((p) => [p.name, p]));
    const groupByParam = this.summaryParams.get('group_by');
    let dims = choices(this.schema(groupByParam?.schema));
    // A server whose group_by is a plain string names its choices in the
    // description instead (`service`, ..., `tag:<key>`).
    if (!dims.values.length) dims = described(groupByParam?.description);
    /** groupBy lists the summary's groupings (service, account, day, ...). */
    this.groupBy = dims.values;
    /** tagPrefix is "tag:" when the summary groups by tag keys. */
    this.tagPrefix = dims.prefixes.find((p) => p.startsWith('tag')) ?? null;
    /** metrics lists the amounts a summary can total, empty when fixed. */
    this.metrics = choices(this.schema(this.summaryParams.get('metric')?.schema)).values;
    const ingest = this.op('post', '/v1/costs');
    const body = this.resolve(ingest?.requestBody ?? {});
    /** ingestTypes lists the media types POST /v1/costs takes. */
    this.ingestTypes = Object.keys(body.content ?? {});
    /** focus says whether POST /v1/costs reads FOCUS billing exports. */
    this.focus = /FOCUS/.test(`${ingest?.description ?? ''} ${body.description ?? ''}`);
    const ingestParams = (ingest?.parameters ?? []).map((p) => this.resolve(p));
    /** gzip says whether uploads may be sent with Content-Encoding: gzip. */
    this.gzip = ingestParams.some((p) => p.in === 'header' && p.name.toLowerCase() === 'content-encoding')
      || /gzip/i.test(`${ingest?.description ?? ''} ${body.description ?? ''}`);
  }

  /** op returns the operation at method and path, or null. */
  op(method, path) {
    return this.doc.paths?.[path]?.[method] ?? null;
  }

  /** has reports whether the server has method at path. */
  has(method, path) {
    return this.op(method, path) !== null;
  }

  /** resolve follows a local $ref ("#/components/..."). */
  resolve(obj) {
    let o = obj;
    for (let i = 0; o && o.$ref && i < 10; i++) {
      o = o.$ref.replace(/^#\//, '').split('/').reduce((node, part) => node?.[part], this.doc);
    }
    return o ?? {};
  }

  schema(s) {
    return s ? this.resolve(s) : null;
  }

  /** dimensions are the groupings that are not time: what spend stacks by. */
  get dimensions() {
    return this.groupBy.filter((g) => g !== 'day' && g !== 'month' && !g.startsWith('tag:'));
  }

  /** hasMonth says whether the server totals by month itself. */
  get hasMonth() {
    return this.groupBy.includes('month');
  }
}

/**
 * choices lists the values a string schema allows: its enum, or the literal
 * alternatives of a pattern such as ^(service|account|tag:.+)$, whose
 * open-ended ones ("tag:") come back as prefixes.
 */
function choices(schema) {
  const out = { values: [], prefixes: [] };
  if (!schema) return out;
  const variants = [schema, ...(schema.oneOf ?? []), ...(schema.anyOf ?? [])];
  for (const s of variants) {
    for (const v of s.enum ?? []) if (typeof v === 'string' && !out.values.includes(v)) out.values.push(v);
    const m = /^\^?\(?([^)]*)\)?\$?$/.exec(s.pattern ?? '');
    if (!m) continue;
    for (const alt of m[1].split('|')) {
      if (/^[a-z_]+$/.test(alt)) {
        if (!out.values.includes(alt)) out.values.push(alt);
      } else {
        const prefix = /^([a-z_]+:)/.exec(alt);
        if (prefix && !out.prefixes.includes(prefix[1])) out.prefixes.push(prefix[1]);
      }
    }
  }
  return out;
}

/**
 * described lists the choices a description names in backquotes: `name`
 * as a value, `prefix:<...>` as an open-ended prefix.
 */
function described(text) {
  const out = { values: [], prefixes: [] };
  for (const [, word] of `${text ?? ''}`.matchAll(/`([^`]+)`/g)) {
    if (/^[a-z_]+$/.test(word)) {
      if (!out.values.includes(word)) out.values.push(word);
    } else {
      const prefix = /^([a-z_]+:)</.exec(word);
      if (prefix && !out.prefixes.includes(prefix[1])) out.prefixes.push(prefix[1]);
    }
  }
  return out;
}

/** loadCapabilities fetches /openapi.json; a server without one offers the basics. */
export async function loadCapabilities() {
  try {
    // No extra headers: the page preloads this very request (index.html).
    const res = await fetch('/openapi.json');
    if (res.ok) return new Capabilities(await res.json());
  } catch {
    // fall through: the console still signs in and shows what it can
  }
  return new Capabilities(null);
}

// Exact decimal arithmetic on the API's money strings.
//
// The API writes amounts as exact decimal strings ("12.345600",
// "0.00000080000", "-3.5"). Every total the console shows as text is
// computed here, on BigInt integers scaled by a power of ten, so nothing is
// ever rounded by a float. Floats (toNumber) are for drawing only.

const DECIMAL = /^([+-])?(\d+)(?:\.(\d*))?$/;

/**
 * parse reads a decimal string into a scaled integer.
 * @param {string|number} s
 * @returns {{v: bigint, scale: number}}
 */
export function parse(s) {
  const m = DECIMAL.exec(String(s).trim());
  if (!m) throw new Error(`not a decimal number: ${JSON.stringify(s)}`);
  const frac = m[3] ?? '';
  let v = BigInt(m[2] + frac);
  if (m[1] === '-') v = -v;
  return { v, scale: frac.length };
}

function pow10(n) {
  return 10n ** BigInt(n);
}

function rescale(d, scale) {
  return d.v * pow10(scale - d.scale);
}

/**
 * str writes a scaled integer as a decimal string with exactly `scale`
 * decimals.
 */
function str(v, scale) {
  const neg = v < 0n;
  let digits = (neg ? -v : v).toString();
  if (scale > 0) {
    digits = digits.padStart(scale + 1, '0');
    digits = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  }
  return (neg ? '-' : '') + digits;
}

/** add returns a + b exactly, with the larger of their scales. */
export function add(a, b) {
  const x = parse(a);
  const y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  return str(rescale(x, scale) + rescale(y, scale), scale);
}

/** sub returns a - b exactly. */
export function sub(a, b) {
  return add(a, neg(b));
}

/** neg returns -a. */
export function neg(a) {
  const x = parse(a);
  return str(-x.v, x.scale);
}

/** sum returns the exact sum of a list of decimal strings ("0" when empty). */
export function sum(list) {
  let scale = 0;
  const parsed = list.map((s) => {
    const d = parse(s);
    scale = Math.max(scale, d.scale);
    return d;
  });
  let total = 0n;
  for (const d of parsed) total += rescale(d, scale);
  return str(total, scale);
}

/** cmp returns -1, 0 or 1 as a is less than, equal to or greater than b. */
export function cmp(a, b) {
  const x = parse(a);
  const y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  const d = rescale(x, scale) - rescale(y, scale);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** isZero reports whether a is zero. */
export function isZero(a) {
  return parse(a).v === 0n;
}

/** abs returns |a|. */
export function abs(a) {
  const x = parse(a);
  return str(x.v < 0n ? -x.v : x.v, x.scale);
}

/**
 * mulDiv returns a × num ÷ den rounded half away from zero to `scale`
 * decimals: for estimates (a budget's projection), never for totals.
 * num and den are positive integers.
 */
export function mulDiv(a, num, den, scale = 2) {
  const x = parse(a);
  // a·num/den at `scale` decimals = x.v·num·10^scale / (den·10^x.scale).
  const n = x.v * BigInt(num) * pow10(scale);
  const d = BigInt(den) * pow10(x.scale);
  const neg = n < 0n;
  const an = neg ? -n : n;
  let q = an / d;
  if ((an % d) * 2n >= d) q += 1n;
  return str(neg ? -q : q, scale);
}

/**
 * trim drops trailing zeros past `minScale` decimals: "12.340000" → "12.34",
 * "0.00000080000" → "0.0000008". The value is unchanged.
 */
export function trim(a, minScale = 2) {
  const x = parse(a);
  let { v, scale } = x;
  while (scale > minScale && v % 10n === 0n) {
    v /= 10n;
    scale -= 1;
  }
  if (scale < minScale) {
    v *= pow10(minScale - scale);
    scale = minScale;
  }
  return str(v, scale);
}

/**
 * format writes a for people: grouped thousands, at least two decimals and
 * every significant one ("1234567.891000" → "1,234,567.891"). Exact: no
 * digit is rounded away.
 */
export function format(a, minScale = 2) {
  const t = trim(a, minScale);
  const neg = t.startsWith('-');
  const [int, frac] = (neg ? t.slice(1) : t).split('.');
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return (neg ? '-' : '') + grouped + (frac ? `.${frac}` : '');
}

/** toNumber is a float near a: for drawing and percentages only. */
export function toNumber(a) {
  return Number(a);
}

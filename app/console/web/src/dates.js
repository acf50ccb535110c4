// Calendar days as the API speaks them: "YYYY-MM-DD", UTC.

const DAY_MS = 86400000;
const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;

/** isDay reports whether s is a real "YYYY-MM-DD" date. */
export function isDay(s) {
  const m = DAY.exec(s ?? '');
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCFullYear() === +m[1] && d.getUTCMonth() === +m[2] - 1 && d.getUTCDate() === +m[3];
}

/** toMs is the UTC midnight of day s, in milliseconds. */
export function toMs(s) {
  const m = DAY.exec(s);
  return Date.UTC(+m[1], +m[2] - 1, +m[3]);
}

/** fromMs is the day of a UTC instant. */
export function fromMs(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

/** today is the current UTC day. */
export function today() {
  return fromMs(Date.now());
}

/** addDays returns s moved by n days. */
export function addDays(s, n) {
  return fromMs(toMs(s) + n * DAY_MS);
}

/** days counts the days from a to b, both included. */
export function days(a, b) {
  return Math.round((toMs(b) - toMs(a)) / DAY_MS) + 1;
}

/** monthStart is the first day of s's month. */
export function monthStart(s) {
  return `${s.slice(0, 7)}-01`;
}

/** monthEnd is the last day of s's month. */
export function monthEnd(s) {
  const d = new Date(toMs(monthStart(s)));
  d.setUTCMonth(d.getUTCMonth() + 1);
  return fromMs(d.getTime() - DAY_MS);
}

/**
 * buckets cuts [from, to] into days or calendar months (the first and last
 * clipped to the range): [{key, from, to}], key being the day or "YYYY-MM".
 */
export function buckets(from, to, interval) {
  const out = [];
  if (interval === 'month') {
    for (let start = from; start <= to; start = addDays(monthEnd(start), 1)) {
      const end = monthEnd(start) < to ? monthEnd(start) : to;
      out.push({ key: start.slice(0, 7), from: start, to: end });
    }
  } else {
    for (let d = from; d <= to; d = addDays(d, 1)) out.push({ key: d, from: d, to: d });
  }
  return out;
}

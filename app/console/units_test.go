package console_test

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/browser"
)

// The console's pure modules, run from their sources in the browser: exact
// decimal arithmetic (against math/big), calendar buckets, the budget
// projection, and reading capabilities from OpenAPI documents the server
// does not serve yet (a group_by pattern with tag keys, a metric enum, a
// gzip header).
func testUnits(t *testing.T, b *browser.Browser) {
	srv := httptest.NewServer(http.FileServer(http.Dir("web/src")))
	t.Cleanup(srv.Close)
	p := open(t, b, nil)
	p.do("open the sources", chromedp.Navigate(srv.URL+"/"))

	failures := eval[[]string](p, `(async () => {
  const dec = await import('/decimal.js');
  const dates = await import('/dates.js');
  const { projection } = await import('/views/budgets.js');
  const { Capabilities } = await import('/spec.js');
  const out = [];
  const eq = (name, got, want) => { if (JSON.stringify(got) !== JSON.stringify(want)) out.push(name + ': got ' + JSON.stringify(got) + ', want ' + JSON.stringify(want)); };
  const throws = (name, fn) => { try { fn(); out.push(name + ': did not throw'); } catch {} };
  eq('0.1+0.2', dec.sum(['0.1', '0.2']), '0.3');
  eq('micro credit', dec.cmp(dec.add('0.00000080000', '-0.0000008'), '0'), 0);
  eq('a thousand millionths', dec.sum(Array(1000).fill('0.000001')), '0.001000');
  eq('past 2^53', dec.add('99999999999999.999999', '0.000001'), '100000000000000.000000');
  eq('format', dec.format('1234567.891000'), '1,234,567.891');
  eq('format micro', dec.format('-0.00000080000'), '-0.0000008');
  eq('format whole', dec.format('-1200'), '-1,200.00');
  eq('trim', dec.trim('12.340000'), '12.34');
  eq('sub', dec.sub('1', '1.000001'), '-0.000001');
  eq('cmp', dec.cmp('-1.5', '-1.49'), -1);
  eq('mulDiv', [dec.mulDiv('100', 31, 10), dec.mulDiv('1', 2, 3), dec.mulDiv('-1', 2, 3), dec.mulDiv('0.005', 1, 1)], ['310.00', '0.67', '-0.67', '0.01']);
  for (const bad of ['abc', '1e5', '', '1.2.3', '--1']) throws('parse ' + bad, () => dec.parse(bad));
  eq('days across a leap day', dates.days('2024-02-28', '2024-03-01'), 3);
  eq('month end', [dates.monthEnd('2024-02-10'), dates.monthEnd('2025-12-31')], ['2024-02-29', '2025-12-31']);
  eq('month buckets', dates.buckets('2025-01-15', '2025-03-10', 'month'),
    [{ key: '2025-01', from: '2025-01-15', to: '2025-01-31' }, { key: '2025-02', from: '2025-02-01', to: '2025-02-28' }, { key: '2025-03', from: '2025-03-01', to: '2025-03-10' }]);
  eq('day buckets', dates.buckets('2024-12-31', '2025-01-01', 'day').map((b) => b.key), ['2024-12-31', '2025-01-01']);
  eq('not a day', [dates.isDay('2025-02-29'), dates.isDay('2024-02-29'), dates.isDay('2024-2-1')], [false, true, false]);
  const budget = { spent: '100', period_start: '2025-04-01', period_end: '2025-04-30' };
  eq('projection', [projection(budget, '2025-04-10'), projection(budget, '2025-04-30'), projection(budget, '2025-05-02'), projection(budget, '2025-03-31')],
    ['300.00', '100', '100', null]);

  const param = (name, schema) => ({ name, in: 'query', schema });
  const future = new Capabilities({ paths: {
    '/v1/costs/summary': { get: { parameters: [
      { $ref: '#/components/parameters/From' },
      param('group_by', { type: 'string', pattern: '^(service|service_category|provider|account|region|day|month|tag:.+)$' }),
      param('metric', { type: 'string', enum: ['billed_cost', 'effective_cost'] }),
    ] } },
    '/v1/costs': { post: { description: 'A FOCUS export, also with Content-Encoding: gzip.', requestBody: { content: { 'text/csv': {}, 'application/vnd.apache.parquet': {} } } } },
    '/admin/v1/tenants/stats': { get: {} },
  }, components: { parameters: { From: param('from', { type: 'string' }) } } });
  eq('future dimensions', future.dimensions, ['service', 'service_category', 'provider', 'account', 'region']);
  eq('future month', future.hasMonth, true);
  eq('future tag', future.tagPrefix, 'tag:');
  eq('future metrics', future.metrics, ['billed_cost', 'effective_cost']);
  eq('future upload', [future.ingestTypes, future.gzip, future.focus], [['text/csv', 'application/vnd.apache.parquet'], true, true]);
  eq('future stats', future.has('get', '/admin/v1/tenants/stats'), true);
  const today = new Capabilities({ paths: { '/v1/costs/summary': { get: { parameters: [
    param('group_by', { type: 'string', enum: ['service', 'account', 'day'] })] } } } });
  eq('today', [today.dimensions, today.hasMonth, today.tagPrefix, today.metrics, today.has('get', '/admin/v1/tenants/stats')],
    [['service', 'account'], false, null, [], false]);
  eq('no document', new Capabilities(null).dimensions, []);
  return out;
})()`, chromedp.EvalAwaitPromise)
	for _, f := range failures {
		t.Error(f)
	}

	// Random sums, to the twelfth decimal and past 2^53, against math/big.
	r := rand.New(rand.NewPCG(20, 1))
	for round := range 20 {
		var amounts []string
		want := new(big.Rat)
		for range 1 + r.IntN(300) {
			scale := r.IntN(13)
			a := fmt.Sprintf("%d", r.Int64N(1e14))
			if scale > 0 {
				a = fmt.Sprintf("%s.%0*d", a, scale, r.Int64N(pow10(scale)))
			}
			if r.IntN(4) == 0 {
				a = "-" + a
			}
			amounts = append(amounts, a)
			want.Add(want, rat(t, a))
		}
		got := eval[string](p, fmt.Sprintf(`import('/decimal.js').then((d) => d.sum(%s))`, jsArray(amounts)), chromedp.EvalAwaitPromise)
		if rat(t, got).Cmp(want) != 0 {
			t.Errorf("round %d: the console sums %d amounts to %s, math/big to %s", round, len(amounts), got, want.FloatString(12))
		}
	}
}

func pow10(n int) int64 {
	v := int64(1)
	for range n {
		v *= 10
	}
	return v
}

func jsArray(ss []string) string {
	quoted := make([]string, len(ss))
	for i, s := range ss {
		quoted[i] = `"` + s + `"`
	}
	return "[" + strings.Join(quoted, ",") + "]"
}

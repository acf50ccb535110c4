package harness

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Workload names, as they appear in the figures.
const (
	PointRead    = "point_read"
	CostList     = "cost_list"
	CostSummary  = "cost_summary"
	Ingest       = "ingest"
	BudgetStatus = "budget_status"
)

// Workloads lists every workload, in report order.
var Workloads = []string{PointRead, CostList, CostSummary, Ingest, BudgetStatus}

// ingestRows is the size of one ingest request.
const ingestRows = 1000

// largeShare is the share of requests that go to the large tenants; the
// rest are spread uniformly over the small ones.
const largeShare = 0.2

// target is a deployment under load: its URL and each tenant's key.
type target struct {
	name string
	url  string
	keys []string // by tenant index
}

// requests builds the requests of the workloads. It is safe for concurrent
// use.
type requests struct {
	data   *dataset
	mu     sync.Mutex
	bodies map[int][]byte // ingest bodies by tenant index
}

func newRequests(d *dataset) *requests {
	return &requests{data: d, bodies: map[int][]byte{}}
}

// body returns the ingest body of tenant i, building it on first use.
func (q *requests) body(i int) []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	b, ok := q.bodies[i]
	if !ok {
		b = q.data.ingestBody(q.data.Tenants[i], ingestRows)
		q.bodies[i] = b
	}
	return b
}

// targeter returns the requests of workload w against t, to tenants of
// pop, drawn from a generator seeded with seed: every strategy gets the
// same sequence of tenants and requests in a round.
func (q *requests) targeter(w string, t target, pop population, seed uint64) vegeta.Targeter {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, uint64(len(w))))
	return func(tgt *vegeta.Target) error {
		mu.Lock()
		i := pop.pick(r)
		k := r.IntN(1 << 20)
		mu.Unlock()
		return q.fill(tgt, w, t, i, k)
	}
}

// sweeper returns passes passes of workload w's requests against t over
// every tenant of pop in turn, each with a fresh draw of the request's own
// choices (which account, which month), and then no more
// (vegeta.ErrNoTargets): the warm-up that reaches every tenant alike.
func (q *requests) sweeper(w string, t target, pop population, passes int, seed uint64) vegeta.Targeter {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, uint64(len(w))))
	order := slices.Concat(pop.large, pop.small)
	n := 0
	return func(tgt *vegeta.Target) error {
		mu.Lock()
		if n >= passes*len(order) {
			mu.Unlock()
			return vegeta.ErrNoTargets
		}
		i := order[n%len(order)]
		n++
		k := r.IntN(1 << 20)
		mu.Unlock()
		return q.fill(tgt, w, t, i, k)
	}
}

// fill makes tgt workload w's request of tenant i against t; k draws the
// request's own choices.
func (q *requests) fill(tgt *vegeta.Target, w string, t target, i, k int) error {
	d := q.data
	spec := d.Tenants[i]
	tgt.Method, tgt.Body = http.MethodGet, nil
	tgt.Header = http.Header{"Authorization": {"Bearer " + t.keys[i]}}
	switch w {
	case PointRead:
		tgt.URL = t.url + "/v1/accounts/" + accountID(i, 1+k%spec.Accounts).String()
	case CostList:
		from, to := d.month(k % 12)
		tgt.URL = t.url + "/v1/costs?limit=100&from=" + from + "&to=" + to
	case CostSummary:
		from, to := d.month(k % 12)
		tgt.URL = t.url + "/v1/costs/summary?group_by=service&from=" + from + "&to=" + to
	case BudgetStatus:
		tgt.URL = t.url + "/v1/budgets/" + budgetID(i, 1+k%2).String()
	case Ingest:
		tgt.Method, tgt.URL, tgt.Body = http.MethodPost, t.url+"/v1/costs", q.body(i)
		tgt.Header.Set("Content-Type", "application/json")
	default:
		return fmt.Errorf("unknown workload %q", w)
	}
	return nil
}

// population is the tenants a run's requests go to, by index: the large
// ones and the others.
type population struct{ large, small []int }

// everyone is every tenant of d.
func (d *dataset) everyone() population { return population{d.Large, d.Small} }

// hot is the first n tenants of d, the large ones first: an active set
// that fits the database strategy's connection budget.
func (d *dataset) hot(n int) population {
	large := d.Large[:min(n, len(d.Large))]
	return population{large, d.Small[:min(n-len(large), len(d.Small))]}
}

// size is the number of tenants in p.
func (p population) size() int { return len(p.large) + len(p.small) }

// pick draws a tenant: a large one with probability largeShare, else a
// small one, uniformly within each group.
func (p population) pick(r *rand.Rand) int {
	if len(p.large) > 0 && (len(p.small) == 0 || r.Float64() < largeShare) {
		return p.large[r.IntN(len(p.large))]
	}
	return p.small[r.IntN(len(p.small))]
}

// outcome is what one run measured.
type outcome struct {
	ok, failed int
	elapsed    time.Duration
	latencies  []time.Duration // of the successful requests, sorted
	firstError string
}

// throughput is successful requests per second.
func (o outcome) throughput() float64 {
	if o.elapsed <= 0 {
		return 0
	}
	return float64(o.ok) / o.elapsed.Seconds()
}

// quantile returns the q-quantile latency in milliseconds (nearest rank),
// NaN without successes.
func (o outcome) quantile(q float64) float64 {
	if len(o.latencies) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(o.latencies)))) - 1
	return float64(o.latencies[max(i, 0)]) / float64(time.Millisecond)
}

// attack runs tr for d, at rate requests per second, or as fast as workers
// concurrent clients go when rate is 0 (saturation). Latency is vegeta's:
// from the request being sent to the response read. At a fixed rate vegeta
// adds workers whenever all are busy, so a slow server does not slow the
// arrivals down.
func attack(ctx context.Context, tr vegeta.Targeter, rate float64, workers int, d time.Duration) outcome {
	opts := []func(*vegeta.Attacker){
		vegeta.Workers(uint64(workers)),
		vegeta.KeepAlive(true),
		vegeta.Timeout(30 * time.Second),
		vegeta.MaxBody(256),
	}
	pacer := vegeta.ConstantPacer{} // zero: no pacing
	if rate > 0 {
		// Freq per Per, in thousandths, for rates below one per second.
		pacer = vegeta.ConstantPacer{Freq: max(int(math.Round(rate*1000)), 1), Per: 1000 * time.Second}
	} else {
		opts = append(opts, vegeta.MaxWorkers(uint64(workers)))
	}
	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	var o outcome
	begin := time.Now()
	for res := range atk.Attack(tr, pacer, d, "") {
		if res.Error == vegeta.ErrNoTargets.Error() {
			continue // a sweeper's end (each busy worker sees it), not a request
		}
		if res.Error == "" && res.Code >= 200 && res.Code < 300 {
			o.ok++
			o.latencies = append(o.latencies, res.Latency)
			continue
		}
		o.failed++
		if o.firstError == "" {
			o.firstError = fmt.Sprintf("%d %s %s", res.Code, res.Error, res.Body)
		}
	}
	o.elapsed = time.Since(begin)
	slices.Sort(o.latencies)
	return o
}

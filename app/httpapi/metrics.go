package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/build"
)

// Metrics is the process's Prometheus registry: HTTP requests by method,
// route and status, client connections, the load walls' refusals and
// pools, the serving pool, the Go runtime, and which build this is. Every
// label takes values from a fixed set, whatever clients send: unknown
// methods are "other", unmatched paths "unmatched", and no label names a
// tenant (per-tenant figures are `bulkhead tenant stats`'s).
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	handler    http.Handler
}

// NewMetrics registers the metrics on a registry of its own (never the
// global one, so that tests can build servers side by side).
func NewMetrics(pools *postgres.Pools) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_http_requests_total",
			Help: "HTTP requests answered, by method, route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulkhead_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_limit_rejections_total",
			Help: "Requests refused by a rate limit, by reason: rate_limit (a key's bucket), auth_failures (a client address that failed to authenticate too often).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"rate_limit", "auth_failures"} {
		m.rejections.WithLabelValues(r) // every series from the start
	}
	bi := build.Read()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "bulkhead_build_info",
		Help:        "Always 1; its labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.Commit, "goversion": bi.GoVersion},
	})
	info.Set(1)
	reg.MustRegister(m.requests, m.duration, m.rejections, info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pools.App != nil {
		reg.MustRegister(postgres.NewPoolCollector("serving", pools.App))
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return m
}

// rejected counts a request refused for reason (one of the fixed set).
func (m *Metrics) rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// watch registers the gauges of the server's connections and held
// refusals, and of the admission Gate's pools (labelled by pool:
// "serving" or "budget").
func (m *Metrics) watch(s *Server, g *limits.Gate) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bulkhead_http_connections_open",
			Help: "Client connections open (at most http.max_connections).",
		}, func() float64 { n, _ := s.openConns(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bulkhead_http_connections_shed_total",
			Help: "Client connections closed at http.max_connections: idle ones closed to make room, or new ones refused.",
		}, func() float64 { _, n := s.openConns(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bulkhead_http_refusals_held_total",
			Help: "Refusals (a 429, or a 4xx to a request that did not authenticate) held for limits.tarpit.delay before they were answered: their API key or client address had been refused more often than limits.tarpit.rate allows.",
		}, func() float64 { return float64(s.tarpit.Total()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bulkhead_http_refusals_holding",
			Help: "Refusals being held now (at most limits.tarpit.max_held).",
		}, func() float64 { return float64(s.tarpit.Held()) }),
	)
	if g != nil {
		m.reg.MustRegister(gateCollector{g})
	}
}

// knownMethods are the methods the method label keeps; any other is
// "other", so that made-up methods cannot grow the label set.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

// methodLabel is method, or "other" when it is not a standard one.
func methodLabel(method string) string {
	if knownMethods[method] {
		return method
	}
	return "other"
}

// statusLabel is the status code, or "other" outside 100-599.
func statusLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}

func (m *Metrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		method := methodLabel(c.Request().Method)
		m.requests.WithLabelValues(method, route, statusLabel(c.Response().Status)).Inc()
		m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		return nil
	}
}

// gateCollector exports the admission Gate's pools.
type gateCollector struct{ g *limits.Gate }

var (
	gateSlots = prometheus.NewDesc("bulkhead_admission_slots", "Connection slots the admission gate hands out in a pool.", []string{"pool"}, nil)
	gateHeld  = prometheus.NewDesc("bulkhead_admission_held", "Slots held by running tenant transactions.", []string{"pool"}, nil)
	gateQueue = prometheus.NewDesc("bulkhead_admission_queued", "Tenant transactions waiting for a slot.", []string{"pool"}, nil)
	gateTens  = prometheus.NewDesc("bulkhead_admission_tenants", "Tenants holding or waiting for a slot.", []string{"pool"}, nil)
	gateWaits = prometheus.NewDesc("bulkhead_admission_waits_total", "Tenant transactions that waited for a slot.", nil, nil)
	gateRefus = prometheus.NewDesc("bulkhead_admission_rejections_total",
		"Tenant transactions refused, by reason: tenant_busy (the tenant's cap and queue are full: 429), server_busy (no slot came free in time, or the queue of all tenants is full: 503).",
		[]string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (gateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gateSlots, gateHeld, gateQueue, gateTens, gateWaits, gateRefus} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c gateCollector) Collect(ch chan<- prometheus.Metric) {
	for name, st := range c.g.Stats() {
		ch <- prometheus.MustNewConstMetric(gateSlots, prometheus.GaugeValue, float64(st.Slots), name)
		ch <- prometheus.MustNewConstMetric(gateHeld, prometheus.GaugeValue, float64(st.Held), name)
		ch <- prometheus.MustNewConstMetric(gateQueue, prometheus.GaugeValue, float64(st.Queued), name)
		ch <- prometheus.MustNewConstMetric(gateTens, prometheus.GaugeValue, float64(st.Tenants), name)
	}
	t := c.g.Totals()
	ch <- prometheus.MustNewConstMetric(gateWaits, prometheus.CounterValue, float64(t.Waits))
	ch <- prometheus.MustNewConstMetric(gateRefus, prometheus.CounterValue, float64(t.TenantBusy), "tenant_busy")
	ch <- prometheus.MustNewConstMetric(gateRefus, prometheus.CounterValue, float64(t.ServerBusy), "server_busy")
}

package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports a pgxpool's statistics as Prometheus metrics, with
// a pool label.
type PoolCollector struct {
	name  string
	pool  *pgxpool.Pool
	descs map[string]*prometheus.Desc
}

// NewPoolCollector returns a collector of pool's statistics labelled name.
func NewPoolCollector(name string, pool *pgxpool.Pool) *PoolCollector {
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("bulkhead_db_pool_"+metric, help, nil, prometheus.Labels{"pool": name})
	}
	return &PoolCollector{name: name, pool: pool, descs: map[string]*prometheus.Desc{
		"max":      d("max_connections", "Most connections the pool may open."),
		"total":    d("connections", "Connections open."),
		"acquired": d("acquired_connections", "Connections in use."),
		"idle":     d("idle_connections", "Connections idle."),
		"waits":    d("acquire_waits_total", "Acquires that had to wait for a connection."),
		"wait":     d("acquire_wait_seconds_total", "Time spent waiting for connections."),
	}}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.GaugeValue, v) }
	ct := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.CounterValue, v) }
	g("max", float64(s.MaxConns()))
	g("total", float64(s.TotalConns()))
	g("acquired", float64(s.AcquiredConns()))
	g("idle", float64(s.IdleConns()))
	ct("waits", float64(s.EmptyAcquireCount()))
	ct("wait", s.EmptyAcquireWaitTime().Seconds())
}

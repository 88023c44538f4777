package web

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector reads the kiosk's counters and the store's pool counts at
// each scrape, so nothing is counted twice and nothing needs updating
// between scrapes.
type collector struct {
	s *Server

	hellos, workers, busy, results, entries, storeSeconds, storeUp, sessions *prometheus.Desc
}

func newCollector(s *Server) *collector {
	return &collector{
		s:            s,
		hellos:       prometheus.NewDesc("provstick_kiosk_hellos_total", "Hellos by what became of them (received = connections accepted).", []string{"result"}, nil),
		workers:      prometheus.NewDesc("provstick_kiosk_workers", "Provisioning workers.", nil, nil),
		busy:         prometheus.NewDesc("provstick_kiosk_workers_busy", "Provisioning workers busy with a machine.", nil, nil),
		results:      prometheus.NewDesc("provstick_kiosk_provisioning_runs_total", "Finished provisioning runs by outcome.", []string{"outcome"}, nil),
		entries:      prometheus.NewDesc("provstick_kiosk_entries", "Pool entries by state (provisioning progress), summed over profiles.", []string{"state"}, nil),
		storeSeconds: prometheus.NewDesc("provstick_kiosk_store_query_seconds", "How long the scrape's pool-status query took.", nil, nil),
		storeUp:      prometheus.NewDesc("provstick_kiosk_store_up", "1 if the scrape could read the store.", nil, nil),
		sessions:     prometheus.NewDesc("provstick_web_sessions", "Web console sessions held.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hellos, c.workers, c.busy, c.results, c.entries, c.storeSeconds, c.storeUp, c.sessions} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.s.o.Counters != nil {
		k := c.s.o.Counters()
		for _, v := range []struct {
			n string
			v uint64
		}{{"received", k.HellosReceived}, {"psk", k.HellosPSK}, {"pki", k.HellosPKI}, {"malformed", k.HellosMalformed}, {"dropped", k.HellosDropped}} {
			ch <- prometheus.MustNewConstMetric(c.hellos, prometheus.CounterValue, float64(v.v), v.n)
		}
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(k.Workers))
		ch <- prometheus.MustNewConstMetric(c.busy, prometheus.GaugeValue, float64(k.WorkersBusy))
		for o, n := range k.Results {
			ch <- prometheus.MustNewConstMetric(c.results, prometheus.CounterValue, float64(n), o)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	st, err := c.s.o.Store.Status(ctx)
	ch <- prometheus.MustNewConstMetric(c.storeSeconds, prometheus.GaugeValue, time.Since(t0).Seconds())
	up := 1.0
	if err != nil {
		up = 0
		c.s.log.Error("metrics: reading pool status", "err", err)
	} else {
		for _, t := range totals(st) {
			ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(t.N), t.State)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.storeUp, prometheus.GaugeValue, up)
	c.s.sessions.mu.Lock()
	n := len(c.s.sessions.m)
	c.s.sessions.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n))
}

// newMetrics is the /metrics handler: the kiosk's collector plus the Go
// runtime and process collectors, on a registry of its own.
func newMetrics(s *Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{s}, ErrorHandling: promhttp.ContinueOnError})
}

type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Error("metrics", "err", v) }

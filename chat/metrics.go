package chat

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the hub's Prometheus series: how long each phase of a turn takes, so that a
// slow first token can be traced to its cause.
type metrics struct {
	phase *prometheus.HistogramVec
	turns *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "maula_chat_turn_phase_seconds",
			Help:    "Duration of each phase of a chat turn: rate (limit check), prompt (context and history load), reserve (credits), first_token (provider call to first delta), record (messages stored), settle (credits settled).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"phase"}),
		turns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maula_chat_turns_total", Help: "Chat turns by how they ended.",
		}, []string{"status"}),
	}
	if reg != nil {
		reg.MustRegister(m.phase, m.turns)
	}
	return m
}

func (m *metrics) observe(phase string, since time.Time) {
	m.phase.WithLabelValues(phase).Observe(time.Since(since).Seconds())
}

package bench

import (
	"math"
	"slices"
	"time"
)

// Hist records latencies exactly (every sample kept): the runs are small enough, and exact
// percentiles need no bucket error analysis.
type Hist struct{ s []time.Duration }

// Add records one sample.
func (h *Hist) Add(d time.Duration) { h.s = append(h.s, d) }

// Merge adds every sample of o.
func (h *Hist) Merge(o *Hist) { h.s = append(h.s, o.s...) }

// Count is the number of samples.
func (h *Hist) Count() int { return len(h.s) }

// Quantile returns the q-quantile (0..1), nearest rank.
func (h *Hist) Quantile(q float64) time.Duration {
	if len(h.s) == 0 {
		return 0
	}
	slices.Sort(h.s)
	i := int(math.Ceil(q*float64(len(h.s)))) - 1
	return h.s[max(0, min(i, len(h.s)-1))]
}

// Max returns the largest sample.
func (h *Hist) Max() time.Duration { return h.Quantile(1) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	c := slices.Clone(xs)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

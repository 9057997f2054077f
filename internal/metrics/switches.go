package metrics

import "github.com/prometheus/client_golang/prometheus"

// SwitchStats are the degrade switches: those in force and what they did.
type SwitchStats struct {
	// InForce lists the switches on, as (switch, app) pairs; app "" is
	// the whole node. Bounded: switches times configured apps.
	InForce [][2]string
	// Changes counts the times each switch went on or off, by name.
	Changes map[string]uint64
	// Effects count what the switches did, by effect: held (messages
	// stored but not delivered while paused), refused (connections),
	// recovery_off (recoveries answered "cannot recover"), queries_off
	// (presence, unread and live-only publishes refused).
	Effects map[string]uint64
}

var (
	descSwitchOn      = prometheus.NewDesc("herald_switch_on", "Degrade switches in force (1), by switch and app (app=\"\" for the whole node).", []string{"switch", "app"}, nil)
	descSwitchChanges = prometheus.NewDesc("herald_switch_changes_total", "Times a degrade switch went on or off, by switch.", []string{"switch"}, nil)
	descSwitchEffects = prometheus.NewDesc("herald_switch_effects_total", "What the degrade switches did, by effect: held (messages stored, not delivered while paused), refused (connections), recovery_off (recoveries answered cannot recover), queries_off (queries and live-only publishes refused).", []string{"effect"}, nil)
)

type switchCollector func() SwitchStats

func (f switchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSwitchOn
	ch <- descSwitchChanges
	ch <- descSwitchEffects
}

func (f switchCollector) Collect(ch chan<- prometheus.Metric) {
	s := f()
	for _, k := range s.InForce {
		ch <- prometheus.MustNewConstMetric(descSwitchOn, prometheus.GaugeValue, 1, k[0], k[1])
	}
	for name, v := range s.Changes {
		ch <- prometheus.MustNewConstMetric(descSwitchChanges, prometheus.CounterValue, float64(v), name)
	}
	for effect, v := range s.Effects {
		ch <- prometheus.MustNewConstMetric(descSwitchEffects, prometheus.CounterValue, float64(v), effect)
	}
}

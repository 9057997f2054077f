package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/herald-push/herald/client"
)

// StormConfig sizes a storm run.
type StormConfig struct {
	Stocks int // stocks in the market; all of them hit +10 % in the storm
	Users  int // users, each with one measuring client
	Follow int // stocks each user follows with a ±X % alert (X from 1 to 10)
	// Normal is how long the market ticks normally before the storm, every
	// Interval with volatility VolBP basis points per tick.
	Normal   time.Duration
	Interval time.Duration
	VolBP    float64
	// Wait bounds the wait for every alert to arrive, after each phase.
	Wait time.Duration
	// ConnectTimeout bounds connecting every measuring client.
	ConnectTimeout time.Duration
}

// StormReport is what a storm run measured.
type StormReport struct {
	Stocks, Users, Follow int
	Alerts                int // alerts set (user, stock) pairs

	NormalTicks     int
	NormalAlerts    int
	NormalDelivered int
	NormalRate      float64 // alerts per second in the normal phase
	NormalPeak      float64 // alerts per second of the busiest normal tick

	StormAlerts    int           // alerts the storm produced (expected)
	StormBuckets   int           // index buckets the storm tick visited
	IndexTime      time.Duration // time to find the storm's alerts in the index
	PushTime       time.Duration // from the tick to the last push answered
	Accepted       int           // storm alerts Herald stored
	Delivered      int           // distinct storm alerts the clients received
	Lost           int           // StormAlerts - Delivered
	Duplicates     int           // repeats the clients received (at-least-once)
	DeliverTime    time.Duration // from the tick to the last alert received
	P50, P99, PMax time.Duration // tick-to-client latency of storm alerts
	PeakRate       float64       // most storm alerts received in one second
	AvgRate        float64       // Delivered / DeliverTime
	Ratio          float64       // PeakRate / NormalRate
}

// meter is the measuring side: one client per user, counting what arrives.
type meter struct {
	mu        sync.Mutex
	seen      map[string]struct{} // user + "/" + message id
	dups      int
	normal    int
	stormTick uint64 // 0 until the storm
	storm     []time.Time
	latencies []time.Duration
	clients   []*client.Client
}

// receive records one message for user.
func (m *meter) receive(user string, msg client.Message) {
	now := time.Now()
	var a AlertData
	if err := json.Unmarshal(msg.Payload, &a); err != nil || a.Type != "alert" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := user + "/" + msg.ID
	if _, ok := m.seen[key]; ok {
		m.dups++
		return
	}
	m.seen[key] = struct{}{}
	if m.stormTick != 0 && a.Tick >= m.stormTick {
		m.storm = append(m.storm, now)
		m.latencies = append(m.latencies, now.Sub(time.Unix(0, a.TickNanos)))
		return
	}
	m.normal++
}

// counts returns the distinct normal and storm alerts received so far.
func (m *meter) counts() (normal, storm int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.normal, len(m.storm)
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// StormUser is the id of user i in a storm run.
func StormUser(i int) string { return fmt.Sprintf("u%05d", i) }

// SetupStormAlerts gives each of users users a ±X % alert on follow
// stocks: user u follows stocks u*follow .. u*follow+follow-1 (mod the
// number of stocks), so each stock gets users*follow/stocks followers, with
// thresholds spread over 1..10 %. It returns the number of alerts set.
func SetupStormAlerts(m *Market, ix *Index, users, follow int) (int, error) {
	quotes := m.Quotes()
	n := 0
	for u := range users {
		for j := range follow {
			q := quotes[(u*follow+j)%len(quotes)]
			bp := 100 * (1 + (u*7+j*3)%10)
			added, err := ix.Add(StormUser(u), q.Symbol, bp)
			if err != nil {
				return n, fmt.Errorf("storm alerts: %w", err)
			}
			if added {
				n++
			}
		}
	}
	return n, nil
}

// RunStorm measures the service under a market storm. It connects one
// measuring client per user (the Go SDK, acknowledging its inbox), ticks
// the market normally for cfg.Normal to measure the normal alert rate, then
// moves every stock to its +10 % limit in one tick and measures how the
// alerts are pushed and delivered. Every phase is bounded in time.
func RunStorm(ctx context.Context, svc *Service, cfg StormConfig, log *slog.Logger) (StormReport, error) {
	rep := StormReport{Stocks: svc.Market.Len(), Users: cfg.Users, Follow: cfg.Follow}
	svc.Market.Scatter(300) // the day is under way: prices within ±3 %
	var err error
	if rep.Alerts, err = SetupStormAlerts(svc.Market, svc.Index, cfg.Users, cfg.Follow); err != nil {
		return rep, err
	}
	log.Info("storm: alerts set", "stocks", rep.Stocks, "users", cfg.Users, "alerts", rep.Alerts)

	m := &meter{seen: make(map[string]struct{})}
	defer func() {
		for _, c := range m.clients {
			_ = c.Close()
		}
	}()
	if err := m.connect(ctx, svc.Herald, cfg); err != nil {
		return rep, err
	}
	log.Info("storm: measuring clients connected", "clients", len(m.clients))

	// Normal phase.
	start := time.Now()
	t := time.NewTicker(cfg.Interval)
	for time.Since(start) < cfg.Normal {
		select {
		case <-ctx.Done():
			t.Stop()
			return rep, fmt.Errorf("storm: normal phase: %w", ctx.Err())
		case <-t.C:
		}
		res, err := svc.Apply(ctx, svc.Market.Walk(cfg.VolBP))
		if err != nil {
			t.Stop()
			return rep, fmt.Errorf("storm: normal phase: %w", err)
		}
		rep.NormalTicks++
		rep.NormalAlerts += res.Alerts
		rep.NormalPeak = max(rep.NormalPeak, float64(res.Alerts)/cfg.Interval.Seconds())
	}
	t.Stop()
	rep.NormalRate = float64(rep.NormalAlerts) / time.Since(start).Seconds()
	waitFor(ctx, cfg.Wait, func() bool { n, _ := m.counts(); return n >= rep.NormalAlerts })
	rep.NormalDelivered, _ = m.counts()
	log.Info("storm: normal phase", "ticks", rep.NormalTicks, "alerts", rep.NormalAlerts, "delivered", rep.NormalDelivered, "rate", fmt.Sprintf("%.1f/s", rep.NormalRate))
	if rep.NormalDelivered < rep.NormalAlerts {
		return rep, fmt.Errorf("storm: normal phase: %d of %d alerts arrived within %v", rep.NormalDelivered, rep.NormalAlerts, cfg.Wait)
	}

	// The storm: every stock hits +10 % in one tick.
	m.mu.Lock()
	m.stormTick = svc.tick.Load() + 1
	m.mu.Unlock()
	moves := svc.Market.LimitUp(rep.Stocks)
	tick := time.Now()
	var idx time.Duration
	for _, mv := range moves { // the index alone, timed (Apply walks it again)
		rep.StormBuckets += svc.Index.Crossed(mv.Symbol, mv.From, mv.To, func(Hit) {})
	}
	idx = time.Since(tick)
	rep.IndexTime = idx
	tick = time.Now()
	res, err := svc.Apply(ctx, moves)
	rep.PushTime = time.Since(tick)
	rep.StormAlerts, rep.Accepted = res.Alerts, res.Accepted
	if err != nil {
		return rep, fmt.Errorf("storm: %w", err)
	}
	log.Info("storm: pushed", "alerts", rep.StormAlerts, "accepted", rep.Accepted, "push_time", rep.PushTime)
	waitFor(ctx, cfg.Wait, func() bool { _, n := m.counts(); return n >= rep.StormAlerts })

	m.mu.Lock()
	defer m.mu.Unlock()
	rep.Delivered, rep.Duplicates = len(m.storm), m.dups
	rep.Lost = rep.StormAlerts - rep.Delivered
	if len(m.storm) > 0 {
		slices.SortFunc(m.storm, func(a, b time.Time) int { return a.Compare(b) })
		rep.DeliverTime = m.storm[len(m.storm)-1].Sub(tick)
		rep.AvgRate = float64(len(m.storm)) / rep.DeliverTime.Seconds()
		slices.Sort(m.latencies)
		q := func(p float64) time.Duration {
			return m.latencies[min(len(m.latencies)-1, int(p*float64(len(m.latencies))))]
		}
		rep.P50, rep.P99, rep.PMax = q(0.50), q(0.99), m.latencies[len(m.latencies)-1]
		// Peak: the most arrivals within any one second (sliding window).
		lo := 0
		for hi := range m.storm {
			for m.storm[hi].Sub(m.storm[lo]) >= time.Second {
				lo++
			}
			rep.PeakRate = max(rep.PeakRate, float64(hi-lo+1))
		}
	}
	if rep.NormalRate > 0 {
		rep.Ratio = rep.PeakRate / rep.NormalRate
	}
	if rep.Lost != 0 {
		return rep, fmt.Errorf("storm: %d of %d alerts lost (not received within %v)", rep.Lost, rep.StormAlerts, cfg.Wait)
	}
	return rep, nil
}

// connect starts one measuring client per user, 64 connects at a time, and
// waits until all are connected or cfg.ConnectTimeout passes.
func (m *meter) connect(ctx context.Context, h *Herald, cfg StormConfig) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 64)
		errMu sync.Mutex
		errs  []error
	)
	m.clients = make([]*client.Client, cfg.Users)
	for u := range cfg.Users {
		user := StormUser(u)
		tok, err := h.Token(user, nil, time.Hour)
		if err != nil {
			return fmt.Errorf("storm: %w", err)
		}
		c, err := client.New(client.Config{
			URLs: []string{h.WS}, Token: tok, Device: "meter", AutoAck: true,
			OnMessage: func(msg client.Message) { m.receive(user, msg) },
		})
		if err != nil {
			return fmt.Errorf("storm: client %s: %w", user, err)
		}
		m.clients[u] = c
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.Connect(ctx); err != nil {
				errMu.Lock()
				errs = append(errs, fmt.Errorf("connect %s: %w", user, err))
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("storm: %d of %d clients failed to connect: %w", len(errs), cfg.Users, errors.Join(errs[:min(3, len(errs))]...))
	}
	return nil
}

// Print writes the report for people, and one line for BENCHMARKS.md.
func (r StormReport) Print(log *slog.Logger) {
	fmt.Printf("stocks %d, users %d (one measuring client each), alerts set %d (%d per user)\n", r.Stocks, r.Users, r.Alerts, r.Follow)
	fmt.Printf("normal: %d ticks, %d alerts, %d delivered, %.1f alerts/s (busiest tick %.0f/s)\n", r.NormalTicks, r.NormalAlerts, r.NormalDelivered, r.NormalRate, r.NormalPeak)
	fmt.Printf("storm: %d stocks at +10%% in one tick: %d buckets visited, %d alerts found in %v\n", r.Stocks, r.StormBuckets, r.StormAlerts, r.IndexTime.Round(time.Microsecond))
	fmt.Printf("storm: %d accepted by Herald in %v, %d delivered (%d lost, %d duplicates) in %v\n", r.Accepted, r.PushTime.Round(time.Millisecond), r.Delivered, r.Lost, r.Duplicates, r.DeliverTime.Round(time.Millisecond))
	fmt.Printf("storm: tick-to-client latency p50 %v, p99 %v, max %v\n", r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.PMax.Round(time.Millisecond))
	fmt.Printf("storm: peak %.0f alerts/s delivered (average %.0f/s) = %.0fx the normal %.1f/s\n", r.PeakRate, r.AvgRate, r.Ratio, r.NormalRate)
	log.Info("storm report", "alerts", r.StormAlerts, "accepted", r.Accepted, "delivered", r.Delivered, "lost", r.Lost,
		"p50", r.P50, "p99", r.P99, "peak_rate", r.PeakRate, "normal_rate", r.NormalRate, "ratio", r.Ratio)
}

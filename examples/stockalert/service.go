package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// PricesTopic is the topic the service publishes prices to.
const PricesTopic = "prices"

// AlertData is the payload of an alert in the user's inbox.
type AlertData struct {
	Type      string `json:"type"` // "alert"
	Symbol    string `json:"symbol"`
	BP        int    `json:"bp"`  // the threshold crossed, basis points
	Dir       string `json:"dir"` // "up" or "down"
	Ref       int64  `json:"ref"`
	Price     int64  `json:"price"`
	Tick      uint64 `json:"tick"`
	TickNanos int64  `json:"tick_ns"` // when the tick was processed: delivery latency starts here
}

// Service is the alert backend: it applies ticks to the market, finds the
// users to notify in the index and pushes their alerts through Herald.
type Service struct {
	Market *Market
	Index  *Index
	Herald *Herald
	Log    *slog.Logger
	// Batch is the most messages per bulk push; Concurrency the most
	// pushes in flight for one tick.
	Batch, Concurrency int
	// PublishPrices publishes every tick's prices to PricesTopic.
	PublishPrices bool
	// OnPushed, when set, is called after each push call with the number
	// of messages Herald accepted (not duplicates).
	OnPushed func(accepted int)

	run  string // distinguishes this process's message ids from earlier runs
	tick atomic.Uint64
	mu   sync.Mutex // one tick at a time: alerts of a stock stay in tick order

	Produced, Accepted, Failed atomic.Int64
}

// NewService returns a service over market and index pushing through h.
func NewService(m *Market, ix *Index, h *Herald, log *slog.Logger) *Service {
	return &Service{
		Market: m, Index: ix, Herald: h, Log: log,
		Batch: 500, Concurrency: 8,
		run: strconv.FormatInt(time.Now().UnixNano(), 36),
	}
}

// TickResult sums up what one tick did.
type TickResult struct {
	Tick     uint64
	Moves    int
	Buckets  int // index buckets visited
	Alerts   int // messages produced
	Accepted int // messages Herald stored (not duplicates)
	Elapsed  time.Duration
}

// Apply finds the alerts of moves, pushes them, and (when PublishPrices is
// set) publishes the new prices. It returns when every push has been
// answered; a push that still fails after its retries is counted in Failed
// and reported in the error.
func (s *Service) Apply(ctx context.Context, moves []Move) (TickResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	res := TickResult{Tick: s.tick.Add(1), Moves: len(moves)}
	var msgs []OutMessage
	for _, mv := range moves {
		res.Buckets += s.Index.Crossed(mv.Symbol, mv.From, mv.To, func(h Hit) {
			data, err := json.Marshal(AlertData{
				Type: "alert", Symbol: h.Symbol, BP: h.BP, Dir: h.Dir.String(), Ref: mv.Ref, Price: mv.To,
				Tick: res.Tick, TickNanos: start.UnixNano(),
			})
			if err != nil {
				panic(err) // plain struct: cannot fail
			}
			id := fmt.Sprintf("a-%s-%d-%s-%d%c", s.run, res.Tick, h.Symbol, h.BP, h.Dir.String()[0])
			for _, u := range h.Users {
				msgs = append(msgs, OutMessage{User: u, ID: id, Data: data})
			}
		})
	}
	res.Alerts = len(msgs)
	s.Produced.Add(int64(len(msgs)))
	err := s.push(ctx, msgs, &res)
	if s.PublishPrices && len(moves) > 0 {
		if perr := s.publishPrices(ctx, moves); perr != nil && err == nil {
			err = perr
		}
	}
	res.Elapsed = time.Since(start)
	return res, err
}

// push sends msgs in bulk pushes of at most Batch, Concurrency at a time.
func (s *Service) push(ctx context.Context, msgs []OutMessage, res *TickResult) error {
	if len(msgs) == 0 {
		return nil
	}
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, max(1, s.Concurrency))
		accepted atomic.Int64
		errMu    sync.Mutex
		firstErr error
	)
	batch := max(1, min(s.Batch, 10000))
	for lo := 0; lo < len(msgs); lo += batch {
		chunk := msgs[lo:min(lo+batch, len(msgs))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results, err := s.Herald.Push(ctx, chunk)
			if err != nil {
				s.Failed.Add(int64(len(chunk)))
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				return
			}
			n := 0
			for _, r := range results {
				if !r.Duplicate {
					n++
				}
			}
			accepted.Add(int64(n))
			s.Accepted.Add(int64(n))
			if s.OnPushed != nil {
				s.OnPushed(n)
			}
		}()
	}
	wg.Wait()
	res.Accepted = int(accepted.Load())
	if firstErr != nil {
		return fmt.Errorf("tick %d: %w", res.Tick, firstErr)
	}
	return nil
}

// publishPrices publishes the new prices of moves to PricesTopic, at most
// 500 stocks per message so that a message stays well under max_payload.
func (s *Service) publishPrices(ctx context.Context, moves []Move) error {
	for lo := 0; lo < len(moves); lo += 500 {
		part := moves[lo:min(lo+500, len(moves))]
		prices := make(map[string]int64, len(part))
		for _, mv := range part {
			prices[mv.Symbol] = mv.To
		}
		if err := s.Herald.Publish(ctx, PricesTopic, map[string]any{"type": "prices", "prices": prices}); err != nil {
			return err
		}
	}
	return nil
}

// Run walks the market every interval with volatility volBP per tick, until
// ctx ends, and applies each tick. Errors are logged, not fatal: the next
// tick goes on.
func (s *Service) Run(ctx context.Context, interval time.Duration, volBP float64) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.Apply(ctx, s.Market.Walk(volBP))
		if err != nil && ctx.Err() == nil {
			s.Log.Error("tick", "tick", res.Tick, "err", err)
			continue
		}
		if res.Alerts > 0 {
			s.Log.Info("tick", "tick", res.Tick, "moves", res.Moves, "buckets", res.Buckets, "alerts", res.Alerts, "accepted", res.Accepted, "elapsed", res.Elapsed)
		}
	}
}

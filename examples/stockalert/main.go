// Command stockalert is an example app backend for Herald: stock price
// alerts. Users ask to be told when a stock moves by ±X %; the backend
// simulates price ticks, keeps an index from thresholds to users built in
// advance (so a tick finds whom to notify without scanning), and pushes the
// alerts to the users' inboxes through Herald's HTTP API, in bulk pushes
// when a tick produces many. It serves a web page (web/, with the SDK's
// browser bundle) where a user sets alerts, watches prices and sees alerts
// arrive.
//
// With -storm it measures a market storm instead: every stock hits its
// +10 % limit at once, and it reports alerts produced, pushes accepted,
// delivery latency and loss, measured by one Go client per user.
//
// The app's secret and API key come from the environment
// (STOCKALERT_SECRET, STOCKALERT_API_KEY): they are the ones in Herald's
// configuration. See README.md; run.sh starts Herald and this backend
// together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "stockalert:", err)
		os.Exit(1)
	}
}

// defaultBundle finds the SDK's browser bundle from the repository root or
// from this directory.
func defaultBundle() string {
	for _, p := range []string{"sdk/js/dist/herald.min.js", "../../sdk/js/dist/herald.min.js"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "sdk/js/dist/herald.min.js"
}

func run(args []string) error {
	fs := flag.NewFlagSet("stockalert", flag.ContinueOnError)
	var (
		addr     = fs.String("addr", "127.0.0.1:8700", "address the web page and its API listen on (port 0: any)")
		api      = fs.String("api", envOr("STOCKALERT_HERALD_API", "http://127.0.0.1:8081"), "Herald's server API (env STOCKALERT_HERALD_API)")
		ws       = fs.String("ws", envOr("STOCKALERT_HERALD_WS", "ws://127.0.0.1:8080/ws"), "Herald's WebSocket URL for clients (env STOCKALERT_HERALD_WS)")
		app      = fs.String("app", envOr("STOCKALERT_APP", "demo"), "Herald app id (env STOCKALERT_APP)")
		stocks   = fs.Int("stocks", 0, "stocks in the market (default 12, or 2000 with -storm)")
		interval = fs.Duration("interval", time.Second, "time between ticks")
		vol      = fs.Float64("vol", 25, "price volatility per tick, basis points of the reference price")
		publish  = fs.Bool("prices", true, "publish prices to the topic \"prices\" every tick (not in -storm)")
		bundle   = fs.String("sdk", defaultBundle(), "the SDK's browser bundle (sdk/js/dist/herald.min.js)")
		batch    = fs.Int("batch", 500, "most messages per bulk push")
		conc     = fs.Int("concurrency", 8, "bulk pushes in flight per tick")
		duration = fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
		seed     = fs.Uint64("seed", 1, "seed of the price walk")

		storm       = fs.Bool("storm", false, "measure a market storm (every stock at +10 % at once) and exit")
		stormUsers  = fs.Int("storm-users", 2000, "storm: users, one measuring client each")
		stormFollow = fs.Int("storm-follow", 50, "storm: stocks each user follows with a ±X % alert")
		stormNormal = fs.Duration("storm-normal", 10*time.Second, "storm: normal ticking before the storm, to measure the normal rate")
		stormVol    = fs.Float64("storm-vol", 2, "storm: volatility per tick in the normal phase, basis points")
		stormWait   = fs.Duration("storm-wait", 60*time.Second, "storm: longest wait for the alerts to arrive")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("flags: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	secret, key := os.Getenv("STOCKALERT_SECRET"), os.Getenv("STOCKALERT_API_KEY")
	if secret == "" || key == "" {
		return errors.New("set STOCKALERT_SECRET and STOCKALERT_API_KEY to the app's secret and API key in Herald's configuration")
	}
	if *stocks == 0 {
		*stocks = 12
		if *storm {
			*stocks = 2000
		}
	}
	h := &Herald{API: *api, WS: *ws, App: *app, Secret: []byte(secret), Key: key,
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	svc := NewService(NewMarket(*stocks, *seed), NewIndex(), h, log)
	svc.Batch, svc.Concurrency = *batch, *conc
	for _, q := range svc.Market.Quotes() {
		svc.Index.AddStock(q.Symbol, q.Ref)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	if *storm {
		rep, err := RunStorm(ctx, svc, StormConfig{
			Stocks: *stocks, Users: *stormUsers, Follow: *stormFollow,
			Normal: *stormNormal, Interval: *interval, VolBP: *stormVol,
			Wait: *stormWait, ConnectTimeout: 60 * time.Second,
		}, log)
		rep.Print(log)
		return err
	}

	svc.PublishPrices = *publish
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: svc.Handler(*bundle), ReadHeaderTimeout: 10 * time.Second}
	url := "http://" + ln.Addr().String() + "/"
	log.Info("stockalert listening", "url", url, "herald_api", *api, "herald_ws", *ws, "stocks", *stocks)
	fmt.Printf("Open %s?user=alice\n", url)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	go svc.Run(ctx, *interval, *vol)
	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// envOr returns the environment variable k, or def when it is empty.
func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

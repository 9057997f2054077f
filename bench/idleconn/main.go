// Command idleconn measures how much server memory an idle, authenticated,
// topic-subscribed client connection costs Herald.
//
// In its default (coordinator) mode it builds the herald binary (or takes
// -herald), starts `herald serve` as a child on free loopback ports with a
// throw-away data directory, opens -warmup connections itself and takes the
// server's baseline RSS, then re-executes itself as -workers worker
// processes that together open -conns more connections (CONNECT as a
// distinct user, one device, then SUBSCRIBE to one topic) and hold them
// idle. When the server confirms them all (GET /v1/stats), it waits -settle,
// samples the server's VmRSS -samples times and reports (final - baseline)
// RSS / (connections open at the end - at the baseline), with the Go heap
// and goroutine figures of the server's /metrics beside it.
//
// Usage:
//
//	go run ./bench/idleconn                      # 19,000 WebSocket connections
//	go run ./bench/idleconn -conns 5000 -json
//	go run ./bench/idleconn -transport tcp
//
// With -heap-profile FILE the server runs inside this binary instead
// (`idleconn serve`: the same config.Load, server.New and Start as herald
// serve) with heap profiling on, and writes in-use heap profiles at the
// baseline (FILE.base) and at the end (FILE), for
// go tool pprof -diff_base FILE.base FILE. Herald itself exposes no pprof.
//
// Everything is bounded: the run stops by itself after -timeout (exit 2),
// exits 1 if any connection failed or the server lost one, and kills its
// children on exit or Ctrl-C. Loopback only: clients dial from
// 127.0.0.2, 127.0.0.3, ... so that no source address runs out of ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the command-line flags of both modes.
type options struct {
	// Coordinator.
	conns       int
	warmup      int
	workers     int
	transport   string
	herald      string
	timeout     time.Duration
	settle      time.Duration
	baseSettle  time.Duration
	samples     int
	sampleEvery time.Duration
	heartbeat   time.Duration
	jsonOut     bool
	keep        bool
	logLevel    string
	serverArgs  string
	heapProfile string
	profileRate int

	// Both.
	rate        int // connections per second, all workers together
	concurrency int // dials in flight per process
	srcIPs      int // source addresses 127.0.0.2 ... 127.0.0.(1+srcIPs)
	topic       string
	dialTimeout time.Duration

	// Worker.
	worker   bool
	workerID int
	url      string
	dataDir  string
	first    int
	count    int
	deadline time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" { // the profiling server, see -heap-profile
		os.Exit(runServe(os.Args[2:], os.Stdout, os.Stderr))
	}
	var o options
	fs := flag.NewFlagSet("idleconn", flag.ExitOnError)
	fs.IntVar(&o.conns, "conns", 19000, "connections opened by the workers and measured (on top of -warmup)")
	fs.IntVar(&o.warmup, "warmup", 200, "connections opened (and kept) before the baseline is taken")
	fs.IntVar(&o.workers, "workers", 3, "worker processes sharing -conns (each process may hold at most ~20,000 sockets)")
	fs.StringVar(&o.transport, "transport", "ws", "client transport: ws (WebSocket) or tcp (raw TCP listener)")
	fs.StringVar(&o.herald, "herald", "", "herald binary to run; default: go build ./cmd/herald into a temporary directory")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "the whole run stops after this long (exit status 2)")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "wait after all connections are confirmed, before sampling RSS")
	fs.DurationVar(&o.baseSettle, "baseline-settle", 3*time.Second, "wait after the warm-up connections, before the baseline RSS")
	fs.IntVar(&o.samples, "samples", 5, "RSS samples (the median is used)")
	fs.DurationVar(&o.sampleEvery, "sample-interval", time.Second, "time between RSS samples")
	fs.DurationVar(&o.heartbeat, "heartbeat", 180*time.Second, "server -heartbeat; idle connections are closed after heartbeat+grace")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object on stdout instead of the human summary")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (server log, data dir)")
	fs.StringVar(&o.logLevel, "server-log-level", "info", "server -log-level (its log is <tmp>/server.log)")
	fs.StringVar(&o.heapProfile, "heap-profile", "", "diagnosis: run the server in this binary (`idleconn serve`: the same server.New as herald serve) with\nheap profiling on, and write its in-use heap profile to this file after the final samples.\nThe RSS figures of such a run are not representative.")
	fs.IntVar(&o.profileRate, "profile-rate", 1, "runtime.MemProfileRate of the profiling server (-heap-profile)")
	fs.StringVar(&o.serverArgs, "server-args", "", "extra space-separated flags for herald serve, for experiments (e.g. \"-auth-timeout 60s\")")

	fs.IntVar(&o.rate, "rate", 3000, "connection attempts per second, all workers together")
	fs.IntVar(&o.concurrency, "concurrency", 64, "connection attempts in flight per process")
	fs.IntVar(&o.srcIPs, "src-ips", 8, "client source addresses used: 127.0.0.2 ... 127.0.0.(1+N)")
	fs.StringVar(&o.topic, "topic", "news", "topic every connection subscribes to")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 15*time.Second, "bound on one connection's dial, CONNECT and SUBSCRIBE")

	fs.BoolVar(&o.worker, "worker", false, "internal: run as a worker process")
	fs.IntVar(&o.workerID, "worker-id", 0, "internal: worker number")
	fs.StringVar(&o.url, "url", "", "internal: server URL (ws://... or tcp://...)")
	fs.StringVar(&o.dataDir, "data-dir", "", "internal: server data directory holding dev-app.yaml")
	fs.IntVar(&o.first, "first", 0, "internal: index of the worker's first connection")
	fs.IntVar(&o.count, "count", 0, "internal: connections the worker opens")
	fs.DurationVar(&o.deadline, "deadline", 0, "internal: the worker exits after this long whatever happens")
	_ = fs.Parse(os.Args[1:])

	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "idleconn:", err)
		os.Exit(2)
	}
	raiseNoFile()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if o.worker {
		code := runWorker(ctx, o)
		stop()
		os.Exit(code)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, errTimeout)
	code := runCoordinator(ctx, o)
	cancel()
	stop()
	os.Exit(code)
}

var errTimeout = errors.New("run timed out (-timeout)")

func (o *options) check() error {
	switch {
	case o.worker:
		if o.url == "" || o.dataDir == "" || o.count <= 0 || o.deadline <= 0 {
			return errors.New("worker: -url, -data-dir, -count and -deadline are required")
		}
	case o.conns <= 0 || o.warmup < 0:
		return errors.New("-conns must be positive and -warmup not negative")
	case o.workers <= 0 || o.workers > 16:
		return errors.New("-workers must be 1-16")
	case o.transport != "ws" && o.transport != "tcp":
		return fmt.Errorf("-transport %q: want ws or tcp", o.transport)
	case o.samples <= 0 || o.samples > 100:
		return errors.New("-samples must be 1-100")
	case o.timeout <= 0:
		return errors.New("-timeout must be positive")
	case o.heapProfile != "" && o.herald != "":
		return errors.New("-heap-profile runs the server in this binary; do not pass -herald")
	}
	if o.rate <= 0 || o.concurrency <= 0 || o.dialTimeout <= 0 {
		return errors.New("-rate, -concurrency and -dial-timeout must be positive")
	}
	if o.srcIPs <= 0 || o.srcIPs > 250 {
		return errors.New("-src-ips must be 1-250")
	}
	return nil
}

// srcAddrs returns the client source addresses 127.0.0.2 ... 127.0.0.(1+n).
func srcAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", 2+i)
	}
	return out
}

// raiseNoFile raises the soft open-files limit to the hard limit. Children
// (the server and the workers) inherit it.
func raiseNoFile() {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// noFile returns the soft open-files limit of this process.
func noFile() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

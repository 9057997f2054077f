package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/herald-push/herald/internal/bench"
)

const benchUsage = `Usage: herald bench <scenario> [flags]

Scenarios:
  connect   ramp -conns connections at -connect-rate, hold them -hold; connect rate,
            failures, server memory per connection
  fanout    -conns subscribers on one topic, -rate publishes/s through the API for
            -duration; deliveries/s, publish-to-receive latency, server CPU per delivery
  unicast   -conns users online, -rate pushes/s to random users; the same figures
  storm     -conns clients connected, then all dropped at once (-mode drop), the
            server killed and restarted (-mode restart, needs -spawn) or node 1 of a
            cluster killed for good (-mode kill, needs -cluster N: its clients move to
            the other nodes, the API calls go to those); -inbox messages
            per user pushed to durable inboxes and -topic-missed messages published to
            the topic while they are away; time until all are back and subscribed (each
            recovering the topic from its last position), until every inbox message
            arrived, and whether anything was lost
  api       the HTTP API alone at -rate requests/s

  row       print the BENCHMARKS.md row of saved -json results (row -header: the header)

By default the bench starts its own server (-spawn); give -api (and -ws or -tcp,
and credentials) to measure a running one. It exits non-zero when anything was
lost, duplicated or failed.

Clusters: -cluster N starts N nodes on the local Redis and NATS (-cluster-redis,
-cluster-nats) with a fresh key prefix, deleted afterwards; -targets measures a
running cluster. Clients are spread over -client-nodes by worker, API calls over
-api-nodes by request (e.g. -api-nodes 1 -client-nodes 2,3: every message
crosses from node 1 to another node).
`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "worker" {
		nbiolog.SetLevel(nbiolog.LevelNone) // stdout carries the worker's events
		return bench.RunWorker(ctx, os.Stdin, stdout)
	}
	if len(args) > 0 && args[0] == "row" {
		return benchRow(args[1:], stdout)
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, benchUsage, "\nRun \"herald bench <scenario> -h\" for the flags.\n")
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, benchUsage)
		return exitError{errors.New("bench: name a scenario")}
	}
	scenario := args[0]
	fs := flag.NewFlagSet("bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage, "\nFlags:\n"); fs.PrintDefaults() }
	var (
		o          bench.Options
		t          bench.Target
		spawn      = fs.Bool("spawn", true, "start a local herald serve for the run (false: use -api, -ws/-tcp and credentials)")
		servers    = fs.Int("servers", 1, "connect with -spawn: start this many servers on their own ports and spread the connections over them (each process may hold 20,000 files here)")
		serverArgs = fs.String("server-args", "", "extra flags for the spawned server, space-separated")
		configPath = fs.String("config", "", "server config file to read the app's secret and API key from (without -spawn)")
		dataDir    = fs.String("data-dir", "", "server data directory holding dev-app.yaml (without -spawn)")
		jsonOut    = fs.Bool("json", false, "print the result as JSON")
		report     = fs.String("report", "", "write a self-contained HTML report to `file`")
		row        = fs.Bool("row", false, "print only a Markdown table row for BENCHMARKS.md")
		cluster    = fs.Int("cluster", 0, fmt.Sprintf("with -spawn: start a cluster of this many nodes (1 to %d) on -cluster-redis and -cluster-nats, with one app and a fresh key prefix deleted afterwards", bench.MaxClusterNodes))
		redisAddr  = fs.String("cluster-redis", bench.DefaultClusterRedis, "-cluster: Redis host:port")
		natsURL    = fs.String("cluster-nats", bench.DefaultClusterNATS, "-cluster: NATS URL")
		targets    = fs.String("targets", "", "measure a running cluster: comma-separated nodes, each an API URL (its GET /v1/cluster gives the client addresses) or api+ws+tcp; credentials from -config, -data-dir or -app/-key/-secret")
		clientSel  = fs.String("client-nodes", "", "cluster: nodes (1-based, e.g. 2,3 or 2-3) the clients connect to, spread by worker (default all; storm -mode kill: 1)")
		apiSel     = fs.String("api-nodes", "", "cluster: nodes the API calls go to, in turn (default all; storm -mode kill: all but 1)")
	)
	fs.StringVar(&t.APIURL, "api", "http://127.0.0.1:8081", "server API base URL (without -spawn)")
	fs.StringVar(&t.WSURL, "ws", "ws://127.0.0.1:8080/ws", "WebSocket URL (without -spawn)")
	fs.StringVar(&t.TCPAddr, "tcp", "127.0.0.1:8090", "raw TCP address (without -spawn)")
	fs.StringVar(&t.Transport, "transport", "ws", "client transport: ws or tcp")
	fs.StringVar(&t.App, "app", "", "app id (default: the first app)")
	fs.StringVar(&t.APIKey, "key", "", "API key")
	fs.StringVar(&t.Secret, "secret", "", "token secret of the app")
	fs.IntVar(&o.Conns, "conns", 1000, "connections (subscribers for fanout, users for unicast)")
	fs.Float64Var(&o.ConnectRate, "connect-rate", 5000, "connection attempts per second during the ramp")
	fs.Float64Var(&o.Rate, "rate", 5, "publishes (fanout), pushes (unicast) or requests (api) per second")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "length of the measured phase")
	fs.DurationVar(&o.Hold, "hold", 5*time.Second, "connect: how long to hold the connections before sampling server RSS")
	fs.IntVar(&o.Warmup, "warmup", 200, "connect: connections opened and kept before the baseline RSS (not counted)")
	fs.IntVar(&o.Size, "size", 100, "payload bytes")
	fs.IntVar(&o.Batch, "batch", 1, "unicast: messages per API request (bulk push to many users)")
	fs.StringVar(&o.Topic, "topic", "bench", "topic for fanout and storm")
	fs.IntVar(&o.Workers, "workers", 2, "minimum worker processes (each holds at most 15,000 connections)")
	fs.IntVar(&o.SrcIPs, "src-ips", 8, "client source addresses 127.0.0.2 ... 127.0.0.(1+N)")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "API requests in flight")
	fs.DurationVar(&o.Drain, "drain", 3*time.Second, "wait after the last publish for late deliveries (storm: also the deadline, after every client is back, for the inbox messages)")
	fs.IntVar(&o.Inbox, "inbox", 2, fmt.Sprintf("storm: messages pushed to each user's durable inbox while the clients are away, through the bulk API (restart: half just before the kill); 0 to %d", bench.MaxInbox))
	fs.IntVar(&o.TopicMissed, "topic-missed", 3, fmt.Sprintf("storm: messages published to the topic while the clients are away (restart: after the restart), which every client must recover when it resubscribes with its position; 0 to %d", bench.MaxTopicMissed))
	fs.StringVar(&o.StormMode, "mode", "drop", "storm: drop (clients reset their connections), restart (server killed -9 and restarted) or kill (cluster node 1 killed -9 for good; its clients reconnect to the other nodes)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "stop the whole run after this long")
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{err}
	}
	if t.Transport != "ws" && t.Transport != "tcp" {
		return fmt.Errorf("bench: -transport must be ws or tcp")
	}
	o.Scenario = scenario
	if err := o.CheckNumbers(); err != nil {
		return err
	}
	if *targets != "" {
		spawnSet := false
		fs.Visit(func(f *flag.Flag) { spawnSet = spawnSet || f.Name == "spawn" })
		if spawnSet && *spawn {
			return errors.New("bench: -targets measures a running cluster and excludes -spawn")
		}
		*spawn = false
	}
	nf := bench.NodeFlags{Scenario: scenario, Mode: o.StormMode, Spawn: *spawn, Servers: *servers,
		Cluster: *cluster, Targets: *targets, ClientNodes: *clientSel, APINodes: *apiSel}
	var err error
	if _, o.ClientNodes, o.APINodes, err = nf.Check(); err != nil {
		return err
	}
	if err := raiseNoFile(); err != nil {
		fmt.Fprintln(stderr, "bench: warning:", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	nbiolog.SetLevel(nbiolog.LevelNone)
	target := &t
	switch {
	case *cluster > 0:
		c, err := bench.SpawnCluster(ctx, exe, bench.ClusterOptions{Nodes: *cluster, Redis: *redisAddr, NATS: *natsURL, Extra: strings.Fields(*serverArgs)})
		if err != nil {
			return err
		}
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(stderr, "bench: warning:", err)
			}
		}()
		for _, n := range c.Nodes {
			n.Transport = t.Transport
		}
		target, o.More, o.Cluster = c.Nodes[0], c.Nodes[1:], true
	case *targets != "":
		if err := t.LoadCredentials(*configPath, *dataDir); err != nil {
			return err
		}
		ns, err := bench.ParseTargets(ctx, *targets, t)
		if err != nil {
			return err
		}
		target, o.More, o.Cluster = ns[0], ns[1:], true
	case *spawn:
		sp, err := bench.Spawn(ctx, exe, strings.Fields(*serverArgs))
		if err != nil {
			return err
		}
		defer sp.Stop()
		sp.Transport = t.Transport
		target = sp
		for range *servers - 1 {
			more, err := bench.Spawn(ctx, exe, strings.Fields(*serverArgs))
			if err != nil {
				return err
			}
			defer more.Stop()
			more.Transport = t.Transport
			o.More = append(o.More, more)
		}
	default:
		if err := t.LoadCredentials(*configPath, *dataDir); err != nil {
			return err
		}
	}
	o.Scenario, o.Target, o.Exe, o.WorkerArgs = scenario, target, exe, []string{"bench", "worker"}
	o.Progress = bench.NewProgress(stderr, isTerminal(stderr))
	r, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *row {
		fmt.Fprintln(stdout, bench.MarkdownRow(r))
	} else if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else if err := bench.WriteText(stdout, r); err != nil {
		return err
	}
	if *report != "" {
		f, err := os.Create(*report)
		if err != nil {
			return err
		}
		if err := bench.WriteHTML(f, []bench.Result{r}); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "bench: report written to", *report)
	}
	if why := bench.Failed(r); len(why) > 0 {
		return fmt.Errorf("bench: %s failed: %s", scenario, strings.Join(why, ", "))
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// benchRow prints the BENCHMARKS.md row of saved results (-json output),
// or the table header with -header.
func benchRow(args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "-header" {
			fmt.Fprintln(stdout, bench.MarkdownHeader())
			continue
		}
		b, err := os.ReadFile(a)
		if err != nil {
			return err
		}
		var r bench.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("bench row %s: %w", a, err)
		}
		fmt.Fprintln(stdout, bench.MarkdownRow(r))
	}
	return nil
}

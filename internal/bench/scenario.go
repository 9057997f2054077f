package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a scenario run.
type Options struct {
	Scenario    string        // connect, fanout, unicast, storm, api
	Target      *Target       // the server under test (node 1 of a cluster)
	More        []*Target     // further servers, or nodes 2.. of a cluster; clients and API calls are spread over all
	Cluster     bool          // the targets are nodes of one cluster, sharing one app: a client whose node fails moves to the others
	ClientNodes []int         // nodes (0-based indexes into Target, More...) the clients connect to, round-robin by worker; nil: all (storm -mode kill: node 1)
	APINodes    []int         // nodes the API calls go to, in turn; nil: all (storm -mode kill: all but node 1)
	Exe         string        // binary that runs workers
	WorkerArgs  []string      // arguments that make Exe a worker (e.g. "bench", "worker")
	Workers     int           // minimum worker processes (more if Conns needs them)
	SrcIPs      int           // client source addresses 127.0.0.2 .. 127.0.0.(1+SrcIPs)
	Conns       int           // connections (subscribers for fanout, users for unicast)
	ConnectRate float64       // connection attempts per second during the ramp (all workers)
	Rate        float64       // publishes, pushes or requests per second in the measured phase
	Duration    time.Duration // measured phase
	Hold        time.Duration // connect: how long to hold the connections idle
	Warmup      int           // connect: connections opened (and kept) before the baseline RSS, so one-time allocations are not charged to the measured ones
	Size        int           // payload bytes
	Batch       int           // unicast: messages per API request (bulk push); 1 = one request per message
	Topic       string        // fanout and storm topic
	Concurrency int           // HTTP requests in flight from the coordinator
	Drain       time.Duration // wait after the last publish for deliveries
	StormMode   string        // storm: "drop" (clients reset their connections), "restart" (server killed and restarted) or "kill" (cluster node 1 killed, its clients move to the other nodes)
	Inbox       int           // storm: messages pushed to each user's durable inbox while the clients are away (0: none; at most MaxInbox)
	TopicMissed int           // storm: messages published to the topic while the clients are away, which they must recover (0: none; at most MaxTopicMissed)
	Timeout     time.Duration // the whole run
	Progress    *Progress

	prefix string // user ids of this run: a fresh inbox per run
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.SrcIPs <= 0 {
		o.SrcIPs = 8
	}
	if o.ConnectRate <= 0 {
		o.ConnectRate = 5000
	}
	if o.Size < payloadHeader {
		o.Size = 100
	}
	if o.Topic == "" {
		o.Topic = "bench"
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Drain <= 0 {
		o.Drain = 3 * time.Second
	}
	if o.StormMode == "" {
		o.StormMode = "drop"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = NewProgress(nil, false)
	}
}

// Run runs one scenario and returns its merged result. If ctx is cancelled
// (Ctrl-C) mid-run, it stops sending and returns what was measured.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	start := time.Now()
	// Inboxes are durable: users of an earlier run may have messages
	// waiting. Each run has its own users.
	o.prefix = "b" + strconv.FormatInt(start.UnixNano()%(1<<40), 36) + "-u"
	r := Result{Scenario: o.Scenario, Started: start}
	runCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.Inbox < 0 || o.Inbox > MaxInbox {
		return r, fmt.Errorf("bench: inbox messages per user must be 0 to %d, not %d", MaxInbox, o.Inbox)
	}
	if o.TopicMissed < 0 || o.TopicMissed > MaxTopicMissed {
		return r, fmt.Errorf("bench: topic messages missed must be 0 to %d, not %d", MaxTopicMissed, o.TopicMissed)
	}
	if err := o.validate(); err != nil {
		return r, err
	}
	if err := o.CheckNumbers(); err != nil {
		return r, err
	}
	r.Params = o.params()
	var err error
	switch o.Scenario {
	case "connect", "fanout", "unicast", "storm":
		err = runWithWorkers(runCtx, o, &r)
	case "api":
		err = runAPI(runCtx, o, &r)
	default:
		return r, fmt.Errorf("bench: unknown scenario %q (connect, fanout, unicast, storm, api)", o.Scenario)
	}
	r.Duration = time.Since(start)
	if err != nil && ctx.Err() != nil {
		r.Notes = append(r.Notes, "interrupted: partial result")
		return r, nil
	}
	return r, err
}

// targets returns every server or node: Target, then More.
func (o *Options) targets() []*Target {
	if o.Target == nil {
		return o.More
	}
	return append([]*Target{o.Target}, o.More...)
}

// pick returns the targets at the 0-based indexes ix.
func (o *Options) pick(ix []int) []*Target {
	all := o.targets()
	out := make([]*Target, 0, len(ix))
	for _, i := range ix {
		out = append(out, all[i])
	}
	return out
}

// clientTargets returns the nodes the clients connect to.
func (o *Options) clientTargets() []*Target { return o.pick(o.ClientNodes) }

// apiTargets returns the nodes the API calls go to.
func (o *Options) apiTargets() []*Target { return o.pick(o.APINodes) }

// validate checks the nodes and the storm mode, and fills the default
// client and API nodes.
func (o *Options) validate() error {
	if o.Target == nil {
		return errors.New("bench: no server to measure")
	}

	n := len(o.targets())
	if n > 1 && !o.Cluster && o.Scenario != "connect" {
		return errors.New("bench: several independent servers are supported by the connect scenario only; the others need the nodes of one cluster")
	}
	kill := o.Scenario == "storm" && o.StormMode == "kill"
	if o.Scenario == "storm" {
		switch o.StormMode {
		case "drop":
		case "restart":
			if n > 1 {
				return errors.New("bench: -mode restart restarts a single server; use -mode kill with a cluster")
			}
		case "kill":
			if !o.Cluster || n < 2 {
				return errors.New("bench: -mode kill needs a cluster of 2 or more nodes started by the bench (-cluster N with -spawn)")
			}
			if o.Target.PID() == 0 {
				return errors.New("bench: -mode kill needs nodes started by the bench (-cluster N with -spawn)")
			}
		default:
			return fmt.Errorf("bench: unknown storm -mode %q (drop, restart or kill)", o.StormMode)
		}
	}
	for _, x := range []struct {
		name string
		ix   *[]int
		def  []int
	}{
		{"client-nodes", &o.ClientNodes, indexes(n)},
		{"api-nodes", &o.APINodes, indexes(n)},
	} {
		if *x.ix == nil {
			*x.ix = x.def
			if kill && x.name == "client-nodes" {
				*x.ix = []int{0}
			}
			if kill && x.name == "api-nodes" {
				*x.ix = x.def[1:]
			}
		}
		if len(*x.ix) == 0 {
			return fmt.Errorf("bench: -%s lists no node", x.name)
		}
		for _, i := range *x.ix {
			if i < 0 || i >= n {
				return fmt.Errorf("bench: -%s: node %d out of range: the run has %d node(s), numbered 1 to %d", x.name, i+1, n, n)
			}
		}
	}
	if kill {
		if len(o.ClientNodes) != 1 || o.ClientNodes[0] != 0 {
			return errors.New("bench: -mode kill kills node 1: its clients are the ones measured, so -client-nodes must be 1")
		}
		if slices.Contains(o.APINodes, 0) {
			return errors.New("bench: -mode kill kills node 1: -api-nodes must not include it")
		}
	}
	return nil
}

func (o Options) params() map[string]string {
	p := map[string]string{
		"transport": o.Target.Transport,
		"url":       o.Target.ClientURL(),
	}
	if cs := o.clientTargets(); len(cs) > 0 {
		p["url"] = cs[0].ClientURL() // the first client node's
	}
	if o.Cluster {
		p["nodes"] = strconv.Itoa(1 + len(o.More))
	} else if len(o.More) > 0 {
		p["servers"] = strconv.Itoa(1 + len(o.More))
	}
	if len(o.More) > 0 {
		if len(o.ClientNodes) > 0 && len(o.ClientNodes) < 1+len(o.More) {
			p["client_nodes"] = nodeList(o.ClientNodes)
		}
		if len(o.APINodes) > 0 && len(o.APINodes) < 1+len(o.More) {
			p["api_nodes"] = nodeList(o.APINodes)
		}
	}
	switch o.Scenario {
	case "connect":
		p["conns"], p["connect_rate"], p["hold"] = strconv.Itoa(o.Conns), ftoa(o.ConnectRate), o.Hold.String()
	case "fanout":
		p["subscribers"], p["rate"], p["duration"], p["size"] = strconv.Itoa(o.Conns), ftoa(o.Rate), o.Duration.String(), strconv.Itoa(o.Size)
	case "unicast":
		p["users"], p["rate"], p["duration"], p["size"] = strconv.Itoa(o.Conns), ftoa(o.Rate), o.Duration.String(), strconv.Itoa(o.Size)
		if o.Batch > 1 {
			p["batch"] = strconv.Itoa(o.Batch)
		}
	case "storm":
		p["conns"], p["mode"] = strconv.Itoa(o.Conns), o.StormMode
		if o.Inbox > 0 {
			p["inbox"] = strconv.Itoa(o.Inbox)
		}
		if o.TopicMissed > 0 {
			p["topic_missed"] = strconv.Itoa(o.TopicMissed)
		}
	case "api":
		p["rate"], p["duration"], p["concurrency"] = ftoa(o.Rate), o.Duration.String(), strconv.Itoa(o.Concurrency)
	}
	return p
}

// nodeList writes 0-based node indexes as the 1-based list -client-nodes
// takes.
func nodeList(ix []int) string {
	s := make([]string, len(ix))
	for i, x := range ix {
		s[i] = strconv.Itoa(x + 1)
	}
	return strings.Join(s, ",")
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func localAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "127.0.0." + strconv.Itoa(2+i)
	}
	return out
}

// messages is how many messages the measured phase sends.
func (o Options) messages() int {
	switch o.Scenario {
	case "fanout", "unicast":
		return max(int(o.Rate*o.Duration.Seconds()), 1)
	case "storm":
		return stormCheckMessages
	}
	return 0
}

// stormCheckMessages are published after a storm to prove every client is
// subscribed again.
const stormCheckMessages = 5

func runWithWorkers(ctx context.Context, o Options, r *Result) error {
	start := time.Now()
	maxSeconds := int((o.Timeout + time.Minute).Seconds())
	targets := o.targets()
	clients := o.clientTargets()
	// Workers are spread over the client nodes round-robin: give each the
	// same number of workers, so each gets an equal share of connections.
	nw := max(o.Workers, len(clients), (o.Conns+maxPerWorker-1)/maxPerWorker)
	nw = (nw + len(clients) - 1) / len(clients) * len(clients)
	parts := plan(o.Conns, nw)
	var as []Assignment
	for i, p := range parts {
		tg := clients[i%len(clients)]
		a := Assignment{
			Scenario: o.Scenario, URL: tg.ClientURL(), Fallbacks: o.fallbacks(tg, i), LocalAddrs: localAddrs(o.SrcIPs),
			App: tg.App, Secret: tg.Secret, UserPrefix: o.prefix, From: p[0], To: p[1],
			Messages: o.messages(), Users: o.Conns, Unicast: o.Scenario == "unicast",
			Rate: o.ConnectRate / float64(len(parts)), Concurrency: 128,
			Start: start, Deadline: start.Add(o.Timeout + 30*time.Second), MaxSeconds: maxSeconds,
		}
		if o.Scenario != "unicast" { // connect clients subscribe too: the idle-memory figure is per subscribed connection
			a.Topic = o.Topic
		}
		if o.Scenario == "storm" {
			a.Inbox, a.TopicMissed = o.Inbox, o.TopicMissed
		}
		as = append(as, a)
	}
	if o.Scenario == "connect" && o.Warmup > 0 {
		warm, err := warmUp(ctx, o, targets, start, maxSeconds)
		if err != nil {
			return err
		}
		defer stopWorkers(warm)
	}
	before := medianSample(ctx, targets)
	ws, err := startWorkers(ctx, o.Exe, o.WorkerArgs, as)
	if err != nil {
		return err
	}
	defer stopWorkers(ws)
	ramp := func() {
		var open, failed int64
		for _, w := range ws {
			a, b := w.counts()
			open, failed = open+a, failed+b
		}
		o.Progress.Update("ramp", open, int64(o.Conns), fmt.Sprintf("%d failed", failed))
	}
	if _, err := waitEvent(ctx, ws, "ready", ramp); err != nil {
		return err
	}
	ramp()
	o.Progress.Done()

	var measureErr error
	var sent atomic.Int64
	var sendTime time.Duration // how long the measured phase sent for
	errs := newCounter()
	cpu0 := sampleNodes(ctx, targets)
	phaseStart := time.Now()
	switch o.Scenario {
	case "connect":
		if o.Hold > 0 {
			o.Progress.Update("hold", 0, 0, o.Hold.String())
			select {
			case <-ctx.Done():
			case <-time.After(o.Hold):
			}
			o.Progress.Done()
		}
	case "fanout", "unicast":
		sendTime, measureErr = publishPhase(ctx, o, &sent, errs)
	case "storm":
		measureErr = stormPhase(ctx, o, ws, as, r, &sent, errs)
	}
	cpu1 := sampleNodes(ctx, targets)
	phase := time.Since(phaseStart)

	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer ccancel()
	results, cerr := collect(cctx, ws)
	if err := mergeWorkers(r, start, maxSeconds, results); err != nil {
		return err
	}
	r.Sent = sent.Load()
	for k, v := range errs.snapshot() {
		r.Errors[k] += v
	}
	r.ServerCPU = cpuDelta(cpu0, cpu1)
	if len(targets) > 1 {
		r.Notes = append(r.Notes, nodeNotes(targets, cpu0, cpu1)...)
	}
	switch o.Scenario {
	case "connect":
		r.ServerRSSBefore, r.ServerRSSAfter = before.RSS, sumSamples(cpu1).RSS
		if o.Hold > 0 {
			r.ServerRSSAfter = medianSample(ctx, targets).RSS
		}
		if r.Connections > 0 && r.ServerRSSAfter > 0 {
			r.ServerRSSPerConn = float64(r.ServerRSSAfter-before.RSS) / float64(r.Connections)
		}
		if o.Warmup > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("RSS baseline taken with %d warm-up connections open (not counted)", o.Warmup))
		}
	case "fanout", "unicast", "storm":
		if r.Delivered > 0 {
			r.ServerCPUPerOp = r.ServerCPU / time.Duration(r.Delivered)
		}
		if sendTime <= 0 {
			sendTime = phase
		}
		if s := sendTime.Seconds(); s > 0 {
			r.Throughput = float64(r.Delivered) / s
		}
	}
	return errors.Join(measureErr, cerr)
}

// warmUp opens o.Warmup connections from one worker and keeps them, so that
// the baseline RSS already includes the server's one-time allocations.
func warmUp(ctx context.Context, o Options, targets []*Target, start time.Time, maxSeconds int) ([]*workerProc, error) {
	t := targets[0]
	a := Assignment{
		Scenario: "connect", URL: t.ClientURL(), LocalAddrs: localAddrs(o.SrcIPs),
		App: t.App, Secret: t.Secret, UserPrefix: "bench-warm", From: 0, To: o.Warmup, Topic: o.Topic,
		Rate: o.ConnectRate, Concurrency: 64, Start: start,
		Deadline: start.Add(o.Timeout + 30*time.Second), MaxSeconds: maxSeconds,
	}
	ws, err := startWorkers(ctx, o.Exe, o.WorkerArgs, []Assignment{a})
	if err != nil {
		return nil, err
	}
	if _, err := waitEvent(ctx, ws, "ready", nil); err != nil {
		stopWorkers(ws)
		return nil, err
	}
	select { // let the server settle before the baseline
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}
	return ws, nil
}

// medianSample samples the servers five times, 500 ms apart, and returns
// the sample with the median RSS.
func medianSample(ctx context.Context, ts []*Target) ServerSample {
	var ss []ServerSample
	for i := range 5 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return sampleAll(ctx, ts)
			case <-time.After(500 * time.Millisecond):
			}
		}
		ss = append(ss, sampleAll(ctx, ts))
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].RSS < ss[j].RSS })
	return ss[len(ss)/2]
}

// sampleAll adds up the CPU and RSS of every server.
func sampleAll(ctx context.Context, ts []*Target) ServerSample {
	return sumSamples(sampleNodes(ctx, ts))
}

// sampleNodes samples every server; a server that does not answer (a
// killed node) has a zero sample.
func sampleNodes(ctx context.Context, ts []*Target) []ServerSample {
	out := make([]ServerSample, len(ts))
	for i, t := range ts {
		s, err := t.SampleServer(ctx)
		if err == nil {
			out[i] = s
		}
	}
	return out
}

func sumSamples(ss []ServerSample) ServerSample {
	var sum ServerSample
	for _, s := range ss {
		sum.CPU += s.CPU
		sum.RSS += s.RSS
		if s.At.After(sum.At) {
			sum.At = s.At
		}
	}
	return sum
}

// cpuDelta adds up the CPU each server used between two samples, over the
// servers sampled both times (a node killed meanwhile is left out).
func cpuDelta(a, b []ServerSample) time.Duration {
	var d time.Duration
	for i := range min(len(a), len(b)) {
		if !a[i].At.IsZero() && !b[i].At.IsZero() && b[i].CPU > a[i].CPU {
			d += b[i].CPU - a[i].CPU
		}
	}
	return d
}

// nodeNotes are the per-node CPU and RSS figures of a run on several
// servers.
func nodeNotes(ts []*Target, a, b []ServerSample) []string {
	var out []string
	for i, t := range ts {
		name := nodeName(t, i)
		if i >= len(b) || b[i].At.IsZero() {
			out = append(out, fmt.Sprintf("%s: not sampled at the end (stopped or killed)", name))
			continue
		}
		out = append(out, fmt.Sprintf("%s: CPU %s in the measured phase, RSS %.1f MB", name,
			cpuDelta(a[i:i+1], b[i:i+1]).Round(time.Millisecond), float64(b[i].RSS)/1e6))
	}
	return out
}

// fallbacks returns the client URLs a worker on tg tries after tg fails:
// in a cluster, the other nodes, starting at a different one for each
// worker so that a dead node's clients spread over the rest. Killed node 1
// is never a fallback.
func (o *Options) fallbacks(tg *Target, worker int) []string {
	if !o.Cluster {
		return nil
	}
	var others []string
	for i, t := range o.targets() {
		if t == tg || (i == 0 && o.Scenario == "storm" && o.StormMode == "kill") {
			continue
		}
		others = append(others, t.ClientURL())
	}
	if len(others) == 0 {
		return nil
	}
	k := worker % len(others)
	return append(others[k:len(others):len(others)], others[:k]...)
}

// publishPhase sends the measured phase's messages through the API, open loop.
// It returns how long sending took, which is the window deliveries/s is
// computed over (late deliveries during the drain still count).
func publishPhase(ctx context.Context, o Options, sent *atomic.Int64, errs *counter) (time.Duration, error) {
	api := newAPIClient(o.apiTargets(), o.Concurrency)
	defer api.close()
	n := o.messages()
	app := url.PathEscape(o.Target.App)
	topicPath := "/v1/apps/" + app + "/topics/" + url.PathEscape(o.Topic) + "/messages"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				o.Progress.Update("publish", sent.Load(), int64(n), fmt.Sprintf("%.0f/s", o.Rate))
			}
		}
	}()
	pubStart := time.Now()
	if o.Scenario == "unicast" && o.Batch > 1 {
		// Bulk pushes: each request carries Batch consecutive messages, sent
		// at Rate/Batch requests per second; every message of a request
		// counts its latency from the request's scheduled time.
		reqs := (n + o.Batch - 1) / o.Batch
		openLoop(ctx, pubStart, o.Rate/float64(o.Batch), reqs, o.Concurrency, func(k int, sched time.Time) {
			var msgs []map[string]string
			for seq := k * o.Batch; seq < min((k+1)*o.Batch, n); seq++ {
				m := message(o.prefix+"-m"+strconv.Itoa(seq), makePayload(seq, sched, o.Size))
				m["user"] = o.prefix + strconv.Itoa(unicastTarget(seq, o.Conns))
				msgs = append(msgs, m)
			}
			status, err := api.post(ctx, "/v1/apps/"+app+"/push", map[string]any{"messages": msgs})
			sent.Add(int64(len(msgs)))
			if err != nil || status != 200 {
				errs.add(statusKind(status, err))
			}
		})
	} else {
		openLoop(ctx, pubStart, o.Rate, n, o.Concurrency, func(seq int, sched time.Time) {
			payload := makePayload(seq, sched, o.Size)
			path := topicPath
			if o.Scenario == "unicast" {
				path = "/v1/apps/" + app + "/users/" + o.prefix + strconv.Itoa(unicastTarget(seq, o.Conns)) + "/messages"
			}
			status, err := api.post(ctx, path, message(o.prefix+"-m"+strconv.Itoa(seq), payload))
			sent.Add(1)
			if err != nil || status != 200 {
				errs.add(statusKind(status, err))
			}
		})
	}
	sendTime := time.Since(pubStart)
	close(stop)
	wg.Wait()
	o.Progress.Done()
	select { // let the last messages arrive
	case <-ctx.Done():
	case <-time.After(o.Drain):
	}
	return sendTime, nil
}

// stormPhase drops every connection at once (or restarts the server),
// waits until every worker has all its clients back, then publishes a few
// messages to prove they are subscribed again.
//
// With o.Inbox, it also pushes that many messages to every user's durable
// inbox, through the bulk API: in restart mode the first half just before
// the kill, and the rest while the clients are away. To be sure they are
// away, the workers hold their clients offline after the drop (or the
// restart) until those pushes are answered; that hold is not counted in
// the recovery and catch-up times. Then it waits, at most o.Drain after
// every client is back, until each message the API accepted has reached
// its user's device.
//
// With o.TopicMissed, it also publishes that many messages to the topic in
// the same hold (after the restart, in restart mode); the clients come back
// with SUBSCRIBE carrying their topic position, and each must recover every
// one the API accepted (see topic.go). Recovered messages arrive before the
// REPLY that ends a client's reconnection, so by the time every client is
// back they are in.
func stormPhase(ctx context.Context, o Options, ws []*workerProc, as []Assignment, r *Result, sent *atomic.Int64, errs *counter) error {
	var pushes *inboxPushes
	var before, during []int // inbox message numbers pushed before the kill, and while the clients are away
	if o.Inbox > 0 {
		pushes = newInboxPushes(o.Conns, o.Inbox)
		for j := range o.Inbox {
			if (o.StormMode == "restart" || o.StormMode == "kill") && j < o.Inbox/2 {
				before = append(before, j)
			} else {
				during = append(during, j)
			}
		}
	}
	if len(before) > 0 {
		o.Progress.Update("inbox", 0, int64(o.Conns*len(before)), "before the kill")
		pushes.push(ctx, o, before, sent, errs)
		o.Progress.Done()
	}
	t0 := time.Now()
	switch o.StormMode {
	case "restart":
		if err := o.Target.Restart(ctx, true); err != nil {
			return err
		}
	case "kill":
		if err := o.Target.Kill(); err != nil {
			return err
		}
		r.Notes = append(r.Notes, fmt.Sprintf("node %s killed with SIGKILL (not restarted); its %d clients reconnect to the other nodes", nodeName(o.Target, 0), o.Conns))
	}
	hold := pushes != nil || o.TopicMissed > 0
	drop := "drop"
	if hold {
		drop = "drop hold"
	}
	for _, w := range ws {
		w.send(drop)
	}
	if _, err := waitEvent(ctx, ws, "dropped", nil); err != nil {
		return err
	}
	var held time.Duration // clients kept away on purpose
	if hold {
		holdStart := time.Now()
		if pushes != nil {
			o.Progress.Update("inbox", 0, int64(o.Conns*len(during)), "clients away")
			pushes.push(ctx, o, during, sent, errs)
			o.Progress.Done()
			for i, w := range ws {
				w.send("inbox " + pushes.bitmap(as[i].From, as[i].To))
			}
		}
		var topicNote string
		if o.TopicMissed > 0 {
			o.Progress.Update("topic", 0, int64(o.TopicMissed), "clients away")
			mask, seqs := publishMissed(ctx, o, sent, errs)
			o.Progress.Done()
			for _, w := range ws {
				w.send("topic " + strconv.FormatUint(mask, 10))
			}
			topicNote = fmt.Sprintf("topic: %d messages published to %q while the clients were away, %d accepted (seq %s)",
				o.TopicMissed, o.Topic, len(seqs), seqRange(seqs))
		}
		held = time.Since(holdStart)
		if ctx.Err() != nil {
			return ctx.Err() // collect's "stop" ends the hold
		}
		for _, w := range ws {
			w.send("go")
		}
		heldNote := fmt.Sprintf("clients held away %s for the pushes (not counted in recovery and catch-up)", held.Round(time.Millisecond))
		if pushes != nil {
			psent, pok := pushes.counts()
			note := fmt.Sprintf("inbox: %d messages pushed to %d users, %d accepted", psent, o.Conns, pok)
			if len(before) > 0 {
				note += fmt.Sprintf("; %d per user just before the kill", len(before))
			}
			r.Notes = append(r.Notes, note)
		}
		if topicNote != "" {
			r.Notes = append(r.Notes, topicNote)
		}
		r.Notes = append(r.Notes, heldNote)
	}
	evs, err := waitEvent(ctx, ws, "recovered", func() {
		var open int64
		for _, w := range ws {
			a, _ := w.counts()
			open += a
		}
		o.Progress.Update("storm", open, int64(o.Conns), (time.Since(t0) - held).Round(time.Millisecond).String())
	})
	o.Progress.Done()
	if err != nil {
		return err
	}
	var last time.Time
	for _, e := range evs {
		if e.At.After(last) {
			last = e.At
		}
	}
	r.RecoveryTime = last.Sub(t0) - held
	// Publish the check messages: every client must receive each once.
	api := newAPIClient(o.apiTargets(), 4)
	defer api.close()
	path := "/v1/apps/" + url.PathEscape(o.Target.App) + "/topics/" + url.PathEscape(o.Topic) + "/messages"
	for seq := range stormCheckMessages {
		// Ids unique per run: a server keeping topic history drops a
		// message whose id it already holds.
		status, err := api.post(ctx, path, message(o.prefix+"-storm-"+strconv.Itoa(seq), makePayload(seq, time.Now(), o.Size)))
		sent.Add(1)
		if err != nil || status != 200 {
			errs.add(statusKind(status, err))
		}
	}
	checkEnd := time.Now().Add(o.Drain)
	if pushes != nil {
		waitInbox(ctx, o, ws, r, t0.Add(held), last.Add(o.Drain))
	}
	select { // late check messages, and late copies of anything
	case <-ctx.Done():
	case <-time.After(time.Until(checkEnd)):
	}
	return nil
}

// waitInbox waits until every worker reports that all the inbox messages
// the API accepted for its users have arrived, or until deadline, and sets
// the catch-up time: from t0 (the drop or kill, moved later by the hold) to
// the last arrival.
func waitInbox(ctx context.Context, o Options, ws []*workerProc, r *Result, t0, deadline time.Time) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	defer o.Progress.Done()
	for {
		var got, want int64
		var last time.Time
		done := true
		for _, w := range ws {
			e := w.inboxState()
			got, want = got+e.InboxGot, want+e.InboxWant
			if !e.Done {
				done = false
			} else if e.At.After(last) {
				last = e.At
			}
		}
		if done {
			if !last.IsZero() {
				r.CatchUpTime = max(last.Sub(t0), 0)
			}
			return
		}
		o.Progress.Update("catch-up", got, want, time.Since(t0).Round(time.Millisecond).String())
		if time.Now().After(deadline) {
			r.Notes = append(r.Notes, fmt.Sprintf("inbox: not every accepted message arrived within -drain %s of the last push", o.Drain))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runAPI drives the HTTP API alone at a fixed rate: pushes to users who are
// not connected, so the figure is the API's own cost.
func runAPI(ctx context.Context, o Options, r *Result) error {
	api := newAPIClient(o.apiTargets(), o.Concurrency)
	defer api.close()
	start := time.Now()
	n := max(int(o.Rate*o.Duration.Seconds()), 1)
	var mu sync.Mutex
	h := NewHistogram()
	tl := NewTimelineLimit(start, int((o.Timeout + time.Minute).Seconds()))
	errs := newCounter()
	var sent atomic.Int64
	cpu0 := sampleAll(ctx, o.apiTargets())
	app := url.PathEscape(o.Target.App)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				o.Progress.Update("requests", sent.Load(), int64(n), fmt.Sprintf("%.0f/s", o.Rate))
			}
		}
	}()
	openLoop(ctx, time.Now(), o.Rate, n, o.Concurrency, func(seq int, sched time.Time) {
		user := "api-offline-" + strconv.Itoa(rand.IntN(100000))
		status, err := api.post(ctx, "/v1/apps/"+app+"/users/"+user+"/messages",
			message("api-"+strconv.Itoa(seq), makePayload(seq, sched, o.Size)))
		now := time.Now()
		sent.Add(1)
		mu.Lock()
		tl.Sent(sched, 1)
		if err != nil || status != 200 {
			tl.Error(now)
			errs.add(statusKind(status, err))
		} else {
			h.Record(now.Sub(sched))
			tl.Delivered(now, now.Sub(sched))
		}
		mu.Unlock()
	})
	close(done)
	o.Progress.Done()
	cpu1 := sampleAll(ctx, o.apiTargets())
	r.Sent = sent.Load()
	r.Errors = errs.snapshot()
	r.Latency = h.Quantiles()
	r.Delivered = h.Count()
	r.Expected = r.Sent
	r.Timeline = tl.Points()
	if s := time.Since(start).Seconds(); s > 0 {
		r.Throughput = float64(r.Delivered) / s
	}
	if cpu1.CPU > cpu0.CPU {
		r.ServerCPU = cpu1.CPU - cpu0.CPU
		if r.Sent > 0 {
			r.ServerCPUPerOp = r.ServerCPU / time.Duration(r.Sent)
		}
	}
	return nil
}

// counter counts outcomes by kind, safely from many goroutines.
type counter struct {
	mu sync.Mutex
	m  map[string]int64
}

func newCounter() *counter { return &counter{m: map[string]int64{}} }

func (c *counter) add(k string) {
	c.mu.Lock()
	c.m[k]++
	c.mu.Unlock()
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Failed reports why a result counts as a failure: anything lost or
// duplicated, failed connections, or errors. Empty means success.
func Failed(r Result) []string {
	var why []string
	if r.Missing > 0 {
		why = append(why, fmt.Sprintf("%d messages missing", r.Missing))
	}
	if r.Duplicates > 0 {
		why = append(why, fmt.Sprintf("%d duplicates", r.Duplicates))
	}
	if r.TopicUnrecovered > 0 {
		why = append(why, fmt.Sprintf("%d topic subscriptions not recovered", r.TopicUnrecovered))
	}
	var fails int64
	for _, v := range r.ConnectFail {
		fails += v
	}
	if fails > 0 {
		why = append(why, fmt.Sprintf("%d connections failed", fails))
	}
	var errs int64
	for k, v := range r.Errors {
		if r.Scenario == "storm" && strings.HasPrefix(k, "disconnect: ") {
			continue // dropped connections are the storm's own doing
		}
		errs += v
	}
	if errs > 0 {
		why = append(why, fmt.Sprintf("%d errors", errs))
	}
	return why
}

// nodeName names the i-th (0-based) server in notes.
func nodeName(t *Target, i int) string {
	if t.Node != "" {
		return t.Node
	}
	return "server " + strconv.Itoa(i+1)
}

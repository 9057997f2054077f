package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logf reports progress on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "idleconn: "+format+"\n", args...)
}

// runCoordinator runs the whole benchmark and returns the exit status.
func runCoordinator(ctx context.Context, o options) int {
	start := time.Now()
	r := &result{ServerArgs: o.serverArgs, Transport: o.transport, Conns: o.conns, Warmup: o.warmup, Workers: o.workers, SourceIPs: o.srcIPs,
		Topic: o.topic, Heartbeat: o.heartbeat.String(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU()}
	err := coordinate(ctx, o, r)
	r.Elapsed = time.Since(start).Seconds()
	code := 0
	switch {
	case err != nil && errors.Is(context.Cause(ctx), errTimeout):
		r.Error = fmt.Sprintf("%v: %v", errTimeout, err)
		code = 2
	case err != nil:
		r.Error = err.Error()
		code = 1
	}
	r.OK = code == 0
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		r.print(os.Stdout)
	}
	return code
}

func coordinate(ctx context.Context, o options, r *result) (err error) {
	dir, err := os.MkdirTemp("", "idleconn-")
	if err != nil {
		return err
	}
	keep := o.keep
	defer func() {
		if err != nil {
			keep = true
		}
		if keep {
			logf("kept %s (server log: %s/server.log)", dir, dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()

	bin := o.herald
	built := ""
	defer func() {
		if built != "" {
			_ = os.Remove(built) // a kept directory keeps only logs and data
		}
	}()
	var env []string
	if o.heapProfile != "" {
		if bin, err = os.Executable(); err != nil {
			return err
		}
		if o.heapProfile, err = filepath.Abs(o.heapProfile); err != nil {
			return err
		}
		env = []string{envProfile + "=" + o.heapProfile, envRate + "=" + strconv.Itoa(o.profileRate)}
		r.HeapProfile = o.heapProfile
		logf("profiling run: the server runs in this binary with MemProfileRate %d; its RSS is not representative", o.profileRate)
	}
	if bin == "" {
		logf("building ./cmd/herald")
		if bin, err = buildHerald(ctx, dir); err != nil {
			return err
		}
		built = bin
	}
	srv, err := startHerald(ctx, bin, dir, o.heartbeat, o.logLevel, strings.Fields(o.serverArgs), env)
	if err != nil {
		return err
	}
	defer srv.stop() // after the workers: deferred calls run last-in first-out
	r.ServerPID = srv.pid()
	r.ServerNoFile = procNoFile(srv.pid())
	url := srv.wsURL
	if o.transport == "tcp" {
		url = "tcp://" + srv.tcpAddr
	}
	r.URL = url
	logf("server pid %d, %s, api %s, open files limit %s", srv.pid(), url, srv.apiURL, r.ServerNoFile)
	if n := o.warmup + o.conns + 64; r.ServerNoFile != "unlimited" {
		if lim, err := strconv.Atoi(r.ServerNoFile); err == nil && lim < n {
			return fmt.Errorf("the server may open %d files, fewer than the %d connections and its own files; raise ulimit -n", lim, n)
		}
	}
	app, err := loadApp(srv.dataDir)
	if err != nil {
		return fmt.Errorf("read the development app: %w", err)
	}

	// Warm-up: connections this process holds, so that one-time allocations
	// (pools, event loop buffers, maps' first buckets) are in the baseline.
	op := &opener{url: url, app: app.ID, secret: []byte(app.Secret), topic: o.topic, src: srcAddrs(o.srcIPs), timeout: o.dialTimeout}
	var warm openResult
	if o.warmup > 0 {
		logf("warm-up: opening %d connections", o.warmup)
		warm = op.openMany(ctx, "w", 0, o.warmup, o.rate, o.concurrency, nil)
		r.Failed += warm.failed
		r.Errors = append(r.Errors, warm.errs...)
		if warm.failed > 0 {
			return fmt.Errorf("warm-up: %d of %d connections failed: %s", warm.failed, o.warmup, strings.Join(warm.errs, "; "))
		}
	}
	defer runtime.KeepAlive(warm.conns)
	if _, _, err := confirm(ctx, srv, int64(o.warmup)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := srv.metrics(ctx); err != nil { // the first scrape's own allocations belong in the baseline
		return err
	}
	logf("warm-up done; settling %v before the baseline", o.baseSettle)
	if err := sleep(ctx, o.baseSettle); err != nil {
		return err
	}
	if r.Baseline, err = sample(ctx, srv, o.samples, o.sampleEvery); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	st, err := srv.stats(ctx)
	if err != nil {
		return err
	}
	r.BaselineOpen = st.Connections.Open
	if o.heapProfile != "" {
		if err := srv.heapProfile(ctx, o.heapProfile, o.heapProfile+".base"); err != nil {
			return err
		}
	}
	logf("baseline RSS %s with %d connections (heap in use %s, %d goroutines)", mib(r.Baseline.RSS), r.BaselineOpen,
		mib(int64(r.Baseline.Go.HeapInuse)), int(r.Baseline.Go.Goroutines))

	// The measured connections, opened by worker processes.
	ws, err := startWorkers(ctx, o, srv, url, o.timeout+30*time.Second)
	if err != nil {
		return err
	}
	defer ws.stop()
	rampStart := time.Now()
	opened, failed, errs, err := ws.waitReady(ctx, o.conns)
	r.RampSeconds = time.Since(rampStart).Seconds()
	r.Opened = opened
	r.Failed += failed
	r.Errors = append(r.Errors, errs...)
	if err != nil {
		return err
	}
	r.WorkerNoFile = ws.noFile
	logf("workers hold %d connections (%d failed) after %.1f s", opened, failed, r.RampSeconds)
	want := int64(o.warmup + opened)
	st, all, err := confirm(ctx, srv, want)
	if err != nil {
		return err
	}
	r.Stats = st
	if all {
		logf("server confirms %d open connections, sessions and subscriptions; settling %v", want, o.settle)
	} else {
		logf("WARNING: %s; measuring anyway; settling %v", describe(st, want), o.settle)
	}
	if err := sleep(ctx, o.settle); err != nil {
		return err
	}
	if err := ws.check(); err != nil {
		return err
	}
	if r.Final, err = sample(ctx, srv, o.samples, o.sampleEvery); err != nil {
		return fmt.Errorf("final: %w", err)
	}
	if st, err = srv.stats(ctx); err != nil {
		return err
	}
	r.Stats = st
	r.FinalOpen = st.Connections.Open
	if o.heapProfile != "" {
		logf("writing the server's heap profile to %s (baseline: %[1]s.base; compare with go tool pprof -diff_base)", o.heapProfile)
		if err := srv.heapProfile(ctx, o.heapProfile, o.heapProfile); err != nil {
			return err
		}
	}
	r.Lost = want - st.Connections.Open
	r.compute()
	var errs2 []string
	if r.Lost != 0 || int64(st.Sessions.Sessions) != want || st.disconnects() != 0 {
		errs2 = append(errs2, fmt.Sprintf("the server dropped idle connections: %s", describe(st, want)))
	}
	if failed > 0 {
		errs2 = append(errs2, fmt.Sprintf("%d connections failed: %s", failed, strings.Join(errs, "; ")))
	}
	if len(errs2) > 0 {
		return errors.New(strings.Join(errs2, "; "))
	}
	return nil
}

// confirm polls GET /v1/stats, for at most 30 s, until the server has
// accepted want connections and handled all of them: open connections,
// sessions and subscriptions agree. It reports whether all want are open;
// fewer means the server dropped some (the caller reports them).
func confirm(ctx context.Context, srv *heraldProc, want int64) (serverStats, bool, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := srv.stats(ctx)
		if err != nil {
			return st, false, err
		}
		open := st.Connections.Open
		if open == want && int64(st.Sessions.Sessions) == want && st.Routing.Subscriptions == want {
			return st, true, nil
		}
		settled := int64(st.Connections.Accepted) >= want && int64(st.Sessions.Sessions) == open && st.Routing.Subscriptions == open
		if settled || time.Now().After(deadline) {
			return st, false, nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return st, false, err
		}
	}
}

// describe summarises the stats for an error message.
func describe(st serverStats, want int64) string {
	var d []string
	for k, v := range st.Connections.Disconnects {
		if v > 0 {
			d = append(d, fmt.Sprintf("%s: %d", k, v))
		}
	}
	slices.Sort(d)
	return fmt.Sprintf("server reports %d open connections, %d sessions, %d subscriptions (want %d); disconnects {%s}",
		st.Connections.Open, st.Sessions.Sessions, st.Routing.Subscriptions, want, strings.Join(d, ", "))
}

// sample takes n RSS samples every interval, then the server's Go metrics.
func sample(ctx context.Context, srv *heraldProc, n int, every time.Duration) (memSample, error) {
	var s memSample
	for i := range n {
		if i > 0 {
			if err := sleep(ctx, every); err != nil {
				return s, err
			}
		}
		st, err := readStatus(srv.pid())
		if err != nil {
			return s, err
		}
		s.RSSSamples = append(s.RSSSamples, st.VmRSS)
		s.AnonSamples = append(s.AnonSamples, st.RssAnon)
		s.Status = st
	}
	s.RSS = median(s.RSSSamples)
	s.Anon = median(s.AnonSamples)
	var err error
	s.Go, err = srv.metrics(ctx)
	return s, err
}

func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// workerProc is one worker child.
type workerProc struct {
	id     int
	count  int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}

	mu    sync.Mutex
	last  workerMsg
	ready bool
	fatal string
	err   error // from Wait
}

// workerSet is every worker child.
type workerSet struct {
	ws     []*workerProc
	notify chan struct{} // a worker reported or exited
	noFile uint64
}

// startWorkers re-executes this binary as o.workers workers, each opening
// its share of o.conns.
func startWorkers(ctx context.Context, o options, srv *heraldProc, url string, deadline time.Duration) (*workerSet, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	set := &workerSet{notify: make(chan struct{}, 1)}
	first := 0
	rate := max(o.rate/o.workers, 1)
	for i := range o.workers {
		count := o.conns / o.workers
		if i < o.conns%o.workers {
			count++
		}
		w := &workerProc{id: i, count: count, exited: make(chan struct{})}
		w.cmd = exec.Command(self, "-worker",
			"-worker-id", strconv.Itoa(i),
			"-url", url,
			"-data-dir", srv.dataDir,
			"-first", strconv.Itoa(first),
			"-count", strconv.Itoa(count),
			"-rate", strconv.Itoa(rate),
			"-concurrency", strconv.Itoa(o.concurrency),
			"-src-ips", strconv.Itoa(o.srcIPs),
			"-topic", o.topic,
			"-dial-timeout", o.dialTimeout.String(),
			"-deadline", deadline.String())
		w.cmd.Stderr = os.Stderr
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if w.stdin, err = w.cmd.StdinPipe(); err != nil {
			set.stop()
			return nil, err
		}
		stdout, err := w.cmd.StdoutPipe()
		if err != nil {
			set.stop()
			return nil, err
		}
		if err := w.cmd.Start(); err != nil {
			set.stop()
			return nil, fmt.Errorf("start worker %d: %w", i, err)
		}
		set.ws = append(set.ws, w)
		go w.read(stdout, set.notify)
		first += count
	}
	return set, nil
}

// read consumes the worker's JSON lines until it exits.
func (w *workerProc) read(stdout io.Reader, notify chan struct{}) {
	poke := func() {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var m workerMsg
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		w.mu.Lock()
		w.last = m
		switch m.Event {
		case "ready":
			w.ready = true
		case "fatal":
			w.fatal = strings.Join(m.Errors, "; ")
		}
		w.mu.Unlock()
		poke()
	}
	_, _ = io.Copy(io.Discard, stdout)
	err := w.cmd.Wait()
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	close(w.exited)
	poke()
}

func (w *workerProc) isExited() bool {
	select {
	case <-w.exited:
		return true
	default:
		return false
	}
}

// waitReady waits until every worker has reported ready, printing
// progress, and returns the totals.
func (s *workerSet) waitReady(ctx context.Context, total int) (opened, failed int, errs []string, err error) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		opened, failed, errs = 0, 0, nil
		ready := 0
		for _, w := range s.ws {
			w.mu.Lock()
			opened += w.last.Opened
			failed += w.last.Failed
			errs = append(errs, w.last.Errors...)
			if w.ready {
				ready++
				if s.noFile == 0 || w.last.NoFile < s.noFile {
					s.noFile = w.last.NoFile
				}
			}
			fatal, rdy := w.fatal, w.ready
			w.mu.Unlock()
			if fatal != "" {
				return opened, failed, errs, fmt.Errorf("worker %d: %s", w.id, fatal)
			}
			if !rdy && w.isExited() {
				return opened, failed, errs, fmt.Errorf("worker %d exited before it was ready: %v", w.id, w.err)
			}
		}
		if ready == len(s.ws) {
			return opened, failed, errs, nil
		}
		select {
		case <-ctx.Done():
			return opened, failed, errs, fmt.Errorf("opening connections (%d of %d open): %w", opened, total, context.Cause(ctx))
		case <-s.notify:
		case <-tick.C:
			logf("opening: %d/%d open, %d failed", opened, total, failed)
		}
	}
}

// check reports a worker that has exited: its connections are gone.
func (s *workerSet) check() error {
	for _, w := range s.ws {
		if w.isExited() {
			return fmt.Errorf("worker %d exited early: %v", w.id, w.err)
		}
	}
	return nil
}

// stop closes every worker's stdin, which makes it exit, and kills those
// still running after 10 s.
func (s *workerSet) stop() {
	for _, w := range s.ws {
		_ = w.stdin.Close()
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for _, w := range s.ws {
		select {
		case <-w.exited:
		case <-deadline.C:
			for _, w := range s.ws {
				if !w.isExited() {
					_ = w.cmd.Process.Kill()
				}
			}
			for _, w := range s.ws {
				<-w.exited
			}
			return
		}
	}
}

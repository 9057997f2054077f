package main

import (
	"fmt"
	"io"
	"strings"
)

// memSample is the server's memory at one point of the run.
type memSample struct {
	RSS         int64      `json:"rss_bytes"`      // median of RSSSamples
	Anon        int64      `json:"rss_anon_bytes"` // median of AnonSamples
	RSSSamples  []int64    `json:"rss_samples"`
	AnonSamples []int64    `json:"rss_anon_samples"`
	Status      procStatus `json:"last_status"`
	Go          goMetrics  `json:"go"` // the server's /metrics, after the samples
}

// perConn is the growth from baseline to final divided by the measured
// connections.
type perConn struct {
	RSSBytes        float64 `json:"rss_bytes"`
	RSSKiB          float64 `json:"rss_kib"`
	AnonBytes       float64 `json:"rss_anon_bytes"`
	HeapInuseBytes  float64 `json:"heap_inuse_bytes"`
	HeapAllocBytes  float64 `json:"heap_alloc_bytes"`
	HeapObjects     float64 `json:"heap_objects"`
	StackInuseBytes float64 `json:"stack_inuse_bytes"`
	GoSysBytes      float64 `json:"go_sys_bytes"`
	Goroutines      float64 `json:"goroutines"`
}

// result is the report; -json prints it as it is.
type result struct {
	OK           bool    `json:"ok"`
	Error        string  `json:"error,omitempty"`
	Transport    string  `json:"transport"`
	ServerArgs   string  `json:"server_args,omitempty"`
	HeapProfile  string  `json:"heap_profile,omitempty"` // set in a profiling run: RSS not representative
	URL          string  `json:"url,omitempty"`
	Conns        int     `json:"conns"`  // requested measured connections
	Opened       int     `json:"opened"` // measured connections opened
	Failed       int     `json:"failed"`
	BaselineOpen int64   `json:"baseline_open"` // server's open connections at the baseline
	FinalOpen    int64   `json:"final_open"`    // and after the final samples
	Measured     int64   `json:"measured"`      // FinalOpen - BaselineOpen: the per-connection divisor
	Lost         int64   `json:"lost"`          // connections the server closed although the client held them
	Warmup       int     `json:"warmup"`
	Workers      int     `json:"workers"`
	SourceIPs    int     `json:"source_ips"`
	Topic        string  `json:"topic"`
	Heartbeat    string  `json:"heartbeat"`
	GoVersion    string  `json:"go_version"`
	NumCPU       int     `json:"num_cpu"`
	ServerPID    int     `json:"server_pid,omitempty"`
	ServerNoFile string  `json:"server_nofile,omitempty"`
	WorkerNoFile uint64  `json:"worker_nofile,omitempty"`
	RampSeconds  float64 `json:"ramp_seconds"`
	Elapsed      float64 `json:"elapsed_seconds"`

	Baseline memSample   `json:"baseline"`
	Final    memSample   `json:"final"`
	PerConn  *perConn    `json:"per_conn,omitempty"`
	Stats    serverStats `json:"server_stats"`
	Errors   []string    `json:"errors,omitempty"`
}

func (r *result) compute() {
	r.Measured = r.FinalOpen - r.BaselineOpen
	n := float64(r.Measured)
	if n <= 0 {
		return
	}
	b, f := r.Baseline, r.Final
	p := &perConn{
		RSSBytes:        float64(f.RSS-b.RSS) / n,
		AnonBytes:       float64(f.Anon-b.Anon) / n,
		HeapInuseBytes:  (f.Go.HeapInuse - b.Go.HeapInuse) / n,
		HeapAllocBytes:  (f.Go.HeapAlloc - b.Go.HeapAlloc) / n,
		HeapObjects:     (f.Go.HeapObjects - b.Go.HeapObjects) / n,
		StackInuseBytes: (f.Go.StackInuse - b.Go.StackInuse) / n,
		GoSysBytes:      (f.Go.Sys - b.Go.Sys) / n,
		Goroutines:      (f.Go.Goroutines - b.Go.Goroutines) / n,
	}
	p.RSSKiB = p.RSSBytes / 1024
	r.PerConn = p
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func mibf(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func mibs(v []int64) string {
	s := make([]string, len(v))
	for i, b := range v {
		s[i] = fmt.Sprintf("%.1f", float64(b)/(1<<20))
	}
	return strings.Join(s, " ") + " MiB"
}

// print writes the human summary.
func (r *result) print(w io.Writer) {
	status := "OK"
	if !r.OK {
		status = "FAILED: " + r.Error
	}
	fmt.Fprintf(w, "idleconn: %s\n", status)
	fmt.Fprintf(w, "  transport            %s (%s), topic %q, heartbeat %s\n", r.Transport, r.URL, r.Topic, r.Heartbeat)
	if r.HeapProfile != "" {
		fmt.Fprintf(w, "  PROFILING RUN        heap profile %s; the RSS figures below are not representative\n", r.HeapProfile)
	}
	if r.ServerArgs != "" {
		fmt.Fprintf(w, "  extra server flags   %s\n", r.ServerArgs)
	}
	fmt.Fprintf(w, "  connections          %d opened by workers (%d requested, %d failed) + %d warm-up\n",
		r.Opened, r.Conns, r.Failed, r.Warmup)
	fmt.Fprintf(w, "  clients              %d worker processes, %d source addresses, ramp %.1f s, run %.1f s\n",
		r.Workers, r.SourceIPs, r.RampSeconds, r.Elapsed)
	fmt.Fprintf(w, "  machine              %d CPUs, %s; server open-files limit %s\n", r.NumCPU, r.GoVersion, r.ServerNoFile)
	if r.Baseline.RSS == 0 {
		return
	}
	b, f := r.Baseline, r.Final
	fmt.Fprintf(w, "  baseline RSS         %s (samples %s)\n", mib(b.RSS), mibs(b.RSSSamples))
	if f.RSS == 0 {
		return
	}
	fmt.Fprintf(w, "  final RSS            %s (samples %s)\n", mib(f.RSS), mibs(f.RSSSamples))
	fmt.Fprintf(w, "  server stats         %d open, %d sessions, %d subscriptions, %d disconnects (%d lost)\n",
		r.Stats.Connections.Open, r.Stats.Sessions.Sessions, r.Stats.Routing.Subscriptions, r.Stats.disconnects(), r.Lost)
	fmt.Fprintf(w, "  measured             %d connections (%d open at the end - %d at the baseline)\n", r.Measured, r.FinalOpen, r.BaselineOpen)
	fmt.Fprintf(w, "  Go runtime           %-14s %-14s %s\n", "baseline", "final", "per connection")
	p := r.PerConn
	if p == nil {
		return
	}
	row := func(name string, bv, fv float64, pc string) {
		fmt.Fprintf(w, "    %-18s %-14s %-14s %s\n", name, mibf(bv), mibf(fv), pc)
	}
	row("heap in use", b.Go.HeapInuse, f.Go.HeapInuse, fmt.Sprintf("%.0f B", p.HeapInuseBytes))
	row("heap alloc", b.Go.HeapAlloc, f.Go.HeapAlloc, fmt.Sprintf("%.0f B (%.1f objects)", p.HeapAllocBytes, p.HeapObjects))
	row("stack in use", b.Go.StackInuse, f.Go.StackInuse, fmt.Sprintf("%.0f B", p.StackInuseBytes))
	row("Go sys", b.Go.Sys, f.Go.Sys, fmt.Sprintf("%.0f B", p.GoSysBytes))
	fmt.Fprintf(w, "    %-18s %-14.0f %-14.0f %.4f\n", "goroutines", b.Go.Goroutines, f.Go.Goroutines, p.Goroutines)
	fmt.Fprintf(w, "  RSS anon per conn    %.0f B\n", p.AnonBytes)
	fmt.Fprintf(w, "  RSS per connection   %.0f B = %.2f KiB  (target <= 2 KiB: %s)\n", p.RSSBytes, p.RSSKiB, verdict(p.RSSKiB <= 2))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

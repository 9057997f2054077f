package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// repoRoot walks up from the working directory to the Herald module root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/herald-push/herald\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("not inside the github.com/herald-push/herald module; pass -herald")
}

// buildHerald runs go build ./cmd/herald into dir.
func buildHerald(ctx context.Context, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "herald")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/herald")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/herald: %w", err)
	}
	return out, nil
}

// heraldProc is the running server child.
type heraldProc struct {
	cmd     *exec.Cmd
	dataDir string
	logPath string
	wsURL   string // ws://127.0.0.1:port/ws
	tcpAddr string // 127.0.0.1:port
	apiURL  string // http://127.0.0.1:port
	apiKey  string
	exited  chan struct{} // closed when the process has exited
	waitErr error
	http    *http.Client
}

// startHerald starts `herald serve` on free loopback ports (port 0; the
// bound addresses are read from its startup banner).
func startHerald(ctx context.Context, bin, dir string, heartbeat time.Duration, logLevel string, extra, env []string) (*heraldProc, error) {
	h := &heraldProc{
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "server.log"),
		exited:  make(chan struct{}),
		http:    &http.Client{Timeout: 10 * time.Second},
	}
	logf, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"serve",
		"-data-dir", h.dataDir,
		"-ws-addr", "127.0.0.1:0",
		"-tcp-addr", "127.0.0.1:0",
		"-api-addr", "127.0.0.1:0",
		"-node", "idlebench",
		"-heartbeat", heartbeat.String(),
		"-log-level", logLevel}
	h.cmd = exec.Command(bin, append(args, extra...)...)
	h.cmd.Env = append(cleanEnv(), env...)
	h.cmd.Stderr = logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		_ = logf.Close()
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, err
	}
	banner := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "API key":
				h.apiKey = v
			case "WebSocket":
				h.wsURL = v
			case "TCP":
				h.tcpAddr = v
			case "API":
				h.apiURL = v
			case "Token": // the last banner line
				banner <- nil
			}
		}
		select {
		case banner <- errors.New("server stdout closed before its startup banner"):
		default: // the banner was complete
		}
	}()
	go func() {
		h.waitErr = h.cmd.Wait()
		_ = logf.Close()
		close(h.exited)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err = <-banner:
	case <-t.C:
		err = errors.New("no startup banner within 30 s")
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if err == nil && (h.wsURL == "" || h.tcpAddr == "" || h.apiURL == "" || h.apiKey == "") {
		err = fmt.Errorf("incomplete startup banner (ws %q, tcp %q, api %q)", h.wsURL, h.tcpAddr, h.apiURL)
	}
	if err != nil {
		h.stop()
		return nil, fmt.Errorf("herald serve: %w (log: %s)", err, h.logPath)
	}
	return h, nil
}

// cleanEnv is the environment without HERALD_* settings, so that only the
// flags configure the server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

func (h *heraldProc) pid() int { return h.cmd.Process.Pid }

// alive reports whether the server is still running.
func (h *heraldProc) alive() bool {
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// heapProfile asks the profiling server for its heap profile, which it
// writes to path, waits for the file (at most 2 minutes) and renames it to
// dst.
func (h *heraldProc) heapProfile(ctx context.Context, path, dst string) error {
	_ = os.Remove(path)
	if err := h.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			if path == dst {
				return nil
			}
			return os.Rename(path, dst)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("no heap profile in %s after 2 minutes (see the server log)", path)
}

// stop asks the server to shut down, and kills it after 10 s.
func (h *heraldProc) stop() {
	if !h.alive() {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-h.exited:
	case <-t.C:
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
}

// serverStats is the part of GET /v1/stats the benchmark checks.
type serverStats struct {
	Connections struct {
		Open        int64             `json:"open"`
		Accepted    uint64            `json:"accepted"`
		Disconnects map[string]uint64 `json:"disconnects"`
	} `json:"connections"`
	Routing struct {
		Users         int64 `json:"users"`
		Subscriptions int64 `json:"subscriptions"`
	} `json:"routing"`
	Sessions struct {
		Sessions int `json:"sessions"`
	} `json:"sessions"`
}

// disconnects returns the total of the disconnect counters.
func (s serverStats) disconnects() uint64 {
	var n uint64
	for _, v := range s.Connections.Disconnects {
		n += v
	}
	return n
}

func (h *heraldProc) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.apiURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.apiKey)
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func (h *heraldProc) stats(ctx context.Context) (serverStats, error) {
	var s serverStats
	body, err := h.get(ctx, "/v1/stats")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal(body, &s)
	return s, err
}

// goMetrics are the Go runtime figures of the server's /metrics.
type goMetrics struct {
	HeapInuse    float64 `json:"go_memstats_heap_inuse_bytes"`
	HeapAlloc    float64 `json:"go_memstats_heap_alloc_bytes"`
	HeapIdle     float64 `json:"go_memstats_heap_idle_bytes"`
	HeapReleased float64 `json:"go_memstats_heap_released_bytes"`
	HeapObjects  float64 `json:"go_memstats_heap_objects"`
	StackInuse   float64 `json:"go_memstats_stack_inuse_bytes"`
	Sys          float64 `json:"go_memstats_sys_bytes"`
	NextGC       float64 `json:"go_memstats_next_gc_bytes"`
	Goroutines   float64 `json:"go_goroutines"`
	Threads      float64 `json:"go_threads"`
}

func (h *heraldProc) metrics(ctx context.Context) (goMetrics, error) {
	body, err := h.get(ctx, "/metrics")
	if err != nil {
		return goMetrics{}, err
	}
	return parseMetrics(body), nil
}

// parseMetrics picks the unlabelled samples goMetrics names out of the
// Prometheus text format.
func parseMetrics(body []byte) goMetrics {
	var m goMetrics
	fields := map[string]*float64{
		"go_memstats_heap_inuse_bytes":    &m.HeapInuse,
		"go_memstats_heap_alloc_bytes":    &m.HeapAlloc,
		"go_memstats_heap_idle_bytes":     &m.HeapIdle,
		"go_memstats_heap_released_bytes": &m.HeapReleased,
		"go_memstats_heap_objects":        &m.HeapObjects,
		"go_memstats_stack_inuse_bytes":   &m.StackInuse,
		"go_memstats_sys_bytes":           &m.Sys,
		"go_memstats_next_gc_bytes":       &m.NextGC,
		"go_goroutines":                   &m.Goroutines,
		"go_threads":                      &m.Threads,
	}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if p := fields[name]; p != nil {
			if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				*p = f
			}
		}
	}
	return m
}

// procStatus is the memory part of /proc/<pid>/status, in bytes.
type procStatus struct {
	VmRSS   int64 `json:"vm_rss"`
	RssAnon int64 `json:"rss_anon"`
	RssFile int64 `json:"rss_file"`
	VmHWM   int64 `json:"vm_hwm"`
	Threads int64 `json:"threads"`
}

func readStatus(pid int) (procStatus, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	return parseStatus(data)
}

func parseStatus(data []byte) (procStatus, error) {
	var s procStatus
	fields := map[string]*int64{"VmRSS": &s.VmRSS, "RssAnon": &s.RssAnon, "RssFile": &s.RssFile, "VmHWM": &s.VmHWM, "Threads": &s.Threads}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		p := fields[k]
		if !ok || p == nil {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc status %s: %w", k, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		*p = n
	}
	if s.VmRSS == 0 {
		return s, errors.New("/proc status: no VmRSS")
	}
	return s, nil
}

// procNoFile returns the soft "Max open files" of a process.
func procNoFile(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/config"
)

// Target is the server under test: where clients connect, where the API is,
// and the app's credentials.
type Target struct {
	WSURL     string // ws://127.0.0.1:8080/ws
	TCPAddr   string // 127.0.0.1:8090
	APIURL    string // http://127.0.0.1:8081
	App       string
	APIKey    string
	Secret    string // token secret, to mint client tokens
	Transport string // "ws" or "tcp": what the clients use
	Node      string // node id in a cluster ("" for a single server)

	proc    *exec.Cmd // set when the bench started the server
	dataDir string
	args    []string
	logPath string
}

// ClientURL is the URL bench clients dial.
func (t *Target) ClientURL() string {
	if t.Transport == "tcp" {
		return "tcp://" + t.TCPAddr
	}
	return t.WSURL
}

// Token mints a client token for user, allowed every topic.
func (t *Target) Token(user string, ttl time.Duration) (string, error) {
	return auth.Mint(t.App, []byte(t.Secret), user, []string{"*"}, ttl, time.Now())
}

// LoadCredentials fills App, APIKey and Secret from a configuration file or,
// when it has no apps, from the development app in dataDir.
func (t *Target) LoadCredentials(configPath, dataDir string) error {
	if t.Secret != "" && t.APIKey != "" && t.App != "" {
		return nil
	}
	cfg, err := config.Load(configPath, nil)
	if err != nil {
		return fmt.Errorf("bench: load config: %w", err)
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if len(cfg.Apps) == 0 {
		app, _, err := config.DevApp(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("bench: development app: %w", err)
		}
		cfg.Apps = []config.App{app}
	}
	a := cfg.Apps[0]
	for _, x := range cfg.Apps {
		if x.ID == t.App {
			a = x
		}
	}
	t.App, t.Secret = a.ID, a.Secret
	if t.APIKey == "" && len(a.APIKeys) > 0 {
		t.APIKey = a.APIKeys[0]
	}
	return nil
}

// Spawn starts `herald serve` (the binary at exe) on free loopback ports
// in a temporary data directory, with extra flags, and waits until its API
// answers.
func Spawn(ctx context.Context, exe string, extra []string) (*Target, error) {
	return spawnNode(ctx, exe, "", extra)
}

// spawnNode is Spawn with a configuration file (empty: none), from which
// the app's credentials are read too.
func spawnNode(ctx context.Context, exe, configPath string, extra []string) (*Target, error) {
	dir, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	t := &Target{
		WSURL:   fmt.Sprintf("ws://127.0.0.1:%d/ws", ports[0]),
		TCPAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		APIURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		dataDir: dir,
		logPath: filepath.Join(dir, "server.log"),
	}
	t.args = append([]string{"serve", "-data-dir", filepath.Join(dir, "data"),
		"-ws-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"-tcp-addr", t.TCPAddr,
		"-api-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"-log-level", "warn"}, extra...)
	if configPath != "" {
		t.args = append([]string{"serve", "-config", configPath}, t.args[1:]...)
	}
	if err := t.start(ctx, exe); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := t.LoadCredentials(configPath, filepath.Join(dir, "data")); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

func (t *Target) start(ctx context.Context, exe string) error {
	logf, err := os.OpenFile(t.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: server log: %w", err)
	}
	cmd := exec.Command(exe, t.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("bench: start server: %w", err)
	}
	logf.Close()
	t.proc = cmd
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(t.APIURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Stop()
			return fmt.Errorf("bench: server did not come up (log: %s): %w", t.logPath, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart kills the spawned server (SIGKILL when hard, else SIGTERM) and
// starts it again on the same ports and data directory.
func (t *Target) Restart(ctx context.Context, hard bool) error {
	if t.proc == nil {
		return errors.New("bench: restart needs a server started by the bench (-spawn)")
	}
	exe := t.proc.Path
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	_ = t.proc.Process.Signal(sig)
	_ = t.proc.Wait()
	t.proc = nil
	return t.start(ctx, exe)
}

// Kill ends a spawned server with SIGKILL and does not restart it; its
// directory stays until Stop.
func (t *Target) Kill() error {
	if t.proc == nil {
		return errors.New("bench: kill needs a running server started by the bench (-spawn)")
	}
	if err := t.proc.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("bench: kill server: %w", err)
	}
	_ = t.proc.Wait()
	t.proc = nil
	return nil
}

// Stop ends a spawned server and removes its directory.
func (t *Target) Stop() {
	if t.proc != nil {
		_ = t.proc.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = t.proc.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = t.proc.Process.Kill()
			<-done
		}
		t.proc = nil
	}
	if t.dataDir != "" {
		_ = os.RemoveAll(t.dataDir)
	}
}

// PID returns the spawned server's process id, or 0.
func (t *Target) PID() int {
	if t.proc == nil || t.proc.Process == nil {
		return 0
	}
	return t.proc.Process.Pid
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ServerSample is what the server's /metrics says about its process.
type ServerSample struct {
	CPU time.Duration // process_cpu_seconds_total
	RSS int64         // process_resident_memory_bytes
	At  time.Time
}

// SampleServer scrapes the process metrics of the server. When the bench
// started the server it reads /proc instead, which has finer CPU resolution.
func (t *Target) SampleServer(ctx context.Context) (ServerSample, error) {
	if pid := t.PID(); pid > 0 {
		if s, err := procSample(pid); err == nil {
			return s, nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.APIURL+"/metrics", nil)
	if err != nil {
		return ServerSample{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ServerSample{}, fmt.Errorf("bench: scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	s := ServerSample{At: time.Now()}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := metricValue(line, "process_cpu_seconds_total"); ok {
			s.CPU = time.Duration(v * float64(time.Second))
		}
		if v, ok := metricValue(line, "process_resident_memory_bytes"); ok {
			s.RSS = int64(v)
		}
	}
	return s, sc.Err()
}

func metricValue(line, name string) (float64, bool) {
	rest, ok := strings.CutPrefix(line, name+" ")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	return v, err == nil
}

// procSample reads CPU (utime+stime) and RSS of pid from /proc.
func procSample(pid int) (ServerSample, error) {
	s := ServerSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, errors.New("bench: bad /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 22 {
		return s, errors.New("bench: short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	s.CPU = time.Duration(ut+st) * time.Second / clkTck
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	s.RSS = rssPages * int64(os.Getpagesize())
	return s, nil
}

// drain discards and closes a response body so the connection is reused.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, body)
	_ = body.Close()
}

// Package testsvc gives tests the services they need: the shared ones
// (NATS, Redis) whose addresses come from the environment, and instances of
// their own (a nats-server or redis-server on a free loopback port) that a
// test may stop, kill and start again. It is imported only by tests.
//
// A test that needs a service it cannot reach fails when the environment
// variable CI is set, and is skipped otherwise with one line saying what is
// missing.
package testsvc

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Paths of the servers StartNATS and StartRedis run.
const (
	NATSServerPath  = "/usr/sbin/nats-server"
	RedisServerPath = "/usr/bin/redis-server"
)

// Defaults of the shared services, and the variables that override them.
const (
	NATSEnv      = "HERALD_TEST_NATS"
	NATSDefault  = "127.0.0.1:4222"
	RedisEnv     = "HERALD_TEST_REDIS"
	RedisDefault = "127.0.0.1:6379"
)

// startTimeout bounds how long a server may take to answer after a start,
// and to exit after a signal.
const startTimeout = 20 * time.Second

// missing fails tb under CI and skips it otherwise.
func missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

// Addr returns the address of the shared service name, read from the
// environment variable env (default def), after checking that it accepts
// connections. When it does not, tb fails if CI is set and is skipped
// otherwise.
func Addr(tb testing.TB, name, env, def string) string {
	tb.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		missing(tb, "%s is not reachable at %s (set %s): %v", name, addr, env, err)
		return ""
	}
	_ = c.Close()
	return addr
}

// NATS returns the address (host:port) of the shared nats-server.
func NATS(tb testing.TB) string {
	tb.Helper()
	return Addr(tb, "nats", NATSEnv, NATSDefault)
}

// Redis returns the address of the shared Redis.
func Redis(tb testing.TB) string {
	tb.Helper()
	return Addr(tb, "redis", RedisEnv, RedisDefault)
}

// Prefix returns a prefix of its own for tb: ASCII letters, digits, '-'
// and '_' only, so it is one NATS subject token and a Redis key prefix
// (add a separator) with no glob characters. It starts "herald-test-",
// then part of the test's name, then random hex.
func Prefix(tb testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, tb.Name())
	if len(name) > 48 {
		name = name[len(name)-48:]
	}
	return "herald-test-" + name + "-" + hex.EncodeToString(b[:])
}

// Server is a server process of one test on a loopback port of its own.
// It is killed when the test ends.
type Server struct {
	tb    testing.TB
	name  string
	path  string
	port  int
	args  func(port int) []string
	log   string // the file the server logs to
	ready func(addr string) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartNATS starts a nats-server on a free loopback port with args added
// to its command line, waits until it answers and stops it when tb ends.
func StartNATS(tb testing.TB, args ...string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	return start(tb, "nats-server", NATSServerPath, filepath.Join(dir, "nats.log"), func(port int) []string {
		return append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-l", filepath.Join(dir, "nats.log")}, args...)
	}, natsReady)
}

// StartRedis starts a redis-server on a free loopback port, with its files
// in dir and args added to its command line (no snapshots unless args ask
// for them), waits until it answers PING and kills it when tb ends.
func StartRedis(tb testing.TB, dir string, args ...string) *Server {
	tb.Helper()
	log := filepath.Join(dir, "redis.log")
	return start(tb, "redis-server", RedisServerPath, log, func(port int) []string {
		return append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--logfile", log, "--save", "", "--daemonize", "no",
		}, args...)
	}, redisReady)
}

func start(tb testing.TB, name, path, log string, args func(int) []string, ready func(string) error) *Server {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(tb, "%s is missing (%s): %v", name, path, err)
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &Server{tb: tb, name: name, path: path, port: port, args: args, log: log, ready: ready}
	tb.Cleanup(s.Kill)
	s.Start()
	return s
}

// Addr returns the server's address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the server's address as a nats:// URL.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Start runs the server (again, on the same port with the same arguments)
// and waits until it answers. It fails the test if the server is running.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.tb.Fatalf("%s on %s: Start while running", s.name, s.Addr())
	}
	cmd := exec.Command(s.path, s.args(s.port)...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("starting %s: %v", s.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.ready(s.Addr())
		if err == nil {
			return
		}
		select {
		case <-done:
			s.cmd = nil
			log, _ := os.ReadFile(s.log)
			s.tb.Fatalf("%s exited at start: %s", s.name, tail(log))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("%s on %s does not answer after %v: %v", s.name, s.Addr(), startTimeout, err)
		}
	}
}

// Stop stops the server with SIGTERM (a clean shutdown) and waits for it
// to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.tb.Fatalf("SIGTERM to %s: %v", s.name, err)
	}
	select {
	case <-s.done:
	case <-time.After(startTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.tb.Errorf("%s did not stop on SIGTERM within %v; killed", s.name, startTimeout)
	}
	s.cmd = nil
}

// Kill kills the server with SIGKILL (a crash) and waits for it to exit.
// Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	resume(s.cmd.Process) // in case a test paused it
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Pid returns the running server's process id, 0 when it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// natsReady checks that a nats-server at addr greets with INFO.
func natsReady(addr string) error {
	return greet(addr, "", "INFO ")
}

// redisReady checks that a redis-server at addr answers PING.
func redisReady(addr string) error {
	return greet(addr, "PING\r\n", "+PONG")
}

// greet dials addr, sends send and wants a first line starting with want.
func greet(addr, send, want string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if send != "" {
		if _, err := c.Write([]byte(send)); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, want) {
		return fmt.Errorf("answer %q, want %q", strings.TrimSpace(line), want)
	}
	return nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// WaitFor calls cond until it returns nil, failing tb with cond's last
// error when that takes longer than d. It polls (every few milliseconds,
// backing off to 50 ms): for conditions that become true by themselves,
// such as a service coming back.
func WaitFor(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		<-time.After(wait) // polling interval, not synchronisation
	}
}

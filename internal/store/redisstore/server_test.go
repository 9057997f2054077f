package redisstore_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/testsvc"
)

// redisServerPath is the redis-server the outage tests run their own
// instances of.
const redisServerPath = "/usr/bin/redis-server"

// redisServer is a redis-server of one test, on a loopback port of its
// own, with its files in a temp dir: the tests kill, stop and restart it,
// never the shared one.
type redisServer struct {
	t    testing.TB
	dir  string
	port int
	args []string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// pid returns the server's process id.
func (r *redisServer) pid() int { return r.cmd.Process.Pid }

// startRedis starts a redis-server with args (besides port, dir and log)
// in dir, and kills it when the test ends. Without redis-server the test
// fails under CI and is skipped otherwise.
func startRedis(t testing.TB, dir string, args ...string) *redisServer {
	t.Helper()
	if _, err := os.Stat(redisServerPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: %v", redisServerPath, err)
		}
		t.Skipf("%s is missing (apt-get install redis-server): %v", redisServerPath, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &redisServer{t: t, dir: dir, port: port, args: args}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// start runs the server (again, with the same port, dir and args) and
// waits until it answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"), "--save", "", "--daemonize", "no",
	}, r.args...)
	r.cmd = exec.Command(redisServerPath, args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	r.done = done
	cmd := r.cmd
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), Protocol: 2, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server exited at start: %s", log)
		case <-ctx.Done():
			r.t.Fatalf("redis-server on %s does not answer: %v", r.addr(), err)
		case <-tick.C:
		}
	}
}

// signal sends sig to the server.
func (r *redisServer) signal(sig syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		r.t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// kill kills the server with SIGKILL (a crash: nothing is flushed) and
// waits for it to exit.
func (r *redisServer) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
	_ = r.cmd.Process.Kill()
	<-r.done
}

// shutdown stops the server with SIGTERM (a clean shutdown: Redis flushes
// and fsyncs its AOF) and waits for it to exit.
func (r *redisServer) shutdown() {
	r.t.Helper()
	r.signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		r.t.Fatal("redis-server did not stop on SIGTERM")
	}
}

// waitFor calls f until it returns nil, for at most d.
func waitFor(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	testsvc.WaitFor(t, d, what, f)
}

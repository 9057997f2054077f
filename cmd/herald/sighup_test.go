//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/protocol"
)

// serveChildEnv makes the test binary run main (herald serve) instead of
// the tests: the server process of TestSIGHUPReload.
const serveChildEnv = "HERALD_TEST_SERVE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(serveChildEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for one writer and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// poll calls cond until it returns nil, failing the test after 15s.
func poll(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestSIGHUPReload runs herald serve as a child process, changes an app's
// API key in its -config file, sends SIGHUP, and checks that the API
// answers with the new key only, that a connection made before stays and
// receives, that a command-line flag keeps winning over the file, that an
// invalid file is refused with every problem logged and
// the configuration in force kept, and that the process is alive.
func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.yaml")
	tcpAddr, apiAddr := freePort(t), freePort(t)
	const (
		secret = "sighup-secret-0123456789"
		key1   = "sighup-key-one-0123456789"
		key2   = "sighup-key-two-0123456789"
	)
	write := func(key, extra string) {
		t.Helper()
		yaml := fmt.Sprintf("node: hup\ndata_dir: %s\nstore: memory\nws:\n  addr: 127.0.0.1:0\n  path: /ws\ntcp:\n  addr: %s\napi:\n  addr: %s\n"+
			"apps:\n  - id: a\n    secret: %s\n    api_keys: [%s]\n%s", dir, tcpAddr, apiAddr, secret, key, extra)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(key1, "")

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd := exec.Command(exe, "serve", "-config", path, "-log-format", "text", "-frame-rate", "700")
	cmd.Env = append(os.Environ(), serveChildEnv+"=1")
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	alive := func() {
		t.Helper()
		select {
		case <-exited:
			t.Fatalf("server process ended:\n%s", stderr.String())
		default:
		}
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	push := func(key string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/apps/a/users/alice/messages", strings.NewReader(`{"data":"hi"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	poll(t, "server up", func() error {
		alive()
		resp, err := hc.Get("http://" + apiAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if s := push(key1); s != http.StatusOK {
		t.Fatalf("push with key1: %d", s)
	}

	// A connection made before the reloads.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.DialConn(ctx, "tcp://"+tcpAddr, client.DialOptions{Encoding: client.Binary})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, err := auth.Mint("a", []byte(secret), "alice", nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Handshake(ctx, tok, "d", nil); err != nil {
		t.Fatal(err)
	}
	// The undelivered push above arrives first, on connect.
	expectPush := func() {
		t.Helper()
		timer := time.AfterFunc(10*time.Second, func() { _ = conn.Close() })
		defer timer.Stop()
		for {
			f, err := conn.ReadFrame()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if f.Type == protocol.TypePush {
				return
			}
		}
	}
	expectPush()

	// Rotate the key through the file; its frame_rate loses to the flag.
	write(key2, "frame_rate: 900\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, "reloaded logged", func() error {
		alive()
		if !strings.Contains(stderr.String(), "msg=reloaded") {
			return fmt.Errorf("not yet:\n%s", stderr.String())
		}
		return nil
	})
	if !strings.Contains(stderr.String(), `changes="[apps: changed a: api_keys (1)]"`) {
		t.Errorf("the reload line does not say what changed, or the file's frame_rate won over the flag:\n%s", stderr.String())
	}
	if s := push(key1); s != http.StatusUnauthorized {
		t.Fatalf("push with the removed key1: %d; want 401", s)
	}
	if s := push(key2); s != http.StatusOK {
		t.Fatalf("push with key2: %d", s)
	}
	expectPush()

	// An invalid file: refused whole, every problem logged.
	write(key1, "max_subscriptions: 0\n")
	if err := os.WriteFile(path, bytes.Replace(must(os.ReadFile(path)), []byte(tcpAddr), []byte("127.0.0.1:1"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, "refusal logged", func() error {
		alive()
		if !strings.Contains(stderr.String(), "reload refused") {
			return fmt.Errorf("not yet:\n%s", stderr.String())
		}
		return nil
	})
	for _, want := range []string{"max_subscriptions: must be at least 1", "tcp.addr: cannot change"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("refusal does not name %q:\n%s", want, stderr.String())
		}
	}
	if s := push(key1); s != http.StatusUnauthorized {
		t.Fatalf("push with key1 after a refused reload: %d; want 401", s)
	}
	if s := push(key2); s != http.StatusOK {
		t.Fatalf("push with key2 after a refused reload: %d", s)
	}
	expectPush()
	alive()
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

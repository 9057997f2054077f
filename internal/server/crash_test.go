package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

const crashChildArg = "herald-crash-child"

// runCrashChild runs a server on the data directory and addresses given in
// the environment until it is killed.
func runCrashChild() {
	cfg := config.Default()
	cfg.Node = "crash"
	cfg.DataDir = os.Getenv("CRASH_DIR")
	cfg.WS.Addr, cfg.TCP.Addr, cfg.API.Addr = "127.0.0.1:0", os.Getenv("CRASH_TCP"), os.Getenv("CRASH_API")
	cfg.Apps = []config.App{{ID: appA, Secret: secretA, APIKeys: []string{keyA}}}
	cfg.Log.Level = "error"
	if id := os.Getenv("CRASH_NODE"); id != "" { // a node of a cluster
		clusterNode(clusterEngines{redis: os.Getenv("CRASH_REDIS"), nats: os.Getenv("CRASH_NATS"), prefix: os.Getenv("CRASH_PREFIX")}, id)(&cfg)
	}
	srv, err := New(cfg, Options{})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(1)
	}
	select {} // until SIGKILL
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// crashChild is a server process started by startCrashChild.
type crashChild struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has ended
	stderr lockedBuffer
}

// kill ends the process with SIGKILL and waits for it.
func (c *crashChild) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// spawnCrashChild starts a server process on dir and waits until its API
// answers. If the process ends first, it returns an error with what the
// process printed.
func spawnCrashChild(t *testing.T, dir, tcpAddr, apiAddr string, env ...string) (*crashChild, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &crashChild{exited: make(chan struct{})}
	c.cmd = exec.Command(exe, crashChildArg)
	c.cmd.Env = append(os.Environ(), "CRASH_DIR="+dir, "CRASH_TCP="+tcpAddr, "CRASH_API="+apiAddr)
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stderr = io.MultiWriter(os.Stderr, &c.stderr)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	var exitErr error
	waitFor(t, "crash child up", func() error {
		select {
		case <-c.exited:
			exitErr = fmt.Errorf("server process ended: %s", c.stderr.String())
			return nil
		default:
		}
		resp, err := http.Get("http://" + apiAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return c, exitErr
}

// startCrashChild starts a server process on dir; it is killed when the
// test ends.
func startCrashChild(t *testing.T, dir, tcpAddr, apiAddr string, env ...string) *crashChild {
	t.Helper()
	c, err := spawnCrashChild(t, dir, tcpAddr, apiAddr, env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	return c
}

// lockedBuffer is a bytes.Buffer safe for a writer and readers on other
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// crashLoad posts messages to a crash child's API from several goroutines
// until it is killed, and records the seq the API answered each accepted
// message id with.
type crashLoad struct {
	mu       sync.Mutex
	accepted map[string]uint64
	stop     chan struct{}
	wg       sync.WaitGroup
}

// startCrashLoad starts workers goroutines posting each messages at most;
// target gives message i of worker w its id and API path.
func startCrashLoad(apiAddr string, workers, each int, target func(w, i int) (id, path string)) *crashLoad {
	l := &crashLoad{accepted: map[string]uint64{}, stop: make(chan struct{})}
	hc := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range each { // bounded; the kill ends it sooner
				select {
				case <-l.stop:
					return
				default:
				}
				id, path := target(w, i)
				body, _ := json.Marshal(map[string]any{"id": id, "data": id})
				req, _ := http.NewRequest("POST", "http://"+apiAddr+path, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				resp, err := hc.Do(req)
				if err != nil {
					return // the server is gone
				}
				var r struct{ Seq uint64 }
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && err == nil {
					l.mu.Lock()
					l.accepted[id] = r.Seq
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

// killAfter waits until min messages were accepted, kills child with
// SIGKILL, stops the load and returns what was accepted.
func (l *crashLoad) killAfter(t *testing.T, child *crashChild, min int) map[string]uint64 {
	t.Helper()
	waitFor(t, "messages accepted", func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.accepted) < min {
			return fmt.Errorf("%d accepted", len(l.accepted))
		}
		return nil
	})
	child.kill()
	close(l.stop)
	l.wg.Wait()
	return l.accepted
}

// TestCrashNothingLost kills the server with SIGKILL while pushes are
// under way, restarts it on the same data directory, and checks that every
// push the API answered with success reaches the user's device, and that
// nothing at or before the device's acknowledged position is sent again.
func TestCrashNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dir := t.TempDir()
	tcpAddr, apiAddr := freeAddr(t), freeAddr(t)
	child := startCrashChild(t, dir, tcpAddr, apiAddr)

	const users = 8
	ctx := context.Background()
	// One device acknowledges what it gets before the crash.
	tok := func(u int) string { return mint(t, appA, secretA, "cu"+strconv.Itoa(u), nil, time.Hour, time.Now()) }
	early, err := client.DialConn(ctx, "tcp://"+tcpAddr, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := early.Handshake(ctx, tok(0), "d", nil); err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Timeout: 5 * time.Second}
	load := startCrashLoad(apiAddr, 8, 5000, func(w, i int) (string, string) {
		return fmt.Sprintf("w%d-%d", w, i), "/v1/apps/" + appA + "/users/cu" + strconv.Itoa(i%users) + "/messages"
	})
	// Acknowledge a few messages on user 0's device, then kill mid-stream.
	var ackedSeq uint64
	earlySeq := map[string]uint64{} // what user 0's device received before the crash
	for ackedSeq < 20 {
		f, err := early.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.TypePush {
			ackedSeq = f.Seq
			earlySeq[f.MsgID] = f.Seq
			if err := early.WriteFrame(&protocol.Frame{Type: protocol.TypeAck, Stream: f.Stream, Seq: f.Seq}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Wait until the last ACK is stored, so the position is known.
	var u struct{ Acked uint64 }
	waitFor(t, "ack stored", func() error {
		req, _ := http.NewRequest("GET", "http://"+apiAddr+"/v1/apps/"+appA+"/users/cu0/unread?device=d", nil)
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
			return err
		}
		if u.Acked != ackedSeq {
			return fmt.Errorf("stored position %d, acked %d", u.Acked, ackedSeq)
		}
		return nil
	})
	early.Close()
	// Let pushes run a while longer, then kill mid-stream.
	accepted := load.killAfter(t, child, 1500)
	n := len(accepted)
	if n == 0 {
		t.Fatal("no push was accepted before the kill")
	}

	// Restart on the same data directory; every user's device collects.
	startCrashChild(t, dir, tcpAddr, apiAddr)
	got := map[string]bool{}
	dups := 0
	for uIdx := range users {
		c, err := client.DialConn(ctx, "tcp://"+tcpAddr, client.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Handshake(ctx, tok(uIdx), "d", nil); err != nil {
			t.Fatal(err)
		}
		// Read until the backlog is done: a marker pushed now comes last.
		marker := "marker-" + strconv.Itoa(uIdx)
		body, _ := json.Marshal(map[string]any{"id": marker, "data": marker})
		req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/apps/"+appA+"/users/cu"+strconv.Itoa(uIdx)+"/messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("marker push: %v", err)
		}
		resp.Body.Close()
		timer := time.AfterFunc(waitTime, func() { c.Close() })
		for {
			f, err := c.ReadFrame()
			if err != nil {
				t.Fatalf("user %d: %v", uIdx, err)
			}
			if f.Type != protocol.TypePush {
				continue
			}
			if uIdx == 0 && u.Acked > 0 && f.Seq <= u.Acked {
				t.Fatalf("seq %d sent again at or before the acknowledged position %d", f.Seq, u.Acked)
			}
			if f.MsgID == marker {
				break
			}
			if got[f.MsgID] {
				dups++
			}
			got[f.MsgID] = true
			// Acknowledge as we go, so the backlog keeps coming in rounds.
			_ = c.WriteFrame(&protocol.Frame{Type: protocol.TypeAck, Stream: f.Stream, Seq: f.Seq})
		}
		timer.Stop()
		c.Close()
	}
	missing := 0
	for id := range accepted {
		if seq, ok := earlySeq[id]; ok && seq <= u.Acked {
			continue // acknowledged before the crash: rightly not sent again
		}
		if !got[id] {
			missing++
		}
	}
	t.Logf("accepted %d pushes before SIGKILL; after restart delivered %d (duplicates %d), user 0 acked up to seq %d", n, len(got), dups, u.Acked)
	if missing > 0 {
		t.Fatalf("%d accepted pushes were not delivered after the restart", missing)
	}
}

// TestCrashTopicHistory kills the server with SIGKILL while publishes to a
// topic are under way, restarts it on the same data directory, and checks
// that a subscriber recovering from before the first publish gets every
// publish the API answered with success, each once, in seq order, with no
// gap, and then a REPLY that says recovered.
func TestCrashTopicHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dir := t.TempDir()
	tcpAddr, apiAddr := freeAddr(t), freeAddr(t)
	child := startCrashChild(t, dir, tcpAddr, apiAddr)
	ctx := context.Background()
	tok := mint(t, appA, secretA, "ct", []string{"crash"}, time.Hour, time.Now())

	// The topic's position before anything is published: (epoch, 0).
	sub := func() (*client.Conn, error) {
		c, err := client.DialConn(ctx, "tcp://"+tcpAddr, client.DialOptions{})
		if err == nil {
			_, err = c.Handshake(ctx, tok, "", nil)
		}
		return c, err
	}
	c, err := sub()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "crash"}); err != nil {
		t.Fatal(err)
	}
	var epoch string
	for epoch == "" {
		f, err := c.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.TypeReply && f.ID == 1 {
			if f.Seq != 0 || f.Epoch == "" {
				t.Fatalf("first position: %s", describe(f))
			}
			epoch = f.Epoch
		}
	}
	c.Close()

	// Bounded, and under the history size: nothing is trimmed.
	load := startCrashLoad(apiAddr, 4, 200, func(w, i int) (string, string) {
		return fmt.Sprintf("p%d-%d", w, i), "/v1/apps/" + appA + "/topics/crash/messages"
	})
	accepted := load.killAfter(t, child, 300)

	startCrashChild(t, dir, tcpAddr, apiAddr)
	got := map[string]uint64{}
	last := recoverTopic(t, tcpAddr, "crash", epoch, got)
	for id, seq := range accepted {
		if got[id] != seq {
			t.Fatalf("accepted publish %s (seq %d) recovered as seq %d", id, seq, got[id])
		}
	}
	t.Logf("accepted %d publishes before SIGKILL; after restart recovered %d (seq 1..%d)", len(accepted), len(got), last)
}

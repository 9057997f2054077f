package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

func startCrashChild(t *testing.T, dir, tcpAddr, apiAddr string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, crashChildArg)
	cmd.Env = append(os.Environ(), "CRASH_DIR="+dir, "CRASH_TCP="+tcpAddr, "CRASH_API="+apiAddr)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "crash child up", func() error {
		resp, err := http.Get("http://" + apiAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return cmd
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

	var mu sync.Mutex
	accepted := map[string]bool{} // message ids the API answered 200 for
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 5 * time.Second}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ { // bounded; the kill ends it sooner
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				body, _ := json.Marshal(map[string]any{"id": id, "data": id})
				req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/apps/"+appA+"/users/cu"+strconv.Itoa(i%users)+"/messages", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				resp, err := hc.Do(req)
				if err != nil {
					return // the server is gone
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					accepted[id] = true
					mu.Unlock()
				}
			}
		}()
	}
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
	waitFor(t, "pushes accepted", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(accepted) < 1500 {
			return fmt.Errorf("%d accepted", len(accepted))
		}
		return nil
	})
	_ = child.Process.Kill()
	_ = child.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(accepted)
	mu.Unlock()
	if n == 0 {
		t.Fatal("no push was accepted before the kill")
	}

	// Restart on the same data directory; every user's device collects.
	child = startCrashChild(t, dir, tcpAddr, apiAddr)
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
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

	var mu sync.Mutex
	accepted := map[string]uint64{} // message id → seq the API answered
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 5 * time.Second}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 { // bounded, and under the history size: nothing is trimmed
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("p%d-%d", w, i)
				body, _ := json.Marshal(map[string]any{"id": id, "data": id})
				req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/apps/"+appA+"/topics/crash/messages", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				resp, err := hc.Do(req)
				if err != nil {
					return // the server is gone
				}
				var r struct{ Seq uint64 }
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && err == nil {
					mu.Lock()
					accepted[id] = r.Seq
					mu.Unlock()
				}
			}
		}()
	}
	waitFor(t, "publishes accepted", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(accepted) < 300 {
			return fmt.Errorf("%d accepted", len(accepted))
		}
		return nil
	})
	_ = child.Process.Kill()
	_ = child.Wait()
	close(stop)
	wg.Wait()

	child = startCrashChild(t, dir, tcpAddr, apiAddr)
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	c, err = sub()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 2, Topic: "crash", Epoch: epoch}); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(waitTime, func() { c.Close() })
	defer timer.Stop()
	got := map[string]uint64{}
	var last uint64
	for {
		f, err := c.ReadFrame()
		if err != nil {
			t.Fatalf("recovery after restart: %v", err)
		}
		if f.Type == protocol.TypeReply && f.ID == 2 {
			if !f.Recovered || f.Epoch != epoch || f.Seq != last {
				t.Fatalf("REPLY %s after %d replayed up to seq %d; want recovered at that seq", describe(f), len(got), last)
			}
			break
		}
		if f.Type != protocol.TypePush {
			continue
		}
		if f.Seq != last+1 {
			t.Fatalf("replayed seq %d after %d: a gap or a repeat", f.Seq, last)
		}
		last = f.Seq
		got[f.MsgID] = f.Seq
	}
	mu.Lock()
	defer mu.Unlock()
	for id, seq := range accepted {
		if got[id] != seq {
			t.Fatalf("accepted publish %s (seq %d) recovered as seq %d", id, seq, got[id])
		}
	}
	t.Logf("accepted %d publishes before SIGKILL; after restart recovered %d (seq 1..%d)", len(accepted), len(got), last)
}

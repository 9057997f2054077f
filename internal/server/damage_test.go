package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/store/embedded"
	"github.com/herald-push/herald/internal/store/embedded/damage"
	"github.com/herald-push/herald/protocol"
)

// TestCrashDamagedLog kills the server with SIGKILL while pushes and
// publishes are under way, damages the newest write-ahead log of its store
// (truncated, tail overwritten, middle overwritten), and restarts it on the
// same data, salvaging it first if the server refuses to start. Clients and
// the API must then see no accepted message missing within an epoch: what
// was lost is announced by a new epoch; every message still held keeps the
// seq it was accepted with; no seq is given twice.
func TestCrashDamagedLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	for _, kind := range damage.Kinds {
		t.Run(kind, func(t *testing.T) { crashDamaged(t, kind) })
	}
}

const damageUsers = 4

func crashDamaged(t *testing.T, kind string) {
	dir := t.TempDir()
	tcpAddr, apiAddr := freeAddr(t), freeAddr(t)
	child := startCrashChild(t, dir, tcpAddr, apiAddr)
	before := storeOf(t, apiAddr)

	load := startCrashLoad(apiAddr, 6, 5000, func(w, i int) (string, string) {
		if w < 4 {
			return fmt.Sprintf("w%d-%d", w, i), "/v1/apps/" + appA + "/users/du" + strconv.Itoa(i%damageUsers) + "/messages"
		}
		return fmt.Sprintf("p%d-%d", w, i), "/v1/apps/" + appA + "/topics/dmg/messages"
	})
	accepted := load.killAfter(t, child, 1500)
	if err := damage.Log(filepath.Join(dir, "store"), kind, 1); err != nil {
		t.Fatal(err)
	}

	child, err := spawnCrashChild(t, dir, tcpAddr, apiAddr)
	salvaged := err != nil
	if salvaged {
		if !strings.Contains(err.Error(), "herald store salvage") {
			t.Fatalf("restart on damaged data: %v; want a refusal that names herald store salvage", err)
		}
		rep, err := embedded.Salvage(filepath.Join(dir, "store"), embedded.Options{})
		if err != nil || rep.Healthy {
			t.Fatalf("salvage: %+v, %v", rep, err)
		}
		startCrashChild(t, dir, tcpAddr, apiAddr)
	} else {
		t.Cleanup(child.kill)
	}
	after := storeOf(t, apiAddr)

	// Every user's device collects its inbox: seqs 1..n without a gap, all
	// in the store's epoch now, each accepted message with its seq.
	got := map[string]uint64{}
	for u := range damageUsers {
		collectInbox(t, tcpAddr, apiAddr, "du"+strconv.Itoa(u), after.Epoch, got)
	}
	// The topic's history, read from its start in the epoch now.
	recoverTopic(t, tcpAddr, "dmg", after.Epoch, got)

	missing := 0
	for id, seq := range accepted {
		g, ok := got[id]
		switch {
		case !ok:
			missing++
		case g != seq:
			t.Fatalf("accepted %s as seq %d; after the restart it is seq %d", id, seq, g)
		}
	}
	t.Logf("%s: %d accepted before SIGKILL; %d missing after restart; epoch %s -> %s; salvaged %v",
		kind, len(accepted), missing, before.Epoch, after.Epoch, salvaged)
	if missing > 0 && after.Epoch == before.Epoch {
		t.Fatalf("%d accepted messages are missing and the epoch is unchanged: a silent loss", missing)
	}
	if missing == 0 {
		t.Fatalf("damage %q lost nothing: the test does not damage what it means to", kind)
	}
	if !salvaged && after.LossesDetected != 1 {
		t.Fatalf("store stats %+v; want the loss counted", after)
	}
	// A client that kept its topic position from before is told it cannot
	// recover, with the new epoch.
	c := crashConn(t, tcpAddr, "dmg-old", "")
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "dmg", Epoch: before.Epoch, Seq: 1})
	if r := c.expect(protocol.TypeReply); r.Recovered || r.Epoch != after.Epoch {
		t.Fatalf("resubscribe from the lost epoch: %s; want not recovered, epoch %s", describe(r), after.Epoch)
	}
}

// storeStatus is the store part of GET /v1/stats.
type storeStatus struct {
	Healthy        bool   `json:"healthy"`
	Epoch          string `json:"epoch"`
	LossesDetected uint64 `json:"data_loss_detected"`
}

func storeOf(t *testing.T, apiAddr string) storeStatus {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+apiAddr+"/v1/stats", nil)
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Store storeStatus }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Store.Epoch == "" || !st.Store.Healthy {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	return st.Store
}

// crashConn connects a frame-level client to a crash child over TCP.
func crashConn(t *testing.T, tcpAddr, user, device string) *tconn {
	t.Helper()
	c, err := client.DialConn(context.Background(), "tcp://"+tcpAddr, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := newTconn(t, c, user)
	t.Cleanup(func() { c.Close() })
	if _, err := tc.handshake(mint(t, appA, secretA, user, []string{"*"}, time.Hour, time.Now()), device); err != nil {
		t.Fatal(err)
	}
	return tc
}

// collectInbox reads user's inbox on a new device up to a marker pushed
// now, checking that every PUSH is in epoch and that seqs run 1, 2, ...
// without a gap; it records each message's seq in got.
func collectInbox(t *testing.T, tcpAddr, apiAddr, user, epoch string, got map[string]uint64) {
	t.Helper()
	c := crashConn(t, tcpAddr, user, "d")
	marker := "marker-" + user
	body, _ := json.Marshal(map[string]any{"id": marker, "data": marker})
	req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/apps/"+appA+"/users/"+user+"/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("marker push: %v", err)
	}
	var ans struct{ Seq uint64 }
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	var last uint64
	for {
		f := c.next()
		if f.Type != protocol.TypePush {
			continue
		}
		if f.Epoch != epoch || f.Seq != last+1 {
			t.Fatalf("%s: PUSH %s after seq %d; want epoch %s, seq %d", user, describe(f), last, epoch, last+1)
		}
		last = f.Seq
		if f.MsgID == marker {
			if f.Seq != ans.Seq {
				t.Fatalf("%s: marker accepted as seq %d, delivered as %d", user, ans.Seq, f.Seq)
			}
			return
		}
		if _, dup := got[f.MsgID]; dup {
			t.Fatalf("%s: message %s delivered twice", user, f.MsgID)
		}
		got[f.MsgID] = f.Seq
		c.write(&protocol.Frame{Type: protocol.TypeAck, Stream: f.Stream, Seq: f.Seq})
	}
}

// recoverTopic reads topic's history from its start in epoch: seqs 1, 2,
// ... without a gap, then a REPLY that says recovered; it records each
// message's seq in got and returns the last seq.
func recoverTopic(t *testing.T, tcpAddr, topic, epoch string, got map[string]uint64) uint64 {
	t.Helper()
	c := crashConn(t, tcpAddr, "topic-reader", "")
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 7, Topic: topic, Epoch: epoch})
	var last uint64
	for {
		f := c.next()
		if f.Type == protocol.TypeReply && f.ID == 7 {
			if !f.Recovered || f.Epoch != epoch || f.Seq != last {
				t.Fatalf("topic REPLY %s after seq %d; want recovered in %s", describe(f), last, epoch)
			}
			return last
		}
		if f.Type != protocol.TypePush {
			continue
		}
		if f.Seq != last+1 {
			t.Fatalf("topic replay: seq %d after %d", f.Seq, last)
		}
		last = f.Seq
		got[f.MsgID] = f.Seq
	}
}

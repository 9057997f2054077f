package server

// End-to-end tests of a cluster: three servers in this process share the
// test Redis (store and presence, under a key prefix of the test's own)
// and the test NATS (broker, under a subject prefix of the test's own).
// Clients and API calls go to different nodes over real sockets.

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/internal/testsvc"
	"github.com/herald-push/herald/protocol"
)

// sharedEngines returns the shared Redis and NATS with a prefix of the
// test's own (failing the test under CI when either is missing).
func sharedEngines(t testing.TB) clusterEngines {
	t.Helper()
	e := clusterEngines{redis: testsvc.Redis(t), nats: "nats://" + testsvc.NATS(t), prefix: testsvc.Prefix(t)}
	t.Cleanup(func() { deleteKeys(t, e.redis, e.prefix+":") })
	return e
}

// deleteKeys deletes the keys under prefix (which has no glob
// characters) from the Redis at addr: what a test cluster left.
func deleteKeys(t testing.TB, addr, prefix string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			_ = rdb.Unlink(ctx, keys...).Err()
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		_ = rdb.Unlink(ctx, keys...).Err()
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleaning up %s*: %v", prefix, err)
	}
}

// startCluster starts n nodes (n1, n2, ...) on e.
func startCluster(t *testing.T, e clusterEngines, n int, mutate ...func(*config.Config)) []*harness {
	t.Helper()
	nodes := make([]*harness, n)
	for i := range nodes {
		nodes[i] = startServer(t, append([]func(*config.Config){clusterNode(e, fmt.Sprintf("n%d", i+1))}, mutate...)...)
	}
	return nodes
}

// connectTo dials node h and completes the handshake (CONNECTED must name
// h's node).
func (h *harness) connectTo(tr transport, name, token, device string) *tconn {
	h.t.Helper()
	c := h.dial(tr, name)
	f, err := c.handshake(token, device)
	if err != nil {
		h.t.Fatalf("%s: handshake with %s: %v", c.name, h.cfg.Node, err)
	}
	if f.Node != h.cfg.Node {
		h.t.Fatalf("%s: CONNECTED from node %q; want %q", c.name, f.Node, h.cfg.Node)
	}
	return c
}

// TestClusterPushAcrossNodes pushes through one node to a user whose
// devices are on the two others, and to a user who is offline and
// connects later to a third node.
func TestClusterPushAcrossNodes(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, sharedEngines(t), 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	phone := c.connectTo(wsBinary, "phone", c.token(appA, "alice"), "phone")
	laptop := b.connectTo(rawTCP, "laptop", b.token(appA, "alice"), "laptop")
	for i := 1; i <= 3; i++ {
		r := a.pushUser(appA, "alice", i)
		if r.ID == "" {
			t.Fatalf("push %d: %+v", i, r)
		}
	}
	for _, dev := range []*tconn{phone, laptop} {
		for i := 1; i <= 3; i++ {
			f := dev.expectPush("u:alice", jsonOf(t, i))
			if f.Seq != uint64(i) {
				t.Fatalf("%s: push %d has seq %d", dev.name, i, f.Seq)
			}
			dev.write(&protocol.Frame{Type: protocol.TypeAck, Stream: "u:alice", Seq: f.Seq})
		}
	}

	// Offline user: stored through b, delivered when bob connects to c.
	b.pushUser(appA, "bob", "while away")
	tablet := c.connectTo(wsJSON, "tablet", c.token(appA, "bob"), "tablet")
	tablet.expectPush("u:bob", jsonOf(t, "while away"))
	a.pushUser(appA, "bob", "live")
	tablet.expectPush("u:bob", jsonOf(t, "live"))

	// c counts what reached it from the others, and says how its broker is.
	// Only "live" must have come through the broker: c subscribed to
	// bob's inbox before it read the store for the tablet, while alice's
	// first pushes may have been read from the store by the phone's
	// catch-up (CONNECTED precedes it).
	var st struct {
		Sessions struct {
			RemoteIn uint64 `json:"remote_in"`
		} `json:"sessions"`
		Cluster *struct {
			BrokerHealthy bool `json:"broker_healthy"`
			Broker        struct {
				Received uint64 `json:"received"`
			} `json:"broker"`
		} `json:"cluster"`
	}
	c.apiOK("GET", "/v1/stats", keyA, nil, &st)
	if st.Cluster == nil || !st.Cluster.BrokerHealthy || st.Cluster.Broker.Received < 1 || st.Sessions.RemoteIn < 1 {
		t.Fatalf("stats of n3: %+v", st)
	}
	_, raw := c.apiCall("GET", "/metrics", "", nil)
	if !strings.Contains(string(raw), "\nherald_broker_up 1\n") || !strings.Contains(string(raw), "\nherald_registry_up 1\n") {
		t.Fatal("GET /metrics of n3 lacks herald_broker_up 1 or herald_registry_up 1")
	}
}

// TestClusterTopicOrder publishes through every node at once to
// subscribers on every node: each subscriber gets every message once, in
// the topic's order (seq 1, 2, 3, ...).
func TestClusterTopicOrder(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, sharedEngines(t), 3)
	var subs []*tconn
	for i, h := range nodes {
		for j, tr := range []transport{wsBinary, rawTCP} {
			s := h.connectTo(tr, fmt.Sprintf("sub%d-%d", i, j), h.token(appA, fmt.Sprintf("u%d-%d", i, j), "*"), "d")
			s.subscribe(1, "prices")
			subs = append(subs, s)
		}
	}
	const each = 40
	var wg sync.WaitGroup
	for _, h := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				status, raw := h.apiCall("POST", "/v1/apps/"+appA+"/topics/prices/messages", keyA, map[string]any{"data": h.cfg.Node})
				if status != http.StatusOK {
					t.Errorf("publish through %s: %d %s", h.cfg.Node, status, raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range subs {
		perNode := map[string]int{}
		for seq := uint64(1); seq <= 3*each; seq++ {
			f := s.expect(protocol.TypePush)
			if f.Stream != "t:prices" || f.Seq != seq {
				t.Fatalf("%s: got %s seq %d; want t:prices seq %d", s.name, f.Stream, f.Seq, seq)
			}
			perNode[strings.Trim(string(f.Payload), `"`)]++
		}
		for _, h := range nodes {
			if perNode[h.cfg.Node] != each {
				t.Fatalf("%s: %d messages published through %s; want %d", s.name, perNode[h.cfg.Node], h.cfg.Node, each)
			}
		}
	}

	// A broadcast through n2 reaches every node's connections.
	nodes[1].broadcast(appA, "all")
	for _, s := range subs {
		s.expectPush("b", jsonOf(t, "all"))
	}
}

// TestClusterPresenceKickAndDuplicateLogin checks presence, kick and
// duplicate login across nodes.
func TestClusterPresenceKickAndDuplicateLogin(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, sharedEngines(t), 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	phone := a.connectTo(wsBinary, "phone", a.token(appA, "carol"), "phone")
	laptop := b.connectTo(wsJSON, "laptop", b.token(appA, "carol"), "laptop")

	type presence struct {
		Online  bool `json:"online"`
		Devices []struct {
			Device string `json:"device"`
			Node   string `json:"node"`
		} `json:"devices"`
	}
	var p presence
	c.apiOK("GET", "/v1/apps/"+appA+"/users/carol/presence", keyA, nil, &p)
	var got []string
	for _, d := range p.Devices {
		got = append(got, d.Device+"@"+d.Node)
	}
	sort.Strings(got)
	if !p.Online || strings.Join(got, ",") != "laptop@n2,phone@n1" {
		t.Fatalf("presence through n3: %+v", p)
	}

	// The same device logs in on n3: its connection on n1 is replaced.
	phone2 := c.connectTo(rawTCP, "phone2", c.token(appA, "carol"), "phone")
	phone.expectDisconnect(protocol.DisconnectReplaced)
	waitFor(t, "presence to show the phone on n3", func() error {
		var p presence
		a.apiOK("GET", "/v1/apps/"+appA+"/users/carol/presence", keyA, nil, &p)
		for _, d := range p.Devices {
			if d.Device == "phone" && d.Node != "n3" {
				return fmt.Errorf("phone on %s", d.Node)
			}
		}
		if len(p.Devices) != 2 {
			return fmt.Errorf("devices %+v", p.Devices)
		}
		return nil
	})

	// A kick through n1 reaches the laptop on n2.
	var k struct {
		Kicked int `json:"kicked"`
	}
	a.apiOK("POST", "/v1/apps/"+appA+"/users/carol/kick", keyA, map[string]any{"device": "laptop"}, &k)
	if k.Kicked != 1 {
		t.Fatalf("kick through n1: %+v", k)
	}
	laptop.expectDisconnect(protocol.DisconnectKicked)
	phone2.ping(7) // still connected

	// Every node lists the three.
	var cl struct {
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
	}
	b.apiOK("GET", "/v1/cluster", keyA, nil, &cl)
	if len(cl.Nodes) != 3 || cl.Nodes[0].ID != "n1" || cl.Nodes[2].ID != "n3" {
		t.Fatalf("GET /v1/cluster: %+v", cl)
	}
	status, raw := c.apiCall("GET", "/healthz", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /healthz on n3: %d %s", status, raw)
	}
}

// TestClusterSwitches: a switch flipped through one node's admin API is in
// force on every node, and on a node that starts later (the overrides are
// in Redis); a pause holds messages pushed through any node for devices
// on any node, and resuming delivers them in order.
func TestClusterSwitches(t *testing.T) {
	t.Parallel()
	e := sharedEngines(t)
	nodes := startCluster(t, e, 2, withAdmin)
	a, b := nodes[0], nodes[1]
	dev := b.connectTo(wsBinary, "dev", b.token(appA, "alice"), "phone")
	live := b.pushLive(dev, appA, "alice") // the catch-up is over

	a.apiOK("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "pause", "app": appA, "on": true}, nil)
	waitFor(t, "pause in force on n2", func() error {
		if !b.srv.Switches().On(switches.Pause, appA) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	late := startServer(t, clusterNode(e, "n3"), withAdmin)
	if !late.srv.Switches().On(switches.Pause, appA) {
		t.Fatalf("a node started after the flip: switches in force %+v; want pause for %s", late.srv.Switches().InForce(), appA)
	}
	waitFor(t, "the admin status of n1 lists the three nodes", func() error {
		var st struct {
			Cluster *struct {
				Nodes []struct {
					ID string `json:"id"`
				} `json:"nodes"`
			} `json:"cluster"`
		}
		a.apiOK("GET", "/admin/v1/status", adminToken, nil, &st)
		if st.Cluster == nil || len(st.Cluster.Nodes) != 3 {
			return fmt.Errorf("cluster %+v", st.Cluster)
		}
		return nil
	})
	for i := 1; i <= 3; i++ {
		var r struct {
			Held bool `json:"held"`
		}
		a.apiOK("POST", "/v1/apps/"+appA+"/users/alice/messages", keyA, map[string]any{"data": i}, &r)
		if !r.Held {
			t.Fatalf("push %d through n1 not held", i)
		}
	}
	dev.ping(1) // nothing reached n2's device
	b.apiOK("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "pause", "app": appA, "on": false}, nil)
	for i := 1; i <= 3; i++ {
		if f := dev.expectPush("u:alice", jsonOf(t, i)); f.Seq != uint64(live+i) {
			t.Fatalf("after resume: seq %d; want %d", f.Seq, live+i)
		}
	}
	waitFor(t, "pause off on n1 and n3", func() error {
		if a.srv.Switches().On(switches.Pause, appA) || late.srv.Switches().On(switches.Pause, appA) {
			return fmt.Errorf("still on")
		}
		return nil
	})
}

// TestClusterAdminNodeRates: each node reports its last second's rates
// with its load, so the admin status (and the dashboard's table of nodes)
// of any node shows every node's qps, deliveries and p99.
func TestClusterAdminNodeRates(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, sharedEngines(t), 2, withAdmin)
	a, b := nodes[0], nodes[1]
	dev := b.connectTo(wsBinary, "dev", b.token(appA, "bob"), "phone")
	b.pushLive(dev, appA, "bob")
	i := 100
	waitFor(t, "n2's rates in n1's admin status", func() error {
		// Keep n2 busy: the rates are those of its last second when it
		// last reported.
		i++
		b.apiOK("POST", "/v1/apps/"+appA+"/users/bob/messages", keyA, map[string]any{"data": i}, nil)
		dev.expectPush("u:bob", jsonOf(t, i))
		var st struct {
			Cluster struct {
				Nodes []struct {
					ID   string `json:"id"`
					Load struct {
						APIPerS        float64 `json:"api_per_s"`
						DeliveriesPerS float64 `json:"deliveries_per_s"`
						P99Ms          float64 `json:"p99_ms"`
					} `json:"load"`
				} `json:"nodes"`
			} `json:"cluster"`
		}
		a.apiOK("GET", "/admin/v1/status", adminToken, nil, &st)
		for _, n := range st.Cluster.Nodes {
			if n.ID == "n2" && n.Load.APIPerS > 0 && n.Load.DeliveriesPerS > 0 && n.Load.P99Ms > 0 {
				return nil
			}
		}
		return fmt.Errorf("nodes %+v", st.Cluster.Nodes)
	})
}

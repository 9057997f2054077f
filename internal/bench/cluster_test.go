package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/testsvc"
)

// spawnTestCluster starts an n-node cluster of this test binary (see
// testServe) on the shared Redis and NATS, with a prefix of the test's
// own, and checks when the test ends that its keys were deleted.
func spawnTestCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	redisAddr, natsAddr := testsvc.Redis(t), testsvc.NATS(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := SpawnCluster(ctx, exe, ClusterOptions{Nodes: n, Redis: redisAddr, NATS: natsAddr, Prefix: testsvc.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
		defer rdb.Close()
		keys, _, err := rdb.Scan(context.Background(), 0, c.Prefix+":*", 1000).Result()
		if err != nil {
			t.Error(err)
		} else if len(keys) > 0 {
			t.Errorf("%d keys of the run left in Redis, e.g. %s", len(keys), keys[0])
		}
	})
	for i, node := range c.Nodes {
		if want := "n" + string(rune('1'+i)); node.Node != want || node.PID() == 0 || node.App != "bench" || node.APIKey == "" {
			t.Fatalf("node %d: %+v", i+1, node)
		}
	}
	return c
}

// clusterOptions are testOptions over the nodes of c.
func clusterOptions(t *testing.T, scenario string, c *Cluster) Options {
	t.Helper()
	o := testOptions(t, scenario, c.Nodes[0])
	o.More, o.Cluster = c.Nodes[1:], true
	return o
}

// runClean runs o and fails unless nothing was lost, duplicated or failed.
func runClean(t *testing.T, o Options) Result {
	t.Helper()
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if why := Failed(r); len(why) > 0 {
		t.Fatalf("failed: %v (errors %v, connect failures %v, notes %q)", why, r.Errors, r.ConnectFail, r.Notes)
	}
	return r
}

// TestClusterScenarios spawns a two-node cluster and runs short unicast
// and fan-out runs on it: with the clients and the API on the same node,
// spread over both, and with every message crossing from the API node to
// the clients' node.
func TestClusterScenarios(t *testing.T) {
	c := spawnTestCluster(t, 2)
	cases := []struct {
		name, scenario string
		clients, apis  []int
	}{
		{"unicast-same-node", "unicast", []int{1}, []int{1}},
		{"fanout-spread", "fanout", nil, nil},
		{"fanout-same-node", "fanout", []int{0}, []int{0}},
		{"unicast-cross", "unicast", []int{1}, []int{0}},
		{"fanout-cross", "fanout", []int{1}, []int{0}},
	}
	for _, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			o := clusterOptions(t, k.scenario, c)
			o.ClientNodes, o.APINodes = k.clients, k.apis
			r := runClean(t, o)
			want := int64(50)
			if k.scenario == "fanout" {
				want = 200 * 50
			}
			if r.Expected != want || r.Delivered != want || r.Connections != 200 {
				t.Errorf("expected %d delivered %d connections %d, want %d, %d, 200", r.Expected, r.Delivered, r.Connections, want, want)
			}
			if r.Params["nodes"] != "2" {
				t.Errorf("params %v", r.Params)
			}
			notes := strings.Join(r.Notes, "\n")
			if !strings.Contains(notes, "n1: CPU") || !strings.Contains(notes, "n2: CPU") {
				t.Errorf("no per-node figures in the notes: %q", r.Notes)
			}
		})
	}
}

// TestParseTargets finds a running cluster's client addresses from its
// nodes' API URLs, as -targets does, and takes api+ws+tcp as given.
func TestParseTargets(t *testing.T) {
	c := spawnTestCluster(t, 2)
	base := Target{App: c.Nodes[0].App, APIKey: c.Nodes[0].APIKey, Secret: c.Nodes[0].Secret, Transport: "tcp"}
	ts, err := ParseTargets(context.Background(), c.Nodes[0].APIURL+","+c.Nodes[1].APIURL+"/", base)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 {
		t.Fatalf("%d targets", len(ts))
	}
	for i, tg := range ts {
		n := c.Nodes[i]
		if tg.Node != n.Node || tg.WSURL != n.WSURL || tg.TCPAddr != n.TCPAddr || tg.APIURL != n.APIURL || tg.Transport != "tcp" || tg.Secret != n.Secret {
			t.Errorf("target %d: %+v, want node %s at %s, %s", i+1, tg, n.Node, n.WSURL, n.TCPAddr)
		}
	}
	bad := base
	bad.APIKey = "wrong"
	if _, err := ParseTargets(context.Background(), c.Nodes[0].APIURL, bad); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a wrong key: %v", err)
	}
	ts, err = ParseTargets(context.Background(), "http://127.0.0.1:1+ws://127.0.0.1:2/ws+127.0.0.1:3", base)
	if err != nil || ts[0].WSURL != "ws://127.0.0.1:2/ws" || ts[0].TCPAddr != "127.0.0.1:3" || ts[0].APIURL != "http://127.0.0.1:1" {
		t.Errorf("explicit: %+v, %v", ts, err)
	}
	if _, err := ParseTargets(context.Background(), "a+b", base); err == nil {
		t.Error("a+b accepted")
	}
}

// TestClusterStormKill kills node 1 of a three-node cluster with every
// client on it: they move to nodes 2 and 3 and get every inbox message
// pushed (through those nodes) before and after the kill, and recover
// their topic.
func TestClusterStormKill(t *testing.T) {
	c := spawnTestCluster(t, 3)
	o := clusterOptions(t, "storm", c)
	o.StormMode, o.Inbox, o.TopicMissed, o.Drain = "kill", 2, 3, 10*time.Second
	r := runClean(t, o)
	if r.Connections != 200 {
		t.Errorf("connections %d, want 200", r.Connections)
	}
	checkStormInbox(t, r)
	if c.Nodes[0].PID() != 0 {
		t.Error("node 1 still running")
	}
}

// TestNodeFlags checks the command line's choices of nodes: clear errors,
// no panics.
func TestNodeFlags(t *testing.T) {
	cases := []struct {
		f       NodeFlags
		wantErr string
		n       int
		clients []int
		apis    []int
	}{
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 1, Cluster: 3}, n: 3},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, ClientNodes: "2,3", APINodes: "1"}, n: 3, clients: []int{1, 2}, apis: []int{0}},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, ClientNodes: "2-3"}, n: 3, clients: []int{1, 2}},
		{f: NodeFlags{Scenario: "storm", Mode: "kill", Spawn: true, Servers: 1, Cluster: 2}, n: 2},
		{f: NodeFlags{Scenario: "fanout", Servers: 1, Targets: "http://a,http://b"}, n: 2},
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 1}, n: 1},
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 1, Cluster: -1}, wantErr: "-cluster must be 1 to 9"},
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 1, Cluster: 10}, wantErr: "-cluster must be 1 to 9"},
		{f: NodeFlags{Scenario: "fanout", Servers: 1, Cluster: 3}, wantErr: "needs -spawn"},
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 2, Cluster: 3}, wantErr: "exclude each other"},
		{f: NodeFlags{Scenario: "fanout", Spawn: true, Servers: 2}, wantErr: "connect scenario only"},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, APINodes: "4"}, wantErr: "-api-nodes \"4\": node 4 out of range: the run has 3 node(s)"},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, APINodes: "0"}, wantErr: "out of range"},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, ClientNodes: "x"}, wantErr: "not a node number"},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, Cluster: 3, ClientNodes: "3-2"}, wantErr: "bad range"},
		{f: NodeFlags{Scenario: "unicast", Spawn: true, Servers: 1, APINodes: "1"}, wantErr: "give -cluster N or -targets"},
		{f: NodeFlags{Scenario: "storm", Mode: "kill", Spawn: true, Servers: 1}, wantErr: "-mode kill kills node 1 of a cluster the bench started: give -cluster N"},
		{f: NodeFlags{Scenario: "storm", Mode: "kill", Spawn: true, Servers: 1, Cluster: 1}, wantErr: "(2 or more)"},
		{f: NodeFlags{Scenario: "storm", Mode: "kill", Servers: 1, Targets: "http://a,http://b"}, wantErr: "give -cluster N"},
	}
	for _, c := range cases {
		n, clients, apis, err := c.f.Check()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%+v: error %v, want one containing %q", c.f, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", c.f, err)
			continue
		}
		if n != c.n || !equalInts(clients, c.clients) || !equalInts(apis, c.apis) {
			t.Errorf("%+v: %d nodes, clients %v, api %v; want %d, %v, %v", c.f, n, clients, apis, c.n, c.clients, c.apis)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRunValidatesNodes checks that Run refuses bad node choices and storm
// modes before starting anything.
func TestRunValidatesNodes(t *testing.T) {
	one := &Target{WSURL: "ws://127.0.0.1:1/ws", APIURL: "http://127.0.0.1:1", App: "a", APIKey: "k", Secret: "s", Transport: "ws"}
	two := &Target{WSURL: "ws://127.0.0.1:2/ws", APIURL: "http://127.0.0.1:2", App: "a", APIKey: "k", Secret: "s", Transport: "ws"}
	cases := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"no server", Options{Scenario: "fanout"}, "no server"},
		{"client node out of range", Options{Scenario: "fanout", Target: one, More: []*Target{two}, Cluster: true, ClientNodes: []int{2}}, "-client-nodes: node 3 out of range: the run has 2 node(s)"},
		{"api node out of range", Options{Scenario: "unicast", Target: one, APINodes: []int{-1}}, "-api-nodes: node 0 out of range"},
		{"kill without a cluster", Options{Scenario: "storm", StormMode: "kill", Target: one}, "-mode kill needs a cluster"},
		{"kill of servers not spawned", Options{Scenario: "storm", StormMode: "kill", Target: one, More: []*Target{two}, Cluster: true}, "needs nodes started by the bench"},
		{"restart of a cluster", Options{Scenario: "storm", StormMode: "restart", Target: one, More: []*Target{two}, Cluster: true}, "restarts a single server"},
		{"independent servers", Options{Scenario: "unicast", Target: one, More: []*Target{two}}, "connect scenario only"},
		{"unknown mode", Options{Scenario: "storm", StormMode: "nap", Target: one}, "unknown storm -mode \"nap\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.o.Timeout = 10 * time.Second
			_, err := Run(context.Background(), c.o)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

// TestKillDefaults checks the kill storm's default nodes and that a
// client of node 1 falls back to the other nodes, each worker starting at
// a different one.
func TestKillDefaults(t *testing.T) {
	ts := []*Target{{Node: "n1", WSURL: "ws://h:1/ws"}, {Node: "n2", WSURL: "ws://h:2/ws"}, {Node: "n3", WSURL: "ws://h:3/ws"}}
	for _, x := range ts {
		x.Transport = "ws"
	}
	o := Options{Scenario: "storm", StormMode: "kill", Target: ts[0], More: ts[1:], Cluster: true}
	o.ClientNodes, o.APINodes = nil, nil
	// validate needs node 1 spawned; check the defaults it fills after
	// that check through a copy with the mode it does not refuse.
	d := o
	d.StormMode = "drop"
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	if !equalInts(d.ClientNodes, []int{0, 1, 2}) || !equalInts(d.APINodes, []int{0, 1, 2}) {
		t.Errorf("drop: clients %v api %v", d.ClientNodes, d.APINodes)
	}
	if got := o.fallbacks(ts[0], 0); strings.Join(got, " ") != "ws://h:2/ws ws://h:3/ws" {
		t.Errorf("worker 0 fallbacks %v", got)
	}
	if got := o.fallbacks(ts[0], 1); strings.Join(got, " ") != "ws://h:3/ws ws://h:2/ws" {
		t.Errorf("worker 1 fallbacks %v", got)
	}
	d.Cluster = false
	if got := d.fallbacks(ts[0], 0); got != nil {
		t.Errorf("independent servers have fallbacks %v", got)
	}
}

// TestFallbackURL: clients assigned to a node that is down connect to the
// next node of the cluster instead, and get every message.
func TestFallbackURL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	live := startServer(t)
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	dead := *live
	dead.WSURL = "ws://127.0.0.1:" + strconv.Itoa(ports[0]) + "/ws"
	dead.APIURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	o := testOptions(t, "unicast", &dead)
	o.More, o.Cluster = []*Target{live}, true
	o.ClientNodes, o.APINodes = []int{0}, []int{1}
	r := runClean(t, o)
	if r.Connections != 200 || r.Delivered != 50 {
		t.Errorf("connections %d delivered %d, want 200, 50", r.Connections, r.Delivered)
	}
}

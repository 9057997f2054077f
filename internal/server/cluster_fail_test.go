package server

// Failures of a cluster under load: a node killed with -9, NATS stopped,
// Redis stopped. Every message the API accepted must reach its device;
// the outage tests run their own NATS or Redis and stop those.

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/testsvc"
)

// longWait bounds waits that include reconnections and lease expiry.
const longWait = 30 * time.Second

// receivers are managed clients, one device per user, that record every
// message id they get.
type receivers struct {
	mu   sync.Mutex
	got  map[string]map[string]int // user → message id → times received
	node map[string]string         // user → node of its current connection
	cs   []*client.Client
}

// startReceivers connects one AutoAck client per user, trying urls in
// order, and waits until all are connected.
func startReceivers(t *testing.T, users []string, urls []string) *receivers {
	t.Helper()
	r := &receivers{got: map[string]map[string]int{}, node: map[string]string{}}
	for _, u := range users {
		r.got[u] = map[string]int{}
		c, err := client.New(client.Config{
			URLs:       urls,
			Token:      mint(t, appA, secretA, u, nil, time.Hour, time.Now()),
			Device:     "d",
			AutoAck:    true,
			MinBackoff: 20 * time.Millisecond,
			MaxBackoff: 300 * time.Millisecond,
			OnMessage: func(m client.Message) {
				r.mu.Lock()
				r.got[u][m.ID]++
				r.mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		err = c.Connect(ctx)
		cancel()
		if err != nil {
			t.Fatalf("receiver %s: %v", u, err)
		}
		r.cs = append(r.cs, c)
		t.Cleanup(func() { _ = c.Close() })
	}
	return r
}

// missing returns how many of accepted (message id → user) no receiver
// got, with an example.
func (r *receivers) missing(accepted map[string]string) (n int, example string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, u := range accepted {
		if r.got[u][id] == 0 {
			n++
			example = id + " for " + u
		}
	}
	return n, example
}

// duplicates counts messages received more than once.
func (r *receivers) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ids := range r.got {
		for _, k := range ids {
			n += k - 1
		}
	}
	return n
}

// pushLoad pushes inbox messages through one API base URL from a few
// goroutines, round robin over users, until stopped or each worker has
// sent max; it records every accepted id and counts answers by status.
type pushLoad struct {
	mu       sync.Mutex
	accepted map[string]string // id → user
	status   map[int]int
	bodies   map[int]string // one body per non-200 status
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startPushLoad(base string, users []string, workers, max int) *pushLoad {
	l := &pushLoad{accepted: map[string]string{}, status: map[int]int{}, bodies: map[int]string{}, stop: make(chan struct{})}
	hc := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range max {
				select {
				case <-l.stop:
					return
				default:
				}
				id, user := fmt.Sprintf("w%d-%d", w, i), users[(w+i)%len(users)]
				req, _ := http.NewRequest("POST", base+"/v1/apps/"+appA+"/users/"+user+"/messages",
					strings.NewReader(`{"id":"`+id+`","data":"`+id+`"}`))
				req.Header.Set("Authorization", "Bearer "+keyA)
				resp, err := hc.Do(req)
				if err != nil {
					l.count(0, err.Error())
					continue
				}
				var body strings.Builder
				_, _ = fmt.Fprint(&body, resp.Header.Get("Content-Type"), " ")
				buf := make([]byte, 512)
				k, _ := resp.Body.Read(buf)
				body.Write(buf[:k])
				resp.Body.Close()
				l.mu.Lock()
				if resp.StatusCode == http.StatusOK {
					l.accepted[id] = user
				}
				l.mu.Unlock()
				l.count(resp.StatusCode, body.String())
			}
		}()
	}
	return l
}

func (l *pushLoad) count(status int, body string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status[status]++
	if status != http.StatusOK {
		l.bodies[status] = body
	}
}

// waitAccepted waits until n more messages than before were accepted.
func (l *pushLoad) waitAccepted(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	target := len(l.accepted) + n
	l.mu.Unlock()
	waitWithin(t, longWait, fmt.Sprintf("%d accepted pushes", target), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.accepted) < target {
			return fmt.Errorf("%d accepted, statuses %v", len(l.accepted), l.status)
		}
		return nil
	})
}

// waitStatus waits until n answers with status arrived.
func (l *pushLoad) waitStatus(t *testing.T, status, n int) {
	t.Helper()
	waitWithin(t, longWait, fmt.Sprintf("%d answers %d", n, status), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.status[status] < n {
			return fmt.Errorf("statuses %v", l.status)
		}
		return nil
	})
}

// snapshot returns a copy of what was accepted so far.
func (l *pushLoad) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.accepted)
}

// finish stops the load and returns what was accepted.
func (l *pushLoad) finish() map[string]string {
	close(l.stop)
	l.wg.Wait()
	return l.accepted
}

// waitAllReceived waits until every accepted message reached its user.
func waitAllReceived(t *testing.T, r *receivers, accepted map[string]string) {
	t.Helper()
	waitWithin(t, longWait, fmt.Sprintf("all %d accepted pushes delivered", len(accepted)), func() error {
		if n, ex := r.missing(accepted); n > 0 {
			return fmt.Errorf("%d missing, e.g. %s", n, ex)
		}
		return nil
	})
}

func userList(prefix string, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return users
}

// TestClusterKillNode kills a node with -9 while its clients receive
// pushes made through another node: they reconnect to the other nodes and
// get every accepted message.
func TestClusterKillNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	t.Parallel()
	e := sharedEngines(t)
	nodes := startCluster(t, e, 2)
	n1, n2 := nodes[0], nodes[1]
	tcp3, api3 := freeAddr(t), freeAddr(t)
	child := startCrashChild(t, t.TempDir(), tcp3, api3,
		"CRASH_NODE=n3", "CRASH_REDIS="+e.redis, "CRASH_NATS="+e.nats, "CRASH_PREFIX="+e.prefix)

	users := userList("k", 10)
	r := startReceivers(t, users, []string{"tcp://" + tcp3, n1.url(rawTCP), n2.url(rawTCP)})
	onNode := func(node string) error { // every user's device is on node
		for _, u := range users {
			var p struct {
				Devices []struct{ Node string } `json:"devices"`
			}
			n1.apiOK("GET", "/v1/apps/"+appA+"/users/"+u+"/presence", keyA, nil, &p)
			if len(p.Devices) != 1 || (node != "" && p.Devices[0].Node != node) || (node == "" && p.Devices[0].Node == "n3") {
				return fmt.Errorf("%s: devices %+v", u, p.Devices)
			}
		}
		return nil
	}
	waitFor(t, "every receiver on n3", func() error { return onNode("n3") })

	load := startPushLoad(n1.srv.APIURL(), users, 4, 5000)
	load.waitAccepted(t, 300)
	waitAllReceived(t, r, load.snapshot()) // live from n1 to n3's clients
	killed := time.Now()
	child.kill()
	load.waitAccepted(t, 300) // pushes go on while the clients move
	accepted := load.finish()
	waitAllReceived(t, r, accepted)
	t.Logf("n3 killed: %d pushes accepted, all delivered %v after the kill, %d duplicates (redelivered before their ACK was stored); statuses %v",
		len(accepted), time.Since(killed).Round(time.Millisecond), r.duplicates(), load.status)
	waitWithin(t, longWait, "every receiver on n1 or n2", func() error { return onNode("") })
	waitWithin(t, longWait, "n3 gone from the cluster", func() error {
		var cl struct{ Nodes []struct{ ID string } }
		n2.apiOK("GET", "/v1/cluster", keyA, nil, &cl)
		if len(cl.Nodes) != 2 {
			return fmt.Errorf("nodes %+v", cl.Nodes)
		}
		return nil
	})
}

// TestClusterNATSOutage stops the cluster's NATS under load: pushes are
// still stored and accepted (the store is Redis), /healthz turns 503 on
// every node, connections stay up; when NATS returns, the nodes resync
// from the store and every accepted message arrives.
func TestClusterNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server")
	}
	t.Parallel()
	nats := testsvc.StartNATS(t)
	e := clusterEngines{redis: testsvc.Redis(t), nats: "nats://" + nats.Addr(), prefix: testsvc.Prefix(t)}
	nodes := startCluster(t, e, 2)
	n1, n2 := nodes[0], nodes[1]
	users := userList("o", 6)
	r := startReceivers(t, users, []string{n2.url(rawTCP)})
	sub := n2.connectTo(wsBinary, "sub", n2.token(appA, "watcher", "*"), "w")
	sub.subscribe(1, "alerts")

	load := startPushLoad(n1.srv.APIURL(), users, 2, 20000)
	load.waitAccepted(t, 100)
	nats.Stop()
	for _, h := range nodes {
		waitFor(t, h.cfg.Node+" unhealthy", func() error {
			if status, _ := h.apiCall("GET", "/healthz", "", nil); status != http.StatusServiceUnavailable {
				return fmt.Errorf("healthz %d", status)
			}
			return nil
		})
	}
	load.waitAccepted(t, 100) // still durable: stored in Redis
	n1.publish(appA, "alerts", "during the outage")
	nats.Start()
	for _, h := range nodes {
		waitWithin(t, longWait, h.cfg.Node+" healthy again", func() error {
			if status, raw := h.apiCall("GET", "/healthz", "", nil); status != http.StatusOK {
				return fmt.Errorf("healthz %d %s", status, raw)
			}
			return nil
		})
	}
	load.waitAccepted(t, 100)
	accepted := load.finish()
	waitAllReceived(t, r, accepted)
	sub.expectPush("t:alerts", jsonOf(t, "during the outage"))
	n1.publish(appA, "alerts", "after")
	sub.expectPush("t:alerts", jsonOf(t, "after"))
	t.Logf("NATS outage: %d accepted, all delivered, %d duplicates, statuses %v", len(accepted), r.duplicates(), load.status)
}

// TestClusterRedisOutage stops the cluster's Redis under load: pushes
// answer 503 with a JSON body (they cannot be stored), /healthz turns 503,
// connections stay up; when Redis returns, pushes are accepted again and
// every accepted one arrives.
func TestClusterRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis server")
	}
	t.Parallel()
	rd := testsvc.StartRedis(t, t.TempDir(), "--appendonly", "yes", "--appendfsync", "always")
	e := clusterEngines{redis: rd.Addr(), nats: "nats://" + testsvc.NATS(t), prefix: testsvc.Prefix(t)}
	nodes := startCluster(t, e, 2, func(c *config.Config) { c.Cluster.Lease = 3 * time.Second })
	n1, n2 := nodes[0], nodes[1]
	users := userList("r", 6)
	r := startReceivers(t, users, []string{n2.url(rawTCP)})
	probe := n2.connectTo(wsJSON, "probe", n2.token(appA, "probe"), "p")

	load := startPushLoad(n1.srv.APIURL(), users, 2, 20000)
	load.waitAccepted(t, 100)
	rd.Stop()
	load.waitStatus(t, http.StatusServiceUnavailable, 5)
	load.mu.Lock()
	body := load.bodies[http.StatusServiceUnavailable]
	load.mu.Unlock()
	if !strings.HasPrefix(body, "application/json ") || !strings.Contains(body, `"store_unavailable"`) {
		t.Fatalf("503 answer during the outage: %q", body)
	}
	for _, h := range nodes {
		waitFor(t, h.cfg.Node+" unhealthy", func() error {
			if status, _ := h.apiCall("GET", "/healthz", "", nil); status != http.StatusServiceUnavailable {
				return fmt.Errorf("healthz %d", status)
			}
			return nil
		})
	}
	probe.ping(1) // connections stay up
	rd.Start()
	load.waitAccepted(t, 100)
	accepted := load.finish()
	waitAllReceived(t, r, accepted)
	for _, h := range nodes {
		waitWithin(t, longWait, h.cfg.Node+" healthy again", func() error {
			if status, raw := h.apiCall("GET", "/healthz", "", nil); status != http.StatusOK {
				return fmt.Errorf("healthz %d %s", status, raw)
			}
			return nil
		})
	}
	probe.ping(2)
	t.Logf("Redis outage: %d accepted, all delivered, statuses %v", len(accepted), load.status)
}

package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of the engines a spawned cluster runs on.
const (
	DefaultClusterRedis = "127.0.0.1:6379"
	DefaultClusterNATS  = "nats://127.0.0.1:4222"
)

// MaxClusterNodes bounds -cluster: every node is a process on this machine.
const MaxClusterNodes = 9

// ClusterOptions configure SpawnCluster.
type ClusterOptions struct {
	Nodes  int      // how many nodes, 1 to MaxClusterNodes
	Redis  string   // host:port (default DefaultClusterRedis)
	NATS   string   // URL (default DefaultClusterNATS)
	Prefix string   // Redis keys and NATS subjects of the run (default: bench-<random>)
	Extra  []string // more flags for every node
}

// Cluster is a cluster of herald nodes started by the bench on the local
// Redis and NATS, sharing one app through one configuration file.
type Cluster struct {
	Nodes  []*Target // node i+1 is Nodes[i], with Node "n<i+1>"
	Prefix string
	Redis  string
	NATS   string
	dir    string
}

// NewPrefix returns a fresh prefix for a bench cluster: "bench-" and random
// hex, so that runs on the same Redis do not share keys.
func NewPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "bench-" + hex.EncodeToString(b[:])
}

// SpawnCluster starts o.Nodes herald nodes (the binary at exe) as one
// cluster: store redis, the given Redis and NATS and a fresh prefix, one
// configuration file holding one app, each node on its own loopback ports
// with node id n1..nN. It waits until every node answers. Stop ends them
// and deletes the run's Redis keys.
func SpawnCluster(ctx context.Context, exe string, o ClusterOptions) (*Cluster, error) {
	if o.Nodes < 1 || o.Nodes > MaxClusterNodes {
		return nil, fmt.Errorf("bench: -cluster must be 1 to %d nodes, not %d", MaxClusterNodes, o.Nodes)
	}
	if o.Redis == "" {
		o.Redis = DefaultClusterRedis
	}
	if o.NATS == "" {
		o.NATS = DefaultClusterNATS
	}
	if !strings.Contains(o.NATS, "://") {
		o.NATS = "nats://" + o.NATS
	}
	if o.Prefix == "" {
		o.Prefix = NewPrefix()
	}
	if strings.ContainsAny(o.Prefix, " .*>?[]{}") {
		return nil, fmt.Errorf("bench: cluster prefix %q: no spaces, dots or glob characters", o.Prefix)
	}
	dir, err := os.MkdirTemp("", "herald-bench-cluster-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	c := &Cluster{Prefix: o.Prefix, Redis: o.Redis, NATS: o.NATS, dir: dir}
	secret, key := randomHex(24), randomHex(24)
	conf := fmt.Sprintf(`# Written by herald bench: the app every node of the run's cluster shares.
apps:
  - id: bench
    secret: %s
    api_keys: [%s]
`, secret, key)
	path := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: cluster config: %w", err)
	}
	type spawned struct {
		t   *Target
		err error
	}
	res := make([]spawned, o.Nodes)
	var wg sync.WaitGroup
	for i := range o.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "n" + strconv.Itoa(i+1)
			args := append([]string{"-store", "redis", "-cluster-redis", o.Redis, "-cluster-nats", o.NATS,
				"-cluster-prefix", o.Prefix, "-node", id}, o.Extra...)
			t, err := spawnNode(ctx, exe, path, args)
			if err != nil {
				err = fmt.Errorf("bench: cluster node %s: %w", id, err)
			} else {
				t.Node = id
			}
			res[i] = spawned{t, err}
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range res {
		if r.err != nil {
			errs = append(errs, r.err)
		}
		c.Nodes = append(c.Nodes, r.t)
	}
	if len(errs) > 0 {
		c.Stop()
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Stop ends every node (those still running) and deletes the run's keys
// from Redis. It reports the keys it could not delete.
func (c *Cluster) Stop() error {
	var wg sync.WaitGroup
	for _, t := range c.Nodes {
		if t == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); t.Stop() }()
	}
	wg.Wait()
	_ = os.RemoveAll(c.dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := DeleteKeys(ctx, c.Redis, c.Prefix+":")
	return err
}

// deleteMaxRounds bounds the SCAN rounds of DeleteKeys.
const deleteMaxRounds = 100000

// DeleteKeys deletes every key of the Redis at addr whose name starts with
// prefix (SCAN MATCH prefix* and UNLINK), and returns how many it deleted.
// prefix must not hold glob characters.
func DeleteKeys(ctx context.Context, addr, prefix string) (int, error) {
	if prefix == "" || strings.ContainsAny(prefix, "*?[]\\") {
		return 0, fmt.Errorf("bench: refusing to delete Redis keys by prefix %q", prefix)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	var cursor uint64
	n := 0
	for range deleteMaxRounds {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return n, fmt.Errorf("bench: scan Redis %s for %s*: %w", addr, prefix, err)
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return n, fmt.Errorf("bench: unlink Redis keys %s*: %w", prefix, err)
			}
			n += len(keys)
		}
		cursor = next
		if cursor == 0 {
			return n, nil
		}
	}
	return n, fmt.Errorf("bench: Redis keys %s*: more than %d scan rounds", prefix, deleteMaxRounds)
}

// ParseNodes reads a -client-nodes or -api-nodes list: comma-separated node
// numbers 1..n, or ranges like 2-3. Empty means every node. It returns
// 0-based indexes, in order, without repeats.
func ParseNodes(flagName, s string, n int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return indexes(n), nil
	}
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("bench: -%s %q: %q is not a node number (1 to %d)", flagName, s, part, n)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return nil, fmt.Errorf("bench: -%s %q: bad range %q", flagName, s, part)
			}
		}
		if a < 1 || b > n {
			return nil, fmt.Errorf("bench: -%s %q: node %s out of range: the run has %d node(s), numbered 1 to %d", flagName, s, part, n, n)
		}
		for i := a; i <= b; i++ {
			if !seen[i] {
				seen[i] = true
				out = append(out, i-1)
			}
		}
	}
	return out, nil
}

// clusterAnswer is the part of GET /v1/cluster the bench reads.
type clusterAnswer struct {
	Node  string `json:"node"`
	Nodes []struct {
		ID      string `json:"id"`
		WSURL   string `json:"ws_url"`
		TCPAddr string `json:"tcp_addr"`
	} `json:"nodes"`
}

// ParseTargets reads -targets: comma-separated node specs, each either
// an API base URL, whose GET /v1/cluster answer (with the API key of base)
// gives the node's WebSocket URL and TCP address, or "api+ws+tcp" (API
// URL, WebSocket URL and TCP host:port joined by '+'). Each target gets
// base's credentials and transport.
func ParseTargets(ctx context.Context, spec string, base Target) ([]*Target, error) {
	var out []*Target
	for _, s := range strings.Split(spec, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		t := base
		t.proc, t.args, t.dataDir, t.logPath = nil, nil, "", ""
		if parts := strings.Split(s, "+"); len(parts) > 1 {
			if len(parts) != 3 {
				return nil, fmt.Errorf("bench: -targets %q: want api+ws+tcp", s)
			}
			t.APIURL, t.WSURL, t.TCPAddr = parts[0], parts[1], parts[2]
		} else {
			t.APIURL = strings.TrimSuffix(s, "/")
			if err := t.discover(ctx); err != nil {
				return nil, err
			}
		}
		out = append(out, &t)
	}
	if len(out) == 0 {
		return nil, errors.New("bench: -targets lists no node")
	}
	return out, nil
}

// discover asks the node's API which node it is and where its clients
// connect. A node lists its addresses from its first presence renewal on,
// so it asks again, for at most discoverTimeout, until they are there.
func (t *Target) discover(ctx context.Context) error {
	if _, err := url.Parse(t.APIURL); err != nil {
		return fmt.Errorf("bench: target %q: %w", t.APIURL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := t.discoverOnce(ctx)
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: target %s: GET /v1/cluster lists no client address for node %q within %s (give api+ws+tcp instead)", t.APIURL, t.Node, discoverTimeout)
		case <-tick.C:
		}
	}
}

// discoverTimeout bounds how long discover waits for a node's addresses.
const discoverTimeout = 15 * time.Second

// discoverOnce asks GET /v1/cluster once; done reports whether the node's
// client addresses were listed.
func (t *Target) discoverOnce(ctx context.Context) (done bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.APIURL+"/v1/cluster", nil)
	if err != nil {
		return false, fmt.Errorf("bench: target %q: %w", t.APIURL, err)
	}
	req.Header.Set("Authorization", "Bearer "+t.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("bench: target %s: GET /v1/cluster: %w", t.APIURL, err)
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("bench: target %s: GET /v1/cluster answered %s (give api+ws+tcp instead)", t.APIURL, resp.Status)
	}
	var a clusterAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return false, fmt.Errorf("bench: target %s: GET /v1/cluster: %w", t.APIURL, err)
	}
	for _, n := range a.Nodes {
		if n.ID == a.Node {
			t.Node, t.WSURL, t.TCPAddr = n.ID, n.WSURL, strings.TrimPrefix(n.TCPAddr, "tcp://")
			return t.WSURL != "" || t.TCPAddr != "", nil
		}
	}
	t.Node = a.Node
	return false, nil
}

// NodeFlags are the command line's choices of servers and nodes, checked
// together by Check before anything starts.
type NodeFlags struct {
	Scenario    string
	Mode        string // storm -mode
	Spawn       bool
	Servers     int    // -servers: independent servers (connect)
	Cluster     int    // -cluster: nodes of a spawned cluster; 0: none
	Targets     string // -targets: the nodes of a running cluster
	ClientNodes string // -client-nodes
	APINodes    string // -api-nodes
}

// Check validates the flags and returns the number of servers or nodes of
// the run and the client and API nodes as 0-based indexes (nil: the
// scenario's default, see Options).
func (f NodeFlags) Check() (n int, clients, apis []int, err error) {
	switch {
	case f.Cluster < 0 || f.Cluster > MaxClusterNodes:
		return 0, nil, nil, fmt.Errorf("bench: -cluster must be 1 to %d nodes, not %d", MaxClusterNodes, f.Cluster)
	case f.Cluster > 0 && f.Targets != "":
		return 0, nil, nil, errors.New("bench: -cluster and -targets exclude each other (start a cluster, or measure a running one)")
	case f.Cluster > 0 && !f.Spawn:
		return 0, nil, nil, errors.New("bench: -cluster starts a cluster and needs -spawn; measure a running one with -targets")
	case f.Cluster > 0 && f.Servers > 1:
		return 0, nil, nil, errors.New("bench: -cluster and -servers exclude each other")
	case f.Servers < 1:
		return 0, nil, nil, fmt.Errorf("bench: -servers must be 1 or more, not %d", f.Servers)
	case f.Servers > 1 && f.Scenario != "connect":
		return 0, nil, nil, errors.New("bench: -servers starts independent servers, for the connect scenario only; use -cluster N for the others")
	case f.Servers > 1 && !f.Spawn:
		return 0, nil, nil, errors.New("bench: -servers needs -spawn")
	}
	if f.Scenario == "storm" && f.Mode == "kill" && f.Cluster < 2 {
		return 0, nil, nil, errors.New("bench: storm -mode kill kills node 1 of a cluster the bench started: give -cluster N (2 or more)")
	}
	n = f.Servers
	switch {
	case f.Cluster > 0:
		n = f.Cluster
	case f.Targets != "":
		n = len(strings.Split(strings.Trim(f.Targets, ","), ","))
	}
	if (f.ClientNodes != "" || f.APINodes != "") && f.Cluster == 0 && f.Targets == "" {
		return 0, nil, nil, errors.New("bench: -client-nodes and -api-nodes choose nodes of a cluster: give -cluster N or -targets")
	}
	if f.ClientNodes != "" {
		if clients, err = ParseNodes("client-nodes", f.ClientNodes, n); err != nil {
			return 0, nil, nil, err
		}
	}
	if f.APINodes != "" {
		if apis, err = ParseNodes("api-nodes", f.APINodes, n); err != nil {
			return 0, nil, nil, err
		}
	}
	return n, clients, apis, nil
}

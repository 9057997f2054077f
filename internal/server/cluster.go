package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/admin"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/node"
	"github.com/herald-push/herald/internal/registry"
)

// openRegistry opens the presence registry: in memory for a single node,
// on the cluster's Redis for a node of a cluster. gw and n are read when
// the registry calls back, after New has set them.
func openRegistry(cfg config.Config, opt Options, log *slog.Logger, gwRef *atomic.Pointer[gateway.Gateway], adminRef *atomic.Pointer[admin.Handler], n **node.Node) (registry.Registry, error) {
	self := registry.NodeInfo{ID: cfg.Node, WSURL: cfg.Cluster.AdvertiseWS, TCPAddr: cfg.Cluster.AdvertiseTCP}
	// The registry reports the node while it opens, before the gateway
	// and the node exist.
	load := newLoadSampler(adminRef, func() int64 {
		gw := gwRef.Load()
		if gw == nil {
			return 0
		}
		return gw.Stats().Open
	})
	if !cfg.Cluster.Enabled() {
		return registry.NewMemory(registry.MemoryOptions{Node: self, Now: opt.Now}), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := registry.NewRedis(ctx, registry.RedisOptions{
		Addr:   cfg.Cluster.Redis,
		Prefix: cfg.Cluster.Prefix + ":p:",
		Node:   self,
		Lease:  cfg.Cluster.Lease,
		Load:   load.sample,
		Addrs: func() (string, string) {
			gw := gwRef.Load()
			if gw == nil {
				return "", ""
			}
			return wsURL(gw.WSAddr(), cfg.WS.Path, cfg.WS.TLSCert != ""), addrString(gw.TCPAddr())
		},
		Sessions: func(yield func(*registry.Session) bool) {
			if *n != nil {
				(*n).Sessions(yield)
			}
		},
		Lost: func(s *registry.Session, _ registry.Session) {
			if *n != nil {
				(*n).CloseLost(s)
			}
		},
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster presence on Redis %s: %w", cfg.Cluster.Redis, err)
	}
	return reg, nil
}

// loadSampler reports the node's load to the registry: open connections,
// the cores its process used since the previous sample, and the memory
// the Go runtime holds.
type loadSampler struct {
	open func() int64
	// admin, once set, gives the rates of the node's last second.
	admin *atomic.Pointer[admin.Handler]

	mu      sync.Mutex
	lastCPU time.Duration
	lastAt  time.Time
	sample1 []metrics.Sample
}

func newLoadSampler(adminRef *atomic.Pointer[admin.Handler], open func() int64) *loadSampler {
	return &loadSampler{admin: adminRef, open: open, sample1: []metrics.Sample{{Name: "/memory/classes/total:bytes"}}}
}

func (l *loadSampler) sample() registry.Load {
	l.mu.Lock()
	defer l.mu.Unlock()
	ld := registry.Load{Connections: int(l.open())}
	now := time.Now()
	if cpu, ok := processCPU(); ok {
		if !l.lastAt.IsZero() {
			if wall := now.Sub(l.lastAt); wall > 0 {
				ld.CPU = float64(cpu-l.lastCPU) / float64(wall)
			}
		}
		l.lastCPU, l.lastAt = cpu, now
	}
	metrics.Read(l.sample1)
	if v := l.sample1[0].Value; v.Kind() == metrics.KindUint64 {
		ld.Memory = v.Uint64()
	}
	if l.admin != nil {
		if s, ok := l.admin.Load().Latest(); ok {
			ld.APIPerS, ld.APIErrorsPerS, ld.DeliveriesPerS = s.APIPerS, s.APIErrorsPerS, s.DeliveriesPerS
			if s.LatencyMs != nil {
				ld.P99Ms = s.LatencyMs.P99
			}
		}
	}
	return ld
}

// health is what /healthz reports: the server is healthy while its store
// takes writes and, in a cluster, while it reaches the registry and the
// broker (a node that cannot hear the others must not look healthy while
// messages stop reaching its clients).
func (s *Server) health() error {
	var errs []error
	if err := s.store.Health(); err != nil {
		errs = append(errs, fmt.Errorf("message store: %w", err))
	}
	if err := s.reg.Health(); err != nil {
		errs = append(errs, fmt.Errorf("presence registry: %w", err))
	}
	if s.broker != nil {
		if err := s.broker.Health(); err != nil {
			errs = append(errs, fmt.Errorf("broker: %w", err))
		}
	}
	return errors.Join(errs...)
}

// clusterView is what GET /v1/cluster answers.
type clusterView struct {
	Node  string              `json:"node"` // the node that answered
	Nodes []registry.NodeInfo `json:"nodes"`
}

func (s *Server) cluster(ctx context.Context) (any, error) {
	nodes, err := s.reg.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	if nodes == nil {
		nodes = []registry.NodeInfo{}
	}
	s.clusterNodes.Store(len(nodes))
	return clusterView{Node: s.cfg.Node, Nodes: nodes}, nil
}

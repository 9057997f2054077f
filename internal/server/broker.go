package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/metrics"
	"github.com/herald-push/herald/internal/node"
)

// openBroker connects a node of a cluster to the cluster's NATS; a node
// alone has no broker (nil: nothing to relay, no cost). n is read when the
// broker reports a resync, after New has set it.
func openBroker(cfg config.Config, log *slog.Logger, n **node.Node) (broker.Broker, error) {
	if !cfg.Cluster.Enabled() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.NewNATS(ctx, broker.NATSOptions{
		URL:    cfg.Cluster.NATS,
		Prefix: cfg.Cluster.Prefix,
		Node:   cfg.Node,
		Options: broker.Options{OnResync: func(r broker.Resync) {
			if *n != nil {
				(*n).Resync(r)
			}
		}},
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster broker on NATS %s: %w", cfg.Cluster.NATS, err)
	}
	return b, nil
}

// clusterStats is the metrics' view of the broker and the registry.
func (s *Server) clusterStats() metrics.ClusterStats {
	b := s.broker.Stats()
	return metrics.ClusterStats{
		BrokerUp:      s.broker.Health() == nil,
		RegistryUp:    s.reg.Health() == nil,
		Published:     b.Published,
		PublishErrors: b.PublishErrors,
		Received:      b.Received,
		Dropped:       b.Dropped,
		Resyncs:       b.Resyncs,
		Reconnects:    b.Reconnects,
		Subjects:      b.Subjects,
	}
}

package server

import (
	"time"

	"github.com/herald-push/herald/internal/config"
)

// clusterEngines are the services a test cluster runs on.
type clusterEngines struct {
	redis, nats, prefix string
}

// clusterNode configures a server as node id of a cluster on e.
func clusterNode(e clusterEngines, id string) func(*config.Config) {
	return func(c *config.Config) {
		c.Node = id
		c.Store = "redis"
		c.Cluster.Redis = e.redis
		c.Cluster.NATS = e.nats
		c.Cluster.Prefix = e.prefix
		c.Cluster.Lease = 2 * time.Second
	}
}

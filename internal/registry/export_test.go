package registry

import "context"

// OpenRedisWithHook opens a Redis registry that calls beforeRenew before
// each renewal of its lease: a test pauses the node's renewals with it.
func OpenRedisWithHook(ctx context.Context, opts RedisOptions, beforeRenew func()) (*Redis, error) {
	return openRedis(ctx, opts, beforeRenew)
}

// Kill stops r as a crash would: no more renewals, nothing removed.
func (r *Redis) Kill() { r.kill() }

// Incarnation returns r's incarnation id.
func (r *Redis) Incarnation() string { return r.inc }

package redisstore

import (
	"context"
	"fmt"
)

// Durability is what Redis is configured to do with an acknowledged write.
type Durability struct {
	// AppendOnly, AppendFsync and NoFsyncOnRewrite are Redis's
	// appendonly, appendfsync and no-appendfsync-on-rewrite settings, ""
	// if they could not be read.
	AppendOnly       string
	AppendFsync      string
	NoFsyncOnRewrite string
	// Known: CONFIG GET answered. Managed Redis services often rename or
	// refuse CONFIG; then nothing is known.
	Known bool
	// Err is why CONFIG GET failed, when it did.
	Err error
	// Durable: appendonly yes, appendfsync always and
	// no-appendfsync-on-rewrite no (the default), the one configuration in
	// which Redis writes and fsyncs an append to its AOF before it
	// replies.
	Durable bool
}

// String says what the configuration means for acknowledged appends, in
// a sentence for a log.
func (d Durability) String() string {
	switch {
	case !d.Known:
		return fmt.Sprintf("Redis durability unknown (CONFIG GET failed: %v): acknowledged appends are on disk only if Redis runs with appendonly yes and appendfsync always", d.Err)
	case d.Durable:
		return "Redis runs with appendonly yes and appendfsync always: every acknowledged append is fsynced to its AOF before the reply"
	case d.AppendOnly == "yes" && d.AppendFsync == "always":
		return "Redis runs with appendfsync always but no-appendfsync-on-rewrite yes: while it rewrites its AOF, acknowledged appends are not fsynced; set no-appendfsync-on-rewrite no"
	case d.AppendOnly != "yes":
		return fmt.Sprintf("Redis runs with appendonly %s: acknowledged appends are not written to an AOF and a Redis restart loses what came after its last snapshot, if any; set appendonly yes and appendfsync always", d.AppendOnly)
	default:
		return fmt.Sprintf("Redis runs with appendonly yes and appendfsync %s: a crash of Redis or its machine can lose acknowledged appends (about the last second with everysec); set appendfsync always", d.AppendFsync)
	}
}

// Durability returns Redis's durability as read at Open or after the last
// Redis restart the store saw.
func (s *Store) Durability() Durability {
	if d := s.durability.Load(); d != nil {
		return *d
	}
	return Durability{}
}

// readDurability asks Redis for its appendonly and appendfsync settings.
func (s *Store) readDurability(ctx context.Context) Durability {
	pipe := s.rdb.Pipeline()
	ao := pipe.ConfigGet(ctx, "appendonly")
	af := pipe.ConfigGet(ctx, "appendfsync")
	nr := pipe.ConfigGet(ctx, "no-appendfsync-on-rewrite")
	if _, err := pipe.Exec(ctx); err != nil {
		return Durability{Err: err}
	}
	d := Durability{
		AppendOnly:       ao.Val()["appendonly"],
		AppendFsync:      af.Val()["appendfsync"],
		NoFsyncOnRewrite: nr.Val()["no-appendfsync-on-rewrite"],
	}
	if d.AppendOnly == "" || d.AppendFsync == "" || d.NoFsyncOnRewrite == "" {
		d.Err = fmt.Errorf("CONFIG GET returned appendonly %q, appendfsync %q, no-appendfsync-on-rewrite %q", d.AppendOnly, d.AppendFsync, d.NoFsyncOnRewrite)
		d.AppendOnly, d.AppendFsync, d.NoFsyncOnRewrite = "", "", ""
		return d
	}
	d.Known = true
	d.Durable = d.AppendOnly == "yes" && d.AppendFsync == "always" && d.NoFsyncOnRewrite == "no"
	return d
}

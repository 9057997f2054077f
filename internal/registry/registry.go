// Package registry records who is online: which users, with which devices,
// on which node, since when. It also answers duplicate-login questions:
// one device of a user has at most one session in the whole cluster.
//
// Two implementations keep the same contract (Registry), checked by one
// suite (package registrytest):
//
//   - Memory is the registry of a single node: a sharded map of the
//     callers' *Session pointers, no copy and no I/O.
//   - Redis is the registry of a cluster: sessions in one Redis hash per
//     user, claimed and released by Lua scripts (atomic compare-and-set),
//     and each node's liveness as a lease key that the node renews. A node
//     whose lease expired is dead, and so are its sessions. See NewRedis
//     and docs/architecture.md, "Presence in a cluster".
package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Registry records online sessions: who is online, on which node, with
// which devices.
//
// Claim and Release are called once per session, in that order: a session
// whose Claim succeeded is released exactly once (also after it was
// replaced), and a session whose Claim failed is not claimed again.
type Registry interface {
	// Claim records s as the session of its user's device, s.Node being
	// this node. If the device has a live session already, Claim replaces
	// it when replace is true and returns it as prev with hadPrev; when
	// replace is false it leaves it and returns an error wrapping
	// ErrDuplicate, with prev (and hadPrev) filled. The check and the
	// update are atomic: two connections of one device, on one node or on
	// two, cannot both win. The registry may keep s itself (Memory does):
	// its fields must not change after Claim.
	Claim(ctx context.Context, s *Session, replace bool) (prev Session, hadPrev bool, err error)
	// Release removes s, only if it is still its device's session (a newer
	// session that replaced it is left alone). A release that cannot be
	// done now (the backing service is down, ctx is done) returns the
	// error and is retried by the registry: do not call it again.
	Release(ctx context.Context, s *Session) error
	// Lookup returns the live sessions of a user on every node, sorted by
	// device.
	Lookup(ctx context.Context, app, user string) ([]Session, error)
	// Count returns the number of sessions of this node: claimed and not
	// released. It is cheap (no I/O). A session replaced by another of this
	// node stops counting at once in Memory and at its Release in Redis.
	Count() int
	// Nodes returns the live nodes, sorted by id, with what each reported
	// of itself.
	Nodes(ctx context.Context) ([]NodeInfo, error)
	// Health returns nil while the registry works, an error wrapping
	// ErrUnavailable while it does not, and ErrClosed after Close.
	Health() error
	// Close stops the registry. Calls after Close return ErrClosed.
	Close() error
}

// Errors of the registry. Test for them with errors.Is: they come wrapped.
var (
	// ErrDuplicate: the device has a live session and Claim was told not
	// to replace it.
	ErrDuplicate = errors.New("registry: device already has a session")
	// ErrUnavailable: the backing service cannot be reached, or this node
	// is not registered in it now (its lease was lost). Operations fail
	// with it instead of waiting, and Health reports it.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrLeaseLost comes with ErrUnavailable while this node's lease has
	// expired (the node was paused or cut off longer than its lease) or
	// was taken by another process with the same node id.
	ErrLeaseLost = errors.New("registry: this node's lease was lost")
	// ErrClosed: the registry was closed.
	ErrClosed = errors.New("registry: closed")
)

// Session is one online device of a user. The Memory registry keeps a
// pointer to the caller's Session, not a copy: one connection's session
// exists once in memory. Its fields must not change after Claim.
type Session struct {
	App       string    `json:"-"`
	User      string    `json:"-"`
	Device    string    `json:"device"`
	Node      string    `json:"node"`
	ConnID    uint64    `json:"conn_id"` // unique on its node
	Since     time.Time `json:"since"`
	Transport string    `json:"transport"`
	Remote    string    `json:"remote,omitempty"`
}

// ID returns the session's id, unique in the cluster: the node id, "-"
// and the connection id, as CONNECTED's session field. It is computed
// rather than stored, so that a session costs no more memory than it did
// on one node.
func (s *Session) ID() string {
	return s.Node + "-" + strconv.FormatUint(s.ConnID, 10)
}

// NodeInfo is what a node tells the cluster about itself.
type NodeInfo struct {
	ID      string `json:"id"`
	WSURL   string `json:"ws_url,omitempty"`   // WebSocket URL clients may connect to
	TCPAddr string `json:"tcp_addr,omitempty"` // TCP address clients may connect to
	// Sessions is the node's Count when it last reported.
	Sessions int       `json:"sessions"`
	Load     Load      `json:"load"`
	Started  time.Time `json:"started"` // when the node's registry was opened
	Seen     time.Time `json:"seen"`    // when the node last reported, by its own clock
}

// Load is how busy a node says it is, beyond its session count.
type Load struct {
	Connections int     `json:"connections,omitempty"` // open connections, authenticated or not
	CPU         float64 `json:"cpu,omitempty"`         // cores busy, averaged over the last report interval
	Memory      uint64  `json:"memory,omitempty"`      // bytes in use
	// Rates over the node's last second, as its operators' dashboard
	// shows them (0 when unknown, or idle).
	APIPerS        float64 `json:"api_per_s,omitempty"`        // server API requests
	APIErrorsPerS  float64 `json:"api_errors_per_s,omitempty"` // of those, answered 5xx or 429
	DeliveriesPerS float64 `json:"deliveries_per_s,omitempty"` // messages written to connections
	P99Ms          float64 `json:"p99_ms,omitempty"`           // delivery latency, accepted to written
}

// ctxErr returns ctx's error, wrapped, if ctx is done.
func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("registry: %s: %w", op, err)
	}
	return nil
}

package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// ErrSwitchedOff is returned (wrapped) by an operation an operator's
// degrade switch turned off: presence and unread queries, and live-only
// publishes while the app's deliveries are paused. The server API answers
// 503 with Retry-After.
var ErrSwitchedOff = errors.New("node: switched off by an operator")

// degrade is the node's side of the degrade switches.
type degrade struct {
	sw *switches.Set // never nil

	mu sync.Mutex
	// historyBack is when history_off last went off, by app ("" for the
	// node): a recovery from a position older than that may have missed
	// messages that were sent live only.
	historyBack map[string]time.Time

	held, refused, recoveryOff, queriesOff atomic.Uint64
}

// on reports whether sw is on for app.
func (n *Node) on(sw switches.Switch, app string) bool { return n.deg.sw.On(sw, app) }

// watchSwitches reacts to switches that go on or off.
func (n *Node) watchSwitches(c switches.Change) {
	switch c.Switch {
	case switches.Pause:
		if !c.On {
			n.resume(c.App)
		}
	case switches.HistoryOff:
		if !c.On {
			n.deg.mu.Lock()
			n.deg.historyBack[c.App] = n.cfg.Now()
			n.deg.mu.Unlock()
		}
	}
}

// resume has the hub route what it held back while app's deliveries were
// paused (every app's, for app ""): for each stream it routes here, it
// reads where the store stands and fills the rest from the store. Streams
// of an app still paused (by the node-wide switch, or its own) wait for
// that switch.
func (n *Node) resume(app string) {
	streams := n.hub.Streams(app)
	n.log.Info("deliveries resumed: sending what was held", "app", app, "streams", len(streams))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, st := range streams {
			if n.on(switches.Pause, st.App) {
				continue
			}
			key, _ := storeStream(st)
			epoch, _, last, err := n.store.Head(ctx, key)
			if err != nil {
				n.log.Warn("resume: stream head", "stream", key, "err", err)
				continue
			}
			if last > 0 {
				n.hub.Expect(st, hub.Position{Epoch: epoch, Seq: last})
			}
		}
	}()
}

// paused reports whether app's deliveries are held, and counts one held
// message when they are.
func (n *Node) paused(app string) bool {
	if !n.on(switches.Pause, app) {
		return false
	}
	n.deg.held.Add(1)
	return true
}

// connectRefusal returns the ERROR that refuses a CONNECT of app while
// new connections are switched off, or nil.
func (n *Node) connectRefusal(app string) *protocol.Error {
	if !n.on(switches.RejectConnections, app) {
		return nil
	}
	n.deg.refused.Add(1)
	return &protocol.Error{Code: protocol.CodeUnavailable, Text: fmt.Sprintf("new connections of app %q are switched off on this server for now; retry later", app)}
}

// switchedOff returns an ErrSwitchedOff error for sw of app if it is on.
func (n *Node) switchedOff(sw switches.Switch, app string) error {
	if !n.on(sw, app) {
		return nil
	}
	n.deg.queriesOff.Add(1)
	return fmt.Errorf("%w: %s is on for app %q", ErrSwitchedOff, sw, app)
}

// recoveryRefusal returns why a recovery of app's stream from a position
// whose message was stored at posTime must be answered "cannot recover",
// or "". posTime is zero when unknown (position 0, or not read).
func (n *Node) recoveryRefusal(app string) (reason string, since time.Time) {
	if n.on(switches.RecoveryOff, app) {
		n.deg.recoveryOff.Add(1)
		return "recovery is switched off on this server", time.Time{}
	}
	if n.on(switches.HistoryOff, app) {
		n.deg.recoveryOff.Add(1)
		return "history is switched off on this server", time.Time{}
	}
	n.deg.mu.Lock()
	t := n.deg.historyBack[app]
	if g := n.deg.historyBack[""]; g.After(t) {
		t = g
	}
	n.deg.mu.Unlock()
	return "", t
}

// DegradeStats are the effects of the degrade switches.
type DegradeStats struct {
	Held        uint64 `json:"held"`         // messages stored but not delivered live because their app was paused
	Refused     uint64 `json:"refused"`      // CONNECTs refused by reject_connections
	RecoveryOff uint64 `json:"recovery_off"` // recoveries answered "cannot recover" by recovery_off or history_off
	QueriesOff  uint64 `json:"queries_off"`  // presence and unread queries, and live-only publishes, refused by a switch
}

// DegradeStats returns the effects of the degrade switches.
func (n *Node) DegradeStats() DegradeStats {
	return DegradeStats{Held: n.deg.held.Load(), Refused: n.deg.refused.Load(), RecoveryOff: n.deg.recoveryOff.Load(), QueriesOff: n.deg.queriesOff.Load()}
}

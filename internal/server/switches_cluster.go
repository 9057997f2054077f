package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/switches"
)

// switchMsg tells every node of a cluster that an operator flipped a
// switch on one of them.
type switchMsg struct {
	Op   string `json:"op"` // "switch"
	Name string `json:"name"`
	App  string `json:"app,omitempty"`
	On   bool   `json:"on"`
	From string `json:"from"` // the node the operator used
}

// listenSwitches applies, on a node of a cluster, the switches operators
// flip on the other nodes.
func (s *Server) listenSwitches(ctx context.Context) error {
	if s.broker == nil {
		return nil
	}
	_, err := s.broker.Subscribe(ctx, broker.AllNodesSubject(), func(data []byte) {
		var m switchMsg
		if err := json.Unmarshal(data, &m); err != nil || m.Op != "switch" {
			s.log.Warn("bad cluster control message", "err", err)
			return
		}
		if m.From == s.cfg.Node {
			return
		}
		sw, err := switches.Parse(m.Name)
		if err != nil {
			s.log.Warn("switch from another node unknown here", "from", m.From, "err", err)
			return
		}
		// The node the operator used saved it for every node.
		s.switches.Flip(sw, m.App, m.On)
	})
	return err
}

// tellNodes publishes an operator's flip to the other nodes.
func (s *Server) tellNodes(sw switches.Switch, app string, on bool) error {
	if s.broker == nil {
		return nil
	}
	data, _ := json.Marshal(switchMsg{Op: "switch", Name: sw.String(), App: app, On: on, From: s.cfg.Node})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.broker.Publish(ctx, broker.AllNodesSubject(), data); err != nil {
		return fmt.Errorf("the other nodes were not told (flip it again when the broker is back, or on each node): %w", err)
	}
	return nil
}

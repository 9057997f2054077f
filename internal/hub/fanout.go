package hub

import (
	"sync"
	"sync/atomic"

	"github.com/herald-push/herald/protocol"
)

// topic is a set of subscribers (a topic's, or an app's broadcast group),
// split into parts. Each part has its own lock, its own queue of messages
// waiting to be fanned out, and a fixed worker, so a part's passes run one
// at a time and in order.
type topic struct {
	count   atomic.Int64 // subscribers; changed under the shard lock
	joiners int          // connections between prepare and joinAt; under the shard lock
	// pub serialises publishes, so that messages from concurrent publishers
	// enter every part's queue in the same order: all subscribers then see
	// one order. It guards seq.
	pub   sync.Mutex
	seq   sequencer
	parts [numParts]part
}

// enqueue adds e to every part's next pass. The caller holds t.pub.
func (t *topic) enqueue(e *protocol.Encoded) {
	for i := range t.parts {
		t.parts[i].enqueue(e)
	}
}

type part struct {
	w *worker // immutable

	mu        sync.Mutex
	subs      map[uint64]Conn
	pending   []*protocol.Encoded
	scheduled bool // queued on, or being run by, w
}

func newTopic(h *Hub, hash uint64) *topic {
	t := &topic{}
	for i := range t.parts {
		t.parts[i].w = h.workers[(hash+uint64(i))%uint64(len(h.workers))]
		t.parts[i].subs = make(map[uint64]Conn)
	}
	return t
}

// enqueue adds e to the part's next pass and schedules the part if no pass
// is queued or running.
func (p *part) enqueue(e *protocol.Encoded) {
	p.mu.Lock()
	if len(p.subs) == 0 {
		p.mu.Unlock()
		return
	}
	if len(p.pending) >= p.w.h.cfg.PendingLimit {
		// The workers cannot keep up with this part. Dropping the
		// message would lose it silently for every subscriber of the
		// part; instead its connections are closed, and they recover
		// what they missed from their positions when they reconnect.
		lagging := make([]Conn, 0, len(p.subs))
		for _, c := range p.subs {
			lagging = append(lagging, c)
		}
		clear(p.pending)
		p.pending = p.pending[:0]
		p.mu.Unlock()
		p.w.h.dropped.Add(1)
		for _, c := range lagging {
			if l, ok := c.(Lagger); ok {
				l.CloseLagging()
			}
		}
		return
	}
	p.pending = append(p.pending, e)
	schedule := !p.scheduled
	p.scheduled = true
	p.mu.Unlock()
	if schedule {
		p.w.push(p)
	}
}

// worker runs fan-out passes for the parts assigned to it.
type worker struct {
	h    *Hub
	wake chan struct{} // capacity 1: "the queue may be non-empty"
	stop chan struct{}

	mu    sync.Mutex
	queue []*part

	// Reused by run only.
	conns []Conn
}

func (w *worker) push(p *part) {
	w.mu.Lock()
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.h.wg.Done()
	var batch []*part
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			batch, w.queue = w.queue, batch[:0]
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, p := range batch {
				select {
				case <-w.stop: // a busy topic keeps the queue non-empty: check here too
					return
				default:
				}
				w.pass(p)
				batch[i] = nil
			}
		}
	}
}

// pass sends everything pending on p to each of its subscribers, one Send
// (one write) per connection, and reschedules p if more arrived meanwhile.
func (w *worker) pass(p *part) {
	p.mu.Lock()
	msgs := p.pending
	p.pending = nil
	conns := w.conns[:0]
	for _, c := range p.subs {
		conns = append(conns, c)
	}
	p.mu.Unlock()

	n := 0
	if len(msgs) > 0 {
		b := protocol.NewBatch(msgs...)
		for _, c := range conns {
			if send(c, b) == nil {
				n++
			}
		}
	}
	clear(conns)
	w.conns = conns[:0]
	w.h.passes.Add(1)
	w.h.delivered.Add(uint64(n * len(msgs)))

	p.mu.Lock()
	again := len(p.pending) > 0
	p.scheduled = again
	p.mu.Unlock()
	if again {
		w.push(p)
	}
}

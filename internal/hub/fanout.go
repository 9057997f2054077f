package hub

import (
	"slices"
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
	// one order. It guards seq and waiting.
	pub     sync.Mutex
	seq     sequencer
	waiting []waiter // joined ahead of the position (see waiter)
	parts   [numParts]part
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
	// A connection that joins while messages are queued joins after
	// them: marks say where in pending; a pass that took them activates
	// them from activating (a leave meanwhile removes them from either).
	marks      []mark
	activating map[uint64]Conn
}

// mark is a connection joining a part after its first at pending messages.
type mark struct {
	at int
	c  Conn
}

// add joins c to the part after the messages queued so far, and reports
// whether it was not a member already.
func (p *part) add(c Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := c.ID()
	if _, ok := p.subs[id]; ok || p.marked(id) {
		return false
	}
	if _, ok := p.activating[id]; ok {
		return false
	}
	if len(p.pending) == 0 {
		p.subs[id] = c
		return true
	}
	p.marks = append(p.marks, mark{at: len(p.pending), c: c})
	return true
}

func (p *part) marked(id uint64) bool {
	for _, m := range p.marks {
		if m.c.ID() == id {
			return true
		}
	}
	return false
}

// remove takes c out of the part, joined or joining, and reports whether
// it was there.
func (p *part) remove(c Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := c.ID()
	if _, ok := p.subs[id]; ok {
		delete(p.subs, id)
		return true
	}
	if _, ok := p.activating[id]; ok {
		delete(p.activating, id)
		return true
	}
	n := len(p.marks)
	p.marks = slices.DeleteFunc(p.marks, func(m mark) bool { return m.c.ID() == id })
	return len(p.marks) < n
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
	if len(p.subs) == 0 && len(p.marks) == 0 && len(p.activating) == 0 {
		p.mu.Unlock()
		return
	}
	if len(p.pending) >= p.w.h.cfg.PendingLimit {
		// The workers cannot keep up with this part. Dropping the
		// message would lose it silently for every subscriber of the
		// part; instead its connections are closed, and they recover
		// what they missed from their positions when they reconnect.
		lagging := make([]Conn, 0, len(p.subs)+len(p.marks))
		for _, c := range p.subs {
			lagging = append(lagging, c)
		}
		for _, m := range p.marks {
			lagging = append(lagging, m.c)
			p.subs[m.c.ID()] = m.c // until its close removes it
		}
		p.marks = nil
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
// (one write) per connection and run of messages between joins, and
// reschedules p if more arrived meanwhile.
func (w *worker) pass(p *part) {
	p.mu.Lock()
	msgs, marks := p.pending, p.marks
	p.pending, p.marks = nil, nil
	if len(marks) > 0 && p.activating == nil {
		p.activating = make(map[uint64]Conn, len(marks))
	}
	for _, m := range marks {
		p.activating[m.c.ID()] = m.c
	}
	conns := w.conns[:0]
	for _, c := range p.subs {
		conns = append(conns, c)
	}
	p.mu.Unlock()

	n := 0
	sendRun := func(run []*protocol.Encoded) {
		if len(run) == 0 {
			return
		}
		b := protocol.NewBatch(run...)
		for _, c := range conns {
			if send(c, b) == nil {
				n += len(run)
			}
		}
	}
	start := 0
	for _, m := range marks {
		sendRun(msgs[start:m.at])
		start = m.at
		p.mu.Lock()
		if _, ok := p.activating[m.c.ID()]; ok { // not gone meanwhile
			delete(p.activating, m.c.ID())
			p.subs[m.c.ID()] = m.c
			conns = append(conns, m.c)
		}
		p.mu.Unlock()
	}
	sendRun(msgs[start:])
	clear(conns)
	w.conns = conns[:0]
	w.h.passes.Add(1)
	w.h.delivered.Add(uint64(n))

	p.mu.Lock()
	again := len(p.pending) > 0 || len(p.marks) > 0
	p.scheduled = again
	p.mu.Unlock()
	if again {
		w.push(p)
	}
}

// PartsWaiting returns how many topic parts wait for a fan-out pass: the
// fan-out workers' backlog (sampled, not counted on the hot path).
func (h *Hub) PartsWaiting() int {
	n := 0
	for _, w := range h.workers {
		w.mu.Lock()
		n += len(w.queue)
		w.mu.Unlock()
	}
	return n
}

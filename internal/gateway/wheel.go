package gateway

import (
	"sync"
	"time"
)

// wheel is a hashed timing wheel that checks connection deadlines without a
// timer object per connection. Every connection sits in exactly one slot,
// the one for the time it must next be looked at. A read only stores the
// time of the read in the connection (an atomic store); when the wheel
// reaches the slot it computes the real deadline from that time, closes the
// connection if it has passed and otherwise moves it to the slot of its new
// deadline. Each connection is therefore touched about once per timeout
// period, whatever its traffic.
//
// Slots are intrusive doubly linked lists through Conn.prev/next, so
// membership costs two pointers and an index per connection.
type wheel struct {
	tick time.Duration

	mu    sync.Mutex // guards everything below and Conn.prev/next/slot
	slots []*Conn    // heads of the slot lists
	pos   int        // slot the next tick processes
	start time.Time  // time of slot 0 of the current revolution
	n     int        // connections in the wheel
}

func newWheel(tick, span time.Duration, now time.Time) *wheel {
	n := int(span/tick) + 2
	return &wheel{tick: tick, slots: make([]*Conn, n), start: now}
}

// slotFor returns the slot index for a deadline, clamped to the wheel's span.
// Must hold w.mu.
func (w *wheel) slotFor(deadline time.Time) int {
	ticks := int(deadline.Sub(w.start) / w.tick)
	// The current revolution started at start; pos ticks have been processed.
	if ticks <= w.pos {
		ticks = w.pos + 1
	}
	if ticks-w.pos >= len(w.slots) {
		ticks = w.pos + len(w.slots) - 1
	}
	return ticks % len(w.slots)
}

// add puts c in the slot for deadline. Must not hold w.mu.
func (w *wheel) add(c *Conn, deadline time.Time) {
	w.mu.Lock()
	w.insert(c, w.slotFor(deadline))
	w.n++
	w.mu.Unlock()
}

// remove takes c out of the wheel if it is in it.
func (w *wheel) remove(c *Conn) {
	w.mu.Lock()
	if c.slot >= 0 {
		w.unlink(c)
		w.n--
	}
	w.mu.Unlock()
}

func (w *wheel) insert(c *Conn, slot int) {
	c.slot = int32(slot)
	c.prev = nil
	c.next = w.slots[slot]
	if c.next != nil {
		c.next.prev = c
	}
	w.slots[slot] = c
}

func (w *wheel) unlink(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.slots[c.slot] = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.slot = nil, nil, -1
}

// advance processes every slot up to now. For each connection in those slots
// it calls due(c, now); due returns the connection's next deadline, or the
// zero time if the connection has expired, in which case it is removed and
// returned so the caller can close it outside the lock.
func (w *wheel) advance(now time.Time, due func(c *Conn, now time.Time) time.Time, expired []*Conn) []*Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		slotTime := w.start.Add(time.Duration(w.pos+1) * w.tick)
		if slotTime.After(now) {
			return expired
		}
		w.pos++
		if w.pos == len(w.slots) {
			w.pos = 0
			w.start = w.start.Add(time.Duration(len(w.slots)) * w.tick)
		}
		idx := w.pos % len(w.slots)
		list := w.slots[idx]
		w.slots[idx] = nil
		for c := list; c != nil; {
			next := c.next
			c.prev, c.next, c.slot = nil, nil, -1
			if d := due(c, now); d.IsZero() {
				w.n--
				expired = append(expired, c)
			} else {
				w.insert(c, w.slotFor(d))
			}
			c = next
		}
	}
}

// each calls f for every connection in the wheel. f must not touch the wheel.
func (w *wheel) each(f func(c *Conn)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, head := range w.slots {
		for c := head; c != nil; c = c.next {
			f(c)
		}
	}
}

// len returns the number of connections in the wheel.
func (w *wheel) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

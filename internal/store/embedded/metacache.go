package embedded

import "strings"

// DefaultMetaCacheSize is the number of idle streams whose counters are kept
// in memory when Options.MetaCacheSize is 0.
const DefaultMetaCacheSize = 65536

// metaCache keeps the counters (meta) of streams that no operation
// references any more, least recently released first out, so that a stream
// used again soon does not reread them from Pebble. Each shard has one,
// guarded by the shard's mu.
//
// A stream's counters are in its cache entry only while the stream has no
// in-memory state: acquire copies them into a new state, and release puts
// the state's counters back (or drops the entry if they are not known to
// match what is stored, after a failed commit). Counters change only under
// the stream's token, which needs a reference, so an entry is never stale.
//
// An entry costs about 80 bytes (the entry, 48, and its map slot) plus the
// length of the stream's name.
type metaCache struct {
	limit   int // entries at most; 0: disabled
	entries map[string]*metaEntry
	lru     metaEntry // sentinel: lru.next is the most recently released
}

type metaEntry struct {
	name       string
	meta       meta
	prev, next *metaEntry
}

func (c *metaCache) init(limit int) {
	c.limit = limit
	c.entries = make(map[string]*metaEntry)
	c.lru.prev, c.lru.next = &c.lru, &c.lru
}

// get returns name's counters.
func (c *metaCache) get(name string) (meta, bool) {
	e := c.entries[name]
	if e == nil {
		return meta{}, false
	}
	return e.meta, true
}

// put sets name's counters and makes them the most recently released,
// evicting the least recently released entry if the cache is full.
func (c *metaCache) put(name string, m meta) {
	if c.limit == 0 {
		return
	}
	e := c.entries[name]
	if e != nil {
		c.unlink(e)
	} else {
		if len(c.entries) >= c.limit {
			old := c.lru.prev
			c.unlink(old)
			delete(c.entries, old.name)
			e = old // reuse its memory
		} else {
			e = &metaEntry{}
		}
		// A copy, so that a cached name does not pin a larger buffer it
		// may be a slice of.
		e.name = strings.Clone(name)
		c.entries[e.name] = e
	}
	e.meta = m
	e.prev, e.next = &c.lru, c.lru.next
	e.prev.next = e
	e.next.prev = e
}

// remove drops name's counters.
func (c *metaCache) remove(name string) {
	if e := c.entries[name]; e != nil {
		c.unlink(e)
		delete(c.entries, name)
	}
}

func (c *metaCache) unlink(e *metaEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

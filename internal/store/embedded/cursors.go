package embedded

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Cursors are written back: an Ack updates the cursor in memory and a
// background loop writes the changed ones every cursorFlush, in one batch
// per shard, without a sync (the store's contract allows a cursor to be
// behind after a crash: it only causes redelivery). A device that ACKs
// every message thus costs a map update per ACK, not a Pebble read and
// write. Close writes what is pending.
const (
	// cursorFlush is how often changed cursors are written.
	cursorFlush = 100 * time.Millisecond
	// cursorCacheMax bounds the cursors one shard keeps in memory once
	// written (numCursors shards); past it the written ones are dropped at
	// the next flush. Idle devices cost no memory here.
	cursorCacheMax = 64
)

// cursorShard holds the cursors whose key hashes to it. mu also
// serialises each cursor's read-modify-write.
type cursorShard struct {
	mu sync.Mutex
	m  map[string]cursorEntry // cursorKey → value
}

type cursorEntry struct {
	seq   uint64
	dirty bool // changed since it was last written
}

// cursorShard returns the shard of key.
func (d *DB) cursorShard(key []byte) *cursorShard {
	return &d.cursors[maphash.Bytes(d.seed, key)%numCursors]
}

// loadCursor returns key's cursor: from memory, or from Pebble. The caller
// holds the shard's mu, and is about to change the cursor if keep is set
// (then it stays in memory).
func (d *DB) loadCursor(sh *cursorShard, key []byte, keep bool) (uint64, error) {
	if e, ok := sh.m[string(key)]; ok {
		return e.seq, nil
	}
	seq, err := d.cursor(key)
	if err != nil || !keep {
		return seq, err
	}
	if sh.m == nil {
		sh.m = make(map[string]cursorEntry)
	}
	sh.m[string(key)] = cursorEntry{seq: seq}
	return seq, nil
}

// cursorLoop writes changed cursors every cursorFlush until stop closes.
func (d *DB) cursorLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(cursorFlush)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			d.closeMu.RLock()
			if !d.closed {
				d.flushCursors()
			}
			d.closeMu.RUnlock()
		}
	}
}

// flushCursors writes the changed cursors, shard by shard, holding each
// shard's mu over its write so that an Ack cannot read an older value
// from Pebble meanwhile. A failed write leaves them dirty for the next
// flush. The caller keeps Pebble open (closeMu).
func (d *DB) flushCursors() {
	for i := range d.cursors {
		sh := &d.cursors[i]
		sh.mu.Lock()
		var b *pebble.Batch
		for k, e := range sh.m {
			if e.dirty {
				if b == nil {
					b = d.pdb.NewBatch()
				}
				_ = b.Set([]byte(k), encodeU64(e.seq), nil)
			}
		}
		if b != nil {
			if err := b.Commit(pebble.NoSync); err == nil {
				for k, e := range sh.m {
					if e.dirty {
						sh.m[k] = cursorEntry{seq: e.seq}
					}
				}
			}
			_ = b.Close()
		}
		if len(sh.m) > cursorCacheMax {
			for k, e := range sh.m {
				if !e.dirty {
					delete(sh.m, k)
				}
			}
		}
		sh.mu.Unlock()
	}
}

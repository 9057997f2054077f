package embedded

import (
	"hash/maphash"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Cursors are read through a small cache: a device that ACKs every message
// costs one Pebble write per ACK (without a sync, as before: a cursor is
// written to the log at once, so a crash of the process loses none), but
// no read, since its current value is in memory.
const (
	// cursorCacheMax bounds the cursors one shard keeps in memory
	// (numCursors shards); past it the shard's cache is emptied. Idle
	// devices cost no memory here: Cursor does not fill it, Ack does.
	cursorCacheMax = 64
)

// cursorShard holds the cached cursors whose key hashes to it. mu also
// serialises each cursor's read-modify-write.
type cursorShard struct {
	mu sync.Mutex
	m  map[string]uint64 // cursorKey → value as written
}

// cursorShard returns the shard of key.
func (d *DB) cursorShard(key []byte) *cursorShard {
	return &d.cursors[maphash.Bytes(d.seed, key)%numCursors]
}

// loadCursor returns key's cursor, from the cache or from Pebble. The
// caller holds the shard's mu.
func (d *DB) loadCursor(sh *cursorShard, key []byte) (uint64, error) {
	if seq, ok := sh.m[string(key)]; ok {
		return seq, nil
	}
	return d.cursor(key)
}

// storeCursor writes key's cursor and caches it. The caller holds the
// shard's mu.
func (d *DB) storeCursor(sh *cursorShard, key []byte, seq uint64) error {
	if err := d.guard(func() error { return d.pdb.Set(key, encodeU64(seq), pebble.NoSync) }); err != nil {
		delete(sh.m, string(key))
		return err
	}
	if sh.m == nil || len(sh.m) >= cursorCacheMax {
		sh.m = make(map[string]uint64)
	}
	sh.m[string(key)] = seq
	return nil
}

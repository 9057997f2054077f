package embedded

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The acknowledged mark.
//
// Pebble replays its write-ahead log at Open and treats a log that ends
// early (truncated, or garbage at the tail) as the unclean end of a crash:
// it opens without a word, with whatever it could read. If the log lost
// writes that the store had acknowledged, the streams would go back in
// time and their lost sequence numbers would be handed out again, in the
// same epoch, to new messages that clients then drop as repeats.
//
// So the store keeps, outside Pebble's files, the Pebble sequence number
// just past its newest acknowledged write: the mark. Every write the store
// acknowledges is first covered by the mark in the file (a write system
// call, no sync), and a background loop syncs the mark at most
// markSyncInterval later. At Open the store compares the mark with how
// far Pebble actually recovered: if Pebble is behind, acknowledged data is
// gone, and the store starts a new epoch (see DB.Recovery).
//
// The mark is not synced before the acknowledgement because what it must
// catch does not need it, and a second sync on every commit would cost a
// sync's latency on every push. A crash of the process loses nothing the
// kernel has been given, neither log nor mark, so the comparison is exact;
// so it is for damage done to the files while Herald is stopped (a
// truncated copy, a bad restore). A crash of the machine loses no synced
// log data on a disk that keeps its promises; on one that does not, loss
// confined to the last markSyncInterval before the crash goes unnoticed.
//
// Under SyncInterval the log itself is synced only every interval, so a
// crash of the machine can lose acknowledged writes by design. The mark
// also records the machine's boot id and whether the store was closed
// cleanly, so that a lazily synced store that was not closed and finds the
// machine rebooted starts a new epoch.
//
// The file holds two 64-byte slots written in turn; each carries a
// generation and a checksum, and the valid slot with the higher generation
// wins, so a torn write leaves the previous value.
const (
	markFile  = "ACKED"
	markSlot  = 64
	markMagic = "HWM1"
	// markSyncInterval bounds how long a written mark waits for its sync.
	markSyncInterval = 50 * time.Millisecond
)

// Mark flags.
const (
	markClean = 1 << iota // closed cleanly after this value
	markLazy              // written under SyncInterval
)

// markValue is what one slot holds.
type markValue struct {
	gen   uint64
	seq   uint64 // Pebble sequence number past the newest acknowledged write
	flags uint8
	boot  [16]byte
}

func (v markValue) encode() []byte {
	b := make([]byte, markSlot)
	copy(b, markMagic)
	binary.BigEndian.PutUint64(b[4:], v.gen)
	binary.BigEndian.PutUint64(b[12:], v.seq)
	b[20] = v.flags
	copy(b[21:37], v.boot[:])
	binary.BigEndian.PutUint32(b[markSlot-4:], crc32.Checksum(b[:markSlot-4], crcTable))
	return b
}

func decodeMark(b []byte) (markValue, bool) {
	if len(b) < markSlot || string(b[:4]) != markMagic ||
		binary.BigEndian.Uint32(b[markSlot-4:]) != crc32.Checksum(b[:markSlot-4], crcTable) {
		return markValue{}, false
	}
	v := markValue{
		gen:   binary.BigEndian.Uint64(b[4:]),
		seq:   binary.BigEndian.Uint64(b[12:]),
		flags: b[20],
	}
	copy(v.boot[:], b[21:37])
	return v, true
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// mark is the open mark file. Its methods are safe for concurrent use.
type mark struct {
	f    vfs.File
	lazy bool
	boot [16]byte

	mu      sync.Mutex
	written markValue // the newest value written
	dirty   bool      // written and not synced since
	err     error     // a failed write: the mark is stuck until reopened
}

// openMark opens (creating) the mark file in dir and returns it with the
// value it held, if any.
func openMark(fs vfs.FS, dir string, lazy bool) (*mark, markValue, bool, error) {
	name := fs.PathJoin(dir, markFile)
	_, statErr := fs.Stat(name)
	f, err := fs.OpenReadWrite(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, markValue{}, false, fmt.Errorf("open %s: %w", name, err)
	}
	if statErr != nil {
		// A new file: make its directory entry durable.
		if err := syncDir(fs, dir); err != nil {
			return nil, markValue{}, false, errors.Join(err, f.Close())
		}
	}
	buf := make([]byte, 2*markSlot)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, markValue{}, false, errors.Join(fmt.Errorf("read %s: %w", name, err), f.Close())
	}
	var prev markValue
	found := false
	for i := 0; i+markSlot <= n; i += markSlot {
		if v, ok := decodeMark(buf[i : i+markSlot]); ok && (!found || v.gen > prev.gen) {
			prev, found = v, true
		}
	}
	m := &mark{f: f, lazy: lazy, boot: bootID(), written: prev}
	return m, prev, found, nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	return errors.Join(d.Sync(), d.Close())
}

// set writes seq as the mark now, with the given flags, and syncs it.
func (m *mark) set(seq uint64, flags uint8) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	v := markValue{gen: m.written.gen + 1, seq: seq, flags: flags, boot: m.boot}
	if err := m.write(v, true); err != nil {
		m.err = err
		return err
	}
	m.written, m.dirty = v, false
	return nil
}

// advance makes the mark cover seq: it returns once a mark >= seq is
// written (not synced: see sync).
func (m *mark) advance(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if m.written.seq >= seq {
		return nil
	}
	v := markValue{gen: m.written.gen + 1, seq: seq, boot: m.boot}
	if m.lazy {
		v.flags = markLazy
	}
	if err := m.write(v, false); err != nil {
		m.err = err
		return err
	}
	m.written, m.dirty = v, true
	return nil
}

// sync syncs the mark file if a mark was written since the last sync.
func (m *mark) sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil || !m.dirty {
		return m.err
	}
	if err := m.f.SyncData(); err != nil {
		m.err = fmt.Errorf("sync %s: %w", markFile, err)
		return m.err
	}
	m.dirty = false
	return nil
}

func (m *mark) write(v markValue, sync bool) error {
	off := int64(v.gen%2) * markSlot
	if _, err := m.f.WriteAt(v.encode(), off); err != nil {
		return fmt.Errorf("write %s: %w", markFile, err)
	}
	if sync {
		if err := m.f.SyncData(); err != nil {
			return fmt.Errorf("sync %s: %w", markFile, err)
		}
	}
	return nil
}

func (m *mark) close() error { return m.f.Close() }

// bootID returns the running kernel's boot id, zero where there is none.
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id
	}
	_, _ = hex.Decode(id[:], []byte(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")))
	return id
}

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
// acknowledges as durable is first covered by the mark on disk (written and
// synced after the write's own sync; concurrent writes share one mark
// write). At Open the store compares the mark with how far Pebble actually
// recovered: if Pebble is behind, acknowledged data is gone, and the store
// starts a new epoch (see DB.Recovery).
//
// Under SyncInterval nothing is synced per write, so the mark is written
// (not synced) after each write and synced with the log. A process crash
// loses neither, and the comparison is exact. A crash of the machine can
// lose both; the mark also records the machine's boot id and whether the
// store was closed cleanly, so that a lazily synced store that was not
// closed and finds the machine rebooted starts a new epoch too.
//
// The file holds two 64-byte slots written in turn; each carries a
// generation and a checksum, and the valid slot with the higher generation
// wins, so a torn write leaves the previous value.
const (
	markFile  = "ACKED"
	markSlot  = 64
	markMagic = "HWM1"
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
	cond    sync.Cond
	written markValue // the newest value written (and synced unless lazy)
	want    uint64    // the highest seq asked for
	busy    bool      // a goroutine is writing
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
	m.cond.L = &m.mu
	return m, prev, found, nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	return errors.Join(d.Sync(), d.Close())
}

// set writes v as the mark now, with the given flags, and syncs it.
func (m *mark) set(seq uint64, flags uint8) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.busy {
		m.cond.Wait()
	}
	if m.err != nil {
		return m.err
	}
	v := markValue{gen: m.written.gen + 1, seq: seq, flags: flags, boot: m.boot}
	if err := m.write(v, true); err != nil {
		m.err = err
		return err
	}
	m.written = v
	m.want = max(m.want, seq)
	return nil
}

// advance makes the mark cover seq: it returns once a mark >= seq is
// written (and, unless the store is lazy, synced). Concurrent callers
// share writes: one writes the highest value asked for so far while the
// others wait for it.
func (m *mark) advance(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.want = max(m.want, seq)
	for m.written.seq < seq {
		if m.err != nil {
			return m.err
		}
		if m.busy {
			m.cond.Wait()
			continue
		}
		v := markValue{gen: m.written.gen + 1, seq: m.want, boot: m.boot}
		if m.lazy {
			v.flags = markLazy
		}
		m.busy = true
		m.mu.Unlock()
		err := m.write(v, !m.lazy)
		m.mu.Lock()
		m.busy = false
		m.cond.Broadcast()
		if err != nil {
			m.err = err
			return err
		}
		m.written = v
	}
	return m.err
}

// sync syncs the mark file (SyncInterval's loop, after the log's sync).
func (m *mark) sync() error {
	if err := m.f.SyncData(); err != nil {
		m.mu.Lock()
		m.err = fmt.Errorf("sync %s: %w", markFile, err)
		m.mu.Unlock()
		return err
	}
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

package embedded

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/wal"

	"github.com/herald-push/herald/internal/store"
)

// SalvageReport says what Salvage did.
type SalvageReport struct {
	// Healthy: the store opened as it was; Salvage changed nothing.
	Healthy bool
	// Moved is the directory the damaged write-ahead logs were moved to.
	Moved string
	// Logs is how many logs were read back; Records how many of their
	// records (write batches) were applied.
	Logs, Records int
	// Stopped is the damage that ended the read-back, if any: everything
	// written after it is lost.
	Stopped error
	// PrevEpoch is the epoch before; Epoch the new one.
	PrevEpoch, Epoch string
}

// Salvage makes a store that Open refuses as damaged usable again, keeping
// what is readable. It moves the write-ahead logs out of the way (into a
// salvage-<time> directory inside dir, kept for inspection), opens the
// tables, applies the logs' records in order up to the first damaged one,
// and starts a new epoch, since anything after the damage is lost. A
// store that opens as it is is left alone (Healthy).
//
// Damage in the tables or the manifest, rather than the logs, is beyond
// it: it returns an error and the operator's way out is to move the data
// directory away and start with an empty store.
func Salvage(dir string, opts Options) (SalvageReport, error) {
	var rep SalvageReport
	db, err := Open(dir, opts)
	if err == nil {
		rep.Healthy, rep.Epoch = true, db.Epoch()
		return rep, db.Close()
	}
	if !errors.Is(err, ErrCorrupt) {
		return rep, err
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	logs, err := wal.Scan(wal.Dir{FS: fs, Dirname: dir})
	if err != nil {
		return rep, fmt.Errorf("salvage %s: list logs: %w", dir, err)
	}
	rep.Moved = fs.PathJoin(dir, "salvage-"+time.Now().UTC().Format("20060102T150405Z"))
	if err := fs.MkdirAll(rep.Moved, 0o750); err != nil {
		return rep, fmt.Errorf("salvage %s: %w", dir, err)
	}
	for _, ll := range logs {
		for i := range ll.NumSegments() {
			_, name := ll.SegmentLocation(i)
			if err := fs.Rename(name, fs.PathJoin(rep.Moved, fs.PathBase(name))); err != nil {
				return rep, fmt.Errorf("salvage %s: move %s: %w", dir, name, err)
			}
		}
	}
	if err := syncDir(fs, dir); err != nil {
		return rep, fmt.Errorf("salvage %s: %w", dir, err)
	}
	d := &DB{dir: dir, opts: opts, log: opts.Logger}
	if d.log == nil {
		d.log = discardLogger()
	}
	d.opts.FS = fs
	pdb, err := pebble.Open(dir, d.pebbleOptions())
	if err != nil {
		return rep, fmt.Errorf("salvage %s: the store's tables cannot be opened either (%w); move %s away to start with an empty store", dir, err, dir)
	}
	rep.Logs, rep.Records, rep.Stopped, err = replayLogs(pdb, fs, rep.Moved)
	if err == nil {
		rep.PrevEpoch, rep.Epoch, err = newEpoch(pdb)
	}
	var markErr error
	if err == nil {
		markErr = resetMark(pdb, fs, dir, opts.Sync > 0)
	}
	if cerr := pdb.Close(); err == nil {
		err = errors.Join(markErr, cerr)
	}
	if err != nil {
		return rep, fmt.Errorf("salvage %s: %w", dir, err)
	}
	return rep, nil
}

// replayLogs applies the records of the logs in dir, in order, to pdb, up
// to the first that cannot be read; stopped is that error.
func replayLogs(pdb *pebble.DB, fs vfs.FS, dir string) (logs, records int, stopped, err error) {
	moved, err := wal.Scan(wal.Dir{FS: fs, Dirname: dir})
	if err != nil {
		return 0, 0, nil, fmt.Errorf("list moved logs: %w", err)
	}
	for _, ll := range moved {
		logs++
		r := ll.OpenForRead()
		for {
			rec, _, rerr := r.NextRecord()
			if errors.Is(rerr, io.EOF) {
				break
			}
			var data []byte
			if rerr == nil {
				data, rerr = io.ReadAll(rec)
			}
			if rerr == nil {
				b := pdb.NewBatch()
				if rerr = b.SetRepr(data); rerr == nil {
					rerr = pdb.Apply(b, pebble.NoSync)
				}
				_ = b.Close()
			}
			if rerr != nil {
				_ = r.Close()
				return logs, records, fmt.Errorf("log %s: %w", ll, rerr), nil
			}
			records++
		}
		if err := r.Close(); err != nil {
			return logs, records, fmt.Errorf("log %s: %w", ll, err), nil
		}
	}
	return logs, records, nil, nil
}

// newEpoch gives the store a new epoch, synced.
func newEpoch(pdb *pebble.DB) (prev, epoch string, err error) {
	v, closer, err := pdb.Get([]byte(epochKey))
	if err == nil {
		prev = string(v)
		_ = closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return "", "", err
	}
	epoch = store.NewEpoch()
	b := pdb.NewBatch()
	defer b.Close()
	_ = b.Set([]byte(formatKey), []byte(formatVersion), nil)
	_ = b.Set([]byte(epochKey), []byte(epoch), nil)
	return prev, epoch, b.Commit(pebble.Sync)
}

// resetMark sets the mark to the end of pdb's log, as a clean close would.
func resetMark(pdb *pebble.DB, fs vfs.FS, dir string, lazy bool) error {
	b := pdb.NewBatch()
	defer b.Close()
	_ = b.LogData(nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	m, _, _, err := openMark(fs, dir, lazy)
	if err != nil {
		return err
	}
	flags := uint8(markClean)
	if lazy {
		flags |= markLazy
	}
	return errors.Join(m.set(uint64(b.SeqNum()), flags), m.close())
}

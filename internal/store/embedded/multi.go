package embedded

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/herald-push/herald/internal/store"
)

// multiStream is one distinct stream of an AppendMulti call.
type multiStream struct {
	s     *stream
	m     meta              // counters as staged so far
	fresh map[string]uint64 // ids staged for s so far
}

// AppendMulti implements store.Store.
//
// It takes the writer tokens of the streams in name order, so that two
// calls cannot deadlock, nor can a call and the Append leader, Trim or
// Expire holding one token (those never wait for a second one). Appends
// queued on a stream while AppendMulti holds its token wait for it and
// are committed after, by one of them leading (see Append).
func (d *DB) AppendMulti(ctx context.Context, appends []store.StreamAppend) ([][]store.Appended, error) {
	if err := store.CheckAppendMulti(appends); err != nil {
		return nil, err
	}
	if err := d.enter(ctx); err != nil {
		return nil, err
	}
	defer d.leave()
	byName := make(map[string]*multiStream, len(appends))
	for i := range appends {
		if name := appends[i].Stream; len(appends[i].Msgs) > 0 && byName[name] == nil {
			byName[name] = &multiStream{}
		}
	}
	results := make([][]store.Appended, len(appends))
	if len(byName) == 0 {
		return results, nil
	}
	streams := make([]*multiStream, 0, len(byName))
	for name, ms := range byName {
		ms.s = d.acquire(name)
		streams = append(streams, ms)
	}
	defer func() {
		for _, ms := range streams {
			d.release(ms.s)
		}
	}()
	slices.SortFunc(streams, func(a, b *multiStream) int { return strings.Compare(a.s.name, b.s.name) })
	locked := 0
	defer func() {
		for _, ms := range streams[:locked] {
			ms.s.unlock()
		}
	}()
	for _, ms := range streams {
		if err := ms.s.lock(ctx); err != nil {
			return nil, fmt.Errorf("embedded: append to %d streams: %w", len(streams), err)
		}
		locked++
	}
	if err := d.commitMulti(appends, byName, results); err != nil {
		return nil, fmt.Errorf("embedded: append to %d streams: %w", len(streams), err)
	}
	return results, nil
}

// commitMulti stores appends in one write and fills results. The caller
// holds the tokens of the streams of byName.
func (d *DB) commitMulti(appends []store.StreamAppend, byName map[string]*multiStream, results [][]store.Appended) error {
	for _, ms := range byName {
		if err := d.load(ms.s); err != nil {
			return fmt.Errorf("stream %q: %w", ms.s.name, err)
		}
		ms.m = ms.s.meta
	}
	now := d.now()
	b := d.pdb.NewBatch()
	defer b.Close()
	for i := range appends {
		a := &appends[i]
		if len(a.Msgs) == 0 {
			continue
		}
		ms := byName[a.Stream]
		var err error
		if results[i], err = d.stage(b, a.Stream, &ms.m, &ms.fresh, a.Msgs, now); err != nil {
			return fmt.Errorf("stream %q: %w", a.Stream, err)
		}
	}
	changed := false
	for name, ms := range byName {
		if ms.m.last != ms.s.meta.last {
			_ = b.Set(metaKey(name), ms.m.encode(), nil)
			changed = true
		}
	}
	if !changed {
		return nil // only duplicates
	}
	if err := d.commitAppend(b); err != nil {
		for _, ms := range byName {
			ms.s.forgetMeta() // reread the counters next time
		}
		return err
	}
	for _, ms := range byName {
		ms.s.setMeta(ms.m)
	}
	if d.lazy {
		d.dirty.Store(true)
	}
	return nil
}

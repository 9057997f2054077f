// Package switchestest is the conformance suite of switches.Store: every
// implementation (a file for a node alone, Redis for a cluster) passes it.
package switchestest

import (
	"context"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/switches"
)

// Open returns a store over the same backend each time it is called (a
// second store stands for another node, or the node after a restart).
type Open func(t *testing.T) switches.Store

// Run runs the suite on the stores open returns.
func Run(t *testing.T, open Open) {
	ctx := context.Background()
	sorted := func(l []switches.State) []switches.State {
		sort.Slice(l, func(i, j int) bool {
			if l[i].App != l[j].App {
				return l[i].App < l[j].App
			}
			return l[i].Name < l[j].Name
		})
		for i := range l {
			l[i].Since = time.Time{} // compared through SinceMilli
		}
		return l
	}
	t.Run("empty", func(t *testing.T) {
		st := open(t)
		got, err := st.Load(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("Load of a new store = %+v, %v", got, err)
		}
		if err := st.Delete(ctx, "pause", "nothing"); err != nil {
			t.Fatalf("Delete of nothing: %v", err)
		}
	})
	t.Run("put, replace, delete, seen by another", func(t *testing.T) {
		a := open(t)
		p := switches.State{Name: "pause", App: "chat", On: true, Source: switches.SourceAdmin, SinceMilli: 1000}
		h := switches.State{Name: "history_off", On: false, Source: switches.SourceAdmin, SinceMilli: 2000}
		for _, s := range []switches.State{p, h} {
			if err := a.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		p.On, p.SinceMilli = false, 3000
		if err := a.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		b := open(t)
		got, err := b.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []switches.State{h, p}; !reflect.DeepEqual(sorted(got), want) {
			t.Fatalf("Load = %+v\nwant %+v", got, want)
		}
		if err := b.Delete(ctx, "history_off", ""); err != nil {
			t.Fatal(err)
		}
		got, _ = a.Load(ctx)
		if want := []switches.State{p}; !reflect.DeepEqual(sorted(got), want) {
			t.Fatalf("after Delete: %+v, want %+v", got, want)
		}
	})
	t.Run("concurrent flips of different switches all stay", func(t *testing.T) {
		stores := []switches.Store{open(t), open(t)}
		names := switches.Names()
		var wg sync.WaitGroup
		for i, name := range names {
			wg.Go(func() {
				if err := stores[i%2].Put(ctx, switches.State{Name: name, App: "x", On: true, Source: switches.SourceAdmin, SinceMilli: int64(i)}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got, err := open(t).Load(ctx)
		if err != nil || len(got) != len(names) {
			t.Fatalf("Load after %d concurrent puts: %d, %v", len(names), len(got), err)
		}
	})
	t.Run("a set restored from the store", func(t *testing.T) {
		st := open(t)
		s := switches.New(nil)
		s.Flip(switches.RecoveryOff, "chat", true)
		if err := s.Save(ctx, st, switches.RecoveryOff, "chat"); err != nil {
			t.Fatal(err)
		}
		saved, err := open(t).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := switches.New(nil)
		if err := r.RestoreStates(saved); err != nil || !r.On(switches.RecoveryOff, "chat") {
			t.Fatalf("restored: %+v, %v", r.InForce(), err)
		}
		s.Flip(switches.RecoveryOff, "chat", false) // back to the configuration: no override
		if err := s.Save(ctx, st, switches.RecoveryOff, "chat"); err != nil {
			t.Fatal(err)
		}
		if saved, _ := open(t).Load(ctx); len(saved) != 0 {
			t.Fatalf("override kept after flipping back: %+v", saved)
		}
	})
}

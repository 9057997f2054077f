package embedded

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/herald-push/herald/internal/store"
)

func TestMetaCacheLRU(t *testing.T) {
	var c metaCache
	c.init(2)
	c.put("a", meta{last: 1})
	c.put("b", meta{last: 2})
	c.put("a", meta{last: 3}) // a is now the most recent
	c.put("c", meta{last: 4}) // evicts b
	if _, ok := c.get("b"); ok {
		t.Fatal("b not evicted")
	}
	if m, ok := c.get("a"); !ok || m.last != 3 {
		t.Fatalf("a = %+v, %v", m, ok)
	}
	if m, ok := c.get("c"); !ok || m.last != 4 {
		t.Fatalf("c = %+v, %v", m, ok)
	}
	c.remove("a")
	c.put("d", meta{last: 5}) // room left by a: c stays
	if _, ok := c.get("c"); !ok || len(c.entries) != 2 {
		t.Fatalf("c evicted, entries %d", len(c.entries))
	}
	var off metaCache
	off.init(0)
	off.put("a", meta{last: 1})
	if _, ok := off.get("a"); ok {
		t.Fatal("a disabled cache holds an entry")
	}
}

// TestMetaCacheStreams appends to, trims and reopens more streams than the
// cache holds, with the cache on, tiny and off, and checks every result
// against a store.Memory doing the same.
func TestMetaCacheStreams(t *testing.T) {
	for _, size := range []int{0, 1, -1} {
		t.Run(fmt.Sprint("size=", size), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			d, err := Open(dir, Options{MetaCacheSize: size})
			if err != nil {
				t.Fatal(err)
			}
			model := store.NewMemory(store.MemoryOptions{})
			ctx := t.Context()
			const streams = 300
			for round := range 4 {
				for i := range streams {
					name := fmt.Sprint("app/u:", i)
					msgs := []store.Message{{ID: fmt.Sprint(round)}, {ID: "same"}}
					res, err := d.Append(ctx, name, msgs...)
					if err != nil {
						t.Fatal(err)
					}
					want, _ := model.Append(ctx, name, msgs...)
					for i := range want {
						want[i].Epoch = d.Epoch() // the model is another store
					}
					if !slices.Equal(res, want) {
						t.Fatalf("round %d %s: %+v, want %+v", round, name, res, want)
					}
					if i%3 == round%3 {
						if err := d.Trim(ctx, name, 1, 0); err != nil {
							t.Fatal(err)
						}
						_ = model.Trim(ctx, name, 1, 0)
					}
				}
				if round == 1 {
					if err := d.Close(); err != nil {
						t.Fatal(err)
					}
					if d, err = Open(dir, Options{MetaCacheSize: size}); err != nil {
						t.Fatal(err)
					}
				}
			}
			defer d.Close()
			for i := range streams {
				name := fmt.Sprint("app/u:", i)
				_, first, last, err := d.Head(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				_, wantFirst, wantLast, _ := model.Head(ctx, name)
				if first != wantFirst || last != wantLast {
					t.Fatalf("%s: first %d, last %d; want %d, %d", name, first, last, wantFirst, wantLast)
				}
			}
		})
	}
}

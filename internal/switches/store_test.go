package switches_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/internal/switches/switchestest"
)

func TestFileStore(t *testing.T) {
	// One node has one file store: a subtest's stores are one instance
	// (TestFileStoreRestart covers a new instance over the same file).
	var stores sync.Map // subtest name -> its store
	switchestest.Run(t, func(t *testing.T) switches.Store {
		st, _ := stores.LoadOrStore(t.Name(), switches.NewFileStore(filepath.Join(t.TempDir(), "switches.json")))
		return st.(switches.Store)
	})
}

func TestFileStoreRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d", "switches.json")
	want := switches.State{Name: "pause", App: "chat", On: true, Source: switches.SourceAdmin, SinceMilli: 5}
	if err := switches.NewFileStore(path).Put(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := switches.NewFileStore(path).Load(ctx)
	if err != nil || len(got) != 1 || got[0].Name != "pause" || got[0].App != "chat" || !got[0].On || got[0].SinceMilli != 5 {
		t.Fatalf("after a restart: %+v, %v", got, err)
	}
}

func TestFileStoreUnknownName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switches.json")
	if err := os.WriteFile(path, []byte(`{"overrides":[{"name":"nope","on":true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := switches.NewFileStore(path).Load(context.Background()); err == nil {
		t.Fatal("a file naming an unknown switch loaded")
	}
}

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
	"github.com/herald-push/herald/internal/store/embedded/damage"
)

// TestStoreCommand: "herald store check" reports a store whose log is
// damaged in the middle, "salvage" keeps its readable part under a new
// epoch, and "check" then finds it whole.
func TestStoreCommand(t *testing.T) {
	data := t.TempDir()
	fill := func() string {
		db, err := embedded.Open(filepath.Join(data, "store"), embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for range 500 {
			if _, err := db.Append(context.Background(), "u:a", store.Message{Payload: bytes.Repeat([]byte("x"), 100)}); err != nil {
				t.Fatal(err)
			}
		}
		return db.Epoch()
	}
	storeRun := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"store"}, append(args, "-data", data)...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	epoch := fill()
	if out, err := storeRun("check"); err != nil || !strings.Contains(out, "ok, epoch "+epoch) {
		t.Fatalf("check of a sound store: %v\n%s", err, out)
	}
	fill() // the newest log holds messages again
	if err := damage.Log(filepath.Join(data, "store"), damage.Middle, 7); err != nil {
		t.Fatal(err)
	}
	if out, err := storeRun("check"); err == nil || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, "herald store salvage") {
		t.Fatalf("check of a damaged store: %v\n%s", err, out)
	}
	out, err := storeRun("salvage")
	if err != nil || !strings.Contains(out, "new epoch") || !strings.Contains(out, "(was "+epoch+")") || !strings.Contains(out, "stopped at the damage") {
		t.Fatalf("salvage: %v\n%s", err, out)
	}
	if out, err := storeRun("check"); err != nil || !strings.Contains(out, "ok, epoch") || strings.Contains(out, epoch) {
		t.Fatalf("check after salvage: %v\n%s", err, out)
	}
	if out, err := storeRun("salvage"); err != nil || !strings.Contains(out, "nothing to salvage") {
		t.Fatalf("salvage of a sound store: %v\n%s", err, out)
	}
	if out, err := storeRun("frobnicate"); err == nil || !strings.Contains(err.Error(), "unknown subcommand") {
		t.Fatalf("unknown subcommand: %v\n%s", err, out)
	}
}

package switches

import (
	"reflect"
	"testing"
	"time"
)

func TestConfigAndOverrides(t *testing.T) {
	now := time.UnixMilli(1_000)
	s := New(func() time.Time { return now })
	var seen []Change
	s.Watch(func(c Change) { seen = append(seen, c) })
	if s.On(Pause, "chat") {
		t.Fatal("on before anything was set")
	}
	s.Configure([]Switch{PresenceOff}, map[string][]Switch{"chat": {Pause}})
	if !s.On(Pause, "chat") || s.On(Pause, "shop") || !s.On(PresenceOff, "shop") || !s.OnGlobally(PresenceOff) {
		t.Fatalf("after Configure: pause chat %v shop %v, presence %v", s.On(Pause, "chat"), s.On(Pause, "shop"), s.On(PresenceOff, "shop"))
	}
	// An operator turns chat's pause off, over the configuration.
	if !s.Flip(Pause, "chat", false) || s.On(Pause, "chat") {
		t.Fatal("Flip off did not take")
	}
	if got := s.Overrides(); len(got) != 1 || got[0].On || got[0].Name != "pause" {
		t.Fatalf("overrides = %+v", got)
	}
	// A reload that keeps the configuration keeps the override...
	s.Configure([]Switch{PresenceOff}, map[string][]Switch{"chat": {Pause}})
	if s.On(Pause, "chat") {
		t.Fatal("reload undid the operator's override")
	}
	// ...and one that agrees with it drops it.
	s.Configure([]Switch{PresenceOff}, nil)
	if len(s.Overrides()) != 0 || s.On(Pause, "chat") {
		t.Fatalf("override kept after the configuration agreed: %+v", s.Overrides())
	}
	// Flipping to the configuration's word removes the override.
	s.Flip(RejectConnections, "shop", true)
	s.Flip(RejectConnections, "shop", false)
	if len(s.Overrides()) != 0 {
		t.Fatalf("overrides = %+v", s.Overrides())
	}
	want := []Change{
		{PresenceOff, "", true, SourceConfig},
		{Pause, "chat", true, SourceConfig},
		{Pause, "chat", false, SourceAdmin},
		{RejectConnections, "shop", true, SourceAdmin},
		{RejectConnections, "shop", false, SourceAdmin},
	}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("changes\n got %+v\nwant %+v", seen, want)
	}
	if f := s.Flips(); f["pause"] != 2 || f["reject_connections"] != 2 || f["presence_off"] != 1 {
		t.Fatalf("flips = %v", f)
	}
	in := s.InForce()
	if len(in) != 1 || in[0].Name != "presence_off" || in[0].App != "" || in[0].Source != SourceConfig || in[0].SinceMilli != 1000 {
		t.Fatalf("in force = %+v", in)
	}
}

func TestRestore(t *testing.T) {
	s := New(nil)
	s.Flip(Pause, "chat", true)
	s.Flip(HistoryOff, "", true)
	r := New(nil)
	if err := r.RestoreStates(s.Overrides()); err != nil {
		t.Fatal(err)
	}
	if !r.On(Pause, "chat") || !r.On(HistoryOff, "any") || r.On(Pause, "shop") {
		t.Fatalf("restored: %+v", r.InForce())
	}
	if err := r.RestoreStates([]State{{Name: "nope", On: true}}); err == nil {
		t.Fatal("unknown name restored")
	}
	if _, err := Parse("pause"); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("Pause"); err == nil {
		t.Fatal("names are exact")
	}
}

func BenchmarkOn(b *testing.B) {
	s := New(nil)
	b.Run("none", func(b *testing.B) {
		for b.Loop() {
			s.On(Pause, "chat")
		}
	})
	s.Flip(Pause, "shop", true)
	b.Run("other app", func(b *testing.B) {
		for b.Loop() {
			s.On(Pause, "chat")
		}
	})
}

package main

import (
	"fmt"
	"slices"
	"testing"
)

// crossed collects the hits of one move as "SYMBOL bp dir user" strings.
func crossed(ix *Index, sym string, p0, p1 int64) (hits []string, visited int) {
	visited = ix.Crossed(sym, p0, p1, func(h Hit) {
		for _, u := range h.Users {
			hits = append(hits, fmt.Sprintf("%s %04d %s %s", h.Symbol, h.BP, h.Dir, u))
		}
	})
	return hits, visited
}

func TestIndexCrossesTheRightThresholds(t *testing.T) {
	ix := NewIndex()
	ix.AddStock("ACME", 10000) // 100.00
	ix.AddStock("BOLT", 5000)
	for _, a := range []struct {
		user string
		bp   int
	}{{"ann", 100}, {"bob", 200}, {"cat", 200}, {"dan", 300}, {"eve", 500}, {"fay", 1000}} {
		if _, err := ix.Add(a.user, "ACME", a.bp); err != nil {
			t.Fatal(err)
		}
	}
	if added, _ := ix.Add("bob", "ACME", 200); added {
		t.Error("adding the same alert twice reported it new")
	}
	if _, err := ix.Add("bob", "NOPE", 200); err == nil {
		t.Error("an alert on an unknown symbol was accepted")
	}
	if _, err := ix.Add("bob", "ACME", 0); err == nil {
		t.Error("a 0 % alert was accepted")
	}

	cases := []struct {
		name   string
		p0, p1 int64
		want   []string
	}{
		{"inside the first level", 10000, 10099, nil},
		{"exactly at +1 %", 10000, 10100, []string{"ACME 0100 up ann"}},
		{"from +1 % to +2.5 %: only +2 %", 10100, 10250, []string{"ACME 0200 up bob", "ACME 0200 up cat"}},
		{"falling back inward fires nothing", 10250, 10000, nil},
		{"to the limit: 1, 2, 3, 5, 10 %", 10000, 11000, []string{"ACME 0100 up ann", "ACME 0200 up bob", "ACME 0200 up cat", "ACME 0300 up dan", "ACME 0500 up eve", "ACME 1000 up fay"}},
		{"down from +4 % to -2 %: -1 %, -2 %", 10400, 9800, []string{"ACME 0100 down ann", "ACME 0200 down bob", "ACME 0200 down cat"}},
		{"down just short of -3 %", 9800, 9701, nil},
		{"down to -3 %", 9701, 9700, []string{"ACME 0300 down dan"}},
		{"up from -5 % to -1 %: nothing", 9500, 9900, nil},
	}
	for _, c := range cases {
		got, visited := crossed(ix, "ACME", c.p0, c.p1)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %d -> %d: got %q, want %q", c.name, c.p0, c.p1, got, c.want)
		}
		// No scan: the buckets visited are exactly the ones crossed.
		levels := 0
		for i, h := range c.want {
			if i == 0 || h[:9] != c.want[i-1][:9] {
				levels++
			}
		}
		if visited != levels {
			t.Errorf("%s: visited %d buckets, crossed %d levels", c.name, visited, levels)
		}
	}
	if got, v := crossed(ix, "BOLT", 5000, 5500); got != nil || v != 0 {
		t.Errorf("a stock without alerts: %q, %d buckets", got, v)
	}
	if got := ix.Alerts("bob"); !slices.Equal(got["ACME"], []int{200}) || len(got) != 1 {
		t.Errorf("Alerts(bob) = %v", got)
	}
}

// TestIndexVisitsOnlyCrossedBuckets: with many thresholds and many users,
// a small move visits one bucket, however big the index.
func TestIndexVisitsOnlyCrossedBuckets(t *testing.T) {
	ix := NewIndex()
	ix.AddStock("ACME", 10000)
	for bp := 1; bp <= MaxBP; bp++ { // a level every 0.01 %, up to 20 %
		for u := range 5 {
			if _, err := ix.Add(fmt.Sprintf("u%d-%d", u, bp), "ACME", bp); err != nil {
				t.Fatal(err)
			}
		}
	}
	users := 0
	visited := ix.Crossed("ACME", 10500, 10501, func(h Hit) { users += len(h.Users) })
	if visited != 1 || users != 5 {
		t.Errorf("+5.00 %% -> +5.01 %%: visited %d buckets, %d users; want 1, 5", visited, users)
	}
	visited = ix.Crossed("ACME", 10000, 11000, func(Hit) {})
	if visited != 1000 {
		t.Errorf("0 -> +10 %%: visited %d buckets, want 1000", visited)
	}
	if v := ix.Crossed("ACME", 11000, 10000, func(Hit) {}); v != 0 {
		t.Errorf("+10 %% -> 0: visited %d buckets, want 0 (inward)", v)
	}
}

func TestMarketLimitsAndStormAlerts(t *testing.T) {
	m := NewMarket(200, 7)
	ix := NewIndex()
	for _, q := range m.Quotes() {
		ix.AddStock(q.Symbol, q.Ref)
	}
	for range 50 {
		for _, mv := range m.Walk(300) {
			if lo, hi := limits(mv.Ref); mv.To < lo || mv.To > hi {
				t.Fatalf("%s at %d outside its limits %d..%d", mv.Symbol, mv.To, lo, hi)
			}
		}
	}
	n, err := SetupStormAlerts(m, ix, 100, 10)
	if err != nil || n != 1000 {
		t.Fatalf("SetupStormAlerts = %d, %v; want 1000", n, err)
	}
	// Every stock back to its reference, then the storm: each alert's up
	// level is crossed exactly once.
	for _, q := range m.Quotes() {
		if _, err := m.SetPct(q.Symbol, 0); err != nil {
			t.Fatal(err)
		}
	}
	alerts := 0
	for _, mv := range m.LimitUp(m.Len()) {
		if mv.To*10000 != mv.Ref*11000 {
			t.Fatalf("%s limit price %d is not exactly +10 %% of %d", mv.Symbol, mv.To, mv.Ref)
		}
		ix.Crossed(mv.Symbol, mv.From, mv.To, func(h Hit) { alerts += len(h.Users) })
	}
	if alerts != n {
		t.Errorf("storm from the reference produced %d alerts, want %d", alerts, n)
	}
}

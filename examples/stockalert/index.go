package main

import (
	"fmt"
	"sort"
	"sync"
)

// Dir is the direction of a price move: up or down from the reference.
type Dir int8

// Directions of a move.
const (
	Up   Dir = 1
	Down Dir = -1
)

// String returns "up" or "down".
func (d Dir) String() string {
	if d == Down {
		return "down"
	}
	return "up"
}

// MaxBP is the largest threshold, in basis points (a daily limit is 10 %).
const MaxBP = 2000

// Hit is one threshold crossed by a tick: every user in Users asked to be
// told when Symbol moves by BP basis points in direction Dir.
type Hit struct {
	Symbol string
	BP     int // threshold in basis points: 100 is 1 %
	Dir    Dir
	Users  []string // shared with the index: read only, do not keep
}

// Index maps, per stock, thresholds to the users who set them, built in
// advance so that a tick finds whom to notify without scanning users: each
// stock keeps its up levels and its down levels sorted by distance from the
// reference price, and a tick from p0 to p1 walks only the levels it
// crosses, found by binary search.
//
// A level fires when the price crosses it moving away from the reference;
// crossing it back towards the reference re-arms it, so a stock that hits
// its limit, opens and hits it again alerts twice (as real alert services
// do). Prices are integers (cents), so levels compare exactly.
//
// Index is safe for concurrent use.
type Index struct {
	mu     sync.RWMutex
	stocks map[string]*book
}

// book is the index of one stock.
type book struct {
	ref  int64     // reference price (previous close), cents
	up   []*bucket // ascending level: nearest the reference first
	down []*bucket // descending level: nearest the reference first
}

// bucket is one threshold of one stock in one direction and its users.
type bucket struct {
	bp    int
	level int64 // ref * (10000 ± bp), so that it compares with price*10000
	users []string
	set   map[string]struct{}
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{stocks: make(map[string]*book)} }

// AddStock registers symbol with its reference price in cents. Adding a
// stock again changes nothing.
func (ix *Index) AddStock(symbol string, ref int64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.stocks[symbol]; !ok {
		ix.stocks[symbol] = &book{ref: ref}
	}
}

// Add records that user wants to know when symbol moves by bp basis points
// up and down from its reference (the "±X %" alert). It reports whether the
// alert is new.
func (ix *Index) Add(user, symbol string, bp int) (bool, error) {
	if bp <= 0 || bp > MaxBP {
		return false, fmt.Errorf("threshold %d bp out of range 1..%d", bp, MaxBP)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	b, ok := ix.stocks[symbol]
	if !ok {
		return false, fmt.Errorf("unknown symbol %q", symbol)
	}
	newUp := b.insert(Up, bp, user)
	newDown := b.insert(Down, bp, user)
	return newUp || newDown, nil
}

// insert adds user to the bucket of bp in direction d, creating the bucket
// at its sorted place. It reports whether the user was not there yet.
func (b *book) insert(d Dir, bp int, user string) bool {
	list := &b.up
	if d == Down {
		list = &b.down
	}
	// Both lists are sorted by bp ascending: up levels rise with bp, down
	// levels fall with it.
	i := sort.Search(len(*list), func(i int) bool { return (*list)[i].bp >= bp })
	if i == len(*list) || (*list)[i].bp != bp {
		nb := &bucket{bp: bp, level: b.ref * int64(10000+int(d)*bp), set: make(map[string]struct{})}
		*list = append(*list, nil)
		copy((*list)[i+1:], (*list)[i:])
		(*list)[i] = nb
	}
	bk := (*list)[i]
	if _, ok := bk.set[user]; ok {
		return false
	}
	bk.set[user] = struct{}{}
	bk.users = append(bk.users, user)
	return true
}

// Alerts returns the thresholds, in basis points, that user set on each
// symbol.
func (ix *Index) Alerts(user string) map[string][]int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[string][]int)
	for sym, b := range ix.stocks {
		for _, bk := range b.up {
			if _, ok := bk.set[user]; ok {
				out[sym] = append(out[sym], bk.bp)
			}
		}
	}
	return out
}

// Crossed calls fn for every threshold of symbol that a move from p0 to p1
// (cents) crosses away from the reference, nearest first, and returns the
// number of buckets it visited: exactly the crossed ones, found by binary
// search, never the others. fn runs under the index's read lock: it must
// not call Add.
func (ix *Index) Crossed(symbol string, p0, p1 int64, fn func(Hit)) (visited int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	b, ok := ix.stocks[symbol]
	if !ok || p0 == p1 {
		return 0
	}
	x0, x1 := p0*10000, p1*10000
	if x1 > x0 {
		// Rising: up levels in (x0, x1].
		i := sort.Search(len(b.up), func(i int) bool { return b.up[i].level > x0 })
		for ; i < len(b.up) && b.up[i].level <= x1; i++ {
			visited++
			fn(Hit{Symbol: symbol, BP: b.up[i].bp, Dir: Up, Users: b.up[i].users})
		}
		return visited
	}
	// Falling: down levels in [x1, x0).
	i := sort.Search(len(b.down), func(i int) bool { return b.down[i].level < x0 })
	for ; i < len(b.down) && b.down[i].level >= x1; i++ {
		visited++
		fn(Hit{Symbol: symbol, BP: b.down[i].bp, Dir: Down, Users: b.down[i].users})
	}
	return visited
}

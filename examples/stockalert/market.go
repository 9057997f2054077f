package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
)

// LimitBP is the daily price limit, in basis points: a stock cannot move
// more than 10 % from its reference price in a day.
const LimitBP = 1000

// Move is one stock's price change in a tick, in cents.
type Move struct {
	Symbol   string
	Ref      int64
	From, To int64
}

// Quote is a stock's current state, as the web page shows it.
type Quote struct {
	Symbol string `json:"symbol"`
	Ref    int64  `json:"ref"`   // reference price (previous close), cents
	Price  int64  `json:"price"` // cents
}

// Market simulates the prices of N stocks: a random walk around each
// stock's reference price, bounded by the daily limit. It is safe for
// concurrent use.
type Market struct {
	mu     sync.Mutex
	rng    *rand.Rand
	quotes []Quote
	bySym  map[string]int
}

// Symbol returns the ticker of stock i: four letters, distinct for i below
// 26^4.
func Symbol(i int) string {
	// Scramble with a multiplier prime to 26^4 so neighbours differ.
	n := (i*7919 + 1234) % (26 * 26 * 26 * 26)
	b := make([]byte, 4)
	for k := 3; k >= 0; k-- {
		b[k] = byte('A' + n%26)
		n /= 26
	}
	return string(b)
}

// NewMarket returns n stocks with reference prices between 5 and 200
// (multiples of 10 cents, so that the +10 % limit price is exact), starting
// at their reference price. seed makes the walk reproducible.
func NewMarket(n int, seed uint64) *Market {
	m := &Market{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), bySym: make(map[string]int, n)}
	for i := range n {
		ref := int64(50+m.rng.IntN(1950)) * 10
		q := Quote{Symbol: Symbol(i), Ref: ref, Price: ref}
		m.bySym[q.Symbol] = len(m.quotes)
		m.quotes = append(m.quotes, q)
	}
	return m
}

// Quotes returns a copy of every stock's state.
func (m *Market) Quotes() []Quote {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Quote(nil), m.quotes...)
}

// Len returns the number of stocks.
func (m *Market) Len() int { return len(m.quotes) }

// limits returns the lowest and highest price allowed for ref.
func limits(ref int64) (lo, hi int64) {
	return ref * (10000 - LimitBP) / 10000, ref * (10000 + LimitBP) / 10000
}

// Walk moves every stock by a random step with standard deviation volBP
// basis points of its reference, within the daily limits, and returns the
// stocks whose price changed.
func (m *Market) Walk(volBP float64) []Move {
	m.mu.Lock()
	defer m.mu.Unlock()
	var moves []Move
	for i := range m.quotes {
		q := &m.quotes[i]
		step := int64(math.Round(m.rng.NormFloat64() * volBP * float64(q.Ref) / 10000))
		if mv, ok := m.set(q, q.Price+step); ok {
			moves = append(moves, mv)
		}
	}
	return moves
}

// Scatter sets every stock to a random price within ±spreadBP of its
// reference, the way a trading day under way looks, and returns the moves.
func (m *Market) Scatter(spreadBP int) []Move {
	m.mu.Lock()
	defer m.mu.Unlock()
	var moves []Move
	for i := range m.quotes {
		q := &m.quotes[i]
		off := int64(m.rng.IntN(2*spreadBP+1) - spreadBP)
		if mv, ok := m.set(q, q.Ref*(10000+off)/10000); ok {
			moves = append(moves, mv)
		}
	}
	return moves
}

// SetPct moves symbol to bp basis points from its reference (clamped to the
// daily limit) and returns the move.
func (m *Market) SetPct(symbol string, bp int) (Move, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.bySym[symbol]
	if !ok {
		return Move{}, fmt.Errorf("unknown symbol %q", symbol)
	}
	q := &m.quotes[i]
	mv, _ := m.set(q, q.Ref*int64(10000+bp)/10000)
	return mv, nil
}

// LimitUp moves the first n stocks to their upper limit (+10 %) at once,
// the market storm, and returns the moves.
func (m *Market) LimitUp(n int) []Move {
	m.mu.Lock()
	defer m.mu.Unlock()
	var moves []Move
	for i := range min(n, len(m.quotes)) {
		q := &m.quotes[i]
		_, hi := limits(q.Ref)
		if mv, ok := m.set(q, hi); ok {
			moves = append(moves, mv)
		}
	}
	return moves
}

// set clamps p to q's limits, stores it, and returns the move if the price
// changed. m.mu is held.
func (m *Market) set(q *Quote, p int64) (Move, bool) {
	lo, hi := limits(q.Ref)
	p = max(lo, min(hi, p))
	mv := Move{Symbol: q.Symbol, Ref: q.Ref, From: q.Price, To: p}
	q.Price = p
	return mv, mv.From != mv.To
}

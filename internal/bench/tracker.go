package bench

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// Tracker accounts for the messages a set of receivers should get and do
// get, so a run can report exactly what was lost and what was duplicated.
// Receivers are numbered 0..receivers-1 and messages carry sequence numbers
// 0..messages-1.
//
// A Tracker keeps one bit per (receiver, message) pair for what was
// received: about receivers*messages/8 bytes (10,000 receivers of 100,000 messages
// take 125 MB). Expect keeps a second bitset of the same size for what is
// expected; ExpectAll does not.
//
// Set up what is expected (ExpectAll, or Expect for each pair) before the
// first Mark. After that, Mark is safe to call from many goroutines at
// once, and Counts and MissingSample may be called concurrently with it
// (they then see a moment's state, not necessarily a consistent one).
type Tracker struct {
	receivers int
	messages  int
	words     int // uint64 words per receiver

	received []uint64 // receiver r, seq s is bit s of received[r*words:]
	expected []uint64 // nil: nothing expected yet, or all (expectAll)

	expectAll  bool
	nExpected  int64
	duplicates atomic.Int64
	outOfRange atomic.Int64
}

// NewTracker returns a Tracker for receivers receivers of messages messages
// each, which expects nothing until ExpectAll or Expect is called. It
// panics if either count is negative or their product overflows.
func NewTracker(receivers, messages int) *Tracker {
	if receivers < 0 || messages < 0 {
		panic(fmt.Sprintf("bench: NewTracker(%d, %d): negative size", receivers, messages))
	}
	words := (messages + 63) / 64
	hi, lo := bits.Mul64(uint64(receivers), uint64(words))
	if hi != 0 || lo > uint64(maxInt/8) {
		panic(fmt.Sprintf("bench: NewTracker(%d, %d): too large", receivers, messages))
	}
	return &Tracker{
		receivers: receivers,
		messages:  messages,
		words:     words,
		received:  make([]uint64, receivers*words),
	}
}

const maxInt = int(^uint(0) >> 1)

// Receivers returns the number of receivers the Tracker was made for.
func (t *Tracker) Receivers() int { return t.receivers }

// Messages returns the number of sequence numbers the Tracker was made for.
func (t *Tracker) Messages() int { return t.messages }

func (t *Tracker) inRange(receiver, seq int) bool {
	return receiver >= 0 && receiver < t.receivers && seq >= 0 && seq < t.messages
}

// bit returns the word index and mask of the pair (receiver, seq), which
// must be in range.
func (t *Tracker) bit(receiver, seq int) (int, uint64) {
	return receiver*t.words + seq/64, 1 << uint(seq%64)
}

// ExpectAll says that every receiver should get every message, as in a
// fan-out.
func (t *Tracker) ExpectAll() {
	t.expectAll = true
	t.expected = nil
	t.nExpected = int64(t.receivers) * int64(t.messages)
}

// Expect says that receiver should get message seq, as in a unicast where
// each receiver gets only the messages addressed to it. Expecting a pair
// twice, or after ExpectAll, changes nothing. Expect panics if the pair is
// out of range: that is a mistake in the scenario, not in the server.
func (t *Tracker) Expect(receiver, seq int) {
	if !t.inRange(receiver, seq) {
		panic(fmt.Sprintf("bench: Tracker.Expect(%d, %d) out of range %dx%d", receiver, seq, t.receivers, t.messages))
	}
	if t.expectAll {
		return
	}
	if t.expected == nil {
		t.expected = make([]uint64, len(t.received))
	}
	i, m := t.bit(receiver, seq)
	if t.expected[i]&m == 0 {
		t.expected[i] |= m
		t.nExpected++
	}
}

// Mark records that receiver got message seq. It returns true if this is
// the first copy of a message the receiver was expected to get: the copy
// to count as delivered and to measure the latency of. Further copies count
// as duplicates; a message the receiver should not have got counts as
// unexpected, and so does a pair out of range (a corrupt or foreign
// message), which Mark never panics on.
func (t *Tracker) Mark(receiver, seq int) (first bool) {
	if !t.inRange(receiver, seq) {
		t.outOfRange.Add(1)
		return false
	}
	i, m := t.bit(receiver, seq)
	if atomic.OrUint64(&t.received[i], m)&m != 0 {
		t.duplicates.Add(1)
		return false
	}
	return t.expectAll || t.expected != nil && t.expected[i]&m != 0
}

// Counts returns the pairs expected; the expected pairs received (first
// copies only); the expected pairs never received (expected - received);
// the copies received of pairs already received; and the messages received
// that were not expected, out-of-range ones included (each counted once per
// pair, or once per Mark when out of range).
func (t *Tracker) Counts() (expected, received, missing, duplicates, unexpected int64) {
	for i := range t.received {
		r := atomic.LoadUint64(&t.received[i])
		var e uint64
		switch {
		case t.expectAll:
			e = ^uint64(0)
		case t.expected != nil:
			e = t.expected[i]
		}
		received += int64(bits.OnesCount64(r & e))
		unexpected += int64(bits.OnesCount64(r &^ e))
	}
	expected = t.nExpected
	return expected, received, expected - received, t.duplicates.Load(), unexpected + t.outOfRange.Load()
}

// OutOfRange returns how many Mark calls named a receiver or sequence
// number outside the Tracker's range. They are included in Counts'
// unexpected.
func (t *Tracker) OutOfRange() int64 {
	return t.outOfRange.Load()
}

// MissingSample returns up to n of the expected pairs never received, as
// "receiver R seq S" strings in receiver then sequence order, for a report.
func (t *Tracker) MissingSample(n int) []string {
	var out []string
	if n <= 0 || t.nExpected == 0 {
		return nil
	}
	for r := 0; r < t.receivers; r++ {
		for w := 0; w < t.words; w++ {
			i := r*t.words + w
			var e uint64
			if t.expectAll {
				e = ^uint64(0)
				if rem := t.messages - w*64; rem < 64 {
					e = 1<<uint(rem) - 1
				}
			} else if t.expected != nil {
				e = t.expected[i]
			}
			miss := e &^ atomic.LoadUint64(&t.received[i])
			for miss != 0 {
				b := bits.TrailingZeros64(miss)
				miss &= miss - 1
				out = append(out, fmt.Sprintf("receiver %d seq %d", r, w*64+b))
				if len(out) == n {
					return out
				}
			}
		}
	}
	return out
}

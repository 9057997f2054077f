package bench

import (
	"encoding/base64"
	"testing"
	"time"
)

// TestInboxBook checks the inbox accounting of a worker: a copy on a new
// connection is an allowed redelivery unless its ACK had ackSettle to be
// processed before its connection ended; a copy on the same connection is
// always a duplicate; completion is reported once, when the accepted set
// is known and has arrived.
func TestInboxBook(t *testing.T) {
	t0 := time.Now()
	b := newInboxBook(3, 2) // users 0..2, messages 0..1
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	// User 0, message 0: received and acked on connection 1, which lived on
	// for 2 s: a copy on connection 2 is a real duplicate.
	// User 0, message 1: acked on connection 1 just before it ended: a copy
	// on connection 2 is an allowed redelivery.
	b.receive(0, 0, 1, at(0))
	b.acked(0, 0, 1, at(1))
	b.receive(0, 1, 1, at(1990))
	b.acked(0, 1, 1, at(1995))
	b.ended(0, 1, at(2000))
	b.receive(0, 0, 2, at(2100))
	b.receive(0, 1, 2, at(2100))
	// User 1, message 0: twice on one connection.
	b.receive(1, 0, 3, at(50))
	b.receive(1, 0, 3, at(60))
	// Out of range.
	b.receive(5, 0, 4, at(70))
	b.receive(1, 7, 4, at(70))

	// Accepted: every message of users 0 and 1, and user 2's message 1
	// (bits 0..3 and 5); user 1's message 1 and user 2's are still missing.
	bitmap := []byte{0b101111}
	if b.expect(bitmap) {
		t.Fatal("complete with messages missing")
	}
	var res WorkerResult
	b.counts(&res, 10)
	if res.InboxExpected != 5 || res.InboxReceived != 3 || res.InboxMissing != 2 {
		t.Errorf("expected %d received %d missing %d, want 5 3 2", res.InboxExpected, res.InboxReceived, res.InboxMissing)
	}
	if res.InboxDuplicates != 2 || res.InboxRedelivered != 1 || res.InboxUnconfirmed != 2 {
		t.Errorf("duplicates %d redelivered %d unconfirmed %d, want 2 1 2", res.InboxDuplicates, res.InboxRedelivered, res.InboxUnconfirmed)
	}
	if len(res.InboxMissingList) != 2 || res.InboxMissingList[0] != "inbox user 11 message 1" {
		t.Errorf("missing sample %q", res.InboxMissingList)
	}
	if b.receive(1, 1, 3, at(3000)) {
		t.Fatal("complete with user 2's message missing")
	}
	b.receive(2, 0, 5, at(3500)) // not accepted: unconfirmed, does not complete
	if !b.receive(2, 1, 5, at(4000)) {
		t.Fatal("not complete once every accepted message arrived")
	}
	if b.receive(2, 1, 5, at(4100)) {
		t.Fatal("completion reported twice")
	}
	if got, want, last := b.progress(); got != 5 || want != 5 || !last.Equal(at(4000)) {
		t.Errorf("progress %d of %d, last %v", got, want, last.Sub(t0))
	}
}

// TestInboxBitmap checks that the coordinator's bitmap of a worker's users
// is what the worker's book reads.
func TestInboxBitmap(t *testing.T) {
	p := newInboxPushes(10, 3)
	for _, i := range []int{4*3 + 0, 4*3 + 2, 6*3 + 1, 9*3 + 2} {
		p.accepted[i] = true
	}
	raw, err := base64.StdEncoding.DecodeString(p.bitmap(4, 7)) // users 4, 5, 6
	if err != nil {
		t.Fatal(err)
	}
	b := newInboxBook(3, 3)
	b.expect(raw)
	if _, want, _ := b.progress(); want != 3 {
		t.Errorf("%d expected, want 3", want)
	}
	for i, want := range []bool{true, false, true, false, false, false, false, true, false} {
		if bitSet(raw, i) != want {
			t.Errorf("bit %d = %v", i, !want)
		}
	}
}

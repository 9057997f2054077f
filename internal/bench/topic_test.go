package bench

import (
	"reflect"
	"testing"
)

// TestTopicBook checks a worker's topic accounting: positions from REPLYs
// and PUSHes (the higher seq within the epoch), repeats dropped, missed
// messages counted against the accepted set, and the resubscriptions.
func TestTopicBook(t *testing.T) {
	b := newTopicBook("news", 3, 3)
	if s := b.position(0, "news"); s != (Sub{Topic: "news"}) {
		t.Errorf("position with no epoch known: %+v, want a plain subscription", s)
	}
	b.reply(0, "e1", 10)
	b.reply(1, "e1", 10)
	b.reply(2, "e1", 10)
	if !b.fresh(0, "e1", 11) || b.fresh(0, "e1", 11) || b.fresh(0, "e1", 9) {
		t.Error("seq 11 not new, or its repeat (or an older seq) not dropped")
	}
	b.reply(0, "e1", 10) // a REPLY below the position does not move it back
	if s := b.position(0, "news"); s != (Sub{Topic: "news", Epoch: "e1", Seq: 11}) {
		t.Errorf("position %+v, want e1/11", s)
	}
	if !b.fresh(1, "e2", 3) || !b.fresh(1, "", 0) {
		t.Error("a PUSH of another epoch, or without seq, was dropped")
	}
	b.reply(2, "e2", 50) // another epoch: not taken
	if s := b.position(2, "news"); s.Seq != 10 {
		t.Errorf("position of client 2 %+v, want seq 10", s)
	}

	// Missed messages 0..2; the API accepted 0 and 2.
	b.missed(0, 0)
	b.missed(0, 2)
	b.missed(0, 2) // under a new seq: a duplicate
	b.missed(1, 1) // not accepted: unconfirmed
	b.missed(1, 2)
	b.missed(2, 7) // out of range
	b.expect(0b101)
	b.resubscribed(Sub{Topic: "news", Epoch: "e1", Seq: 11}, SubReply{Recovered: true})
	b.resubscribed(Sub{Topic: "news", Epoch: "e1", Seq: 10}, SubReply{Reason: "history no longer holds the position"})
	b.resubscribed(Sub{Topic: "news"}, SubReply{})

	var res WorkerResult
	b.counts(&res, 100)
	got := [...]int64{res.TopicExpected, res.TopicReceived, res.TopicMissing, res.TopicDuplicates, res.TopicRepeats,
		res.TopicUnconfirmed, res.TopicRecovered, res.TopicUnrecovered, res.TopicEpochChanged}
	want := [...]int64{6, 3, 3, 1, 2, 2, 1, 2, 2}
	if got != want {
		t.Errorf("expected, received, missing, duplicates, repeats, unconfirmed, recovered, unrecovered, epoch changed = %v, want %v", got, want)
	}
	if w := []string{"topic client 101 message 0", "topic client 102 message 0", "topic client 102 message 2"}; !reflect.DeepEqual(res.TopicMissingList, w) {
		t.Errorf("missing sample %q, want %q", res.TopicMissingList, w)
	}
	wantReasons := map[string]int64{"history no longer holds the position": 1, "no position to recover from (the server sent no epoch)": 1}
	if !reflect.DeepEqual(res.TopicReasons, wantReasons) {
		t.Errorf("reasons %v, want %v", res.TopicReasons, wantReasons)
	}
}

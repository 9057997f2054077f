package bench

import (
	"context"
	"fmt"
	"math/bits"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Storm topic recovery: every storm client subscribes to the run's topic
// and remembers its position in the topic stream (the epoch, shared by the
// worker since the server has one, and the last seq processed, one uint64
// per client), from the REPLY to its SUBSCRIBE and from every PUSH. While
// the clients are away the coordinator publishes MaxTopicMissed or fewer
// messages to the topic; the clients come back with SUBSCRIBE carrying
// their epoch and seq, and each must get every message the API accepted,
// once, and a REPLY that says recovered. Message j (0 <= j < TopicMissed)
// carries topicMissedBase+j as the payload's sequence number.
//
// Copies of a topic message at or below the client's position (a seq
// already processed, in the same epoch) are dropped, as the protocol asks
// clients to, and counted as repeats: allowed.

// MaxTopicMissed bounds the topic messages published while a storm's
// clients are away (one bit each per client).
const MaxTopicMissed = 64

// topicMissedBase is the payload sequence number of missed topic message
// 0: far above the check messages' (0..stormCheckMessages-1).
const topicMissedBase = 1 << 40

// topicBook keeps, in a worker, the position of each client in the topic
// stream and accounts for the missed messages and the recoveries.
type topicBook struct {
	stream string // "t:<topic>"
	k      int    // messages the coordinator may publish while the clients are away

	epoch    atomic.Pointer[string] // the stream's epoch: the first one seen
	seq      []uint64               // client r: last seq processed (atomic)
	got      []uint64               // client r: bit j set when missed message j arrived (atomic)
	expected atomic.Uint64          // bit j: the API accepted message j

	repeats    atomic.Int64 // copies at or below the position, dropped
	duplicates atomic.Int64 // missed message j again, with a new seq
	foreign    atomic.Int64 // frames of another epoch than the first one seen
	outOfRange atomic.Int64 // missed-message payloads naming no message of ours

	mu          sync.Mutex
	recovered   int64
	unrecovered int64
	reasons     map[string]int64 // why not recovered
}

func newTopicBook(topic string, clients, k int) *topicBook {
	return &topicBook{stream: "t:" + topic, k: k, seq: make([]uint64, clients), got: make([]uint64, clients),
		reasons: map[string]int64{}}
}

// sameEpoch reports whether epoch is the stream's, learning it if none was
// known yet.
func (b *topicBook) sameEpoch(epoch string) bool {
	if p := b.epoch.Load(); p != nil {
		return *p == epoch
	}
	if b.epoch.CompareAndSwap(nil, &epoch) {
		return true
	}
	return *b.epoch.Load() == epoch
}

// advance moves client r's position to seq if seq is above it, and reports
// whether it was.
func (b *topicBook) advance(r int, seq uint64) bool {
	for {
		old := atomic.LoadUint64(&b.seq[r])
		if seq <= old {
			return false
		}
		if atomic.CompareAndSwapUint64(&b.seq[r], old, seq) {
			return true
		}
	}
}

// fresh takes a PUSH of the stream for client r and reports whether it is
// new: a seq above the position in the same epoch. A PUSH without seq (a
// server keeping no history) or of another epoch cannot be told apart, and
// is taken as new.
func (b *topicBook) fresh(r int, epoch string, seq uint64) bool {
	if r < 0 || r >= len(b.seq) || seq == 0 {
		return true
	}
	if !b.sameEpoch(epoch) {
		b.foreign.Add(1)
		return true
	}
	if !b.advance(r, seq) {
		b.repeats.Add(1)
		return false
	}
	return true
}

// reply takes the position a REPLY of the stream gives client r: the higher
// seq within the epoch.
func (b *topicBook) reply(r int, epoch string, seq uint64) {
	if r < 0 || r >= len(b.seq) || epoch == "" {
		return
	}
	if !b.sameEpoch(epoch) {
		b.foreign.Add(1)
		return
	}
	b.advance(r, seq)
}

// position returns the subscription client r comes back with: its epoch
// and last seq, or a plain one if no epoch is known.
func (b *topicBook) position(r int, topic string) Sub {
	s := Sub{Topic: topic}
	if p := b.epoch.Load(); p != nil && *p != "" {
		s.Epoch, s.Seq = *p, atomic.LoadUint64(&b.seq[r])
	}
	return s
}

// missed records that missed message j reached client r.
func (b *topicBook) missed(r, j int) {
	if r < 0 || r >= len(b.got) || j < 0 || j >= b.k || j >= MaxTopicMissed {
		b.outOfRange.Add(1)
		return
	}
	bit := uint64(1) << uint(j)
	if atomic.OrUint64(&b.got[r], bit)&bit != 0 {
		b.duplicates.Add(1)
	}
}

// resubscribed records the REPLY to a client's SUBSCRIBE after the storm.
func (b *topicBook) resubscribed(asked Sub, rep SubReply) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rep.Recovered {
		b.recovered++
		return
	}
	b.unrecovered++
	reason := rep.Reason
	switch {
	case asked.Epoch == "":
		reason = "no position to recover from (the server sent no epoch)"
	case reason == "":
		reason = "no reason given"
	}
	if len(b.reasons) < 10 || b.reasons[reason] > 0 {
		b.reasons[reason]++
	}
}

// expect sets which missed messages the API accepted.
func (b *topicBook) expect(mask uint64) { b.expected.Store(mask) }

// counts fills the topic figures of a worker result; from is the index of
// the worker's first client, for the missing sample.
func (b *topicBook) counts(res *WorkerResult, from int) {
	exp := b.expected.Load()
	per := int64(bits.OnesCount64(exp))
	res.TopicExpected = per * int64(len(b.got))
	for r := range b.got {
		g := atomic.LoadUint64(&b.got[r])
		res.TopicReceived += int64(bits.OnesCount64(g & exp))
		res.TopicUnconfirmed += int64(bits.OnesCount64(g &^ exp))
		for miss := exp &^ g; miss != 0 && len(res.TopicMissingList) < 10; miss &= miss - 1 {
			res.TopicMissingList = append(res.TopicMissingList,
				fmt.Sprintf("topic client %d message %d", from+r, bits.TrailingZeros64(miss)))
		}
	}
	res.TopicMissing = res.TopicExpected - res.TopicReceived
	res.TopicUnconfirmed += b.outOfRange.Load()
	res.TopicDuplicates = b.duplicates.Load()
	res.TopicRepeats = b.repeats.Load()
	res.TopicEpochChanged = b.foreign.Load()
	b.mu.Lock()
	res.TopicRecovered, res.TopicUnrecovered = b.recovered, b.unrecovered
	if len(b.reasons) > 0 {
		res.TopicReasons = make(map[string]int64, len(b.reasons))
		for k, v := range b.reasons {
			res.TopicReasons[k] = v
		}
	}
	b.mu.Unlock()
}

// topicMissedID is the message id of missed topic message j of a run.
func topicMissedID(prefix string, j int) string { return prefix + "-topic-" + strconv.Itoa(j) }

// publishMissed publishes o.TopicMissed messages to the run's topic, one
// after another, and returns which the API accepted (bit j: answered 200)
// and the seq it gave each. A failed publish counts as an error; its
// message is not expected.
func publishMissed(ctx context.Context, o Options, sent *atomic.Int64, errs *counter) (mask uint64, seqs []uint64) {
	api := newAPIClient(o.apiTargets(), 1)
	defer api.close()
	path := "/v1/apps/" + url.PathEscape(o.Target.App) + "/topics/" + url.PathEscape(o.Topic) + "/messages"
	for j := 0; j < o.TopicMissed && j < MaxTopicMissed && ctx.Err() == nil; j++ {
		var ans struct {
			Seq uint64 `json:"seq"`
		}
		status, err := api.postDecode(ctx, path, message(topicMissedID(o.prefix, j), makePayload(topicMissedBase+j, time.Now(), o.Size)), &ans)
		sent.Add(1)
		if err != nil || status != 200 {
			errs.add("topic publish: " + statusKind(status, err))
			continue
		}
		mask |= 1 << uint(j)
		seqs = append(seqs, ans.Seq)
	}
	return mask, seqs
}

// seqRange describes the seqs the API gave the missed topic messages.
func seqRange(seqs []uint64) string {
	if len(seqs) == 0 {
		return "none"
	}
	s := append([]uint64(nil), seqs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if s[0] == s[len(s)-1] {
		return strconv.FormatUint(s[0], 10)
	}
	return strconv.FormatUint(s[0], 10) + "-" + strconv.FormatUint(s[len(s)-1], 10)
}

// reasonsNote lists why subscriptions were not recovered, most frequent
// first.
func reasonsNote(m map[string]int64) string {
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var parts []string
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%d %q", e.v, e.k))
	}
	return strings.Join(parts, ", ")
}

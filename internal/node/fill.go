package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/protocol"
)

var _ hub.Filler = (*Node)(nil)

// Fill implements hub.Filler: it reads the stored messages of s after
// after and before before, as the PUSH frames the hub routes.
func (n *Node) Fill(ctx context.Context, s hub.Stream, after, before uint64) (string, []hub.Ordered, error) {
	key, stream := storeStream(s)
	var (
		out   []hub.Ordered
		epoch string
	)
	for after+1 < before {
		msgs, ep, err := n.store.Range(ctx, key, after, min(catchUpPage, int(before-after-1)))
		if err != nil && !errors.Is(err, store.ErrTrimmed) {
			return "", nil, fmt.Errorf("fill %s after %d: %w", key, after, err)
		}
		if epoch != "" && ep != epoch {
			break // the stream started over while it was read: route what was read
		}
		epoch = ep
		for _, m := range msgs {
			if m.Seq >= before {
				return epoch, out, nil
			}
			e := pushOf(stream, epoch, m)
			n.stamp(s, e) // late, but live: counted from now
			out = append(out, hub.Ordered{Seq: m.Seq, Frame: e})
			after = m.Seq
		}
		if len(msgs) < catchUpPage {
			break // the store holds nothing more before before
		}
	}
	return epoch, out, nil
}

// storeStream returns the store stream of a hub stream, and the stream
// name its PUSH frames carry.
func storeStream(s hub.Stream) (key, stream string) {
	switch s.Kind {
	case hub.Inbox:
		return inboxStream(s.App, s.Name), userStream(s.Name)
	case hub.Topic:
		return historyStream(s.App, topicStream(s.Name)), topicStream(s.Name)
	}
	return historyStream(s.App, broadcastStream), broadcastStream
}

// pushOf is the PUSH frame of stored message m of stream, in epoch.
func pushOf(stream, epoch string, m store.Message) *protocol.Encoded {
	return protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: stream, Epoch: epoch,
		Seq: m.Seq, MsgID: m.ID, Payload: m.Payload, Time: m.Time.UnixMilli()})
}

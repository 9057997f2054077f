package protocol

import (
	"reflect"
	"testing"
	"time"
)

func sampleFrames() []*Frame {
	return []*Frame{
		{Type: TypeConnect, Version: Version, Token: "eyJhbGciOi.x.y", Device: "phone-1", Client: "herald-go/0.1",
			Resume: []Position{{Stream: "u:alice", Epoch: "e1", Seq: 42}, {Stream: "t:news", Seq: 7}}},
		{Type: TypeConnected, Session: "s-1", Node: "n1", Heartbeat: 180 * time.Second, Time: 1700000000000},
		{Type: TypePush, Stream: "t:news", Epoch: "e1", Seq: 9, MsgID: "m-9", Payload: []byte(`{"price":1.5}`), Time: 1700000000001},
		{Type: TypePush, Stream: "u:bob", Seq: 1, MsgID: "m-1", Payload: []byte{0, 1, 2, 0xff}},
		{Type: TypeAck, Stream: "u:bob", Seq: 1},
		{Type: TypeSubscribe, ID: 3, Topic: "news"},
		{Type: TypeSubscribe, ID: 6, Topic: "news", Epoch: "e1", Seq: 8},
		{Type: TypeUnsubscribe, ID: 4, Topic: "news"},
		{Type: TypePing, Time: -5},
		{Type: TypePong},
		{Type: TypeDisconnect, Code: uint32(DisconnectShutdown), Reason: "draining", Reconnect: true, Alt: "127.0.0.1:9000"},
		{Type: TypeError, ID: 3, Code: uint32(CodeForbidden), Reason: "topic \"x\" <not> allowed\n"},
		{Type: TypeUplink, ID: 5, Payload: []byte("hi")},
		{Type: TypeReply, ID: 5},
		{Type: TypeReply, ID: 6, Stream: "t:news", Epoch: "e1", Seq: 9, Recovered: true},
		{Type: TypeReply, Stream: "b", Epoch: "e1", Seq: 3, Reason: "history trimmed"},
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	lim := DefaultLimits()
	for _, f := range sampleFrames() {
		t.Run(f.Type.String(), func(t *testing.T) {
			buf := AppendFramed(nil, f)
			body, n, err := NextFramed(buf, lim)
			if err != nil || n != len(buf) {
				t.Fatalf("NextFramed: n=%d err=%v", n, err)
			}
			var got Frame
			if err := DecodeBinary(body, &got, lim); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(&got, f) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, *f)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	lim := DefaultLimits()
	for _, f := range sampleFrames() {
		t.Run(f.Type.String(), func(t *testing.T) {
			var got Frame
			if err := DecodeJSON(AppendJSON(nil, f), &got, lim); err != nil {
				t.Fatalf("decode %s: %v", AppendJSON(nil, f), err)
			}
			if !reflect.DeepEqual(&got, f) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, *f)
			}
		})
	}
}

package protocol_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/herald-push/herald/protocol"
)

// The worked examples of docs/protocol.md are the output of these examples,
// so the specification cannot drift from the encoder.

var fieldNames = map[uint64]string{1: "id", 2: "version", 3: "token", 4: "device", 5: "client",
	6: "resume", 7: "session", 8: "node", 9: "heartbeat", 10: "stream", 11: "topic", 12: "epoch",
	13: "seq", 14: "msg_id", 15: "payload", 16: "time", 17: "code", 18: "reason", 19: "reconnect", 20: "alt"}

// annotate prints a length-prefixed binary frame one field per line.
func annotate(framed []byte) {
	fmt.Printf("%-28s length prefix = %d\n", hexs(framed[:4]), binary.BigEndian.Uint32(framed))
	b := framed[4:]
	fmt.Printf("%-28s encoding version %d\n", hexs(b[:1]), b[0])
	fmt.Printf("%-28s type %d (%s)\n", hexs(b[1:2]), b[1], protocol.Type(b[1]))
	annotateFields(b[2:], "")
}

func annotateFields(b []byte, indent string) {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		num, wt := tag>>1, tag&1
		if wt == 0 {
			v, m := binary.Uvarint(b[n:])
			desc := fmt.Sprint(v)
			switch num {
			case 16:
				desc = fmt.Sprintf("zigzag %d = %d", v, int64(v>>1)^-int64(v&1))
			case 9:
				desc = fmt.Sprintf("%d ms", v)
			}
			fmt.Printf("%-28s %sfield %d %s (varint) = %s\n", hexs(b[:n+m]), indent, num, fieldNames[num], desc)
			b = b[n+m:]
			continue
		}
		l, m := binary.Uvarint(b[n:])
		head, val := b[:n+m], b[n+m:n+m+int(l)]
		if num == 6 {
			fmt.Printf("%-28s %sfield %d %s (bytes, %d): a position\n", hexs(head), indent, num, fieldNames[num], l)
			annotateFields(val, indent+"  ")
		} else {
			fmt.Printf("%-28s %sfield %d %s (bytes, %d)\n", hexs(head), indent, num, fieldNames[num], l)
			for len(val) > 0 {
				k := min(len(val), 8)
				fmt.Printf("%-28s %s  %q\n", hexs(val[:k]), indent, val[:k])
				val = val[k:]
			}
		}
		b = b[n+m+int(l):]
	}
}

func hexs(b []byte) string {
	s := make([]string, len(b))
	for i, c := range b {
		s[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(s, " ")
}

func ExampleAppendFramed_connect() {
	connect := &protocol.Frame{
		Type:    protocol.TypeConnect,
		Version: protocol.Version,
		Token:   "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
		Device:  "phone-1",
		Client:  "herald-c/1.0",
		Resume:  []protocol.Position{{Stream: "u:alice", Epoch: "e7", Seq: 41}},
	}
	framed := protocol.AppendFramed(nil, connect)
	fmt.Print(hex.Dump(framed))
	fmt.Println()
	annotate(framed)
	// Output:
	// 00000000  00 00 00 5c 01 01 04 01  07 2e 65 79 4a 68 62 47  |...\......eyJhbG|
	// 00000010  63 69 4f 69 4a 49 55 7a  49 31 4e 69 4a 39 2e 65  |ciOiJIUzI1NiJ9.e|
	// 00000020  79 4a 7a 64 57 49 69 4f  69 4a 68 62 47 6c 6a 5a  |yJzdWIiOiJhbGljZ|
	// 00000030  53 4a 39 2e 63 32 6c 6e  09 07 70 68 6f 6e 65 2d  |SJ9.c2ln..phone-|
	// 00000040  31 0b 0c 68 65 72 61 6c  64 2d 63 2f 31 2e 30 0d  |1..herald-c/1.0.|
	// 00000050  0f 15 07 75 3a 61 6c 69  63 65 19 02 65 37 1a 29  |...u:alice..e7.)|
	//
	// 00 00 00 5c                  length prefix = 92
	// 01                           encoding version 1
	// 01                           type 1 (connect)
	// 04 01                        field 2 version (varint) = 1
	// 07 2e                        field 3 token (bytes, 46)
	// 65 79 4a 68 62 47 63 69        "eyJhbGci"
	// 4f 69 4a 49 55 7a 49 31        "OiJIUzI1"
	// 4e 69 4a 39 2e 65 79 4a        "NiJ9.eyJ"
	// 7a 64 57 49 69 4f 69 4a        "zdWIiOiJ"
	// 68 62 47 6c 6a 5a 53 4a        "hbGljZSJ"
	// 39 2e 63 32 6c 6e              "9.c2ln"
	// 09 07                        field 4 device (bytes, 7)
	// 70 68 6f 6e 65 2d 31           "phone-1"
	// 0b 0c                        field 5 client (bytes, 12)
	// 68 65 72 61 6c 64 2d 63        "herald-c"
	// 2f 31 2e 30                    "/1.0"
	// 0d 0f                        field 6 resume (bytes, 15): a position
	// 15 07                          field 10 stream (bytes, 7)
	// 75 3a 61 6c 69 63 65             "u:alice"
	// 19 02                          field 12 epoch (bytes, 2)
	// 65 37                            "e7"
	// 1a 29                          field 13 seq (varint) = 41
}

func ExampleAppendFramed_push() {
	push := &protocol.Frame{
		Type:    protocol.TypePush,
		Stream:  "t:news",
		Epoch:   "e7",
		Seq:     42,
		MsgID:   "m-42",
		Payload: []byte(`{"title":"hi"}`),
		Time:    1700000000000,
	}
	framed := protocol.AppendFramed(nil, push)
	fmt.Print(hex.Dump(framed))
	fmt.Println()
	annotate(framed)
	// Output:
	// 00000000  00 00 00 2d 01 03 15 06  74 3a 6e 65 77 73 19 02  |...-....t:news..|
	// 00000010  65 37 1a 2a 1d 04 6d 2d  34 32 1f 0e 7b 22 74 69  |e7.*..m-42..{"ti|
	// 00000020  74 6c 65 22 3a 22 68 69  22 7d 20 80 a0 ab fe f9  |tle":"hi"} .....|
	// 00000030  62                                                |b|
	//
	// 00 00 00 2d                  length prefix = 45
	// 01                           encoding version 1
	// 03                           type 3 (push)
	// 15 06                        field 10 stream (bytes, 6)
	// 74 3a 6e 65 77 73              "t:news"
	// 19 02                        field 12 epoch (bytes, 2)
	// 65 37                          "e7"
	// 1a 2a                        field 13 seq (varint) = 42
	// 1d 04                        field 14 msg_id (bytes, 4)
	// 6d 2d 34 32                    "m-42"
	// 1f 0e                        field 15 payload (bytes, 14)
	// 7b 22 74 69 74 6c 65 22        "{\"title\""
	// 3a 22 68 69 22 7d              ":\"hi\"}"
	// 20 80 a0 ab fe f9 62         field 16 time (varint) = zigzag 3400000000000 = 1700000000000
}

func ExampleAppendFramed_heartbeat() {
	connected := &protocol.Frame{Type: protocol.TypeConnected, Session: "s-1", Node: "n1",
		Heartbeat: 180 * time.Second, Time: 1700000000000}
	annotate(protocol.AppendFramed(nil, connected))
	// Output:
	// 00 00 00 16                  length prefix = 22
	// 01                           encoding version 1
	// 02                           type 2 (connected)
	// 0f 03                        field 7 session (bytes, 3)
	// 73 2d 31                       "s-1"
	// 11 02                        field 8 node (bytes, 2)
	// 6e 31                          "n1"
	// 12 a0 fe 0a                  field 9 heartbeat (varint) = 180000 ms
	// 20 80 a0 ab fe f9 62         field 16 time (varint) = zigzag 3400000000000 = 1700000000000
}

func ExampleAppendJSON() {
	exchange := []struct {
		dir string
		f   *protocol.Frame
	}{
		{"→", &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version,
			Token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", Device: "browser-1", Client: "herald-js/1.0",
			Resume: []protocol.Position{{Stream: "u:alice", Epoch: "e7", Seq: 41}}}},
		{"←", &protocol.Frame{Type: protocol.TypeConnected, Session: "s-9f2c", Node: "node-a",
			Heartbeat: 180 * time.Second, Time: 1700000000000}},
		{"→", &protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news"}},
		{"←", &protocol.Frame{Type: protocol.TypeReply, ID: 1}},
		{"→", &protocol.Frame{Type: protocol.TypeSubscribe, ID: 2, Topic: "admin"}},
		{"←", (&protocol.Error{ID: 2, Code: protocol.CodeForbidden, Text: "topic not allowed"}).Frame()},
		{"←", &protocol.Frame{Type: protocol.TypePush, Stream: "t:news", Epoch: "e7", Seq: 42, MsgID: "m-42",
			Payload: []byte(`{"title": "hi"}`), Time: 1700000000500}},
		{"←", &protocol.Frame{Type: protocol.TypePush, Stream: "u:alice", Epoch: "e3", Seq: 8, MsgID: "m-43",
			Payload: []byte{0xde, 0xad, 0xbe, 0xef}, Time: 1700000000600}},
		{"→", &protocol.Frame{Type: protocol.TypeAck, Stream: "t:news", Seq: 42}},
		{"→", &protocol.Frame{Type: protocol.TypePing, Time: 1700000060000}},
		{"←", &protocol.Frame{Type: protocol.TypePong, Time: 1700000060000}},
		{"←", protocol.Disconnect{Code: protocol.DisconnectShutdown, Reason: "draining",
			Reconnect: true, Alt: "wss://edge-2.example.com/ws"}.Frame()},
	}
	for _, m := range exchange {
		fmt.Printf("%s %s\n", m.dir, protocol.AppendJSON(nil, m.f))
	}
	// Output:
	// → {"type":"connect","version":1,"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln","device":"browser-1","client":"herald-js/1.0","resume":[{"stream":"u:alice","epoch":"e7","seq":41}]}
	// ← {"type":"connected","session":"s-9f2c","node":"node-a","heartbeat":180000,"time":1700000000000}
	// → {"type":"subscribe","id":1,"topic":"news"}
	// ← {"type":"reply","id":1}
	// → {"type":"subscribe","id":2,"topic":"admin"}
	// ← {"type":"error","id":2,"code":1001,"reason":"topic not allowed"}
	// ← {"type":"push","stream":"t:news","epoch":"e7","seq":42,"msg_id":"m-42","data":{"title":"hi"},"time":1700000000500}
	// ← {"type":"push","stream":"u:alice","epoch":"e3","seq":8,"msg_id":"m-43","b64":"3q2+7w==","time":1700000000600}
	// → {"type":"ack","stream":"t:news","seq":42}
	// → {"type":"ping","time":1700000060000}
	// ← {"type":"pong","time":1700000060000}
	// ← {"type":"disconnect","code":3001,"reason":"draining","reconnect":true,"alt":"wss://edge-2.example.com/ws"}
}

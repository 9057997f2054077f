package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecodeJSONErrors(t *testing.T) {
	def := DefaultLimits()
	small := smallLimits()
	long := strings.Repeat("x", 9)
	tests := []struct {
		name string
		in   string
		lim  Limits
		want error
	}{
		{"empty", ``, def, ErrMalformed},
		{"not JSON", `push`, def, ErrMalformed},
		{"truncated", `{"type":"ping"`, def, ErrMalformed},
		{"array", `[{"type":"ping"}]`, def, ErrMalformed},
		{"string", `"ping"`, def, ErrMalformed},
		{"trailing garbage", `{"type":"ping"}x`, def, ErrMalformed},
		{"type not a string", `{"type":7}`, def, ErrMalformed},
		{"id negative", `{"type":"reply","id":-1}`, def, ErrMalformed},
		{"id over 32 bits", `{"type":"reply","id":4294967296}`, def, ErrMalformed},
		{"seq fractional", `{"type":"ack","stream":"b","seq":1.5}`, def, ErrMalformed},
		{"reconnect not bool", `{"type":"disconnect","reconnect":1}`, def, ErrMalformed},
		{"heartbeat negative", `{"type":"connected","heartbeat":-1}`, def, ErrMalformed},
		{"heartbeat overflows duration", `{"type":"connected","heartbeat":4611686018427388}`, def, ErrMalformed},
		{"resume not array", `{"type":"connect","token":"t","resume":{}}`, def, ErrMalformed},

		// Strings are taken as they are sent, or refused: never rewritten.
		{"device with lone surrogate", `{"type":"connect","token":"t","device":"phone\ud800"}`, def, ErrMalformed},
		{"device with invalid utf-8", "{\"type\":\"connect\",\"token\":\"t\",\"device\":\"phone\xff\"}", def, ErrMalformed},
		{"token with lone low surrogate", `{"type":"connect","token":"t\udc00"}`, def, ErrMalformed},
		{"topic with lone surrogate", `{"type":"subscribe","id":1,"topic":"news\udbff"}`, def, ErrMalformed},
		{"topic with invalid utf-8", "{\"type\":\"subscribe\",\"id\":1,\"topic\":\"news\xfe\"}", def, ErrMalformed},
		{"topic with encoded surrogate", "{\"type\":\"subscribe\",\"id\":1,\"topic\":\"news\xed\xa0\x80\"}", def, ErrMalformed},
		{"ack stream with reversed pair", `{"type":"ack","stream":"u:\ude00\ud83d","seq":1}`, def, ErrMalformed},
		{"resume epoch with lone surrogate", `{"type":"connect","token":"t","resume":[{"stream":"b","epoch":"\ud800"}]}`, def, ErrMalformed},
		{"reason with invalid utf-8", "{\"type\":\"error\",\"reason\":\"\xc3\"}", def, ErrMalformed},
		{"data with lone surrogate", `{"type":"uplink","data":{"text":"\ud800"}}`, def, ErrMalformed},
		{"data with invalid utf-8", "{\"type\":\"uplink\",\"data\":\"caf\xe9\"}", def, ErrMalformed},
		{"unknown key with lone surrogate", `{"type":"ping","extra":"\udfff"}`, def, ErrMalformed},

		{"null", `null`, def, ErrUnknownType},
		{"no type", `{"id":1}`, def, ErrUnknownType},
		{"empty type", `{"type":""}`, def, ErrUnknownType},
		{"unknown type name", `{"type":"publish"}`, def, ErrUnknownType},
		{"type name case", `{"type":"PING"}`, def, ErrUnknownType},
		{"type in String form", `{"type":"type(13)"}`, def, ErrUnknownType},

		{"both data and b64", `{"type":"push","stream":"b","data":{},"b64":"AA=="}`, def, ErrMalformed},
		{"null data and b64", `{"type":"push","stream":"b","data":null,"b64":"AA=="}`, def, ErrMalformed},
		{"bad base64 alphabet", `{"type":"push","stream":"b","b64":"!!!!"}`, def, ErrMalformed},
		{"base64 without padding", `{"type":"push","stream":"b","b64":"AA"}`, def, ErrMalformed},
		{"url-safe base64", `{"type":"push","stream":"b","b64":"-_-_"}`, def, ErrMalformed},
		{"b64 not a string", `{"type":"push","stream":"b","b64":1}`, def, ErrMalformed},

		{"over max frame", `{"type":"ping","reason":"` + strings.Repeat("x", 300) + `"}`, small, ErrTooLarge},
		{"string over limit", `{"type":"error","reason":"` + long + `"}`, small, ErrTooLarge},
		{"escaped string over limit", `{"type":"error","reason":"\u00e9\u00e9\u00e9\u00e9\u00e9"}`, small, ErrTooLarge},
		{"payload over limit", `{"type":"push","stream":"b","data":"` + strings.Repeat("x", 15) + `"}`, small, ErrTooLarge},
		{"b64 payload over limit", `{"type":"push","stream":"b","b64":"` + strings.Repeat("A", 24) + `"}`, small, ErrTooLarge},
		{"resume list over limit", `{"type":"connect","token":"t","resume":[{"stream":"a"},{"stream":"b"},{"stream":"c"}]}`, small, ErrTooLarge},
		{"resume stream over limit", `{"type":"connect","token":"t","resume":[{"stream":"` + long + `"}]}`, small, ErrTooLarge},
		{"resume epoch over limit", `{"type":"connect","token":"t","resume":[{"stream":"b","epoch":"` + long + `"}]}`, small, ErrTooLarge},

		{"connect without token", `{"type":"connect","version":1}`, def, ErrMissingField},
		{"subscribe without topic", `{"type":"subscribe","id":1}`, def, ErrMissingField},
		{"unsubscribe without topic", `{"type":"unsubscribe","id":1}`, def, ErrMissingField},
		{"ack without seq", `{"type":"ack","stream":"b"}`, def, ErrMissingField},
		{"ack without stream", `{"type":"ack","seq":1}`, def, ErrMissingField},
		{"push without stream", `{"type":"push","data":1}`, def, ErrMissingField},
		{"resume without stream", `{"type":"connect","token":"t","resume":[{"seq":1}]}`, def, ErrMissingField},
		{"null resume position", `{"type":"connect","token":"t","resume":[null]}`, def, ErrMissingField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Frame{Token: "stale"}
			checkSentinel(t, DecodeJSON([]byte(tt.in), &f, tt.lim), tt.want)
			if f.Token == "stale" {
				t.Fatal("DecodeJSON did not reset the frame")
			}
			// a batch of one reports the same error
			_, err := DecodeJSONBatch([]byte(tt.in), tt.lim)
			if tt.name != "array" {
				checkSentinel(t, err, tt.want)
			}
		})
	}
}

func TestDecodeJSONAccepts(t *testing.T) {
	lim := DefaultLimits()
	tests := []struct {
		name string
		in   string
		want Frame
	}{
		{"whitespace", " \n{ \"type\" : \"pong\" }\t", Frame{Type: TypePong}},
		{"unknown keys skipped", `{"type":"reply","id":2,"future":{"x":[1]},"z":null}`, Frame{Type: TypeReply, ID: 2}},
		{"null data is no payload", `{"type":"push","stream":"b","data":null}`, Frame{Type: TypePush, Stream: "b"}},
		{"empty b64 is no payload", `{"type":"push","stream":"b","b64":""}`, Frame{Type: TypePush, Stream: "b"}},
		{"empty resume", `{"type":"connect","token":"t","resume":[]}`, Frame{Type: TypeConnect, Token: "t"}},
		{"escapes", `{"type":"error","reason":"\u003c\"\\\n\u2028"}`, Frame{Type: TypeError, Reason: "<\"\\\n\u2028"}},
		{"surrogate pair", `{"type":"error","reason":"\ud83d\ude00 \\ud800"}`, Frame{Type: TypeError, Reason: "😀 \\ud800"}},
		{"negative time", `{"type":"ping","time":-5}`, Frame{Type: TypePing, Time: -5}},
		{"heartbeat", `{"type":"connected","heartbeat":180000}`, Frame{Type: TypeConnected, Heartbeat: 180 * time.Second}},
		{"data string", `{"type":"push","stream":"b","data":"hi"}`, Frame{Type: TypePush, Stream: "b", Payload: []byte(`"hi"`)}},
		{"data number", `{"type":"push","stream":"b","data":-1.5e3}`, Frame{Type: TypePush, Stream: "b", Payload: []byte(`-1.5e3`)}},
		{"data false", `{"type":"push","stream":"b","data":false}`, Frame{Type: TypePush, Stream: "b", Payload: []byte(`false`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Frame
			if err := DecodeJSON([]byte(tt.in), &got, lim); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestJSONPayload(t *testing.T) {
	lim := DefaultLimits()
	tests := []struct {
		name    string
		payload string
		wantKey string // the JSON text that must appear
		want    string // payload after the round trip
	}{
		{"binary", "\x00\x01\x02\xff", `"b64":"AAEC/w=="`, "\x00\x01\x02\xff"},
		{"text", "hello", `"b64":"aGVsbG8="`, "hello"},
		{"almost JSON", `{"a":1`, `"b64":"eyJhIjox"`, `{"a":1`},
		{"two values", `1 2`, `"b64":"MSAy"`, `1 2`},
		{"JSON with invalid UTF-8", "\"\xff\"", `"b64":"Iv8i"`, "\"\xff\""},
		{"JSON with a lone surrogate", `"\ud800"`, `"b64":"Ilx1ZDgwMCI="`, `"\ud800"`},
		{"JSON with a surrogate pair", `"\ud83d\ude00"`, `"data":"\ud83d\ude00"`, `"\ud83d\ude00"`},
		{"JSON null", `null`, `"b64":"bnVsbA=="`, `null`},
		{"spaced JSON null", ` null `, `"b64":"IG51bGwg"`, ` null `},
		{"object", `{"price":1.5}`, `"data":{"price":1.5}`, `{"price":1.5}`},
		{"string", `"hi"`, `"data":"hi"`, `"hi"`},
		{"number", `42`, `"data":42`, `42`},
		{"unicode", `"é\u2028"`, "\"data\":\"é\\u2028\"", `"é\u2028"`},
		{"compacted", "{ \"a\" : [1, 2],\n\t\"b\": \"x y\" }", `"data":{"a":[1,2],"b":"x y"}`, `{"a":[1,2],"b":"x y"}`},
		{"compacted scalar", " true\n", `"data":true`, `true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Frame{Type: TypePush, Stream: "u:a", Seq: 1, Payload: []byte(tt.payload)}
			enc := AppendJSON(nil, f)
			if !bytes.Contains(enc, []byte(tt.wantKey)) {
				t.Fatalf("%s does not contain %s", enc, tt.wantKey)
			}
			if !utf8.Valid(enc) || !json.Valid(enc) {
				t.Fatalf("encoding is not valid UTF-8 JSON: %q", enc)
			}
			var got Frame
			if err := DecodeJSON(enc, &got, lim); err != nil {
				t.Fatal(err)
			}
			if string(got.Payload) != tt.want {
				t.Fatalf("payload %q, want %q", got.Payload, tt.want)
			}
		})
	}
}

// A "data" value decodes compacted, whatever spacing the sender used.
func TestDecodeJSONCompactsData(t *testing.T) {
	in := "{\"type\":\"uplink\",\"data\": {\n  \"a\" : [ 1 , 2 ],\n  \"s\" : \"x  y\"\n}\n}"
	var f Frame
	if err := DecodeJSON([]byte(in), &f, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	if want := `{"a":[1,2],"s":"x  y"}`; string(f.Payload) != want {
		t.Fatalf("payload %q, want %q", f.Payload, want)
	}
}

func TestAppendJSONEscaping(t *testing.T) {
	f := &Frame{Type: TypeError, Reason: "a\"b\\c\nd\re\tf\x00g<h>&i\u2028j\u2029k\xffl\x7fé"}
	enc := AppendJSON(nil, f)
	want := `{"type":"error","reason":"a\"b\\c\nd\re\tf\u0000g\u003ch\u003e\u0026i\u2028j\u2029k\ufffdl` + "\x7fé" + `"}`
	if string(enc) != want {
		t.Fatalf("got  %s\nwant %s", enc, want)
	}
	// the same as encoding/json, which escapes the same way
	std, _ := json.Marshal(map[string]string{"type": "error", "reason": f.Reason})
	var a, b map[string]string
	if err := json.Unmarshal(enc, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(std, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("decodes to %q, encoding/json's to %q", a, b)
	}
}

func TestAppendJSONFieldNames(t *testing.T) {
	f := &Frame{Type: TypeConnect, ID: 1, Version: 2, Token: "t", Device: "d", Client: "c",
		Resume:  []Position{{Stream: "s", Epoch: "e", Seq: 3}, {Stream: "b"}},
		Session: "se", Node: "n", Heartbeat: 4 * time.Millisecond, Stream: "st", Topic: "to", Epoch: "ep",
		Seq: 5, MsgID: "m", Payload: []byte("{}"), Time: -6, Code: 7, Reason: "r", Reconnect: true, Alt: "a", Recovered: true}
	want := `{"type":"connect","id":1,"version":2,"token":"t","device":"d","client":"c",` +
		`"resume":[{"stream":"s","epoch":"e","seq":3},{"stream":"b"}],"session":"se","node":"n","heartbeat":4,` +
		`"stream":"st","topic":"to","epoch":"ep","seq":5,"msg_id":"m","data":{},"time":-6,"code":7,` +
		`"reason":"r","reconnect":true,"alt":"a","recovered":true}`
	if got := AppendJSON(nil, f); string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// and encoding/json agrees with the field names of jsonFrame
	var j jsonFrame
	if err := json.Unmarshal([]byte(want), &j); err != nil {
		t.Fatal(err)
	}
	std, err := json.Marshal(&j)
	if err != nil {
		t.Fatal(err)
	}
	if string(std) != want {
		t.Fatalf("encoding/json: %s\nAppendJSON:   %s", std, want)
	}
	// negative and sub-millisecond heartbeats are not sent
	for _, hb := range []time.Duration{-time.Second, time.Microsecond} {
		if got := AppendJSON(nil, &Frame{Type: TypeConnected, Heartbeat: hb}); string(got) != `{"type":"connected"}` {
			t.Errorf("heartbeat %v: %s", hb, got)
		}
	}
}

func TestAppendJSONAppends(t *testing.T) {
	got := AppendJSON([]byte("x"), &Frame{Type: TypePong})
	if string(got) != `x{"type":"pong"}` {
		t.Fatalf("got %s", got)
	}
}

func TestDecodeJSONBatch(t *testing.T) {
	lim := DefaultLimits()
	ping := Frame{Type: TypePing, Time: 1}
	ack := Frame{Type: TypeAck, Stream: "u:a", Seq: 2}
	tests := []struct {
		name    string
		in      string
		want    []Frame
		wantErr error
	}{
		{"object", `{"type":"ping","time":1}`, []Frame{ping}, nil},
		{"spaced object", "\r\n {\"type\":\"ping\",\"time\":1} ", []Frame{ping}, nil},
		{"array of one", `[{"type":"ping","time":1}]`, []Frame{ping}, nil},
		{"array", `[{"type":"ping","time":1},{"type":"ack","stream":"u:a","seq":2}]`, []Frame{ping, ack}, nil},
		{"spaced array", " \t[ {\"type\":\"ping\",\"time\":1} ,\n{\"type\":\"ack\",\"stream\":\"u:a\",\"seq\":2} ]\n", []Frame{ping, ack}, nil},
		{"empty array", `[]`, []Frame{}, nil},
		{"empty", ``, nil, ErrMalformed},
		{"spaces", `   `, nil, ErrMalformed},
		{"truncated array", `[{"type":"ping"}`, nil, ErrMalformed},
		{"array with garbage", `[{"type":"ping"}]]`, nil, ErrMalformed},
		{"nested array", `[[{"type":"ping"}]]`, nil, ErrMalformed},
		{"array of numbers", `[1]`, nil, ErrMalformed},
		{"bad second frame", `[{"type":"ping"},{"type":"nope"}]`, nil, ErrUnknownType},
		{"invalid second frame", `[{"type":"ping"},{"type":"ack"}]`, nil, ErrMissingField},
		{"second frame b64", `[{"type":"ping"},{"type":"uplink","b64":"*"}]`, nil, ErrMalformed},
		{"null element", `[null]`, nil, ErrUnknownType},
		{"too large", `[` + strings.Repeat(`{"type":"ping"},`, 20000) + `{"type":"ping"}]`, nil, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeJSONBatch([]byte(tt.in), lim)
			if tt.wantErr != nil {
				checkSentinel(t, err, tt.wantErr)
				if got != nil {
					t.Fatalf("frames returned with an error: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

package server

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-push/herald/protocol"
)

// Ids and names that encoding/json would rewrite to U+FFFD: a raw byte
// that is not UTF-8, another one, and the escape of a lone surrogate. Were
// they rewritten, the three would be one id.
var rewrittenIDs = []struct{ name, lit string }{
	{"raw byte ff", "\"order-\xff\""},
	{"raw byte fe", "\"order-\xfe\""},
	{"lone surrogate", `"order-\ud800"`},
}

// TestStrictIDs pushes to a connected user with ids that are not valid
// text. Each is answered 400 bad_id and stores nothing: the device's first
// message is the valid push after them, which gets seq 1 and is no
// duplicate.
func TestStrictIDs(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice", "news")
	devices := []*tconn{
		h.connect(wsJSON, "json", tok, "json"),
		h.connect(wsBinary, "binary", tok, "binary"),
	}
	for _, d := range devices {
		d.subscribe(1, "news")
	}
	for _, id := range rewrittenIDs {
		t.Run(id.name, func(t *testing.T) {
			h := h.withT(t)
			body := `{"id":` + id.lit + `,"data":1}`
			h.apiError("POST", "/v1/apps/app-a/users/alice/messages", keyA, body, http.StatusBadRequest, "bad_id")
			h.apiError("POST", "/v1/apps/app-a/messages", keyA, `{"users":["alice"],"id":`+id.lit+`,"data":1}`, http.StatusBadRequest, "bad_id")
			h.apiError("POST", "/v1/apps/app-a/push", keyA, `{"messages":[{"user":"alice","id":`+id.lit+`,"data":1}]}`, http.StatusBadRequest, "bad_id")
			h.apiError("POST", "/v1/apps/app-a/topics/news/messages", keyA, body, http.StatusBadRequest, "bad_id")
			h.apiError("POST", "/v1/apps/app-a/broadcast", keyA, body, http.StatusBadRequest, "bad_id")
		})
	}

	var r durablePush
	h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"id":"order-\ufffd","data":"valid"}`, &r)
	if r.ID != "order-\ufffd" || r.Seq != 1 || r.Duplicate || r.Connections != 2 {
		t.Fatalf("valid push after the refused ones: %+v; want seq 1, no duplicate, 2 connections", r)
	}
	h.publish(appA, "news", "topic after")
	h.broadcast(appA, "broadcast after")
	for _, d := range devices {
		if f := d.expectPush("u:alice", []byte(`"valid"`)); f.Seq != 1 || f.MsgID != "order-\ufffd" {
			t.Fatalf("%s: first push %s; want seq 1", d.name, describe(f))
		}
		if f := d.expectPush("t:news", []byte(`"topic after"`)); f.Seq != 1 {
			t.Fatalf("%s: first topic message %s; want seq 1", d.name, describe(f))
		}
		if f := d.expectPush("b", []byte(`"broadcast after"`)); f.Seq != 1 {
			t.Fatalf("%s: first broadcast %s; want seq 1", d.name, describe(f))
		}
	}
}

// TestStrictBodies checks the other strings and the payload of request
// bodies: a name that is not valid text is bad_name, a payload is
// bad_payload, a kick reason bad_reason; and nothing of it is sent.
func TestStrictBodies(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	alice := h.connect(wsJSON, "alice", h.token(appA, "alice"), "phone")
	cases := []struct {
		name, path, body, code string
	}{
		{"user in list, lone surrogate", "/v1/apps/app-a/messages", `{"users":["alice","bob\ud800"],"data":1}`, "bad_name"},
		{"user in list, low surrogate", "/v1/apps/app-a/messages", `{"users":["alice","\udc00"],"data":1}`, "bad_name"},
		{"user in list, raw byte", "/v1/apps/app-a/messages", "{\"users\":[\"alice\",\"bob\xff\"],\"data\":1}", "bad_name"},
		{"bulk user", "/v1/apps/app-a/push", `{"messages":[{"user":"alice","data":1},{"user":"bob\udbff","data":2}]}`, "bad_name"},
		{"presence user", "/v1/apps/app-a/presence", `{"users":["alice\ud800"]}`, "bad_name"},
		{"kick device", "/v1/apps/app-a/users/alice/kick", `{"device":"phone\ud800"}`, "bad_name"},
		{"kick device raw byte", "/v1/apps/app-a/users/alice/kick", "{\"device\":\"phone\xfe\"}", "bad_name"},
		{"kick reason", "/v1/apps/app-a/users/alice/kick", `{"reason":"bye \udc00"}`, "bad_reason"},
		{"data lone surrogate", "/v1/apps/app-a/users/alice/messages", `{"data":{"text":"\ud800"}}`, "bad_payload"},
		{"data raw byte", "/v1/apps/app-a/users/alice/messages", "{\"data\":\"caf\xe9\"}", "bad_payload"},
		{"data in key", "/v1/apps/app-a/broadcast", `{"data":{"\udfff":1}}`, "bad_payload"},
		{"b64 raw byte", "/v1/apps/app-a/users/alice/messages", "{\"b64\":\"AA\xff=\"}", "bad_payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.withT(t).apiError("POST", tc.path, keyA, tc.body, http.StatusBadRequest, tc.code)
		})
	}
	// Nothing reached alice, and she was not kicked: her first frame is
	// the answer to a PING, then the first message of her inbox.
	alice.ping(42)
	var r durablePush
	h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"data":"after"}`, &r)
	if r.Seq != 1 {
		t.Fatalf("push after the refused ones: %+v; want seq 1", r)
	}
	if f := alice.expectPush("u:alice", []byte(`"after"`)); f.Seq != 1 {
		t.Fatalf("alice got %s", describe(f))
	}
	// Valid escapes are still welcome, and arrive as they were sent.
	h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"id":"\u00e9\ud83d\ude00","data":"\ud83d\ude00"}`, &r)
	if f := alice.expectPush("u:alice", []byte(`"\ud83d\ude00"`)); f.MsgID != "é😀" || r.ID != "é😀" {
		t.Fatalf("alice got %s; answer %+v", describe(f), r)
	}
}

// TestStrictJSONFrames sends JSON frames whose strings are not valid text:
// a CONNECT whose device holds a lone surrogate escape, a SUBSCRIBE whose
// topic does, and one whose topic has a raw byte that is not UTF-8. None is
// taken with its text rewritten: the CONNECT gets ERROR malformed and no
// session, the SUBSCRIBE ERROR malformed and no subscription.
func TestStrictJSONFrames(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice", "*")

	c := h.dial(wsJSON, "connect")
	connect := `{"type":"connect","version":1,"token":"` + tok + `","device":"phone\ud800"}`
	if err := c.WriteRaw([]byte(connect), true); err != nil {
		t.Fatal(err)
	}
	c.expectError(protocol.CodeMalformed, 0)
	c.expectDisconnect(protocol.DisconnectProtocolError)
	if p := h.presence(appA, "alice"); p.Online {
		t.Fatalf("a session was made from a refused CONNECT: %+v", p)
	}

	// A lone surrogate in a SUBSCRIBE.
	sub := h.connect(wsJSON, "subscribe", tok, "phone")
	if err := sub.WriteRaw([]byte(`{"type":"subscribe","id":1,"topic":"news\ud800"}`), true); err != nil {
		t.Fatal(err)
	}
	sub.expectError(protocol.CodeMalformed, 0)
	sub.expectDisconnect(protocol.DisconnectProtocolError)

	// A raw byte that is not UTF-8: the text message itself is invalid,
	// and the WebSocket layer closes the connection before any frame is
	// decoded.
	raw := h.connect(wsJSON, "raw", tok, "tablet")
	if err := raw.WriteRaw([]byte("{\"type\":\"subscribe\",\"id\":1,\"topic\":\"news\xff\"}"), true); err != nil {
		t.Fatal(err)
	}
	raw.expectClosed()

	// Nobody is subscribed to what the topics would have become.
	h.waitOpen(0)
	if r := h.publish(appA, "news\ufffd", 1); r.Subscribers != 0 {
		t.Fatalf("publish to %q: %d subscribers; want 0", "news\ufffd", r.Subscribers)
	}
	// A valid CONNECT with an escaped device id is the same device as
	// the plain one.
	ok := h.dial(wsJSON, "escaped")
	if err := ok.WriteRaw([]byte(`{"type":"connect","version":1,"token":"`+tok+`","device":"ph\u00f6ne"}`), true); err != nil {
		t.Fatal(err)
	}
	ok.expect(protocol.TypeConnected)
	if p := h.presence(appA, "alice"); len(p.Devices) != 1 || p.Devices[0].Device != "phöne" {
		t.Fatalf("presence %+v; want device %q", p, "phöne")
	}
}

// forgeToken signs the JSON text of claims as a client token of app, for
// claims that auth.Mint would not write.
func forgeToken(t *testing.T, app, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, []byte(secretOf(app)))
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// TestStrictTokenNames: a validly signed token whose user is not valid
// text is refused (bad token), not taken as the user with U+FFFD.
func TestStrictTokenNames(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	exp := fmt.Sprint(time.Now().Add(time.Hour).Unix())
	for _, sub := range []string{`alice\ud800`, `alice\udfff`, "alice\xff"} {
		c := h.dial(wsJSON, "forged")
		_, err := c.handshake(forgeToken(t, appA, `{"app":"app-a","sub":"`+sub+`","exp":`+exp+`}`), "d")
		pe, d, hasD := asRefusal(err)
		if pe == nil || pe.Code != protocol.CodeBadToken || !hasD || d.Code != protocol.DisconnectAuthFailed {
			t.Fatalf("sub %q: handshake error %v; want ERROR %d and DISCONNECT %d", sub, err, protocol.CodeBadToken, protocol.DisconnectAuthFailed)
		}
		c.expectClosed()
	}
	if p := h.presence(appA, "alice\ufffd"); p.Online {
		t.Fatalf("a forged user is online: %+v", p)
	}
	// The same token with a valid user is fine.
	ok := h.dial(wsJSON, "valid")
	if _, err := ok.handshake(forgeToken(t, appA, `{"app":"app-a","sub":"alice\ud83d\ude00","exp":`+exp+`}`), "d"); err != nil {
		t.Fatal(err)
	}
	if p := h.presence(appA, "alice%F0%9F%98%80"); !p.Online {
		t.Fatalf("alice😀 is not online: %+v", p)
	}
}

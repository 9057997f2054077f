package server

import (
	"net/http"
	"testing"
)

// TestPushBulk checks that one bulk request delivers each message to its
// own user, in order per user, and that one bad entry refuses the whole call.
func TestPushBulk(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	alice := h.connect(wsBinary, "alice", h.token(appA, "alice"), "a1")
	bob := h.connect(rawTCP, "bob", h.token(appA, "bob"), "b1")

	var r struct {
		Results []struct {
			User        string `json:"user"`
			ID          string `json:"id"`
			Connections int    `json:"connections"`
		} `json:"results"`
	}
	h.apiOK("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": []map[string]any{
		{"user": "alice", "id": "m1", "data": "one"},
		{"user": "bob", "id": "m2", "data": "two"},
		{"user": "alice", "id": "m3", "b64": "AAE="},
		{"user": "carol", "data": "nobody home"},
	}}, &r)
	if len(r.Results) != 4 || r.Results[0].Connections != 1 || r.Results[1].Connections != 1 ||
		r.Results[3].Connections != 0 || r.Results[3].ID == "" || r.Results[2].ID != "m3" {
		t.Fatalf("results %+v", r.Results)
	}
	if f := alice.expectPush("u:alice", []byte(`"one"`)); f.MsgID != "m1" {
		t.Fatalf("alice first got %q", f.MsgID)
	}
	if f := alice.expectPush("u:alice", []byte{0, 1}); f.MsgID != "m3" {
		t.Fatalf("alice second got %q", f.MsgID)
	}
	if f := bob.expectPush("u:bob", []byte(`"two"`)); f.MsgID != "m2" {
		t.Fatalf("bob got %q", f.MsgID)
	}

	// One bad entry: nothing is sent.
	h.apiError("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": []map[string]any{
		{"user": "alice", "data": "never"},
		{"user": "bad user", "data": "x"},
	}}, http.StatusBadRequest, "bad_name")
	h.apiError("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": []map[string]any{}},
		http.StatusBadRequest, "no_recipients")
	h.apiError("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": []map[string]any{
		{"user": "alice"},
	}}, http.StatusBadRequest, "bad_payload")
	// The next push is the first alice sees after the refused call.
	h.pushUser(appA, "alice", "after")
	alice.expectPush("u:alice", []byte(`"after"`))
}

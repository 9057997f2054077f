package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/node"
	"github.com/herald-push/herald/internal/registry"
)

const (
	testApp = "app-a"
	testKey = "key-of-app-a-0123456789"
)

// fakeService records what the API asks of the node.
type fakeService struct {
	mu          sync.Mutex
	calls       []call
	presenceErr error // what Presence and Kick fail with
}

// call is one operation that reached the service, with the names and ids
// it carried.
type call struct {
	op    string
	names []string // users, topic, device
	ids   []string
}

func (f *fakeService) record(op string, names, ids []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{op: op, names: names, ids: ids})
}

func (f *fakeService) taken() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeService) PushUser(_ context.Context, _, user string, m node.Message) (node.Accepted, error) {
	f.record("push", []string{user}, []string{m.ID})
	return node.Accepted{ID: m.ID, Seq: 1}, nil
}

func (f *fakeService) PushUsers(_ context.Context, _ string, users []string, m node.Message) ([]node.Accepted, error) {
	f.record("push-users", users, []string{m.ID})
	out := make([]node.Accepted, len(users))
	for i := range out {
		out[i] = node.Accepted{ID: m.ID, Seq: 1}
	}
	return out, nil
}

func (f *fakeService) PushMany(_ context.Context, _ string, users []string, msgs []node.Message) ([]node.Accepted, error) {
	ids := make([]string, len(msgs))
	out := make([]node.Accepted, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
		out[i] = node.Accepted{ID: m.ID, Seq: 1}
	}
	f.record("push-many", users, ids)
	return out, nil
}

func (f *fakeService) Unread(_ context.Context, _, user, device string) (uint64, uint64, error) {
	f.record("unread", []string{user, device}, nil)
	return 0, 0, nil
}

func (f *fakeService) Status(_ context.Context, _, user, id, device string) (string, uint64, error) {
	f.record("status", []string{user, device}, []string{id})
	return "gone", 0, nil
}

func (f *fakeService) Publish(_ context.Context, _, topic string, m node.Message) (node.Published, error) {
	f.record("publish", []string{topic}, []string{m.ID})
	return node.Published{ID: m.ID, Seq: 1}, nil
}

func (f *fakeService) Broadcast(_ context.Context, _ string, m node.Message) (node.Published, error) {
	f.record("broadcast", nil, []string{m.ID})
	return node.Published{ID: m.ID, Seq: 1}, nil
}

func (f *fakeService) Presence(_ context.Context, _, user string) ([]registry.Session, error) {
	f.record("presence", []string{user}, nil)
	return nil, f.presenceErr
}

func (f *fakeService) Kick(_ context.Context, _, user, device, reason string) (int, error) {
	f.record("kick", []string{user, device}, []string{reason})
	return 0, f.presenceErr
}

type testKeys struct{}

func (testKeys) App(key string) (string, bool) { return testApp, key == testKey }

func testAPI(mutate ...func(*Config)) (*API, *fakeService) {
	cfg := Config{Apps: []string{testApp}, MaxPayload: 1024, MaxRecipients: 8, BodyTimeout: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mutate {
		m(&cfg)
	}
	svc := &fakeService{}
	return New(cfg, svc, testKeys{}), svc
}

// get sends a GET to a real server and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestHealth: /healthz says what the Health hook says, with 503 when it
// reports an error, over a real socket.
func TestHealth(t *testing.T) {
	var mu sync.Mutex
	var healthErr error
	a, _ := testAPI(func(c *Config) {
		c.Health = func() error {
			mu.Lock()
			defer mu.Unlock()
			return healthErr
		}
	})
	srv := httptest.NewServer(a)
	defer srv.Close()

	if status, body := get(t, srv.URL+"/healthz"); status != 200 || body != `{"status":"ok"}` {
		t.Fatalf("healthy: %d %s", status, body)
	}
	mu.Lock()
	healthErr = errors.New("store: disk full")
	mu.Unlock()
	status, body := get(t, srv.URL+"/healthz")
	var h struct{ Status, Error string }
	if status != http.StatusServiceUnavailable || json.Unmarshal([]byte(body), &h) != nil ||
		h.Status != "unhealthy" || h.Error != "store: disk full" {
		t.Fatalf("unhealthy: %d %s", status, body)
	}
	mu.Lock()
	healthErr = nil
	mu.Unlock()
	if status, body := get(t, srv.URL+"/healthz"); status != 200 || body != `{"status":"ok"}` {
		t.Fatalf("healthy again: %d %s", status, body)
	}

	// Without a hook, the API is healthy while it serves.
	plain, _ := testAPI()
	srv2 := httptest.NewServer(plain)
	defer srv2.Close()
	if status, body := get(t, srv2.URL+"/healthz"); status != 200 || body != `{"status":"ok"}` {
		t.Fatalf("no hook: %d %s", status, body)
	}
}

// TestPresenceUnavailable: when the registry cannot answer, presence (of
// one user or several) and kick answer 503 presence_unavailable in JSON.
func TestPresenceUnavailable(t *testing.T) {
	a, svc := testAPI(func(c *Config) { c.BodyTimeout = 0 }) // a recorder has no read deadline to clear
	svc.presenceErr = fmt.Errorf("lookup: %w", errors.New("registry unavailable: connection refused"))
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/apps/" + testApp + "/users/alice/presence", ""},
		{"POST", "/v1/apps/" + testApp + "/presence", `{"users":["alice","bob"]}`},
		{"POST", "/v1/apps/" + testApp + "/users/alice/kick", `{"device":"phone"}`},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		w := httptest.NewRecorder()
		a.ServeHTTP(w, req)
		var e struct {
			Error struct{ Code, Message string }
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Content-Type") != "application/json" ||
			json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error.Code != "presence_unavailable" ||
			!strings.Contains(e.Error.Message, "connection refused") {
			t.Fatalf("%s %s with the registry down: %d %s", tc.method, tc.path, w.Code, w.Body.Bytes())
		}
	}
}

package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/herald-push/herald/internal/config"
)

// wsDialOrigin opens a WebSocket to the server with the given Origin header
// ("" sends none) and returns the HTTP status of the handshake's answer.
func (h *harness) wsDialOrigin(from string) int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	hdr := http.Header{}
	if from != "" {
		hdr.Set("Origin", from)
	}
	c, resp, err := websocket.Dial(ctx, h.srv.WSURL(), &websocket.DialOptions{HTTPHeader: hdr})
	if err == nil {
		_ = c.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		h.t.Fatalf("dial with origin %q: %v", from, err)
	}
	return resp.StatusCode
}

// refusedOrigin sends a WebSocket handshake with Origin from as a plain
// HTTP request and checks that it gets 403 origin_not_allowed in the API's
// JSON error shape.
func (h *harness) refusedOrigin(url, method, from string) {
	h.t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Origin", from)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusForbidden || err != nil || body.Error.Code != "origin_not_allowed" || body.Error.Message == "" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		h.t.Fatalf("%s %s from %s: %d %+v (%v); want 403 origin_not_allowed", method, url, from, resp.StatusCode, body, err)
	}
}

func TestWSAllowedOrigins(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.WS.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000"}
	})
	for _, from := range []string{"https://app.example.com", "http://localhost:3000", "https://APP.example.com:443", ""} {
		if got := h.wsDialOrigin(from); got != http.StatusSwitchingProtocols {
			t.Errorf("origin %q: status %d; want the upgrade", from, got)
		}
	}
	for _, from := range []string{"https://evil.example.com", "http://app.example.com", "null"} {
		if got := h.wsDialOrigin(from); got != http.StatusForbidden {
			t.Errorf("origin %q: status %d; want 403", from, got)
		}
	}
	h.refusedOrigin(strings.Replace(h.srv.WSURL(), "ws://", "http://", 1), http.MethodGet, "https://evil.example.com")
	if got := h.srv.GatewayStats().OriginRefused; got != 4 {
		t.Errorf("OriginRefused = %d; want 4", got)
	}
	// A refused request touched nobody: the allowed still connect.
	c := h.connect(wsJSON, "after", h.token(appA, "alice"), "d1")
	c.ping(1)
}

func TestWSAnyOriginByDefault(t *testing.T) {
	h := startServer(t)
	for _, from := range []string{"https://anything.example", "null", ""} {
		if got := h.wsDialOrigin(from); got != http.StatusSwitchingProtocols {
			t.Errorf("origin %q: status %d; want the upgrade", from, got)
		}
	}
}

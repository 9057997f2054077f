package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

const (
	appC    = "app-c"
	secretC = "secret-of-app-c-1111111111"
	keyC    = "key-of-app-c-1111111111"
)

// reloadWith reloads h's server with h.cfg changed by mutate, which must
// be accepted, and returns the result; h.cfg becomes the new configuration.
func (h *harness) reloadWith(mutate func(*config.Config)) ReloadResult {
	h.t.Helper()
	cfg := h.srv.Config()
	cfg.Apps = slices.Clone(cfg.Apps)
	mutate(&cfg)
	res, err := h.srv.Reload(cfg)
	if err != nil {
		h.t.Fatalf("Reload: %v", err)
	}
	h.cfg = cfg
	return res
}

// TestReloadKeepsConnections: WebSocket and TCP connections survive a
// reload that adds an app and changes limits, and keep receiving; the new
// app can connect and push at once.
func TestReloadKeepsConnections(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	type held struct {
		c    *tconn
		user string
	}
	var conns []held
	for i, tr := range []transport{wsBinary, wsBinary, wsJSON, rawTCP, rawTCP} {
		user := "u" + string(rune('0'+i))
		conns = append(conns, held{h.connect(tr, user, h.token(appA, user), "d"), user})
	}
	h.waitOpen(int64(len(conns)))

	res := h.reloadWith(func(c *config.Config) {
		c.Apps = append(c.Apps, config.App{ID: appC, Secret: secretC, APIKeys: []string{keyC}})
		c.FrameRate = 500
		c.MaxSubscriptions = 64
	})
	for _, want := range []string{"apps: added app-c", "frame_rate: 1000 -> 500", "max_subscriptions: 128 -> 64"} {
		if !slices.Contains(res.Changed, want) {
			t.Errorf("Changed = %q; want it to list %q", res.Changed, want)
		}
	}

	for i, c := range conns {
		payload := jsonOf(t, map[string]int{"n": i})
		if r := h.pushUser(appA, c.user, map[string]int{"n": i}); r.Connections != 1 {
			t.Fatalf("push to %s after reload reached %d connections", c.user, r.Connections)
		}
		c.c.expectPush("u:"+c.user, payload)
	}
	g := h.srv.GatewayStats()
	closed := uint64(0)
	for _, n := range g.Disconnects {
		closed += n
	}
	if g.Open != int64(len(conns)) || closed != 0 {
		t.Fatalf("after reload: %d open, disconnects %v; want %d open, none closed", g.Open, g.Disconnects, len(conns))
	}

	// The app added by the reload works at once, on both transports.
	for _, tr := range []transport{wsBinary, rawTCP} {
		c := h.connect(tr, "carol-"+tr.name, mint(t, appC, secretC, "carol-"+tr.name, nil, time.Hour, time.Now()), "d")
		var r pushResult
		h.apiOK("POST", "/v1/apps/"+appC+"/users/carol-"+tr.name+"/messages", keyC, map[string]any{"data": "hi"}, &r)
		c.expectPush("u:carol-"+tr.name, []byte(`"hi"`))
	}
}

// TestReloadAPIKeyRotation: the API key rotation of the docs (add the new
// key, reload, move backends, remove the old key, reload), and a removed
// app whose key stops working while its open connection stays.
func TestReloadAPIKeyRotation(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	const newKeyA = "new-key-of-app-a-0123456789"
	path := "/v1/apps/" + appA + "/users/alice/messages"
	body := map[string]any{"data": 1}

	h.reloadWith(func(c *config.Config) { c.Apps[0].APIKeys = []string{keyA, newKeyA} })
	h.apiOK("POST", path, keyA, body, nil)
	h.apiOK("POST", path, newKeyA, body, nil)

	res := h.reloadWith(func(c *config.Config) { c.Apps[0].APIKeys = []string{newKeyA} })
	if !slices.Contains(res.Changed, "apps: changed app-a: api_keys (1)") {
		t.Errorf("Changed = %q", res.Changed)
	}
	h.apiError("POST", path, keyA, body, http.StatusUnauthorized, "unauthorized")
	h.apiOK("POST", path, newKeyA, body, nil)

	// Removing app B: its key gets 401, a new connection is refused, and
	// the one open stays (documented) until it closes.
	bob := h.connect(rawTCP, "bob", h.token(appB, "bob"), "d")
	h.reloadWith(func(c *config.Config) { c.Apps = c.Apps[:1] })
	h.apiError("POST", "/v1/apps/"+appB+"/users/bob/messages", keyB, body, http.StatusUnauthorized, "unauthorized")
	c := h.dial(wsBinary, "bob2")
	_, err := c.handshake(h.token(appB, "bob"), "d2")
	if pe, _, _ := asRefusal(err); pe == nil || pe.Code != protocol.CodeBadToken {
		t.Fatalf("handshake of a removed app: %v; want ERROR %d", err, protocol.CodeBadToken)
	}
	bob.ping(1)
}

// TestReloadSecretRotation: with secret new and previous_secrets [old],
// tokens signed with either connect; once previous_secrets is emptied, the
// old token is refused and connections made with it stay open.
func TestReloadSecretRotation(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	const newSecretA = "new-secret-of-app-a-0123456789"
	now := time.Now()
	oldTok := mint(t, appA, secretA, "alice", nil, time.Hour, now)
	newTok := mint(t, appA, newSecretA, "alice", nil, time.Hour, now)

	c := h.dial(wsBinary, "new-before")
	if _, err := c.handshake(newTok, "d0"); err == nil {
		t.Fatal("a token signed with a secret not configured yet connected")
	}

	h.reloadWith(func(c *config.Config) {
		c.Apps[0].Secret = newSecretA
		c.Apps[0].PreviousSecrets = []string{secretA}
	})
	old := h.connect(wsBinary, "old", oldTok, "d1")
	h.connect(rawTCP, "new", newTok, "d2")

	res := h.reloadWith(func(c *config.Config) { c.Apps[0].PreviousSecrets = nil })
	if !slices.Contains(res.Changed, "apps: changed app-a: previous_secrets (0)") {
		t.Errorf("Changed = %q", res.Changed)
	}
	c = h.dial(rawTCP, "old-after")
	_, err := c.handshake(oldTok, "d3")
	if pe, _, _ := asRefusal(err); pe == nil || pe.Code != protocol.CodeBadToken {
		t.Fatalf("old token after the rotation: %v; want ERROR %d", err, protocol.CodeBadToken)
	}
	h.connect(wsJSON, "new-after", newTok, "d4")
	if r := h.pushUser(appA, "alice", "still here"); r.Connections != 3 {
		t.Fatalf("push reached %d connections; want 3 (old, new, new-after)", r.Connections)
	}
	old.expectPush("u:alice", []byte(`"still here"`))
}

// TestReloadRefusedWhole: a new configuration with several problems, some
// values bad and some settings that cannot change at run time, is refused
// with every problem listed, and nothing of it applies.
func TestReloadRefusedWhole(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	alice := h.connect(rawTCP, "alice", h.token(appA, "alice"), "d")
	cfg := h.srv.Config()
	cfg.Apps = append(slices.Clone(cfg.Apps), config.App{ID: appC, Secret: secretC, APIKeys: []string{keyC}})
	cfg.FrameRate = 0
	cfg.ReplayBurst = 0
	cfg.WS.Addr = "127.0.0.1:1"
	cfg.DataDir = t.TempDir()
	cfg.Store = "memory"
	cfg.Log.Level = "debug" // this server has no changeable level
	_, err := h.srv.Reload(cfg)
	var re *RefusedError
	if !errors.Is(err, ErrReloadRefused) || !errors.As(err, &re) {
		t.Fatalf("Reload = %v; want a RefusedError", err)
	}
	for _, want := range []string{"frame_rate:", "replay_burst:", "ws.addr: cannot change", "data_dir: cannot change", "store: cannot change", "log.level:"} {
		found := false
		for _, p := range re.Problems {
			found = found || strings.HasPrefix(p.Error(), want)
		}
		if !found {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
	if len(re.Problems) != 6 {
		t.Errorf("%d problems; want 6:\n%v", len(re.Problems), err)
	}
	// The old configuration stays in force.
	h.apiError("POST", "/v1/apps/"+appC+"/users/carol/messages", keyC, map[string]any{"data": 1}, http.StatusUnauthorized, "unauthorized")
	h.pushUser(appA, "alice", "ok")
	alice.expectPush("u:alice", []byte(`"ok"`))
	if got := h.srv.Config(); got.FrameRate != h.cfg.FrameRate || got.WS.Addr != h.cfg.WS.Addr || len(got.Apps) != 2 {
		t.Fatalf("configuration in force changed: %+v", got)
	}
}

// TestReloadLogLevel: a change of log.level applies to the logger at once.
func TestReloadLogLevel(t *testing.T) {
	t.Parallel()
	level := new(slog.LevelVar)
	var out lockedBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))
	h := startServerWith(t, Options{Logger: logger, LogLevel: level})
	ctx := context.Background()
	if logger.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled before the reload")
	}
	res := h.reloadWith(func(c *config.Config) { c.Log.Level = "debug" })
	if !slices.Contains(res.Changed, "log.level: info -> debug") {
		t.Errorf("Changed = %q", res.Changed)
	}
	if !logger.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug not enabled after the reload")
	}
	h.reloadWith(func(c *config.Config) { c.Log.Level = "error" })
	if logger.Enabled(ctx, slog.LevelWarn) {
		t.Fatal("warn enabled at level error")
	}
}

// TestReloadLimits: a lowered max_subscriptions applies to a connection
// already open.
func TestReloadLimits(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	c := h.connect(wsBinary, "alice", h.token(appA, "alice", "*"), "d")
	c.subscribe(1, "a")
	h.reloadWith(func(c *config.Config) { c.MaxSubscriptions = 1 })
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 2, Topic: "b"})
	c.expectError(protocol.CodeTooManySubscriptions, 2)
}

// TestReloadFrameRate: a lowered frame rate applies to a connection
// already open: it is refused after about the new burst, with the new
// numbers in the ERROR.
func TestReloadFrameRate(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	c := h.connect(rawTCP, "alice", h.token(appA, "alice"), "d")
	c.ping(1)
	h.reloadWith(func(c *config.Config) {
		c.FrameRate, c.FrameBurst = 1, 20
		c.SubscribeBurst, c.MaxSubscriptions = 10, 10
	})
	sent := flood(t, c, []*protocol.Frame{{Type: protocol.TypePing, Time: 1}}, 1)
	if sent > 25 {
		t.Fatalf("refused after %d frames; want about the new burst of 20", sent)
	}
}

// TestReloadUnderLoad: reloads that add and remove an app and change
// limits, run while clients connect and the API pushes, disturb nobody
// (and, under -race, show that the swaps are safe).
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	base := h.srv.Config()
	done := make(chan error, 1)
	go func() {
		for i := range 50 {
			cfg := base
			cfg.Apps = slices.Clone(base.Apps)
			if i%2 == 0 {
				cfg.Apps = append(cfg.Apps, config.App{ID: appC, Secret: secretC, APIKeys: []string{keyC}})
				cfg.FrameRate = 900 + i
			}
			if _, err := h.srv.Reload(cfg); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range 10 {
		user := "u" + string(rune('a'+i))
		tr := allTransports[i%len(allTransports)]
		c := h.connect(tr, user, h.token(appA, user), "d")
		h.pushUser(appA, user, i)
		c.expectPush("u:"+user, jsonOf(t, i))
	}
	if err := <-done; err != nil {
		t.Fatalf("Reload: %v", err)
	}
}

// TestReloadAPILimits: an app's API rate changes with a reload (429 before,
// served after), and a change of its connection limit, which the node
// reads only at start, is refused by name.
func TestReloadAPILimits(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.Apps[0].Limits = config.AppLimits{APIRate: 1, APIBurst: 1} })
	presence := "/v1/apps/" + appA + "/users/alice/presence"
	limited := false
	for i := 0; i < 10 && !limited; i++ {
		status, _ := h.apiCall("GET", presence, keyA, nil)
		limited = status == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("an api_rate of 1/s never answered 429")
	}
	h.reloadWith(func(c *config.Config) { c.Apps[0].Limits = config.AppLimits{APIRate: 100000, APIBurst: 100000} })
	for i := range 20 {
		if status, body := h.apiCall("GET", presence, keyA, nil); status != http.StatusOK {
			t.Fatalf("request %d after the reload: %d %s", i, status, body)
		}
	}
	cfg := h.srv.Config()
	cfg.Apps = slices.Clone(cfg.Apps)
	cfg.Apps[0].Limits.MaxConnections = 5
	if _, err := h.srv.Reload(cfg); err == nil || !strings.Contains(err.Error(), "apps[].limits.max_connections") {
		t.Fatalf("Reload with a new connection limit: %v; want it refused, naming the setting", err)
	}
}

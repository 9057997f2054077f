// Package admin serves the operators' side of a Herald node on the API
// listener: the admin API under /admin/v1/ (status, connections, apps,
// limits, degrade switches, drain, reload, profiling) and the live
// dashboard at /admin/. It has its own credential (admin.tokens), apart
// from the apps' API keys. The server implements Backend.
package admin

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

//go:embed ui
var ui embed.FS

// Backend is what the admin API reads and changes.
type Backend interface {
	// Tokens returns the admin bearer tokens in force (reloadable); none
	// turns the admin API off.
	Tokens() []string
	// Status returns the node's status and the cluster's nodes.
	Status(ctx context.Context) Status
	// Counters returns the cumulative counters the sampler turns into
	// rates, and the delivery latency since the last call.
	Counters() Counters
	// Connections lists this node's connections of app (all apps when
	// empty) and user (all users when empty), up to limit.
	Connections(app, user string, limit int) []Connection
	// Apps lists the configured apps, without secrets or keys.
	Apps() []App
	// Limits returns the limits in force (per connection, protection).
	Limits() any
	// Switches lists the switch names, the apps, and the switches in force.
	Switches() SwitchList
	// FlipSwitch turns a switch on or off for app ("" for the node).
	FlipSwitch(name, app string, on bool) error
	// Drain starts (on) or stops draining the node.
	Drain(on bool)
	// Reload reads the configuration again and applies it, as SIGHUP.
	Reload() (changed []string, took time.Duration, err error)
}

// Status is GET /admin/v1/status.
type Status struct {
	Node     string   `json:"node"`
	Version  string   `json:"version"`
	Started  int64    `json:"started"` // unix ms
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems"`
	Draining bool     `json:"draining"`
	Cluster  any      `json:"cluster"` // null on a node alone
	Apps     []string `json:"apps"`
}

// Connection is one client connection, as GET /admin/v1/connections lists it.
type Connection struct {
	ID        uint64 `json:"id"`
	App       string `json:"app"`
	User      string `json:"user"`
	Device    string `json:"device"`
	Transport string `json:"transport"`
	Remote    string `json:"remote"`
	Since     int64  `json:"since"` // unix ms
}

// App is a configured app as the admin API shows it.
type App struct {
	ID          string   `json:"id"`
	Connections int64    `json:"connections"`
	Limits      any      `json:"limits"`
	Switches    []string `json:"switches"` // in force for it (its own and the node's)
	APIKeys     int      `json:"api_keys"` // how many; never the keys
}

// SwitchList is GET /admin/v1/switches.
type SwitchList struct {
	Names    []string `json:"names"`
	Apps     []string `json:"apps"`
	Switches any      `json:"switches"` // []switches.State
}

// ErrNotSaved marks a switch flipped in memory that could not be saved
// for the next start.
var ErrNotSaved = errors.New("the switch is in force but could not be saved for the next start")

// ErrNotPropagated marks a switch flipped on this node that the other
// nodes of the cluster were not told of.
var ErrNotPropagated = errors.New("the switch is in force on this node only")

// Handler serves /admin/.
type Handler struct {
	b         Backend
	log       *slog.Logger
	sampler   *Sampler
	profiling atomic.Bool
	mux       *http.ServeMux
}

// New returns the admin handler, for paths without the API's prefix (the
// API strips it). Start starts its sampler, Close stops it.
func New(b Backend, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{b: b, log: log, sampler: NewSampler(b.Counters, time.Second, 600), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /admin/v1/status", h.status)
	h.mux.HandleFunc("GET /admin/v1/stream", h.stream)
	h.mux.HandleFunc("GET /admin/v1/samples", h.samples)
	h.mux.HandleFunc("GET /admin/v1/connections", h.connections)
	h.mux.HandleFunc("GET /admin/v1/apps", h.apps)
	h.mux.HandleFunc("GET /admin/v1/limits", h.limits)
	h.mux.HandleFunc("GET /admin/v1/switches", h.switches)
	h.mux.HandleFunc("PUT /admin/v1/switches", h.flip)
	h.mux.HandleFunc("POST /admin/v1/drain", h.drain)
	h.mux.HandleFunc("POST /admin/v1/reload", h.reload)
	h.mux.HandleFunc("GET /admin/v1/profiling", h.profilingState)
	h.mux.HandleFunc("POST /admin/v1/profiling", h.setProfiling)
	h.mux.HandleFunc("GET /admin/v1/debug/pprof/{name}", h.pprof)
	h.mux.HandleFunc("/admin/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint; see docs/api.md, \"Admin API\"")
	})
	return h
}

// Start starts the sampler behind the dashboard.
func (h *Handler) Start() { h.sampler.Start() }

// Latest returns the sampler's newest sample; false before the first (or
// for a nil h).
func (h *Handler) Latest() (Sample, bool) {
	if h == nil {
		return Sample{}, false
	}
	return h.sampler.Latest()
}

// Close stops the sampler and ends the dashboards' streams.
func (h *Handler) Close() { h.sampler.Close() }

// ServeHTTP serves the dashboard's page without authentication (it holds
// no data) and every /admin/v1/ endpoint with an admin token.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tokens := h.b.Tokens()
	if len(tokens) == 0 {
		writeError(w, http.StatusNotFound, "admin_off", "the admin API is off on this server: set admin.tokens")
		return
	}
	if r.URL.Path == "/admin/" || r.URL.Path == "/admin" {
		h.page(w, r)
		return
	}
	if !authorized(r, tokens) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald-admin"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token; send Authorization: Bearer <admin token> (admin.tokens, not an app's API key)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authorized checks the bearer token against every admin token in
// constant time.
func authorized(r *http.Request, tokens []string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return false
	}
	match := 0
	for _, t := range tokens {
		match |= subtle.ConstantTimeCompare([]byte(got), []byte(t))
	}
	return match == 1
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET the dashboard")
		return
	}
	data, err := ui.ReadFile("ui/index.html")
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "this build has no dashboard page")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
	_, _ = w.Write(data)
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	st := h.b.Status(r.Context())
	if st.Problems == nil {
		st.Problems = []string{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) connections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			writeError(w, http.StatusBadRequest, "bad_limit", "limit must be a number from 1 to 100000")
			return
		}
		limit = n
	}
	list := h.b.Connections(q.Get("app"), q.Get("user"), limit+1)
	truncated := len(list) > limit
	if truncated {
		list = list[:limit]
	}
	if list == nil {
		list = []Connection{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"connections": list, "truncated": truncated})
}

func (h *Handler) apps(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"apps": h.b.Apps()})
}

func (h *Handler) limits(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.b.Limits())
}

func (h *Handler) switches(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.b.Switches())
}

// flipBody is PUT /admin/v1/switches.
type flipBody struct {
	Name string `json:"name"`
	App  string `json:"app"`
	On   *bool  `json:"on"`
}

func (h *Handler) flip(w http.ResponseWriter, r *http.Request) {
	var b flipBody
	if err := decode(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", err.Error())
		return
	}
	if b.On == nil {
		writeError(w, http.StatusBadRequest, "bad_request", `"on" (true or false) is required`)
		return
	}
	if err := h.b.FlipSwitch(b.Name, b.App, *b.On); err != nil {
		if errors.Is(err, ErrNotPropagated) {
			writeError(w, http.StatusServiceUnavailable, "not_propagated", err.Error())
			return
		}
		if errors.Is(err, ErrNotSaved) {
			writeError(w, http.StatusInternalServerError, "not_saved", err.Error())
			return
		}
		writeError(w, http.StatusBadRequest, "bad_switch", err.Error())
		return
	}
	h.log.Info("admin: switch flipped", "switch", b.Name, "app", b.App, "on", *b.On, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, h.b.Switches())
}

func (h *Handler) drain(w http.ResponseWriter, r *http.Request) {
	var b struct {
		On *bool `json:"on"`
	}
	if err := decode(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", err.Error())
		return
	}
	if b.On == nil {
		writeError(w, http.StatusBadRequest, "bad_request", `"on" (true or false) is required`)
		return
	}
	h.log.Warn("admin: drain", "on", *b.On, "remote", r.RemoteAddr)
	h.b.Drain(*b.On)
	writeJSON(w, http.StatusOK, map[string]bool{"draining": *b.On})
}

func (h *Handler) reload(w http.ResponseWriter, r *http.Request) {
	changed, took, err := h.b.Reload()
	if err != nil {
		var problems []string
		var multi interface{ Unwrap() []error }
		if errors.As(err, &multi) {
			for _, e := range multi.Unwrap() {
				problems = append(problems, e.Error())
			}
		} else {
			problems = []string{err.Error()}
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": map[string]any{"code": "reload_refused",
			"message": "the new configuration was refused whole; the one in force is unchanged", "problems": problems}})
		return
	}
	if changed == nil {
		changed = []string{}
	}
	h.log.Info("admin: configuration reloaded", "changes", len(changed), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"changed": changed, "took_ms": float64(took.Microseconds()) / 1000})
}

func (h *Handler) profilingState(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"on": h.profiling.Load()})
}

// setProfiling turns the profiling endpoints on or off; on, the block
// and mutex profiles sample too (they cost a little on every contended
// lock, so they are off otherwise).
func (h *Handler) setProfiling(w http.ResponseWriter, r *http.Request) {
	var b struct {
		On *bool `json:"on"`
	}
	if err := decode(r, &b); err != nil || b.On == nil {
		writeError(w, http.StatusBadRequest, "bad_request", `send {"on": true} or {"on": false}`)
		return
	}
	if h.profiling.Swap(*b.On) != *b.On {
		if *b.On {
			runtime.SetBlockProfileRate(int(10 * time.Microsecond))
			runtime.SetMutexProfileFraction(100)
		} else {
			runtime.SetBlockProfileRate(0)
			runtime.SetMutexProfileFraction(0)
		}
		h.log.Warn("admin: profiling", "on", *b.On, "remote", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, map[string]bool{"on": *b.On})
}

// pprof serves the Go profiles while profiling is on:
// /admin/v1/debug/pprof/{profile,trace,heap,goroutine,block,mutex,allocs,...}.
func (h *Handler) pprof(w http.ResponseWriter, r *http.Request) {
	if !h.profiling.Load() {
		writeError(w, http.StatusConflict, "profiling_off", `profiling is off: POST /admin/v1/profiling {"on": true} first`)
		return
	}
	switch name := r.PathValue("name"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
}

// decode reads a small JSON body strictly.
func decode(r *http.Request, v any) error {
	d := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// Package api is the HTTP server API that application backends call: push
// to users, publish to topics, broadcast to an app, presence, kick, stats.
// Every request is authenticated with one of the app's API keys and reaches
// only that app's users and topics. Mistakes get a 4xx status and a JSON
// error body; docs/api.md describes every call.
package api

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/jsonstr"
	"github.com/herald-push/herald/internal/node"
	"github.com/herald-push/herald/internal/origin"
	"github.com/herald-push/herald/internal/registry"
)

// Service is what the API needs of the node.
type Service interface {
	PushUser(ctx context.Context, app, user string, m node.Message) (node.Accepted, error)
	PushUsers(ctx context.Context, app string, users []string, m node.Message) ([]node.Accepted, error)
	PushMany(ctx context.Context, app string, users []string, msgs []node.Message) ([]node.Accepted, error)
	Unread(ctx context.Context, app, user, device string) (last, acked uint64, err error)
	Status(ctx context.Context, app, user, id, device string) (state string, seq uint64, err error)
	Publish(ctx context.Context, app, topic string, m node.Message) (node.Published, error)
	Broadcast(ctx context.Context, app string, m node.Message) (node.Published, error)
	Presence(ctx context.Context, app, user string) ([]registry.Session, error)
	Kick(ctx context.Context, app, user, device, reason string) (int, error)
}

// Keys resolves an API key to its app.
type Keys interface {
	App(key string) (string, bool)
}

// Config configures the API handler.
type Config struct {
	// Prefix, if set, is a path prefix such as "/herald" under which the
	// API is served: /herald/v1/stats. Requests outside it get 404.
	Prefix string
	Apps   []string // known app ids
	// Limits are the apps' quotas by app id; an app without an entry is
	// unlimited.
	Limits        map[string]Limits
	MaxPayload    int // bytes of a message payload
	MaxRecipients int // users in one call
	// BodyTimeout bounds the time a request has to send its body, from
	// when the handler starts; 0 means no bound. A body cut by it gets 408
	// and the connection is closed.
	BodyTimeout time.Duration
	// CORS, if set, lists the browser origins the API answers CORS
	// requests from (preflights and the headers on answers); nil: no CORS.
	CORS *origin.List
	// Stats returns the server's counters for GET /v1/stats.
	Stats func() any
	// Health, if set, reports whether the server can do its work (for
	// example, whether the message store is usable). GET /healthz answers
	// 200 while it returns nil, and 503 with its error otherwise.
	Health func() error
	// Cluster, if set, returns the nodes of the cluster for
	// GET /v1/cluster (a single node lists itself).
	Cluster func(ctx context.Context) (any, error)
	// Observe, if set, is called after each request with its route pattern,
	// status and duration.
	Observe func(route string, status int, d time.Duration)
	// Extra handlers mounted as they are (for example /metrics), by
	// ServeMux pattern. Give exact paths: a subtree pattern ("/debug/")
	// would make the mux redirect "/debug" to it.
	Extra  map[string]http.Handler
	Logger *slog.Logger
}

// API is the HTTP handler.
type API struct {
	cfg  Config
	svc  Service
	keys Keys
	apps atomic.Pointer[map[string]bool] // known app ids; SetApps replaces it
	log  *slog.Logger
	mux  *http.ServeMux
	// quotas holds every configured app's buckets and 429 counters;
	// SetLimits replaces it.
	quotas atomic.Pointer[map[string]*appQuota]
}

// New returns the API handler.
func New(cfg Config, svc Service, keys Keys) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &API{cfg: cfg, svc: svc, keys: keys, log: cfg.Logger, mux: http.NewServeMux()}
	a.SetApps(cfg.Apps)
	a.SetLimits(cfg.Limits)
	a.route("POST /v1/apps/{app}/users/{user}/messages", a.pushUser)
	a.route("POST /v1/apps/{app}/messages", a.pushUsers)
	a.route("POST /v1/apps/{app}/push", a.pushBulk)
	a.route("POST /v1/apps/{app}/topics/{topic}/messages", a.publish)
	a.route("POST /v1/apps/{app}/broadcast", a.broadcast)
	a.route("GET /v1/apps/{app}/users/{user}/presence", a.presence)
	a.route("GET /v1/apps/{app}/users/{user}/unread", a.unread)
	a.route("GET /v1/apps/{app}/users/{user}/messages/{id}", a.status)
	a.route("POST /v1/apps/{app}/presence", a.presenceMany)
	a.route("POST /v1/apps/{app}/users/{user}/kick", a.kick)
	a.mux.HandleFunc("GET /v1/stats", a.observe("GET /v1/stats", a.stats))
	a.mux.HandleFunc("GET /v1/cluster", a.observe("GET /v1/cluster", a.cluster))
	a.mux.HandleFunc("GET /healthz", a.health)
	for p, h := range cfg.Extra {
		a.mux.Handle(p, h)
	}
	a.mux.HandleFunc("/", a.noRoute)
	return a
}

// SetApps replaces the known app ids (a configuration reload); requests
// under way finish with the list they started with. Keys, which the
// caller owns, are replaced apart.
func (a *API) SetApps(ids []string) {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	a.apps.Store(&m)
}

// ServeHTTP implements http.Handler.
//
// It never redirects. http.ServeMux answers a path that is not clean
// (with "." or ".." segments, empty segments, or "/tree" for a pattern
// "/tree/") with a redirect to the cleaned path, and HTTP clients follow
// it with the method, the body and the key: a push to
// /v1/apps/a/users/x/../../topics/news/messages would become a publish to
// the topic news. Such paths get 404 here, before the mux sees them.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The admin dashboard's page is the one path that ends in a slash.
	if dashboard := a.cfg.Prefix + "/admin/"; (r.URL.Path != dashboard || r.URL.EscapedPath() != dashboard) &&
		(!cleanPath(r.URL.Path) || !cleanPath(r.URL.EscapedPath())) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: paths have no empty, \".\" or \"..\" segments and no trailing slash; see docs/api.md")
		return
	}
	if a.cfg.Prefix != "" {
		stripped, ok := stripPrefix(r, a.cfg.Prefix)
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "no such endpoint: the API is served under "+a.cfg.Prefix+"/; see docs/api.md")
			return
		}
		r = stripped
	}
	if a.cfg.CORS != nil && a.cors(w, r) {
		return
	}
	if a.cfg.BodyTimeout > 0 && r.Body != nil && r.Body != http.NoBody {
		// Cleared once the body is decoded (decodeLimit). A body that is
		// never read keeps it: the server then cannot discard the rest
		// after the answer, and closes the connection.
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.cfg.BodyTimeout)); err != nil {
			a.log.Warn("api: cannot bound the request body's time", "err", err)
		}
	}
	a.mux.ServeHTTP(w, r)
}

// CORS answers.
const (
	corsMethods = "GET, POST"
	corsHeaders = "Authorization, Content-Type, X-API-Key"
	corsMaxAge  = "600" // seconds a browser may cache a preflight
)

// cors handles CORS for r: it answers a preflight (and reports true), or
// adds the CORS headers an answer to an allowed origin needs. A request
// from an origin not listed gets no CORS headers, so the browser keeps the
// answer from the page; its preflight gets 403.
func (a *API) cors(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Add("Vary", "Origin")
	o := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if o == "" {
		return false
	}
	allowed := a.cfg.CORS.Allowed(o)
	if !preflight {
		if allowed {
			h.Set("Access-Control-Allow-Origin", o)
		}
		return false
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	if !allowed {
		a.log.Info("api: CORS preflight from an origin not allowed", "origin", o, "path", r.URL.Path)
		writeError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not call the API; the server's api.cors_origins lists the origins that may")
		return true
	}
	probe := new(http.Request)
	*probe = *r
	probe.Method = r.Header.Get("Access-Control-Request-Method")
	if _, pattern := a.mux.Handler(probe); pattern == "" || pattern == "/" || probe.Method == http.MethodOptions {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no %s %s to allow; see docs/api.md", probe.Method, r.URL.Path))
		return true
	}
	h.Set("Access-Control-Allow-Origin", o)
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// cleanPath reports whether p is an absolute path without empty, "." or
// ".." segments and without a trailing slash (unless it is "/"): a path
// that ServeMux neither cleans nor redirects. Decoded, a percent-encoded
// dot or slash counts as what it encodes.
func cleanPath(p string) bool {
	return p != "" && p[0] == '/' && path.Clean(p) == p
}

// stripPrefix returns r for the path under prefix, or false when r's path,
// decoded and as sent, is not under prefix.
func stripPrefix(r *http.Request, prefix string) (*http.Request, bool) {
	p, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok || !strings.HasPrefix(p, "/") {
		return nil, false
	}
	raw, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
	if !ok || !strings.HasPrefix(raw, "/") {
		return nil, false
	}
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = new(url.URL)
	*r2.URL = *r.URL
	r2.URL.Path, r2.URL.RawPath = p, ""
	if r.URL.RawPath != "" {
		r2.URL.RawPath = raw
	}
	return r2, true
}

// noRoute answers a path no route takes: 405 with Allow when the path is
// a route's with another method, 404 otherwise.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} { // the methods of the routes
		probe := new(http.Request)
		*probe = *r
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s takes %s, not %s; see docs/api.md", r.URL.Path, strings.Join(allow, " or "), r.Method))
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no such endpoint; see docs/api.md")
}

type appHandler func(w http.ResponseWriter, r *http.Request, app string) error

// route registers h behind app authentication and error rendering.
func (a *API) route(pattern string, h appHandler) {
	a.mux.HandleFunc(pattern, a.observe(pattern, func(w http.ResponseWriter, r *http.Request) {
		// The key is checked first, so app ids cannot be probed without one.
		app := r.PathValue("app")
		keyApp, ok := a.keys.App(apiKey(r))
		if !ok {
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown API key; send Authorization: Bearer <key>")
			return
		}
		if !(*a.apps.Load())[app] {
			writeError(w, http.StatusNotFound, "unknown_app", fmt.Sprintf("no app %q", app))
			return
		}
		if keyApp != app {
			writeError(w, http.StatusForbidden, "forbidden", "this API key belongs to another app")
			return
		}
		err := a.allowRequest(app)
		if err == nil {
			err = h(w, r, app)
		}
		if err != nil {
			var he *httpError
			if errors.As(err, &he) {
				if he.retryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(he.retryAfter))
				}
				writeError(w, he.status, he.code, he.msg)
				return
			}
			a.log.Error("api request failed", "route", pattern, "err", err)
			writeError(w, http.StatusInternalServerError, "internal", "internal error")
		}
	}))
}

// statusWriter records the status for Observe.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (a *API) observe(route string, h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.Observe == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, r)
		a.cfg.Observe(route, sw.status, time.Since(start))
	}
}

func apiKey(r *http.Request) string {
	if k, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(k)
	}
	return r.Header.Get("X-API-Key")
}

// httpError is a caller's mistake with its status and code.
type httpError struct {
	status     int
	code       string
	msg        string
	retryAfter int // seconds, sent as Retry-After when positive
}

func (e *httpError) Error() string { return e.code + ": " + e.msg }

func badRequest(code, format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

// errEmptyBody is returned by decode for a request without a body.
var errEmptyBody = &httpError{status: http.StatusBadRequest, code: "bad_json", msg: "request body is empty; send a JSON object"}

// messageBody is the JSON of a message in a request. Its strings, like
// every string of a request body, are jsonstr.Strings: a string that is not
// valid text stays invalid and fails validation, where encoding/json would
// have made it valid by rewriting it.
type messageBody struct {
	ID   jsonstr.String  `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	B64  jsonstr.String  `json:"b64,omitempty"`
	TTL  int64           `json:"ttl,omitempty"` // seconds an undelivered inbox message is kept; 0 = the server's default
}

// maxTTL bounds a message's lifetime.
const maxTTL = 30 * 24 * 3600

func (a *API) message(b messageBody) (node.Message, error) {
	if b.ID != "" && !auth.ValidName(string(b.ID)) {
		return node.Message{}, badRequest("bad_id", "id must be 1-128 bytes of printable UTF-8 without spaces")
	}
	var payload []byte
	switch {
	case len(b.Data) > 0 && b.B64 != "":
		return node.Message{}, badRequest("bad_payload", "give either data or b64, not both")
	case len(b.Data) > 0:
		if string(b.Data) == "null" {
			return node.Message{}, badRequest("bad_payload", "data is null; send a value, or b64 for bytes")
		}
		// JSON clients get data as it is: it must be text they can read.
		if err := jsonstr.Check(b.Data); err != nil {
			return node.Message{}, badRequest("bad_payload", "data is not valid UTF-8 text: %v", err)
		}
		payload = []byte(b.Data)
	case b.B64 != "":
		p, err := base64.StdEncoding.DecodeString(string(b.B64))
		if err != nil {
			return node.Message{}, badRequest("bad_payload", "b64 is not valid base64: %v", err)
		}
		payload = p
	default:
		return node.Message{}, badRequest("bad_payload", "a message needs data (any JSON value) or b64 (base64 bytes)")
	}
	if len(payload) > a.cfg.MaxPayload {
		return node.Message{}, &httpError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large",
			msg: fmt.Sprintf("payload is %d bytes; the limit is %d", len(payload), a.cfg.MaxPayload)}
	}
	if b.TTL < 0 || b.TTL > maxTTL {
		return node.Message{}, badRequest("bad_ttl", "ttl must be 0 to %d seconds", maxTTL)
	}
	return node.Message{ID: string(b.ID), Payload: payload, TTL: time.Duration(b.TTL) * time.Second}, nil
}

// maxBulkBody bounds the request body of a bulk push.
const maxBulkBody = 16 << 20

// decode reads a JSON body of bounded size into v, rejecting unknown fields.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return a.decodeLimit(w, r, v, int64(a.cfg.MaxPayload)*2+int64(a.cfg.MaxRecipients)*160+4096)
}

func (a *API) decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	br := bufio.NewReader(http.MaxBytesReader(w, r.Body, limit))
	// The body must be an object: encoding/json would decode null into
	// the zero value, an empty request.
	if c, err := firstByte(br); err != nil {
		return bodyError(w, err)
	} else if c != '{' {
		return badRequest("bad_json", "request body must be a JSON object")
	}
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(w, err)
	}
	// Only whitespace may follow. (dec.More would miss a stray "}" or
	// "]", which it takes for the end of an enclosing value.)
	var se *json.SyntaxError
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
	case err == nil || errors.As(err, &se):
		return badRequest("bad_json", "request body has data after the JSON object")
	default:
		return bodyError(w, err)
	}
	if a.cfg.BodyTimeout > 0 {
		// The body is read: the server's own reads (which notice a client
		// that goes away) must not time out while the request is handled.
		if err := http.NewResponseController(w).SetReadDeadline(time.Time{}); err != nil {
			return fmt.Errorf("api: clear the body's read deadline: %w", err)
		}
	}
	return nil
}

// firstByte returns the first byte of br after JSON whitespace, and leaves
// it unread.
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c, br.UnreadByte()
	}
}

// bodyError is the answer to a request body that could not be decoded.
func bodyError(w http.ResponseWriter, err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.As(err, &mbe):
		return &httpError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", msg: fmt.Sprintf("request body over %d bytes", mbe.Limit)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		return &httpError{status: http.StatusRequestTimeout, code: "request_timeout", msg: "the request body did not arrive in time"}
	}
	return badRequest("bad_json", "request body is not the expected JSON: %v", err)
}

func validName(kind, s string) error {
	if !auth.ValidName(s) {
		return badRequest("bad_name", "%s %q must be 1-128 bytes of printable UTF-8 without spaces", kind, s)
	}
	return nil
}

func (a *API) pushUser(w http.ResponseWriter, r *http.Request, app string) error {
	user := r.PathValue("user")
	if err := validName("user", user); err != nil {
		return err
	}
	var b messageBody
	if err := a.decode(w, r, &b); err != nil {
		return err
	}
	m, err := a.message(b)
	if err != nil {
		return err
	}
	if err := a.allowPublish(app, 1); err != nil {
		return err
	}
	acc, err := a.svc.PushUser(r.Context(), app, user, m)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, accepted(acc))
	return nil
}

type pushUsersBody struct {
	Users []jsonstr.String `json:"users"`
	messageBody
}

type userResult struct {
	User        string `json:"user"`
	Seq         uint64 `json:"seq"`
	Duplicate   bool   `json:"duplicate,omitempty"`
	Held        bool   `json:"held,omitempty"` // stored; the app's deliveries are paused
	Connections int    `json:"connections"`
}

// accepted renders a durable push's outcome.
func accepted(a node.Accepted) map[string]any {
	out := map[string]any{"id": a.ID, "seq": a.Seq, "connections": a.Connections}
	if a.Duplicate {
		out["duplicate"] = true
	}
	if a.Held {
		out["held"] = true
	}
	return out
}

// checkCount checks how many recipients (or messages) one call names.
func (a *API) checkCount(n int, what string) error {
	if n == 0 {
		return badRequest("no_recipients", "%s must list at least one entry", what)
	}
	if n > a.cfg.MaxRecipients {
		return &httpError{status: http.StatusRequestEntityTooLarge, code: "too_many_recipients",
			msg: fmt.Sprintf("%d %s; the limit is %d per call", n, what, a.cfg.MaxRecipients)}
	}
	return nil
}

// switchedOff turns an operation refused by an operator's degrade switch
// into a 503 with Retry-After; nil for any other error.
func switchedOff(err error) error {
	if !errors.Is(err, node.ErrSwitchedOff) {
		return nil
	}
	return &httpError{status: http.StatusServiceUnavailable, code: "switched_off", retryAfter: 5,
		msg: "an operator switched this off on this server for now (a degrade switch); nothing was stored: retry later: " + err.Error()}
}

// storeError turns a failed append into a 503: nothing was accepted, the
// caller may retry with the same ids.
func storeError(err error) error {
	if e := switchedOff(err); e != nil {
		return e
	}
	return &httpError{status: http.StatusServiceUnavailable, code: "store_unavailable",
		msg: "the message store cannot take writes now; the message may not be stored: retry with the same id (it is stored at most once): " + err.Error()}
}

func (a *API) pushUsers(w http.ResponseWriter, r *http.Request, app string) error {
	var b pushUsersBody
	if err := a.decode(w, r, &b); err != nil {
		return err
	}
	if err := a.checkCount(len(b.Users), "users"); err != nil {
		return err
	}
	seen := make(map[string]bool, len(b.Users))
	users := make([]string, 0, len(b.Users))
	for _, js := range b.Users {
		u := string(js)
		if err := validName("user", u); err != nil {
			return err
		}
		if !seen[u] { // a user listed twice gets the message once
			seen[u] = true
			users = append(users, u)
		}
	}
	m, err := a.message(b.messageBody)
	if err != nil {
		return err
	}
	if err := a.allowPublish(app, len(users)); err != nil {
		return err
	}
	accs, err := a.svc.PushUsers(r.Context(), app, users, m)
	if err != nil {
		return storeError(err)
	}
	results := make([]userResult, len(users))
	for i, u := range users {
		results[i] = userResult{User: u, Seq: accs[i].Seq, Duplicate: accs[i].Duplicate, Held: accs[i].Held, Connections: accs[i].Connections}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": accs[0].ID, "results": results})
	return nil
}

// bulkMessage is one entry of a bulk push: a message for one user.
type bulkMessage struct {
	User jsonstr.String `json:"user"`
	messageBody
}

type bulkResult struct {
	User        string `json:"user"`
	ID          string `json:"id"`
	Seq         uint64 `json:"seq"`
	Duplicate   bool   `json:"duplicate,omitempty"`
	Held        bool   `json:"held,omitempty"` // stored; the app's deliveries are paused
	Connections int    `json:"connections"`
}

// pushBulk delivers many messages, each to its own user, in one request:
// the way to push at high rates without paying for one HTTP exchange per
// message. The call is checked as a whole before anything is sent.
func (a *API) pushBulk(w http.ResponseWriter, r *http.Request, app string) error {
	var b struct {
		Messages []bulkMessage `json:"messages"`
	}
	if err := a.decodeLimit(w, r, &b, maxBulkBody); err != nil {
		return err
	}
	if err := a.checkCount(len(b.Messages), "messages"); err != nil {
		return err
	}
	msgs := make([]node.Message, len(b.Messages))
	for i, bm := range b.Messages {
		if err := validName("user", string(bm.User)); err != nil {
			return err
		}
		m, err := a.message(bm.messageBody)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) {
				return &httpError{status: he.status, code: he.code, msg: fmt.Sprintf("messages[%d]: %s", i, he.msg)}
			}
			return err
		}
		msgs[i] = m
	}
	users := make([]string, len(msgs))
	for i := range b.Messages {
		users[i] = string(b.Messages[i].User)
	}
	if err := a.allowPublish(app, len(msgs)); err != nil {
		return err
	}
	accs, err := a.svc.PushMany(r.Context(), app, users, msgs)
	if err != nil {
		return storeError(err)
	}
	results := make([]bulkResult, len(msgs))
	for i, acc := range accs {
		results[i] = bulkResult{User: users[i], ID: acc.ID, Seq: acc.Seq, Duplicate: acc.Duplicate, Held: acc.Held, Connections: acc.Connections}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
	return nil
}

func (a *API) publish(w http.ResponseWriter, r *http.Request, app string) error {
	topic := r.PathValue("topic")
	if err := validName("topic", topic); err != nil {
		return err
	}
	var b messageBody
	if err := a.decode(w, r, &b); err != nil {
		return err
	}
	m, err := a.message(b)
	if err != nil {
		return err
	}
	if err := a.allowPublish(app, 1); err != nil {
		return err
	}
	p, err := a.svc.Publish(r.Context(), app, topic, m)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, publishResult{ID: p.ID, Seq: p.Seq, Duplicate: p.Duplicate, Held: p.Held, Subscribers: &p.Subscribers})
	return nil
}

func (a *API) broadcast(w http.ResponseWriter, r *http.Request, app string) error {
	var b messageBody
	if err := a.decode(w, r, &b); err != nil {
		return err
	}
	m, err := a.message(b)
	if err != nil {
		return err
	}
	if err := a.allowPublish(app, 1); err != nil {
		return err
	}
	p, err := a.svc.Broadcast(r.Context(), app, m)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, publishResult{ID: p.ID, Seq: p.Seq, Duplicate: p.Duplicate, Held: p.Held, Connections: &p.Subscribers})
	return nil
}

// publishResult answers a publish (subscribers) or a broadcast
// (connections).
type publishResult struct {
	ID          string `json:"id"`
	Seq         uint64 `json:"seq,omitempty"`
	Duplicate   bool   `json:"duplicate,omitempty"`
	Held        bool   `json:"held,omitempty"` // stored; the app's deliveries are paused
	Subscribers *int   `json:"subscribers,omitempty"`
	Connections *int   `json:"connections,omitempty"`
}

type presenceResult struct {
	User    string             `json:"user"`
	Online  bool               `json:"online"`
	Devices []registry.Session `json:"devices"`
}

func (a *API) presenceOf(ctx context.Context, app, user string) (presenceResult, error) {
	s, err := a.svc.Presence(ctx, app, user)
	if err != nil {
		return presenceResult{}, presenceError(err)
	}
	if s == nil {
		s = []registry.Session{}
	}
	return presenceResult{User: user, Online: len(s) > 0, Devices: s}, nil
}

// presenceError turns a failed registry lookup into a 503.
func presenceError(err error) error {
	if e := switchedOff(err); e != nil {
		return e
	}
	return &httpError{status: http.StatusServiceUnavailable, code: "presence_unavailable",
		msg: "the presence registry cannot answer now; retry later: " + err.Error()}
}

func (a *API) presence(w http.ResponseWriter, r *http.Request, app string) error {
	user := r.PathValue("user")
	if err := validName("user", user); err != nil {
		return err
	}
	p, err := a.presenceOf(r.Context(), app, user)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (a *API) presenceMany(w http.ResponseWriter, r *http.Request, app string) error {
	var b struct {
		Users []jsonstr.String `json:"users"`
	}
	if err := a.decode(w, r, &b); err != nil {
		return err
	}
	if err := a.checkCount(len(b.Users), "users"); err != nil {
		return err
	}
	out := make([]presenceResult, 0, len(b.Users))
	for _, u := range b.Users {
		if err := validName("user", string(u)); err != nil {
			return err
		}
		p, err := a.presenceOf(r.Context(), app, string(u))
		if err != nil {
			return err
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
	return nil
}

func (a *API) unread(w http.ResponseWriter, r *http.Request, app string) error {
	user, device := r.PathValue("user"), r.URL.Query().Get("device")
	if err := validName("user", user); err != nil {
		return err
	}
	if err := validName("device", device); err != nil {
		return err
	}
	last, acked, err := a.svc.Unread(r.Context(), app, user, device)
	if err != nil {
		return storeError(err)
	}
	unread := uint64(0)
	if last > acked {
		unread = last - acked
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "device": device, "last": last, "acked": acked, "unread": unread})
	return nil
}

// status reports a message's state in a user's inbox, for one device when
// ?device= is given: stored, acked or gone (expired, removed or unknown).
func (a *API) status(w http.ResponseWriter, r *http.Request, app string) error {
	user, id, device := r.PathValue("user"), r.PathValue("id"), r.URL.Query().Get("device")
	if err := validName("user", user); err != nil {
		return err
	}
	if !auth.ValidName(id) {
		return badRequest("bad_id", "id must be 1-128 bytes of printable UTF-8 without spaces")
	}
	if device != "" {
		if err := validName("device", device); err != nil {
			return err
		}
	}
	state, seq, err := a.svc.Status(r.Context(), app, user, id, device)
	if err != nil {
		return storeError(err)
	}
	out := map[string]any{"user": user, "id": id, "state": state}
	if seq > 0 {
		out["seq"] = seq
	}
	if device != "" {
		out["device"] = device
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) kick(w http.ResponseWriter, r *http.Request, app string) error {
	user := r.PathValue("user")
	if err := validName("user", user); err != nil {
		return err
	}
	var b struct {
		Device jsonstr.String `json:"device,omitempty"`
		Reason jsonstr.String `json:"reason,omitempty"`
	}
	if err := a.decode(w, r, &b); err != nil && !errors.Is(err, errEmptyBody) {
		return err
	}
	if b.Device != "" {
		if err := validName("device", string(b.Device)); err != nil {
			return err
		}
	}
	if len(b.Reason) > 256 {
		return badRequest("bad_reason", "reason is longer than 256 bytes")
	}
	if !utf8.ValidString(string(b.Reason)) {
		return badRequest("bad_reason", "reason is not valid UTF-8 text")
	}
	n, err := a.svc.Kick(r.Context(), app, user, string(b.Device), string(b.Reason))
	if err != nil {
		return presenceError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"kicked": n})
	return nil
}

// health answers GET /healthz from the Health hook.
func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	if a.cfg.Health != nil {
		if err := a.cfg.Health(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.keys.App(apiKey(r)); !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown API key; send Authorization: Bearer <key>")
		return
	}
	var v any = map[string]any{}
	if a.cfg.Stats != nil {
		v = a.cfg.Stats()
	}
	writeJSON(w, http.StatusOK, v)
}

// cluster answers GET /v1/cluster: the live nodes with their load.
func (a *API) cluster(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.keys.App(apiKey(r)); !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown API key; send Authorization: Bearer <key>")
		return
	}
	if a.cfg.Cluster == nil {
		writeError(w, http.StatusNotFound, "not_found", "no cluster view on this server")
		return
	}
	v, err := a.cfg.Cluster(r.Context())
	if err != nil {
		a.log.Warn("cluster view unavailable", "err", err)
		writeError(w, http.StatusServiceUnavailable, "presence_unavailable", "the cluster's registry cannot be read now; retry later")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/config"
)

// noRedirects returns a copy of h whose HTTP client does not follow
// redirects, so that a redirect is seen as the answer it is.
func (h *harness) noRedirects() *harness {
	hh := *h
	hh.http = &http.Client{
		Transport:     h.http.Transport,
		Timeout:       waitTime,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &hh
}

// TestAPIPathsNoRedirect sends requests whose paths http.ServeMux would
// clean and redirect: dot segments, plain or percent-encoded, empty
// segments and trailing slashes. A redirect is followed by clients with
// the body and the key, so that a push to a user became a publish to a
// topic. Each gets a JSON 404 instead, and nothing is published.
func TestAPIPathsNoRedirect(t *testing.T) {
	t.Parallel()
	h := startServer(t).noRedirects()
	sub := h.connect(wsJSON, "sub", h.token(appA, "alice", "news"), "d")
	sub.subscribe(1, "news")

	for _, path := range []string{
		"/v1/apps/app-a/users/x/../../topics/news/messages",
		"/v1/apps/app-a/users/x/%2e%2e/%2E%2E/topics/news/messages",
		"/v1/apps/app-a/users/x/.%2e/..%2F/topics/news/messages",
		"/v1/apps/app-a/users/x%2F..%2F..%2Ftopics/news/messages",
		"/v1/apps/app-a/topics/./news/messages",
		"/v1/apps/app-a//topics/news/messages",
		"/v1/apps/app-a/topics/news//messages",
		"/v1/apps/app-a/topics/news/messages/",
		"//v1/apps/app-a/topics/news/messages",
		"/v1/apps/app-a/broadcast/",
		"/v1/stats/",
		"/v1/apps/app-a/users/alice/presence/",
	} {
		t.Run(path, func(t *testing.T) {
			h.withT(t).apiError("POST", path, keyA, `{"data":"redirected"}`, http.StatusNotFound, "not_found")
		})
	}
	// The subscriber's first message is the one published after.
	h.publish(appA, "news", "after")
	if f := sub.expectPush("t:news", []byte(`"after"`)); f.Seq != 1 {
		t.Fatalf("first topic message has seq %d; want 1", f.Seq)
	}
	// A user name with an encoded slash is still a user name.
	var r durablePush
	h.apiOK("POST", "/v1/apps/app-a/users/team%2Fops/messages", keyA, `{"data":1}`, &r)
	if r.Seq != 1 {
		t.Fatalf("push to team/ops: %+v", r)
	}
	if p := h.presence(appA, "team%2Fops"); p.User != "team/ops" {
		t.Fatalf("presence of team/ops: %+v", p)
	}
}

// TestAPIPrefix serves the API under a path prefix: requests outside it,
// or to the prefix without a slash, get a JSON 404 and no redirect.
func TestAPIPrefix(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.API.Path = "/herald" }).noRedirects()
	var st map[string]any
	h.apiOK("GET", "/herald/v1/stats", keyA, nil, &st)
	for _, path := range []string{"/herald", "/herald/", "/v1/stats", "/heraldv1/stats", "/herald/../herald/v1/stats", "/herald//v1/stats", "/%68erald/v1/stats"} {
		t.Run(path, func(t *testing.T) {
			h.withT(t).apiError("GET", path, keyA, nil, http.StatusNotFound, "not_found")
		})
	}
}

// TestAPIMethodNotAllowed: a known path with a method it does not take is
// a JSON 405 that says in Allow which methods it takes.
func TestAPIMethodNotAllowed(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/v1/apps/app-a/broadcast", "POST"},
		{"PUT", "/v1/apps/app-a/users/alice/messages", "POST"},
		{"POST", "/v1/stats", "GET, HEAD"},
		{"DELETE", "/healthz", "GET, HEAD"},
		{"POST", "/v1/apps/app-a/users/alice/presence", "GET, HEAD"},
		{"OPTIONS", "/metrics", "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			h := h.withT(t)
			h.apiError(tc.method, tc.path, keyA, nil, http.StatusMethodNotAllowed, "method_not_allowed")
			req, _ := http.NewRequest(tc.method, h.srv.APIURL()+tc.path, nil)
			resp, err := h.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Fatalf("Allow %q; want %q", got, tc.allow)
			}
		})
	}
	h.apiError("GET", "/v1/nothing", keyA, nil, http.StatusNotFound, "not_found")
}

// TestAPINullBody: a body of JSON null, or anything but an object, is
// bad_json, not an empty request.
func TestAPINullBody(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	alice := h.connect(wsBinary, "alice", h.token(appA, "alice"), "phone")
	for _, tc := range []struct{ path, body string }{
		{"/v1/apps/app-a/users/alice/kick", `null`},
		{"/v1/apps/app-a/users/alice/kick", " \n null "},
		{"/v1/apps/app-a/users/alice/kick", `"x"`},
		{"/v1/apps/app-a/users/alice/messages", `null`},
		{"/v1/apps/app-a/messages", `null`},
		{"/v1/apps/app-a/push", `null`},
		{"/v1/apps/app-a/presence", `null`},
		{"/v1/apps/app-a/broadcast", `null`},
	} {
		t.Run(tc.path+" "+strings.TrimSpace(tc.body), func(t *testing.T) {
			h.withT(t).apiError("POST", tc.path, keyA, tc.body, http.StatusBadRequest, "bad_json")
		})
	}
	alice.ping(1) // not kicked
}

// rawHTTP opens a plain TCP connection to the API, for requests that no
// HTTP client would send. Reads on it end after waitTime at the latest.
func (h *harness) rawHTTP() net.Conn {
	h.t.Helper()
	nc, err := net.DialTimeout("tcp", strings.TrimPrefix(h.srv.APIURL(), "http://"), waitTime)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetReadDeadline(time.Now().Add(waitTime))
	return nc
}

// readAnswer reads one HTTP response from nc and checks that it is a JSON
// error with status and code, and that the server then closes the
// connection. It returns how long that took from start.
func readAnswer(t *testing.T, nc net.Conn, start time.Time, status int, code string) time.Duration {
	t.Helper()
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer after %v: %v", time.Since(start), err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &e) != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("got %d %q %q; want a JSON error %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
	if n, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection stays open after the answer (read %v, %v)", n, err)
	}
	return time.Since(start)
}

// TestAPISlowBody: a request body that stops coming is cut after
// api_body_timeout, with a JSON 408, and the connection is closed; a body
// the handler does not read (the key is wrong) does not hold the
// connection either.
func TestAPISlowBody(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	h := startServer(t, func(c *config.Config) { c.APIBodyTimeout = timeout })
	alice := h.connect(wsBinary, "alice", h.token(appA, "alice"), "phone")
	head := "POST /v1/apps/app-a/users/alice/messages HTTP/1.1\r\nHost: herald\r\nContent-Length: 100\r\nAuthorization: Bearer %s\r\n\r\n{\"data\":"

	nc := h.rawHTTP()
	start := time.Now()
	fmt.Fprintf(nc, head, keyA)
	if d := readAnswer(t, nc, start, http.StatusRequestTimeout, "request_timeout"); d < timeout {
		t.Fatalf("cut after %v, before the timeout of %v", d, timeout)
	}

	nc = h.rawHTTP()
	start = time.Now()
	fmt.Fprintf(nc, head, "not-a-key-0123456789")
	readAnswer(t, nc, start, http.StatusUnauthorized, "unauthorized")

	// Nothing was pushed; the next push is alice's first.
	if r := h.pushID(appA, "alice", "after", 1); r.Seq != 1 {
		t.Fatalf("push after the cut: %+v", r)
	}
	alice.expectPush("u:alice", []byte("1"))
}

// TestAPIServerErrorsJSON sends requests that Go's HTTP server refuses
// before any handler runs, with an answer of its own in plain text. They
// get the API's JSON error body instead, and the connection is closed.
func TestAPIServerErrorsJSON(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", 400, "bad_request"},
		{"request line without version", "GET /v1/stats\r\nHost: x\r\n\r\n", 400, "bad_request"},
		{"missing Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"},
		{"invalid header name", "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "bad_request"},
		{"headers over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 24<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"unknown transfer encoding", "POST /v1/apps/app-a/broadcast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "not_implemented"},
		{"unknown HTTP version", "GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"},
		{"unknown expectation", "POST /v1/apps/app-a/broadcast HTTP/1.1\r\nHost: x\r\nExpect: a-pony\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := h.withT(t).rawHTTP()
			start := time.Now()
			if _, err := io.WriteString(nc, tc.req); err != nil {
				t.Fatal(err)
			}
			readAnswer(t, nc, start, tc.status, tc.code)
		})
	}
	// Requests on a kept-alive connection, and answers of the API with
	// the same statuses, are untouched.
	nc := h.rawHTTP()
	br := bufio.NewReader(nc)
	for range 2 {
		fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
			t.Fatalf("healthz: %d %s", resp.StatusCode, body)
		}
	}
	h.apiError("POST", "/v1/apps/app-a/broadcast", keyA, `{"data":`, 400, "bad_json")
}

// TestWSConnectionCloseRequest: HTTP requests that ask for
// "Connection: close" on the WebSocket listener (a plain GET, an SSE POST)
// are answered and closed, and every event loop keeps running: a
// connection closed while its handler runs on the event loop used to have
// its cleanup wait, on that same goroutine, for the HTTP parser's lock the
// loop held, freezing it and every connection on it for good (see
// gateway's parserGuard).
func TestWSConnectionCloseRequest(t *testing.T) {
	h := startServer(t)
	ask := func(req string) int {
		nc, err := net.Dial("tcp", h.srv.gw.WSAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(waitTime))
		if _, err := io.WriteString(nc, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("answer to %q: %v", strings.SplitN(req, "\r\n", 2)[0], err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// Enough requests to reach every event loop (a connection's loop
	// follows its descriptor).
	for i := range 16 {
		if code := ask("GET " + h.cfg.WS.Path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); code != http.StatusBadRequest {
			t.Fatalf("plain GET %d: %d; want 400", i, code)
		}
		if code := ask("POST /sse/nosuchsession HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"); code != http.StatusNotFound {
			t.Fatalf("SSE POST %d: %d; want 404", i, code)
		}
	}
	// Every loop still serves: connections handshake (and the server
	// shuts down at the end).
	for i := range 16 {
		c := h.connect(wsBinary, fmt.Sprintf("after-%d", i), h.token(appA, fmt.Sprintf("u%d", i)), "d")
		c.ping(int64(i + 1))
	}
}

package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/protocol"
)

// sconn is a test client of the SSE transport: the event stream read with
// net/http, frames sent with POST. Reads are bounded like tconn's.
type sconn struct {
	reader
	base    string // scheme://host:port
	path    string // the session's POST path
	origin  string
	http    *http.Client
	body    io.ReadCloser
	r       *bufio.Reader
	cancel  context.CancelFunc
	queue   []protocol.Frame
	closeMu sync.Mutex
}

// sseBase returns the scheme and address of the WebSocket listener, where
// the SSE transport is served.
func (h *harness) sseBase() string {
	if h.cfg.WS.TLSCert != "" {
		return "https://" + h.srv.gw.WSAddr().String()
	}
	return "http://" + h.srv.gw.WSAddr().String()
}

// sseURL returns the URL of the server's event stream.
func (h *harness) sseURL() string { return h.sseBase() + "/sse" }

// sseOpen opens an event stream and reads its session event. from is the
// Origin header ("" sends none).
func (h *harness) sseOpen(name, from string) (*sconn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.sseURL(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if from != "" {
		req.Header.Set("Origin", from)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: h.clientTLS()}}
	timer := time.AfterFunc(waitTime, cancel)
	resp, err := hc.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, &httpStatus{resp.StatusCode, b}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		cancel()
		return nil, fmt.Errorf("content type %q", ct)
	}
	c := &sconn{reader: reader{t: h.t, name: name + "/sse"}, base: h.sseBase(), origin: from,
		http: hc, body: resp.Body, r: bufio.NewReader(resp.Body), cancel: cancel}
	c.fc = c
	timer = time.AfterFunc(waitTime, func() { c.Close() })
	event, data, err := c.event()
	timer.Stop()
	if err != nil {
		c.Close()
		return nil, err
	}
	var first struct{ Session, Path string }
	if err := json.Unmarshal(data, &first); event != "session" || err != nil || first.Session == "" || !strings.HasSuffix(first.Path, "/"+first.Session) {
		c.Close()
		return nil, fmt.Errorf("first event %q %s (%v); want a session", event, data, err)
	}
	c.path = first.Path
	h.t.Cleanup(func() { c.Close() })
	return c, nil
}

// httpStatus is an answer other than the one expected.
type httpStatus struct {
	status int
	body   []byte
}

func (e *httpStatus) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// sseDial opens an event stream or fails the test.
func (h *harness) sseDial(name string) *sconn {
	h.t.Helper()
	c, err := h.sseOpen(name, "")
	if err != nil {
		h.t.Fatalf("%s: open the event stream: %v", name, err)
	}
	return c
}

// sseConnect opens an event stream and completes the handshake.
func (h *harness) sseConnect(name, token, device string, resume ...protocol.Position) *sconn {
	h.t.Helper()
	c := h.sseDial(name)
	c.write(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: token, Device: device, Resume: resume})
	f := c.expect(protocol.TypeConnected)
	if f.Node != testNode || f.Session == "" || f.Heartbeat != h.cfg.Heartbeat {
		h.t.Fatalf("%s: CONNECTED = %+v", c.name, f)
	}
	return c
}

// event reads the next SSE event.
func (c *sconn) event() (event string, data []byte, err error) {
	var lines [][]byte
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return "", nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if lines == nil && event == "" {
				continue
			}
			return event, bytes.Join(lines, []byte("\n")), nil
		case bytes.HasPrefix(line, []byte("data:")):
			lines = append(lines, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" ")))
		case bytes.HasPrefix(line, []byte("event:")):
			event = strings.TrimSpace(string(line[len("event:"):]))
		}
	}
}

// ReadFrame returns the next frame from the stream.
func (c *sconn) ReadFrame() (*protocol.Frame, error) {
	for len(c.queue) == 0 {
		event, data, err := c.event()
		if err != nil {
			return nil, err
		}
		if event != "" {
			return nil, fmt.Errorf("unexpected event %q", event)
		}
		frames, err := protocol.DecodeJSONBatch(data, protocol.Limits{MaxFrame: 1 << 20, MaxPayload: 1 << 20, MaxString: 1 << 20, MaxResume: 1024})
		if err != nil {
			return nil, fmt.Errorf("event %q: %w", data, err)
		}
		c.queue = frames
	}
	f := c.queue[0]
	c.queue = c.queue[1:]
	return &f, nil
}

// post sends body to the session's URL and returns the status and answer.
func (c *sconn) post(body []byte) (int, []byte, error) {
	return ssePost(c.http, c.base+c.path, c.origin, body)
}

// ssePost sends a POST with body to url.
func ssePost(hc *http.Client, url, from string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "text/plain")
	if from != "" {
		req.Header.Set("Origin", from)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// WriteFrame sends f with a POST.
func (c *sconn) WriteFrame(f *protocol.Frame) error {
	status, b, err := c.post(protocol.AppendJSON(nil, f))
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return &httpStatus{status, b}
	}
	return nil
}

// Close closes the stream.
func (c *sconn) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.cancel()
	err := c.body.Close()
	c.http.CloseIdleConnections()
	return err
}

func (c *sconn) expectDisconnect(code protocol.DisconnectCode) protocol.Disconnect {
	c.t.Helper()
	f := c.expect(protocol.TypeDisconnect)
	d := protocol.DisconnectFrom(f)
	if d.Code != code {
		c.t.Fatalf("%s: got DISCONNECT %d (%s); want %d", c.name, d.Code, d.Reason, code)
	}
	f, err, timedOut := c.readWithin(waitTime)
	switch {
	case timedOut:
		c.t.Fatalf("%s: the server did not end the stream within %v", c.name, waitTime)
	case err == nil:
		c.t.Fatalf("%s: got %s after DISCONNECT; want the end of the stream", c.name, describe(f))
	case !errors.Is(err, io.EOF):
		c.t.Fatalf("%s: stream ended with %v; want its clean end (EOF)", c.name, err)
	}
	return d
}

func (c *sconn) subscribe(f protocol.Frame) *protocol.Frame {
	c.t.Helper()
	f.Type = protocol.TypeSubscribe
	c.write(&f)
	var pushes []protocol.Frame
	for {
		r := c.next()
		switch r.Type {
		case protocol.TypePush:
			pushes = append(pushes, *r)
			continue
		case protocol.TypeReply:
			if r.ID != f.ID {
				c.t.Fatalf("%s: REPLY id %d; want %d", c.name, r.ID, f.ID)
			}
			c.queue = append(pushes, c.queue...)
			return r
		}
		c.t.Fatalf("%s: got %s while subscribing", c.name, describe(r))
	}
}

// wantAPIError checks a JSON error answer.
func wantAPIError(t testing.TB, what string, status int, body []byte, err error, wantStatus int, wantCode string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err != nil {
		var hs *httpStatus
		if !errors.As(err, &hs) {
			t.Fatalf("%s: %v; want %d %s", what, err, wantStatus, wantCode)
		}
		status, body = hs.status, hs.body
	}
	if jerr := json.Unmarshal(body, &e); status != wantStatus || jerr != nil || e.Error.Code != wantCode || e.Error.Message == "" {
		t.Fatalf("%s: %d %s; want %d with code %s", what, status, body, wantStatus, wantCode)
	}
}

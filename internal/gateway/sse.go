package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio/nbhttp"

	"github.com/herald-push/herald/protocol"
)

// The Server-Sent Events transport, for clients that cannot open a
// WebSocket (a proxy that blocks the upgrade, say).
//
// GET <sse path> opens the down stream: a chunked text/event-stream
// response whose first event ("session") carries an unguessable session
// token, and whose later events each carry one JSON frame or a JSON array
// of frames, exactly as a WebSocket text message would. The client sends its
// frames with POST <sse path>/<token>, the body being what a WebSocket text
// message would hold. The stream's socket lives on the event loop like a
// WebSocket: after the response headers the connection is taken from the
// HTTP server (hijacked) and written to directly, and an idle one costs a
// Conn, an sseConn and the event loop's state, no goroutine.

// ssePath returns the HTTP path of the SSE endpoint: the WebSocket path's
// sibling named "sse" (/ws -> /sse, /push/ws -> /push/sse).
func ssePath(wsPath string) string { return path.Join(path.Dir(wsPath), "sse") }

// sseConn is what an SSE connection has beyond its Conn. It is the event
// loop session of the stream's socket (nbhttp hands it what the client
// sends there, which is nothing, and its close).
type sseConn struct {
	c     *Conn
	w     net.Conn // the hijacked connection; writes go through it (and TLS)
	token string   // the session token in the POST path

	// mu serialises the handler calls of the connection: frames from
	// POSTs (which arrive on other sockets, perhaps on other event loop
	// goroutines) and the close. A close that finds mu held (by a POST
	// whose frame made the handler close the connection, perhaps on this
	// very goroutine) is left in pending for the holder to run.
	mu      sync.Mutex
	pending atomic.Pointer[error]
}

var _ nbhttp.ParserCloser = (*sseConn)(nil)

// UnderlayerConn implements nbhttp.ParserCloser.
func (s *sseConn) UnderlayerConn() net.Conn { return s.w }

// Parse implements nbhttp.ParserCloser. A client sends nothing on the
// event stream; anything it does send is a protocol error.
func (s *sseConn) Parse(data []byte) error {
	if len(data) > 0 && !s.c.Closed() {
		s.c.g.decodeError(s.c, fmt.Errorf("%w: %d bytes on the event stream; POST frames to the session URL", protocol.ErrMalformed, len(data)))
	}
	return nil
}

// CloseAndClean implements nbhttp.ParserCloser: the stream's socket is
// closed.
func (s *sseConn) CloseAndClean(err error) {
	s.pending.Store(&err)
	s.runPending()
}

// runPending runs a pending close unless mu is held; whoever holds it runs
// it after unlocking.
func (s *sseConn) runPending() {
	for s.pending.Load() != nil && s.mu.TryLock() {
		if err := s.pending.Swap(nil); err != nil {
			g := s.c.g
			g.sseMu.Lock()
			if g.sse[s.token] == s {
				delete(g.sse, s.token)
			}
			g.sseMu.Unlock()
			g.closedConn(s.c, *err)
		}
		s.mu.Unlock()
	}
}

// sseOf returns the SSE state of c, or nil.
func sseOf(c *Conn) *sseConn {
	if c.nc == nil {
		return nil
	}
	s, _ := c.nc.Session().(*sseConn)
	return s
}

// sseHead is the start of the stream's response, before any CORS headers.
const sseHead = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream; charset=utf-8\r\n" +
	"Cache-Control: no-cache, no-store\r\n" +
	"X-Accel-Buffering: no\r\n" + // nginx: do not buffer the stream
	"Transfer-Encoding: chunked\r\n"

// headerSafe reports whether v can be written into a header as it is: no
// control characters (the head is written by hand, not by net/http).
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// sseTokenBytes is the entropy of a session token.
const sseTokenBytes = 24

// serveSSE answers GET <sse path>: it opens the event stream.
func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request, setup *wsSetup) {
	if g.draining.Load() {
		writeJSONError(w, http.StatusServiceUnavailable, "draining", "server is draining; reconnect to another node")
		return
	}
	if !g.originAllowed(w, r) {
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeJSONError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the event stream is opened with GET; frames are sent with POST to the session URL")
		return
	}
	if !r.ProtoAtLeast(1, 1) {
		writeJSONError(w, http.StatusHTTPVersionNotSupported, "http_version_not_supported", "the event stream needs HTTP/1.1")
		return
	}
	if !g.admitHTTP(w, r) {
		return
	}
	res, ok := w.(*nbhttp.Response)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	var raw [sseTokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		g.log.Error("sse: session token", "err", err)
		writeJSONError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	parser := res.Parser

	setup.upgrading(r.RemoteAddr)
	conn, _, err := res.Hijack()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	nc := nbioConn(conn)
	if nc == nil || parser == nil {
		g.log.Error("sse: not an event loop connection", "conn", fmt.Sprintf("%T", conn))
		_ = conn.Close()
		return
	}
	// The stream is long-lived: no read deadline (the wheel keeps time).
	_ = nc.SetReadDeadline(time.Time{})

	head := []byte(sseHead)
	if o := r.Header.Get("Origin"); o != "" && headerSafe(o) {
		head = append(head, "Access-Control-Allow-Origin: "...)
		head = append(head, o...)
		head = append(head, "\r\nVary: Origin\r\n"...)
	}
	head = append(head, "\r\n"...)
	first, _ := json.Marshal(map[string]string{"session": token, "path": ssePath(g.cfg.WSPath) + "/" + token})
	head = appendChunk(head, appendSSEEvent(nil, "session", first))

	s := &sseConn{w: conn, token: token}
	c := g.opened(SSE, func(c *Conn) {
		c.nc = nc
		c.encoding.Store(uint32(JSON))
		s.c = c
	})
	// From here on the event loop hands the socket's reads and its close
	// to s, and the HTTP parser hands it whatever follows the request.
	nc.SetSession(s)
	parser.ParserCloser = s
	if hc, ok := conn.(*nbhttp.Conn); ok {
		hc.Parser = nil
	}
	g.sseMu.Lock()
	g.sse[token] = s
	g.sseMu.Unlock()
	if _, err := conn.Write(head); err != nil {
		c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
	}
}

// serveSSEPost answers POST <sse path>/<token>: frames from the client.
func (g *Gateway) serveSSEPost(w http.ResponseWriter, r *http.Request) {
	if !g.originAllowed(w, r) {
		return
	}
	if o := r.Header.Get("Origin"); o != "" && headerSafe(o) {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "method_not_allowed", "send frames with POST")
		return
	}
	token := strings.TrimPrefix(r.URL.Path, ssePath(g.cfg.WSPath)+"/")
	g.sseMu.Lock()
	s := g.sse[token]
	g.sseMu.Unlock()
	if s == nil {
		writeJSONError(w, http.StatusNotFound, "unknown_session", "no open event stream has this session; open a new one")
		return
	}
	lim := g.cfg.Limits
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(lim.MaxFrame)+1))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_body", "cannot read the body: "+err.Error())
		return
	}

	status, code, msg := g.sseFrames(s, body)
	s.runPending()
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSONError(w, status, code, msg)
}

// sseFrames hands the frames of one POST body to the handler, as
// onWSMessage does for a text message, and returns the answer's status,
// code and message.
func (g *Gateway) sseFrames(s *sseConn, body []byte) (int, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	if c.Closed() {
		return http.StatusNotFound, "unknown_session", "the session is closed; open a new event stream"
	}
	lim := g.cfg.Limits
	max := lim.MaxFrame
	if c.state.Load() == stateOpen {
		max = lim.MaxConnect
	}
	if len(body) > max {
		err := fmt.Errorf("%w: body of more than %d bytes", protocol.ErrTooLarge, max)
		g.decodeError(c, err)
		return http.StatusRequestEntityTooLarge, "too_large", err.Error()
	}
	frames, err := protocol.DecodeJSONBatch(body, lim)
	if err != nil {
		g.decodeError(c, err)
		return http.StatusBadRequest, "malformed", err.Error()
	}
	for i := range frames {
		if c.Closed() {
			break
		}
		g.frame(c, &frames[i])
	}
	return http.StatusNoContent, "", ""
}

// buildSSE encodes frames as one HTTP chunk of SSE events, each a JSON
// frame or array of frames within the receiver's frame limit.
func (g *Gateway) buildSSE(frames []*protocol.Encoded) []byte {
	var events []byte
	g.jsonBatches(frames, func(msg []byte) { events = appendSSEEvent(events, "", msg) })
	return appendChunk(nil, events)
}

// appendSSEEvent appends one event: its type, if not "message", and data
// on as many data lines as it has lines (JSON may hold line breaks between
// tokens; the client joins the lines with "\n", which JSON reads as space).
func appendSSEEvent(dst []byte, event string, data []byte) []byte {
	if event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	for len(data) > 0 {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, data...)
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, "\ndata: "...)
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, "\n\n"...)
}

// appendChunk appends p as one chunk of a chunked HTTP body.
func appendChunk(dst, p []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(p)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, p...)
	return append(dst, "\r\n"...)
}

// sseEnd is the last chunk of a chunked body.
const sseEnd = "0\r\n\r\n"

// closeSSE writes d and the end of the stream and closes the socket.
func (c *Conn) closeSSE(d protocol.Disconnect) {
	if s := sseOf(c); s != nil {
		e := protocol.Encode(d.Frame())
		out := appendChunk(nil, appendSSEEvent(nil, "", e.JSON()))
		_, _ = s.w.Write(append(out, sseEnd...))
	}
	closeSocket(c.nc)
}

// writeSSE writes buf to the stream of c.
func (c *Conn) writeSSE(buf []byte) error {
	s := sseOf(c)
	if s == nil {
		return ErrClosed // the socket is closed and its session cleared
	}
	_, err := s.w.Write(buf)
	return err
}

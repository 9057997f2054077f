package api

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
)

// JSONErrors returns ln with its connections wrapped so that the answers
// Go's http.Server writes by itself carry the API's JSON error body, like
// every other answer of the API.
//
// net/http answers some requests before any handler runs, on the
// connection directly and in plain text: a malformed request line or
// header (400), headers over MaxHeaderBytes (431), an unknown transfer
// encoding (501) or HTTP version (505), an Expect other than 100-continue
// (417), and plain HTTP sent to a TLS listener (400). The wrapper
// recognises each of those exact answers when the server writes it, and
// writes a JSON answer with the same status instead; the server closes the
// connection after each of them, as before. Everything else is written as
// it is: the API's own answers are never text/plain with no Date, and
// never 417.
//
// Over TLS the server writes those answers inside the encrypted stream,
// which a wrapper of the listener cannot see; they stay plain text there
// (except the one for plain HTTP sent to TLS, which is written outside
// it). Wrapping the TLS connections instead would take HTTP/2 from the
// API.
func JSONErrors(ln net.Listener) net.Listener { return jsonErrorsListener{ln} }

type jsonErrorsListener struct{ net.Listener }

// Accept implements net.Listener.
func (l jsonErrorsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorsConn{Conn: c}, nil
}

type jsonErrorsConn struct{ net.Conn }

// Write implements net.Conn.
func (c *jsonErrorsConn) Write(p []byte) (int, error) {
	answer, ok := serverAnswer(p)
	if !ok {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(answer); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite half-closes the connection, as net/http does after a 431 so
// that the client can read it before the connection goes.
func (c *jsonErrorsConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// The texts net/http writes (net/http/server.go, conn.serve).
const (
	plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	plainToTLS        = "\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

// serverCodes are the error codes of the answers net/http writes.
var serverCodes = map[int]string{
	http.StatusBadRequest:                  "bad_request",
	http.StatusExpectationFailed:           "expectation_failed",
	http.StatusRequestHeaderFieldsTooLarge: "headers_too_large",
	http.StatusNotImplemented:              "not_implemented",
	http.StatusHTTPVersionNotSupported:     "http_version_not_supported",
}

// serverAnswer returns the JSON answer for p when p is one of the plain
// answers net/http writes by itself, whole, as it writes them.
func serverAnswer(p []byte) ([]byte, bool) {
	if len(p) < 13 || !bytes.HasPrefix(p, []byte("HTTP/1.")) || p[12] != ' ' {
		return nil, false
	}
	status, err := strconv.Atoi(string(p[9:12]))
	code, known := serverCodes[status]
	eol := bytes.Index(p, []byte("\r\n"))
	if err != nil || !known || eol < 0 {
		return nil, false
	}
	head := p[eol:]
	var msg string
	switch {
	case bytes.HasPrefix(head, []byte(plainErrorHeaders)):
		msg = string(head[len(plainErrorHeaders):])
	case status == http.StatusBadRequest && string(head) == plainToTLS:
		msg = "plain HTTP sent to the TLS listener; use https"
	case status == http.StatusExpectationFailed && bytes.Contains(head, []byte("\r\nConnection: close\r\n")) &&
		bytes.HasSuffix(head, []byte("\r\n\r\n")):
		msg = "only the expectation 100-continue is supported"
	default:
		return nil, false
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	body, err := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	if err != nil {
		return nil, false // unreachable: strings marshal
	}
	body = append(body, '\n')
	out := append([]byte(nil), p[:eol]...) // the status line, as it was
	out = append(out, "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...), true
}

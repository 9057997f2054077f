package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// Tests of the per-connection bounds: what a client may send before
// CONNECT, the WebSocket mask rule, frame and subscription rates, replay
// volume. Each misbehaving client is closed with a clear reason while a
// healthy client on the same server notices nothing.

// withTLS gives the WebSocket listener a fresh self-signed certificate for
// 127.0.0.1.
func withTLS(t testing.TB) func(*config.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "herald test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.WS.TLSCert, c.WS.TLSKey = cert, keyFile }
}

// clientTLS returns a client TLS configuration that trusts the WebSocket
// listener's certificate, or nil when it has none.
func (h *harness) clientTLS() *tls.Config {
	if h.cfg.WS.TLSCert == "" {
		return nil
	}
	pem, err := os.ReadFile(h.cfg.WS.TLSCert)
	pool := x509.NewCertPool()
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		h.t.Fatalf("certificate: %v", err)
	}
	return &tls.Config{RootCAs: pool}
}

// rawWS is a WebSocket client written by hand on a socket, to send what
// a WebSocket library would not: unmasked frames, lying lengths, floods of
// pings.
type rawWS struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

// dialRawWS opens a WebSocket to h (over TLS if tlsOn) and upgrades it.
func (h *harness) dialRawWS(tlsOn bool) *rawWS {
	h.t.Helper()
	var nc net.Conn
	var err error
	addr := strings.TrimPrefix(strings.TrimPrefix(h.srv.WSURL(), "ws://"), "wss://")
	addr, _, _ = strings.Cut(addr, "/")
	if tlsOn {
		nc, err = tls.DialWithDialer(&net.Dialer{Timeout: waitTime}, "tcp", addr, h.clientTLS())
	} else {
		nc, err = net.DialTimeout("tcp", addr, waitTime)
	}
	if err != nil {
		h.t.Fatalf("dial %s: %v", addr, err)
	}
	h.t.Cleanup(func() { _ = nc.Close() })
	c := &rawWS{t: h.t, nc: nc, r: bufio.NewReader(nc)}
	req := "GET " + h.cfg.WS.Path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	c.write([]byte(req))
	_ = nc.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		h.t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c
}

func (c *rawWS) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(waitTime))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// frame encodes a client frame: masked (with a zero key unless given one)
// or not, with a length field that announces size payload bytes.
func wsClientFrame(op byte, payload []byte, size uint64, masked bool) []byte {
	out := []byte{0x80 | op}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case size < 126:
		out = append(out, m|byte(size))
	case size <= 0xffff:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(size))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, size)
	}
	if masked {
		out = append(out, 0, 0, 0, 0) // a zero key leaves the payload as it is
	}
	return append(out, payload...)
}

// send writes frames as one masked binary message.
func (c *rawWS) send(fs ...*protocol.Frame) {
	c.t.Helper()
	var p []byte
	for _, f := range fs {
		p = protocol.AppendFramed(p, f)
	}
	c.write(wsClientFrame(2, p, uint64(len(p)), true))
}

// readFrame reads one server frame: its opcode and payload.
func (c *rawWS) readFrame() (byte, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(waitTime))
	var h [2]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c.r, p)
	return h[0] & 0x0f, p, err
}

// next returns the protocol frames of the next binary message, answering
// nothing; it fails on anything else but a WebSocket pong, which it
// returns as nil.
func (c *rawWS) next() []*protocol.Frame {
	c.t.Helper()
	op, p, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	switch op {
	case 10:
		return nil
	case 2:
	default:
		c.t.Fatalf("got opcode %d (%q); want a binary message", op, p)
	}
	var out []*protocol.Frame
	for len(p) > 0 {
		body, n, err := protocol.NextFramed(p, protocol.DefaultLimits())
		if err != nil || n == 0 {
			c.t.Fatalf("bad message from the server: %v", err)
		}
		f := new(protocol.Frame)
		if err := protocol.DecodeBinary(body, f, protocol.DefaultLimits()); err != nil {
			c.t.Fatalf("decode: %v", err)
		}
		out = append(out, f)
		p = p[n:]
	}
	return out
}

// expectRefusal reads the server's last words: ERROR code, DISCONNECT dc
// (possibly after other frames, which it skips: answers to what was sent
// before), a close frame with status ws, and the end of the stream.
func (c *rawWS) expectRefusal(code protocol.ErrorCode, dc protocol.DisconnectCode, ws int) {
	c.t.Helper()
	var got []string
	sawError := false
	for {
		op, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("read after %v: %v", got, err)
		}
		switch op {
		case 8:
			if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != ws {
				c.t.Fatalf("close frame %q; want status %d (after %v)", p, ws, got)
			}
			if !sawError || !strings.Contains(strings.Join(got, " "), fmt.Sprintf("DISCONNECT %d", dc)) {
				c.t.Fatalf("closed after %v; want ERROR %d and DISCONNECT %d first", got, code, dc)
			}
			if _, _, err := c.readFrame(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				c.t.Fatalf("after the close frame: %v; want the end of the stream", err)
			}
			return
		case 2:
			for len(p) > 0 {
				body, n, err := protocol.NextFramed(p, protocol.DefaultLimits())
				if err != nil || n == 0 {
					c.t.Fatalf("bad message: %v", err)
				}
				var f protocol.Frame
				if err := protocol.DecodeBinary(body, &f, protocol.DefaultLimits()); err != nil {
					c.t.Fatalf("decode: %v", err)
				}
				p = p[n:]
				switch f.Type {
				case protocol.TypeError:
					if protocol.ErrorCode(f.Code) != code {
						c.t.Fatalf("ERROR %d (%s); want %d", f.Code, f.Reason, code)
					}
					sawError = true
				case protocol.TypeDisconnect:
					if !sawError {
						c.t.Fatalf("DISCONNECT %d before the ERROR", f.Code)
					}
				}
				got = append(got, fmt.Sprintf("%s %d", strings.ToUpper(f.Type.String()), f.Code))
			}
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// expectHealthy checks that c still receives pushes and answers.
func expectHealthy(h *harness, c *tconn, user string, n int) {
	h.t.Helper()
	msg := fmt.Sprintf(`"healthy %d"`, n)
	h.apiOK("POST", "/v1/apps/app-a/users/"+user+"/messages", keyA, `{"data":`+msg+`}`, nil)
	c.expectPush("u:"+user, []byte(msg))
	c.ping(int64(n))
}

// TestPreAuthLimits announces a 64 KiB frame before CONNECT, on every
// listener: the server refuses it from its header, with ERROR too large,
// and closes the connection without waiting for the rest (the test never
// sends it), so an unauthenticated client cannot make it buffer more than
// max_connect_size.
func TestPreAuthLimits(t *testing.T) {
	t.Parallel()
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("ws/tls=%v", tlsOn), func(t *testing.T) {
			t.Parallel()
			var mut []func(*config.Config)
			if tlsOn {
				mut = append(mut, withTLS(t))
			}
			h := startServer(t, mut...)
			healthy := h.connect(wsBinary, "healthy", h.token(appA, "healthy"), "d")
			for i, op := range []byte{2, 1} { // binary, text
				c := h.dialRawWS(tlsOn)
				c.write(wsClientFrame(op, make([]byte, 1000), 64<<10, true))
				c.expectRefusal(protocol.CodeTooLarge, protocol.DisconnectProtocolError, 4008)
				expectHealthy(h, healthy, "healthy", i)
			}
			// A CONNECT that fills max_connect_size is read; one byte more
			// is not.
			connect := &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "big"), Device: "d"}
			size := func() int { return len(protocol.AppendFramed(nil, connect)) }
			for i := 0; size() <= h.cfg.MaxConnectSize; i++ {
				connect.Resume = append(connect.Resume, protocol.Position{Stream: fmt.Sprintf("t:topic-%03d", i), Epoch: "0123456789abcdef0123456789abcdef", Seq: 1})
			}
			connect.Resume = connect.Resume[:len(connect.Resume)-1]
			for size() != h.cfg.MaxConnectSize && len(connect.Client) < 200 { // a length may take another varint byte
				connect.Client = strings.Repeat("c", len(connect.Client)+h.cfg.MaxConnectSize-size())
			}
			if size() != h.cfg.MaxConnectSize {
				t.Fatalf("CONNECT message of %d bytes; want %d", size(), h.cfg.MaxConnectSize)
			}
			c := h.dialRawWS(tlsOn)
			c.send(connect)
			if fs := c.next(); len(fs) != 1 || fs[0].Type != protocol.TypeConnected {
				t.Fatalf("got %v; want CONNECTED", fs)
			}
			// Its header is enough: the rest is not sent.
			connect.Client += "c"
			p := protocol.AppendFramed(nil, connect)
			c = h.dialRawWS(tlsOn)
			c.write(wsClientFrame(2, p, uint64(len(p)), true)[:1000])
			c.expectRefusal(protocol.CodeTooLarge, protocol.DisconnectProtocolError, 4008)
			h.waitDisconnects(protocol.DisconnectProtocolError, 3)
		})
	}
	t.Run("tcp", func(t *testing.T) {
		t.Parallel()
		h := startServer(t)
		healthy := h.connect(rawTCP, "healthy", h.token(appA, "healthy"), "d")
		nc, err := net.DialTimeout("tcp", h.srv.TCPAddr(), waitTime)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		raw := rawFrames{t: t, nc: nc}
		if _, err := nc.Write(withPrefix(60000, make([]byte, 1000))); err != nil {
			t.Fatal(err)
		}
		if f := raw.read(); f.Type != protocol.TypeError || protocol.ErrorCode(f.Code) != protocol.CodeTooLarge {
			t.Fatalf("got %s %s; want ERROR too large", f.Type, describe(f))
		}
		if f := raw.read(); f.Type != protocol.TypeDisconnect || protocol.DisconnectCode(f.Code) != protocol.DisconnectProtocolError {
			t.Fatalf("got %s %s; want DISCONNECT protocol error", f.Type, describe(f))
		}
		_ = nc.SetReadDeadline(time.Now().Add(waitTime))
		if n, err := nc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
		}
		expectHealthy(h, healthy, "healthy", 1)
	})
}

// TestWSUnmaskedFrame sends an unmasked frame before and after CONNECT,
// with and without TLS: RFC 6455 requires the server to close with status
// 1002, which it does after ERROR malformed and DISCONNECT protocol error.
func TestWSUnmaskedFrame(t *testing.T) {
	t.Parallel()
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			t.Parallel()
			var mut []func(*config.Config)
			if tlsOn {
				mut = append(mut, withTLS(t))
			}
			h := startServer(t, mut...)
			healthy := h.connect(wsBinary, "healthy", h.token(appA, "healthy"), "d")
			connect := protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "u"), Device: "d"})

			// Before CONNECT: the CONNECT itself, unmasked.
			c := h.dialRawWS(tlsOn)
			c.write(wsClientFrame(2, connect, uint64(len(connect)), false))
			c.expectRefusal(protocol.CodeMalformed, protocol.DisconnectProtocolError, 1002)
			expectHealthy(h, healthy, "healthy", 1)

			// After CONNECT: an unmasked WebSocket ping.
			c = h.dialRawWS(tlsOn)
			c.write(wsClientFrame(2, connect, uint64(len(connect)), true))
			if fs := c.next(); len(fs) != 1 || fs[0].Type != protocol.TypeConnected {
				t.Fatalf("got %v; want CONNECTED", fs)
			}
			c.write(wsClientFrame(9, []byte("hi"), 2, false))
			c.expectRefusal(protocol.CodeMalformed, protocol.DisconnectProtocolError, 1002)
			expectHealthy(h, healthy, "healthy", 2)
			h.waitDisconnects(protocol.DisconnectProtocolError, 2)
		})
	}
}

// flood sends chunks of frames and waits for each chunk's answers (so it
// never has much in flight) until the server refuses it with ERROR rate
// limited and DISCONNECT policy violation. It returns the frames sent.
func flood(t *testing.T, c *tconn, chunk []*protocol.Frame, answers int) int {
	t.Helper()
	sent := 0
	for sent < 1_000_000 {
		if err := c.WriteFrames(chunk...); err != nil {
			t.Fatalf("write after %d frames: %v", sent, err)
		}
		sent += len(chunk)
		for range answers {
			f := c.next()
			switch f.Type {
			case protocol.TypePong:
				continue
			case protocol.TypeError:
				if protocol.ErrorCode(f.Code) != protocol.CodeRateLimited || !strings.Contains(f.Reason, "frames") {
					t.Fatalf("ERROR %d %q; want rate limited", f.Code, f.Reason)
				}
				c.expectDisconnect(protocol.DisconnectPolicyViolation)
				return sent
			default:
				t.Fatalf("got %s %s", f.Type, describe(f))
			}
		}
	}
	t.Fatalf("not limited after %d frames", sent)
	return sent
}

// TestFloodRateLimited floods the server with PINGs (binary and JSON
// batches), ACKs and WebSocket pings. Each flooder is refused once it is
// past the frame burst, while a healthy client on the same server keeps
// receiving and being answered.
func TestFloodRateLimited(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	healthy := h.connect(wsJSON, "healthy", h.token(appA, "healthy"), "d")
	burst := h.cfg.FrameBurst

	pings := make([]*protocol.Frame, 200)
	for i := range pings {
		pings[i] = &protocol.Frame{Type: protocol.TypePing, Time: int64(i)}
	}
	acks := make([]*protocol.Frame, 200)
	for i := range acks {
		acks[i] = &protocol.Frame{Type: protocol.TypeAck, Stream: "u:flooder", Seq: 1}
	}
	acks[len(acks)-1] = &protocol.Frame{Type: protocol.TypePing, Time: 1}
	floods := []struct {
		name    string
		tr      transport
		chunk   []*protocol.Frame
		answers int
	}{
		{"ping/ws-binary", wsBinary, pings, len(pings)},
		{"ping/ws-json batches", wsJSON, pings, len(pings)},
		{"ack/tcp", rawTCP, acks, 1},
		{"ack/ws-binary", wsBinary, acks, 1},
	}
	for i, fl := range floods {
		c := h.connect(fl.tr, "flooder", h.token(appA, "flooder"), fmt.Sprint("flood-", i))
		sent := flood(t, c, fl.chunk, fl.answers)
		if sent < burst {
			t.Fatalf("%s: refused after %d frames; the burst is %d", fl.name, sent, burst)
		}
		t.Logf("%s: refused after %d frames", fl.name, sent)
		expectHealthy(h, healthy, "healthy", i)
	}

	// WebSocket pings (control frames) count too.
	c := h.dialRawWS(false)
	c.send(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "flooder"), Device: "ws-ping"})
	if fs := c.next(); len(fs) != 1 || fs[0].Type != protocol.TypeConnected {
		t.Fatalf("got %v; want CONNECTED", fs)
	}
	var chunk []byte
	for range 200 {
		chunk = append(chunk, wsClientFrame(9, nil, 0, true)...)
	}
	sent := 0
flooding:
	for ; sent < 1_000_000; sent += 200 {
		c.write(chunk)
		for range 200 {
			op, p, err := c.readFrame()
			if err != nil {
				t.Fatalf("read after %d pings: %v", sent, err)
			}
			if op != 10 { // not a pong: the refusal
				if op != 2 {
					t.Fatalf("got opcode %d %q", op, p)
				}
				break flooding
			}
		}
	}
	if sent < burst {
		t.Fatalf("websocket pings: refused after %d; the burst is %d", sent, burst)
	}
	t.Logf("websocket pings: refused after %d", sent)
	h.waitDisconnects(protocol.DisconnectPolicyViolation, uint64(len(floods)+1))
	expectHealthy(h, healthy, "healthy", 99)
	if st := h.srv.GatewayStats(); st.RateLimited != uint64(len(floods)+1) || st.Disconnects[protocol.DisconnectPolicyViolation] != uint64(len(floods)+1) {
		t.Fatalf("rate limited %d, policy-violation disconnects %d; want %d", st.RateLimited, st.Disconnects[protocol.DisconnectPolicyViolation], len(floods)+1)
	}
}

// TestReplayAndChurnLimits recovers a topic's history again and again
// (SUBSCRIBE with a position, UNSUBSCRIBE). The replayed bytes stay within
// the connection's replay bucket: past it the recovery is answered "cannot
// recover" (a REPLY without recovered, saying why) and the client is
// subscribed live; and past the subscription burst it is refused with
// ERROR rate limited and DISCONNECT policy violation.
func TestReplayAndChurnLimits(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) {
		c.ReplayBurst, c.ReplayRate = 600<<10, 1 // about two full recoveries, then next to nothing
		c.SubscribeBurst = c.MaxSubscriptions
	})
	const topic = "news"
	pad := strings.Repeat("x", 1000)
	for i := range 200 { // 200 x (1000 + 64) bytes: within one recovery's budget
		h.publish(appA, topic, map[string]any{"n": i, "pad": pad})
	}
	healthy := h.connect(wsBinary, "healthy", h.token(appA, "healthy"), "d")
	c := h.connect(wsBinary, "churn", h.token(appA, "churn", topic), "d")
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1000, Topic: topic})
	epoch := c.expect(protocol.TypeReply).Epoch
	c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 1001, Topic: topic})
	c.expect(protocol.TypeReply)
	sub := func(id uint32) *protocol.Frame {
		return &protocol.Frame{Type: protocol.TypeSubscribe, ID: id, Topic: topic, Epoch: epoch, Seq: 0}
	}

	replayed, recovered, refused := 0, 0, 0
	id := uint32(0)
	for {
		id++
		c.write(sub(id))
		var reply *protocol.Frame
		for reply == nil {
			f := c.next()
			switch f.Type {
			case protocol.TypePush:
				replayed += len(f.Payload) + 64
			case protocol.TypeReply:
				reply = f
			case protocol.TypeError:
				if protocol.ErrorCode(f.Code) != protocol.CodeRateLimited || !strings.Contains(f.Reason, "SUBSCRIBE") {
					t.Fatalf("ERROR %d %q; want rate limited", f.Code, f.Reason)
				}
				c.expectDisconnect(protocol.DisconnectPolicyViolation)
				if id+2 <= uint32(h.cfg.SubscribeBurst) {
					t.Fatalf("refused at request %d; the burst is %d", id, h.cfg.SubscribeBurst)
				}
				if recovered < 1 || refused < 1 || replayed > h.cfg.ReplayBurst+h.cfg.ReplayRate*60 {
					t.Fatalf("%d recoveries, %d refused, %d bytes replayed", recovered, refused, replayed)
				}
				t.Logf("%d recoveries (%d bytes), %d refused, rate limited at request %d", recovered, replayed, refused, id)
				expectHealthy(h, healthy, "healthy", 1)
				return
			default:
				t.Fatalf("got %s %s", f.Type, describe(f))
			}
		}
		switch {
		case reply.Recovered:
			recovered++
			if refused > 0 {
				t.Fatalf("recovered again after a refusal")
			}
		case strings.Contains(reply.Reason, "replay limit"):
			refused++
		default:
			t.Fatalf("REPLY %s; want recovered or the replay limit", describe(reply))
		}
		if replayed > h.cfg.ReplayBurst {
			t.Fatalf("%d bytes replayed; the bucket holds %d", replayed, h.cfg.ReplayBurst)
		}
		id++
		c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: id, Topic: topic})
		if f := c.next(); f.Type == protocol.TypeError {
			c.expectDisconnect(protocol.DisconnectPolicyViolation)
			if recovered < 1 || refused < 1 {
				t.Fatalf("%d recoveries, %d refused", recovered, refused)
			}
			expectHealthy(h, healthy, "healthy", 1)
			return
		} else if f.Type != protocol.TypeReply {
			t.Fatalf("got %s %s; want REPLY", f.Type, describe(f))
		}
	}
}

// connect connects m or fails the test.
func (m *managed) connect() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		m.t.Fatalf("Connect: %v", err)
	}
}

// TestAutoAckBacklog connects a device with thousands of stored inbox
// messages through the Go SDK with AutoAck: it catches up without being
// rate limited, acknowledging per batch of pushes rather than per push.
func TestAutoAckBacklog(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	const n = 6000
	msgs := make([]map[string]any, n)
	for i := range msgs {
		msgs[i] = map[string]any{"user": "backlog", "data": i}
	}
	for i := 0; i < n; i += 2000 {
		h.apiOK("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": msgs[i : i+2000]}, nil)
	}
	for _, tr := range []transport{wsBinary, wsJSON, rawTCP} {
		acks := h.srv.node.Stats().Acks
		m := h.newManaged(client.Config{URLs: []string{h.url(tr)}, Token: h.token(appA, "backlog"), Device: "d-" + tr.name,
			AutoAck: true, DialOptions: client.DialOptions{Encoding: tr.enc}})
		m.connect()
		for i := range n {
			if msg := m.recv(); string(msg.Payload) != fmt.Sprint(i) {
				t.Fatalf("%s: message %d is %q", tr.name, i, msg.Payload)
			}
		}
		// The last ACK follows the last message handed over.
		waitFor(t, "the device's position at the end", func() error {
			last, acked, err := h.srv.node.Unread(context.Background(), appA, "backlog", "d-"+tr.name)
			if err == nil && acked != last {
				err = fmt.Errorf("acknowledged %d of %d", acked, last)
			}
			return err
		})
		// Before Close: a write racing with Close would fail on the
		// client's own closed socket and count as a disconnect.
		if d := m.disconnects(); len(d) > 0 {
			t.Fatalf("%s: disconnected: %v", tr.name, d)
		}
		_ = m.Close()
		// Batches are what one read hands over: smaller on a loaded
		// machine, never one push each.
		if sent := h.srv.node.Stats().Acks - acks; sent > n/4 {
			t.Fatalf("%s: %d ACKs for %d messages; want one per batch", tr.name, sent, n)
		}
	}
	if st := h.srv.GatewayStats(); st.RateLimited != 0 {
		t.Fatalf("%d connections rate limited", st.RateLimited)
	}
	// Every device acknowledged everything: none gets a message again.
	c := h.connect(wsBinary, "again", h.token(appA, "backlog"), "d-"+wsBinary.name)
	h.pushUser(appA, "backlog", "after")
	c.expectPush("u:backlog", []byte(`"after"`))
}

// TestResubscribe128 has the Go SDK, with the JSON encoding (the largest
// CONNECT), hold 128 topic subscriptions with positions and reconnect:
// its CONNECT fits before authentication, and all 128 SUBSCRIBEs with
// recovery pass the subscription rate.
func TestResubscribe128(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	topics := make([]string, h.cfg.MaxSubscriptions)
	for i := range topics {
		topics[i] = fmt.Sprintf("a-rather-long-topic-name-%03d", i)
	}
	m := h.newManaged(client.Config{URLs: []string{h.srv.WSURL()}, Token: h.token(appA, "many", "*"), Device: "d",
		Topics: topics, AutoAck: true, DialOptions: client.DialOptions{Encoding: client.JSON}})
	m.connect()
	for _, tp := range topics {
		h.waitSubscribers(appA, tp, 1)
	}
	for _, tp := range topics {
		h.publish(appA, tp, tp)
		m.expect("t:"+tp, `"`+tp+`"`)
	}
	h.pushUser(appA, "many", "inbox")
	m.expect("u:many", `"inbox"`)

	// Drop it twice: every topic is recovered (missed messages included).
	for round := range 2 {
		conn := h.waitDevice(appA, "many", "d", 0)
		if h.closeUser(appA, "many", protocol.NewDisconnect(protocol.DisconnectServerError)) != 1 {
			t.Fatal("not connected")
		}
		missed := topics[round*7]
		h.publish(appA, missed, "missed")
		h.waitDevice(appA, "many", "d", conn)
		m.expect("t:"+missed, `"missed"`)
		for _, tp := range topics {
			h.waitSubscribers(appA, tp, 1)
		}
	}
	h.publish(appA, topics[127], "last")
	m.expect("t:"+topics[127], `"last"`)
	if st := h.srv.GatewayStats(); st.RateLimited != 0 || st.Disconnects[protocol.DisconnectProtocolError] != 0 {
		t.Fatalf("rate limited %d, protocol errors %d", st.RateLimited, st.Disconnects[protocol.DisconnectProtocolError])
	}
}

// TestUnsubscribeBadName sends UNSUBSCRIBE with names no topic can have:
// each is answered ERROR bad name at once, not queued behind the
// connection's other subscription requests, and the connection stays.
func TestUnsubscribeBadName(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	c := h.connect(wsBinary, "c", h.token(appA, "u", "news"), "d")
	for i, name := range []string{"has space", strings.Repeat("t", 4000)} {
		c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: uint32(i + 1), Topic: name})
		c.expectError(protocol.CodeBadName, uint32(i+1))
	}
	c.subscribe(3, "news")
	c.ping(1)
}

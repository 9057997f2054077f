package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/protocol"
)

// managed is a client.Client under test with the states it went through.
type managed struct {
	*client.Client
	t testing.TB

	mu     sync.Mutex
	causes []error // causes of StateDisconnected
}

func (h *harness) newManaged(cfg client.Config) *managed {
	h.t.Helper()
	m := &managed{t: h.t}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	cfg.ConnectTimeout = waitTime
	cfg.OnState = func(s client.State, cause error) {
		if s == client.StateDisconnected {
			m.mu.Lock()
			m.causes = append(m.causes, cause)
			m.mu.Unlock()
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		h.t.Fatalf("client.New: %v", err)
	}
	m.Client = c
	h.t.Cleanup(func() { _ = c.Close() })
	return m
}

// recv returns the next message or fails the test.
func (m *managed) recv() client.Message {
	m.t.Helper()
	select {
	case msg, ok := <-m.Messages():
		if !ok {
			m.t.Fatalf("Messages closed: %v", m.Err())
		}
		return msg
	case <-time.After(waitTime):
		m.t.Fatalf("no message within %v", waitTime)
	}
	panic("unreachable")
}

func (m *managed) expect(stream, payload string) client.Message {
	m.t.Helper()
	msg := m.recv()
	if msg.Stream != stream || string(msg.Payload) != payload || msg.ID == "" || msg.Time.IsZero() {
		m.t.Fatalf("got message %+v (%q); want stream %q payload %q", msg, msg.Payload, stream, payload)
	}
	return msg
}

func (m *managed) disconnects() []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]error(nil), m.causes...)
}

// closeUser closes every local connection of user with d, as the server
// does when it kicks a connection for reasons of its own.
func (h *harness) closeUser(app, user string, d protocol.Disconnect) int {
	n := 0
	for _, c := range h.srv.hub.UserConns(app, user) {
		c.(*gateway.Conn).Close(d)
		n++
	}
	return n
}

// waitSubscribers waits until topic has n local subscribers.
func (h *harness) waitSubscribers(app, topic string, n int) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%d subscribers of %s", n, topic), func() error {
		if got := h.srv.hub.Subscribers(app, topic); got != n {
			return fmt.Errorf("%d subscribers", got)
		}
		return nil
	})
}

// waitDevice waits until user's device is connected with a conn id other
// than notConn, and returns the new conn id.
func (h *harness) waitDevice(app, user, device string, notConn uint64) uint64 {
	h.t.Helper()
	var id uint64
	waitFor(h.t, fmt.Sprintf("%s/%s to connect", user, device), func() error {
		for _, d := range h.presence(app, user).Devices {
			if d.Device == device && d.ConnID != notConn {
				id = d.ConnID
				return nil
			}
		}
		return errors.New("not connected")
	})
	return id
}

// TestManagedClient drives client.Client against real servers: it
// connects, subscribes, receives, reconnects (and resubscribes) after the
// server closes it with a reason that allows reconnecting, follows a
// shutdown to the alternate server, and stops for good when replaced.
func TestManagedClient(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	h2 := startServer(t) // where h sends its clients when it shuts down
	tok := h.token(appA, "alice", "news", "sports")
	m := h.newManaged(client.Config{
		URLs:   []string{h.srv.WSURL()},
		Token:  tok,
		Device: "laptop",
		Topics: []string{"news"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if sess, node := m.Session(); sess == "" || node != testNode {
		t.Fatalf("Session() = %q, %q", sess, node)
	}

	// Config.Topics are subscribed on connect; Subscribe adds more.
	h.waitSubscribers(appA, "news", 1)
	h.publish(appA, "news", "n1")
	m.expect("t:news", `"n1"`)
	if err := m.Subscribe(ctx, "sports"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	var pe *protocol.Error
	if err := m.Subscribe(ctx, "secret"); !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden {
		t.Fatalf("Subscribe to a topic the token does not allow: %v; want ERROR %d", err, protocol.CodeForbidden)
	}
	h.publish(appA, "sports", "s1")
	m.expect("t:sports", `"s1"`)
	h.pushUser(appA, "alice", "u1")
	m.expect("u:alice", `"u1"`)
	h.broadcast(appA, "b1")
	m.expect("b", `"b1"`)
	if _, err := m.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	// The server drops the connection with a reason that allows
	// reconnecting: the client comes back and subscribes again.
	first := h.waitDevice(appA, "alice", "laptop", 0)
	if n := h.closeUser(appA, "alice", protocol.NewDisconnect(protocol.DisconnectServerError)); n != 1 {
		t.Fatalf("closed %d connections; want 1", n)
	}
	h.waitDevice(appA, "alice", "laptop", first)
	h.waitSubscribers(appA, "news", 1)
	h.waitSubscribers(appA, "sports", 1)
	h.publish(appA, "news", "n2")
	m.expect("t:news", `"n2"`)
	h.publish(appA, "sports", "s2")
	m.expect("t:sports", `"s2"`)
	var d protocol.Disconnect
	if causes := m.disconnects(); len(causes) == 0 || !errors.As(causes[0], &d) || d.Code != protocol.DisconnectServerError {
		t.Fatalf("disconnect causes %v; want DISCONNECT %d first", causes, protocol.DisconnectServerError)
	}

	// h shuts down and sends its clients to h2.
	alt, err := url.Parse(h2.srv.WSURL())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.shutdown(alt.Host); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	h2.waitDevice(appA, "alice", "laptop", 0)
	h2.waitSubscribers(appA, "news", 1)
	h2.publish(appA, "news", "n3")
	m.expect("t:news", `"n3"`)
	h2.pushUser(appA, "alice", "u3")
	m.expect("u:alice", `"u3"`)

	// The same device logs in elsewhere: the client is told it was
	// replaced and stops for good.
	other := h2.connect(rawTCP, "other", tok, "laptop")
	select {
	case <-m.Done():
	case <-time.After(waitTime):
		t.Fatalf("the client did not stop after being replaced; state %s", m.State())
	}
	if err := m.Err(); !errors.As(err, &d) || d.Code != protocol.DisconnectReplaced {
		t.Fatalf("Err() = %v; want DISCONNECT %d", err, protocol.DisconnectReplaced)
	}
	if s := m.State(); s != client.StateClosed {
		t.Fatalf("state %s; want closed", s)
	}
	for range m.Messages() { // closed when the client stops
	}
	// It did not come back: the replacing connection still holds the device.
	h2.pushUser(appA, "alice", "u4")
	// The client did not acknowledge u3 (no AutoAck): the device's new
	// connection gets it from the inbox before u4.
	other.expectPush("u:alice", []byte(`"u3"`))
	other.expectPush("u:alice", []byte(`"u4"`))
	if p := h2.presence(appA, "alice"); len(p.Devices) != 1 || p.Devices[0].Transport != "tcp" {
		t.Fatalf("presence %+v; want only the replacing tcp connection", p)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestManagedClientKicked checks a managed client over TCP with the binary
// encoding and one over WebSocket with JSON: a kick stops them for good.
func TestManagedClientKicked(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	for _, tc := range []struct {
		name string
		url  string
		enc  client.Encoding
	}{
		{"tcp", "tcp://" + h.srv.TCPAddr(), client.Binary},
		{"ws-json", h.srv.WSURL(), client.JSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.withT(t)
			user := "kicked-" + tc.name
			cfg := client.Config{URLs: []string{tc.url}, Token: h.token(appA, user), Device: "d"}
			cfg.Encoding = tc.enc
			m := h.newManaged(cfg)
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			defer cancel()
			if err := m.Connect(ctx); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			h.apiOK("POST", "/v1/apps/app-a/users/"+user+"/messages", keyA, `{"b64":"AAEC/w=="}`, nil)
			if msg := m.recv(); msg.Stream != "u:"+user || string(msg.Payload) != "\x00\x01\x02\xff" {
				t.Fatalf("got %+v; want the binary payload", msg)
			}
			h.apiOK("POST", "/v1/apps/app-a/users/"+user+"/kick", keyA, map[string]string{"reason": "bye"}, nil)
			select {
			case <-m.Done():
			case <-time.After(waitTime):
				t.Fatalf("the client did not stop after a kick; state %s", m.State())
			}
			var d protocol.Disconnect
			if err := m.Err(); !errors.As(err, &d) || d.Code != protocol.DisconnectKicked || d.Reason != "bye" {
				t.Fatalf("Err() = %v; want DISCONNECT %d (bye)", err, protocol.DisconnectKicked)
			}
		})
	}
	// Neither came back.
	h.waitOpen(0)
}

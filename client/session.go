package client

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/protocol"
)

// session is one connection of a Client, from CONNECTED to its end. The
// Client's run goroutine reads it (serve); a heartbeat goroutine, owned by
// the session, pings it and watches for silence.
type session struct {
	conn      *Conn
	url       string
	connected *protocol.Frame
	interval  time.Duration // heartbeat; 0 = none
	start     time.Time
	lastRead  atomic.Int64 // time.Since(start) when the last frame was read
	busy      atomic.Bool  // the read loop is handing a message to the application

	mu      sync.Mutex
	ended   bool
	cause   error                     // first reason the session ended
	pending map[uint32]*request       // SUBSCRIBE/UNSUBSCRIBE by ID
	pings   map[int64]chan<- struct{} // PING Time → waiter; nil for heartbeats
	fatal   *protocol.Error           // fatal ERROR without ID: explains the DISCONNECT that follows

	// The inbox position to acknowledge (AutoAck) once the frames at hand
	// are handled; read loop only.
	ackStream string
	ackSeq    uint64

	hb   sync.WaitGroup // the heartbeat goroutine
	stop chan struct{}  // closed to stop the heartbeat
	done chan struct{}  // closed when the session has ended
}

// request is a SUBSCRIBE or UNSUBSCRIBE waiting for its REPLY or ERROR.
type request struct {
	ch        chan error // buffered: the read loop never blocks on it
	subscribe bool
	renew     bool // resubscription after (re)connect; nobody waits on ch
	topic     string
}

func newSession(conn *Conn, url string, connected *protocol.Frame, interval time.Duration) *session {
	return &session{
		conn:      conn,
		url:       url,
		connected: connected,
		interval:  interval,
		start:     time.Now(),
		pending:   make(map[uint32]*request),
		pings:     make(map[int64]chan<- struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// register records r as waiting for the answer to f. It fails when the
// session has ended.
func (s *session) register(f *protocol.Frame, r *request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.pending[f.ID] = r
	return true
}

// fail ends the session with cause err (unless it already has a cause) by
// closing the connection at once. It returns the session's cause.
func (s *session) fail(err error) error {
	s.mu.Lock()
	if s.cause == nil {
		s.cause = err
	}
	cause := s.cause
	s.mu.Unlock()
	if errors.Is(cause, ErrClosed) {
		_ = s.conn.Close() // a polite close: WebSocket close handshake
	} else {
		s.conn.abort()
	}
	return cause
}

func (s *session) touch() {
	s.lastRead.Store(int64(time.Since(s.start)))
}

// sendPing sends PING; ch, if not nil, is signalled when the PONG arrives.
// It returns the PING's Time, which the PONG echoes.
func (s *session) sendPing(ch chan<- struct{}) (int64, error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return 0, ErrConnectionLost
	}
	if len(s.pings) >= 64 { // heartbeats whose PONG never came
		for k, w := range s.pings {
			if w == nil {
				delete(s.pings, k)
			}
		}
	}
	key := time.Now().UnixMilli()
	for {
		if _, dup := s.pings[key]; !dup {
			break
		}
		key++ // keep keys unique: the PONG is matched by its Time
	}
	s.pings[key] = ch
	s.mu.Unlock()
	if err := s.conn.WriteFrame(&protocol.Frame{Type: protocol.TypePing, Time: key}); err != nil {
		s.forgetPing(key)
		s.fail(err)
		return key, err
	}
	return key, nil
}

func (s *session) forgetPing(key int64) {
	s.mu.Lock()
	delete(s.pings, key)
	s.mu.Unlock()
}

func (s *session) pong(key int64) {
	s.mu.Lock()
	ch := s.pings[key]
	delete(s.pings, key)
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// serve reads s until it ends and returns why.
func (c *Client) serve(s *session) error {
	for {
		f, err := s.conn.ReadFrame()
		if err == nil {
			s.touch()
			err = c.handle(s, f)
			if err == nil && !s.conn.Buffered() {
				err = s.flushAck()
			}
		} else {
			s.mu.Lock()
			if s.fatal != nil {
				// The server explained itself but did not say goodbye.
				err = fmt.Errorf("%w (after %w)", err, s.fatal)
			}
			s.mu.Unlock()
		}
		if err != nil {
			return c.endSession(s, err)
		}
	}
}

// endSession closes s, stops its heartbeat, forgets it and releases the
// goroutines waiting on it. It returns the session's cause.
func (c *Client) endSession(s *session, err error) error {
	cause := s.fail(err)
	close(s.stop)
	s.hb.Wait()
	c.uninstall(s) // before ended: a failed register means a new session is due
	s.mu.Lock()
	s.ended = true
	s.pending = nil
	s.pings = nil
	s.mu.Unlock()
	close(s.done)
	return cause
}

// handle acts on one frame from the server. An error ends the session.
func (c *Client) handle(s *session, f *protocol.Frame) error {
	switch f.Type {
	case protocol.TypePush:
		return c.push(s, f)
	case protocol.TypePing:
		return s.conn.WriteFrame(&protocol.Frame{Type: protocol.TypePong, Time: f.Time})
	case protocol.TypePong:
		s.pong(f.Time)
	case protocol.TypeReply:
		if f.Stream != "" && f.Epoch != "" {
			c.position(f)
		}
		if !f.Recovered && f.Reason != "" && f.Stream != "" {
			c.log.Warn("herald: missed messages cannot be recovered", "stream", f.Stream, "reason", f.Reason)
			if c.cfg.OnUnrecovered != nil {
				c.cfg.OnUnrecovered(f.Stream, f.Reason)
			}
		}
		if f.ID != 0 && !c.answer(s, f.ID, nil) {
			c.log.Debug("herald: unexpected reply", "id", f.ID)
		}
	case protocol.TypeError:
		pe := &protocol.Error{ID: f.ID, Code: protocol.ErrorCode(f.Code), Text: f.Reason}
		if f.ID != 0 && c.answer(s, f.ID, pe) {
			return nil
		}
		c.log.Warn("herald: server error", "err", pe)
		if pe.Code.Fatal() {
			s.mu.Lock()
			s.fatal = pe
			s.mu.Unlock()
		}
	case protocol.TypeDisconnect:
		d := protocol.DisconnectFrom(f)
		s.mu.Lock()
		pe := s.fatal
		s.mu.Unlock()
		if pe != nil {
			return &refusal{perr: pe, disc: d}
		}
		return d
	default:
		c.log.Debug("herald: ignored frame", "type", f.Type)
	}
	return nil
}

// answer completes the request with id. It reports whether there was one.
func (c *Client) answer(s *session, id uint32, pe *protocol.Error) bool {
	s.mu.Lock()
	r := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if r == nil {
		return false
	}
	switch {
	case pe != nil && r.renew:
		c.log.Warn("herald: subscription refused after reconnect", "topic", r.topic, "err", pe)
	case pe == nil && r.subscribe && !r.renew:
		// Remembered here, in the read goroutine, so that the next session
		// (started by this goroutine) cannot miss it.
		c.addTopic(r.topic)
	case pe == nil && !r.subscribe:
		// Pushes of the topic may have arrived since Unsubscribe forgot
		// its position; forget it again, for good this time.
		c.mu.Lock()
		delete(c.pos, topicStream(r.topic))
		c.mu.Unlock()
	}
	if pe != nil {
		r.ch <- pe
	} else {
		r.ch <- nil
	}
	return true
}

// push delivers a PUSH, unless it was delivered before, and acknowledges it
// when AutoAck is on.
func (c *Client) push(s *session, f *protocol.Frame) error {
	if err := c.checkGap(f); err != nil {
		if ferr := s.flushAck(); ferr != nil {
			return ferr
		}
		return err
	}
	if c.seen(f) {
		c.log.Debug("herald: duplicate dropped", "stream", f.Stream, "seq", f.Seq)
	} else {
		m := Message{Stream: f.Stream, Epoch: f.Epoch, ID: f.MsgID, Seq: f.Seq, Payload: f.Payload}
		if f.Time != 0 {
			m.Time = time.UnixMilli(f.Time)
		}
		if err := c.deliver(s, m); err != nil {
			return err
		}
		c.track(f)
	}
	// Only inboxes have server-side positions: a topic's or the broadcast
	// stream's position is the client's, sent when it comes back. ACK is
	// cumulative: one for the last push of what arrived together (a
	// server message, a TCP read) acknowledges them all.
	if c.cfg.AutoAck && f.Seq > 0 && strings.HasPrefix(f.Stream, "u:") {
		if s.ackStream != f.Stream {
			if err := s.flushAck(); err != nil {
				return err
			}
			s.ackStream = f.Stream
		}
		s.ackSeq = max(s.ackSeq, f.Seq)
	}
	return nil
}

// flushAck sends the pending AutoAck ACK, if any.
func (s *session) flushAck() error {
	if s.ackSeq == 0 {
		return nil
	}
	seq := s.ackSeq
	s.ackSeq = 0
	return s.conn.WriteFrame(&protocol.Frame{Type: protocol.TypeAck, Stream: s.ackStream, Seq: seq})
}

// deliver hands m to the application. Time spent here does not count as
// silence from the server.
func (c *Client) deliver(s *session, m Message) error {
	s.busy.Store(true)
	defer func() {
		s.touch()
		s.busy.Store(false)
	}()
	if c.cfg.OnMessage != nil {
		c.cfg.OnMessage(m)
		return nil
	}
	select {
	case c.msgs <- m:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// heartbeat pings s every interval and ends it when nothing was read for
// twice the interval although a PING has been waiting for an answer for at
// least one interval. The second condition keeps a stall of this process
// (a late timer, a laptop waking up) from being taken for a dead server: the
// connection is first given a PING and an interval to answer it.
func (c *Client) heartbeat(s *session) {
	defer s.hb.Done()
	const none = time.Duration(-1)
	iv := s.interval
	nextPing := iv
	unanswered := none // when the first PING since the last read was sent
	t := time.NewTimer(iv)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Since(s.start)
		last := time.Duration(s.lastRead.Load())
		if s.busy.Load() {
			last = now // blocked on the application, not on the network
		}
		if unanswered != none && last >= unanswered {
			unanswered = none
		}
		if unanswered != none && now-last >= 2*iv && now-unanswered >= iv {
			s.fail(fmt.Errorf("%w: nothing read for %v", ErrHeartbeatTimeout, (now - last).Round(time.Millisecond)))
			return
		}
		if now >= nextPing {
			if _, err := s.sendPing(nil); err != nil {
				return
			}
			if unanswered == none {
				unanswered = now
			}
			nextPing = now + iv
		}
		wake := nextPing
		if unanswered != none {
			wake = min(wake, max(last+2*iv, unanswered+iv))
		}
		t.Reset(max(wake-now, time.Millisecond))
	}
}

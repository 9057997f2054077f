package gateway

import (
	"errors"
	"fmt"
	"net"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/herald-push/herald/protocol"
)

// The WebSocket frame guard.
//
// nbio's WebSocket parser buffers a frame until it is whole, with one
// message size limit for every connection of the listener, and accepts
// unmasked client frames. The guard sits in front of it: it walks the frame
// headers of what a client sends, across reads, with a few bytes of state
// kept in Conn, and hands the bytes on unchanged when they are fine. It
// refuses an unmasked frame (RFC 6455 section 5.1: close 1002), a message
// over the limit as soon as its header says so (before CONNECT is accepted
// the limit is Limits.MaxConnect; after, MaxFrame for a text message and
// 4 x MaxFrame for a binary one), and it counts control frames (pings)
// toward the connection's frame rate.

// wsScan is the guard's state: where the client is in its stream of frames.
// Its fields live in Conn (as wsHN, wsFlags, wsLeft and wsMsg), spread over
// what would be padding, so the guard costs an idle connection nothing.
type wsScan struct {
	hn    uint8  // header bytes read of the current frame; 0 outside a header
	flags uint8  // opcode, fin, length kind of the current frame; text message
	left  uint32 // payload bytes of the current frame still to come
	msg   uint32 // payload bytes of the data message in progress
}

// wsScan.flags bits.
const (
	wsOpcode  = 0x0f // opcode of the current frame
	wsFin     = 0x10 // the current frame ends its message
	wsLen16   = 0x20 // the current frame has a 16-bit extended length
	wsLen64   = 0x40 // the current frame has a 64-bit extended length
	wsMsgText = 0x80 // the data message in progress is text
)

// wsVerdict is what wsScan.scan found.
type wsVerdict uint8

const (
	wsOK          wsVerdict = iota // everything scanned; nothing wrong so far
	wsMessageEnd                   // stopped after the end of a data message, as asked
	wsUnmasked                     // a frame without the mask bit
	wsTooLarge                     // a message over its limit
	wsBadControl                   // a control frame with more than 125 bytes of payload
	wsRateLimited                  // a control frame the rate limit refused
)

// wsLimits are the limits a scan applies.
type wsLimits struct {
	text, binary uint32 // largest text and binary message, in payload bytes
	// stopAtMessageEnd stops the scan after each data message, so that the
	// caller can apply what it says (CONNECT) before the next is judged.
	stopAtMessageEnd bool
}

// maxControlPayload is RFC 6455's bound on a control frame's payload.
const maxControlPayload = 125

// scan walks data, the next bytes from the client. It returns how many of
// them may be handed to the WebSocket parser and the verdict. On a refusal,
// n is where the refused frame starts in data (0 if it started in an
// earlier read). control is called for each control frame once its header
// is read; it returns false to refuse the frame.
func (s *wsScan) scan(data []byte, lim wsLimits, control func() bool) (n int, v wsVerdict) {
	start := 0 // where the current frame starts in data
	i := 0
	for i < len(data) {
		if s.hn == 0 && s.left > 0 {
			// Payload: skip it.
			k := min(uint32(len(data)-i), s.left)
			i += int(k)
			s.left -= k
			if s.left == 0 && s.frameDone() && lim.stopAtMessageEnd {
				return i, wsMessageEnd
			}
			continue
		}
		if s.hn == 0 {
			start = i
		}
		b := data[i]
		i++
		s.hn++
		switch {
		case s.hn == 1:
			s.flags = s.flags&wsMsgText | b&wsOpcode
			if b&0x80 != 0 {
				s.flags |= wsFin
			}
			continue
		case s.hn == 2:
			if b&0x80 == 0 {
				return start, wsUnmasked
			}
			switch l := b & 0x7f; l {
			case 126:
				s.flags |= wsLen16
				s.left = 0
				continue
			case 127:
				s.flags |= wsLen64
				s.left = 0
				continue
			default:
				s.left = uint32(l)
			}
		case s.flags&wsLen16 != 0 && s.hn <= 4, s.flags&wsLen64 != 0 && s.hn <= 10:
			if s.flags&wsLen64 != 0 && s.hn <= 6 {
				if b != 0 { // 2^32 bytes or more: over any limit
					return start, wsTooLarge
				}
				continue
			}
			s.left = s.left<<8 | uint32(b)
			if (s.flags&wsLen16 != 0 && s.hn < 4) || (s.flags&wsLen64 != 0 && s.hn < 10) {
				continue
			}
		default:
			// Masking key.
			if s.hn == s.headerLen() {
				s.hn = 0
				if s.left == 0 && s.frameDone() && lim.stopAtMessageEnd {
					return i, wsMessageEnd
				}
			}
			continue
		}
		// The payload length is known: judge the frame.
		if v := s.judge(lim, control); v != wsOK {
			return start, v
		}
	}
	return len(data), wsOK
}

// headerLen returns the length of the current frame's header.
func (s *wsScan) headerLen() uint8 {
	switch {
	case s.flags&wsLen16 != 0:
		return 2 + 2 + 4
	case s.flags&wsLen64 != 0:
		return 2 + 8 + 4
	}
	return 2 + 4
}

// judge checks the current frame once its payload length is known.
func (s *wsScan) judge(lim wsLimits, control func() bool) wsVerdict {
	op := s.flags & wsOpcode
	if op >= 8 {
		if s.left > maxControlPayload {
			return wsBadControl
		}
		if !control() {
			return wsRateLimited
		}
		return wsOK
	}
	total := uint64(s.left)
	if op == 0 {
		total += uint64(s.msg) // continuation
	} else if op == 1 {
		s.flags |= wsMsgText
	} else {
		s.flags &^= wsMsgText
	}
	limit := lim.binary
	if s.flags&wsMsgText != 0 {
		limit = lim.text
	}
	if total > uint64(limit) {
		return wsTooLarge
	}
	s.msg = uint32(total)
	return wsOK
}

// frameDone records the end of the current frame's payload and reports
// whether it ended a data message.
func (s *wsScan) frameDone() bool {
	if s.flags&wsOpcode >= 8 || s.flags&wsFin == 0 {
		return false
	}
	s.msg = 0
	return true
}

// wsReader is a Conn seen as nbhttp's reader of an upgraded connection:
// after the upgrade the event loop hands every read (decrypted, with TLS)
// to it, and it hands what the guard lets through to the WebSocket parser.
type wsReader Conn

var _ nbhttp.ParserCloser = (*wsReader)(nil)

// UnderlayerConn implements nbhttp.ParserCloser.
func (r *wsReader) UnderlayerConn() net.Conn { return r.ws.UnderlayerConn() }

// CloseAndClean implements nbhttp.ParserCloser.
func (r *wsReader) CloseAndClean(err error) { r.ws.CloseAndClean(err) }

// Parse implements nbhttp.ParserCloser. It runs on the event loop.
func (r *wsReader) Parse(data []byte) error {
	c := (*Conn)(r)
	g := c.g
	for len(data) > 0 {
		if c.Closed() {
			return nil
		}
		lim := g.wsLimits
		if c.state.Load() == stateOpen {
			lim = g.wsPreAuth
		}
		s := wsScan{hn: c.wsHN, flags: c.wsFlags, left: c.wsLeft, msg: c.wsMsg}
		n, v := s.scan(data, lim, func() bool { return g.allowFrame(c, g.cfg.Now().UnixMilli()) })
		c.wsHN, c.wsFlags, c.wsLeft, c.wsMsg = s.hn, s.flags, s.left, s.msg
		if n > 0 {
			if err := c.ws.Parse(data[:n]); err != nil {
				return err
			}
		}
		data = data[n:]
		switch v {
		case wsOK, wsMessageEnd:
			continue
		case wsUnmasked:
			g.wsProtocolError(c, errors.New("websocket: unmasked client frame"))
		case wsBadControl:
			g.wsProtocolError(c, fmt.Errorf("websocket: control frame over %d bytes", maxControlPayload))
		case wsTooLarge:
			limit := lim.binary
			if s.flags&wsMsgText != 0 {
				limit = lim.text
			}
			g.decodeError(c, fmt.Errorf("%w: websocket message over %d bytes", protocol.ErrTooLarge, limit))
		case wsRateLimited:
			g.rateLimited(c, "frames")
		}
		return nil
	}
	return nil
}

// wsProtocolError answers a broken WebSocket frame: ERROR malformed,
// DISCONNECT protocol error and close status 1002 (protocol error).
func (g *Gateway) wsProtocolError(c *Conn, err error) {
	g.stats.decodeErrors.Add(1)
	g.log.Info("bad websocket frame", "conn_id", c.id, "remote", c.RemoteAddr(), "err", err)
	_ = c.SendFrame((&protocol.Error{Code: protocol.CodeMalformed, Text: err.Error()}).Frame())
	c.close(protocol.NewDisconnect(protocol.DisconnectProtocolError), wsCloseProtocolError)
}

// wsCloseProtocolError is RFC 6455's close status for a protocol error.
const wsCloseProtocolError = 1002

// guardWS puts the frame guard in front of wc's parser. It runs in the
// upgrade handler, on the event loop, before any frame can arrive.
func guardWS(c *Conn, wc *websocket.Conn) error {
	nc := nbioConn(wc.Conn)
	if nc == nil {
		return fmt.Errorf("gateway: websocket on %T, not an event loop connection", wc.Conn)
	}
	if _, ok := nc.Session().(*websocket.Conn); !ok {
		return fmt.Errorf("gateway: upgraded connection has session %T", nc.Session())
	}
	nc.SetSession((*wsReader)(c))
	return nil
}

// nbioConn returns the event loop connection under conn, or nil.
func nbioConn(conn net.Conn) *nbio.Conn {
	for range 4 {
		switch v := conn.(type) {
		case *nbio.Conn:
			return v
		case *tls.Conn:
			conn = v.Conn()
		case *nbhttp.Conn:
			conn = v.Conn
		default:
			return nil
		}
	}
	return nil
}

// Package client is the Go SDK of Herald, a real-time push server. It
// imports only the protocol package, the standard library and
// github.com/coder/websocket.
//
// It has two levels:
//
//   - Client is what applications use: it connects to one of several
//     URLs, authenticates, subscribes to topics, delivers pushed messages,
//     sends heartbeats, and reconnects with exponential backoff and jitter,
//     resuming every stream from the last message it delivered. It stops
//     for good only on Close, on a DISCONNECT that forbids reconnecting
//     (replaced, kicked, auth failed, duplicate refused) or when the
//     server refuses its token.
//   - Conn is a single connection with no reconnection and no automatic
//     behaviour, for tests and load generators: DialConn, Handshake,
//     WriteFrame, ReadFrame, Close.
//
// Both speak WebSocket (ws://, wss://; binary or JSON encoding) and raw TCP
// (tcp://, tls://; binary encoding).
//
// # Delivery
//
// Messages of one stream arrive in order. A message the server sends again
// after a reconnect (same stream and epoch, sequence not after the last one
// delivered) is dropped; across a change of epoch, drop duplicates by
// Message.ID. With Config.AutoAck the Client acknowledges the inbox
// messages once the application has them, with one cumulative ACK per
// batch that arrived together; otherwise call Client.Ack.
//
// A message that skips sequence numbers of its stream (a gap) is not
// delivered: the session ends with ErrGap and the Client reconnects from
// its positions, so that the server sends the skipped messages first. If
// the server skips the same numbers again, it no longer has them (they
// expired), and the stream goes on.
//
// After a reconnect the server resends the inbox from the device's stored
// position, and the Client resubscribes to each topic (and rejoins the
// broadcast stream) from the last position it saw, so the server replays
// what was published meanwhile from its history. When it cannot (the
// history no longer holds it, or the server's data was reset),
// Config.OnUnrecovered is called with the stream and the reason: the
// application should then re-fetch that state from its backend.
//
// # Usage
//
//	c, err := client.New(client.Config{
//		URLs:    []string{"wss://push.example.com/ws"},
//		Token:   token, // minted by the application backend
//		Device:  "laptop-1",
//		Topics:  []string{"news"},
//		AutoAck: true,
//	})
//	if err != nil {
//		return err
//	}
//	if err := c.Connect(ctx); err != nil {
//		return err // for example a *protocol.Error with protocol.CodeBadToken
//	}
//	defer c.Close()
//	for m := range c.Messages() { // closed when the Client stops
//		fmt.Printf("%s #%d: %s\n", m.Stream, m.Seq, m.Payload)
//	}
//	return c.Err()
package client

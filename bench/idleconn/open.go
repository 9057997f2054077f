package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/protocol"
)

// opener opens idle connections: dial, CONNECT as a distinct user with one
// device, SUBSCRIBE to one topic and wait for the REPLY.
type opener struct {
	url     string // ws://host:port/ws or tcp://host:port
	app     string
	secret  []byte
	topic   string
	src     []string // source addresses, used round robin by connection index
	timeout time.Duration
}

// user returns the user id of connection i; the prefix keeps warm-up and
// measured users apart.
func user(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// open opens connection number i for user u.
func (o *opener) open(ctx context.Context, i int, u string) (_ *client.Conn, err error) {
	tok, err := auth.Mint(o.app, o.secret, u, []string{o.topic}, 6*time.Hour, time.Now())
	if err != nil {
		return nil, fmt.Errorf("mint token: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := client.DialConn(ctx, o.url, client.DialOptions{LocalAddr: o.src[i%len(o.src)]})
	if err != nil {
		return nil, err
	}
	// Bound every read below: closing the Conn unblocks ReadFrame.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		if !stop() && err == nil {
			err = fmt.Errorf("subscribe: %w", context.Cause(ctx))
		}
		if err != nil {
			_ = c.Close()
		}
	}()
	if _, err := c.Handshake(ctx, tok, "d1", nil); err != nil {
		return nil, err
	}
	if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: o.topic}); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	for range 16 { // the REPLY comes first; tolerate a few unrelated frames
		f, err := c.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		switch f.Type {
		case protocol.TypeReply:
			if f.ID == 1 {
				return c, nil
			}
		case protocol.TypeError:
			return nil, fmt.Errorf("subscribe: server error %d: %s", f.Code, f.Reason)
		case protocol.TypeDisconnect:
			return nil, fmt.Errorf("subscribe: %w", protocol.DisconnectFrom(f))
		case protocol.TypePing:
			if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypePong, Time: f.Time}); err != nil {
				return nil, fmt.Errorf("subscribe: %w", err)
			}
		}
	}
	return nil, errors.New("subscribe: no REPLY among the first 16 frames")
}

// openResult is what openMany returns.
type openResult struct {
	conns  []*client.Conn // kept referenced: an unreachable socket is closed by its finalizer
	failed int
	errs   []string // the first few errors
}

// maxErrs bounds the error messages kept.
const maxErrs = 5

// openMany opens count connections numbered first..first+count-1 for users
// prefix+index, at most rate attempts per second and conc in flight. It
// stops early only if ctx ends; connections not attempted count as failed.
// progress, if set, is called about once a second with the counts so far.
func (o *opener) openMany(ctx context.Context, prefix string, first, count, rate, conc int, progress func(opened, failed int)) openResult {
	var (
		mu     sync.Mutex
		res    openResult
		wg     sync.WaitGroup
		opened atomic.Int64
		failed atomic.Int64
	)
	res.conns = make([]*client.Conn, 0, count)
	sem := make(chan struct{}, conc)
	interval := max(time.Second/time.Duration(rate), time.Microsecond)
	tick := time.NewTicker(interval)
	defer tick.Stop()

	done := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					progress(int(opened.Load()), int(failed.Load()))
				}
			}
		}()
	}

	attempted := 0
loop:
	for i := first; i < first+count; i++ {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		select {
		case <-ctx.Done():
			break loop
		case sem <- struct{}{}:
		}
		attempted++
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := o.open(ctx, i, user(prefix, i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed.Add(1)
				res.failed++
				if len(res.errs) < maxErrs {
					res.errs = append(res.errs, fmt.Sprintf("conn %d: %v", i, err))
				}
				return
			}
			opened.Add(1)
			res.conns = append(res.conns, c)
		}(i)
	}
	wg.Wait() // every attempt is bounded by o.timeout
	close(done)
	pwg.Wait()
	if rest := count - attempted; rest > 0 {
		res.failed += rest
		if len(res.errs) < maxErrs {
			res.errs = append(res.errs, fmt.Sprintf("%d connections not attempted: %v", rest, context.Cause(ctx)))
		}
	}
	return res
}

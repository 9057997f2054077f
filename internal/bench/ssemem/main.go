// Command ssemem measures the server's memory per idle SSE connection, as
// `herald bench connect` does for WebSocket and TCP: it starts a server
// (the herald binary given by -exe) on loopback, opens -warmup streams and
// takes the server's baseline RSS (median of five samples), opens -conns
// more, each authenticated and subscribed to one topic, holds them, samples
// again and prints the difference per connection.
//
//	go build -o /tmp/herald ./cmd/herald
//	go run ./internal/bench/ssemem -exe /tmp/herald -conns 19000 -hold 10s
//
// The streams are raw sockets that read the response up to the REPLY of
// their SUBSCRIBE and then sit idle; their frames go up with POSTs over a
// small pool of keep-alive connections. No goroutine per stream on either
// side.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/bench"
	"github.com/herald-push/herald/protocol"
)

func main() {
	exe := flag.String("exe", "herald", "herald binary to start")
	conns := flag.Int("conns", 19000, "measured SSE connections")
	warmup := flag.Int("warmup", 200, "connections opened before the baseline (not counted)")
	hold := flag.Duration("hold", 10*time.Second, "how long to hold the connections before sampling")
	concurrency := flag.Int("concurrency", 64, "connections set up at once")
	serverArgs := flag.String("server-args", "", "extra flags for herald serve")
	flag.Parse()
	if err := run(*exe, *conns, *warmup, *hold, *concurrency, strings.Fields(*serverArgs)); err != nil {
		fmt.Fprintln(os.Stderr, "ssemem:", err)
		os.Exit(1)
	}
}

func run(exe string, conns, warmup int, hold time.Duration, concurrency int, extra []string) error {
	ctx := context.Background()
	t, err := bench.Spawn(ctx, exe, extra)
	if err != nil {
		return err
	}
	defer t.Stop()
	u, err := url.Parse(t.WSURL)
	if err != nil {
		return fmt.Errorf("websocket url: %w", err)
	}
	o := &opener{t: t, addr: u.Host, base: "http://" + u.Host,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency, IdleConnTimeout: time.Minute}}}

	if _, err := o.open(ctx, "sse-warm", warmup, concurrency); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(2 * time.Second) // let the server settle before the baseline
	base := median(ctx, t)
	g0 := goroutines(t)
	start := time.Now()
	failed, err := o.open(ctx, "sse", conns, concurrency)
	if err != nil {
		return err
	}
	ramp := time.Since(start)
	time.Sleep(hold)
	after := median(ctx, t)
	g1 := goroutines(t)
	open := conns - failed
	if open == 0 {
		return errors.New("no connection opened")
	}
	per := float64(after.RSS-base.RSS) / float64(open) / 1024
	fmt.Printf("transport=sse conns=%d failed=%d ramp=%v hold=%v baseline_rss=%.1fMiB rss=%.1fMiB rss_per_conn=%.2fKiB goroutines=%d->%d\n",
		open, failed, ramp.Round(time.Millisecond), hold, float64(base.RSS)/(1<<20), float64(after.RSS)/(1<<20), per, g0, g1)
	runtime.KeepAlive(o.held)
	return nil
}

// median samples the server five times, 500 ms apart, and returns the
// sample with the median RSS.
func median(ctx context.Context, t *bench.Target) bench.ServerSample {
	var ss []bench.ServerSample
	for i := range 5 {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		s, err := t.SampleServer(ctx)
		if err == nil {
			ss = append(ss, s)
		}
	}
	if len(ss) == 0 {
		return bench.ServerSample{}
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].RSS < ss[j].RSS })
	return ss[len(ss)/2]
}

// goroutines returns the server's go_goroutines, from /metrics (-1 if
// unknown).
func goroutines(t *bench.Target) int {
	resp, err := http.Get(t.APIURL + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			var n int
			if _, err := fmt.Sscan(v, &n); err == nil {
				return n
			}
		}
	}
	return -1
}

// opener opens SSE connections and keeps them.
type opener struct {
	t    *bench.Target
	addr string
	base string
	http *http.Client
	mu   sync.Mutex
	held []net.Conn
}

// open opens n connections for users prefix-0 ... with at most c at once,
// and returns how many failed (the first error is printed).
func (o *opener) open(ctx context.Context, prefix string, n, c int) (int, error) {
	var next, failed atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				nc, err := o.one(ctx, fmt.Sprintf("%s-%d", prefix, i))
				if err != nil {
					failed.Add(1)
					once.Do(func() { fmt.Fprintln(os.Stderr, "ssemem: first failure:", err) })
					continue
				}
				o.mu.Lock()
				o.held = append(o.held, nc)
				o.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return int(failed.Load()), nil
}

// one opens one stream, authenticates as user and subscribes to a topic.
func (o *opener) one(ctx context.Context, user string) (net.Conn, error) {
	tok, err := o.t.Token(user, time.Hour)
	if err != nil {
		return nil, err
	}
	nc, err := net.DialTimeout("tcp", o.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(nc, "GET /sse HTTP/1.1\r\nHost: "+o.addr+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	data, err := nextData(br)
	if err != nil {
		return nil, fmt.Errorf("session event: %w", err)
	}
	var first struct{ Path string }
	if err := json.Unmarshal(data, &first); err != nil || first.Path == "" {
		return nil, fmt.Errorf("session event %q: %v", data, err)
	}
	body := protocol.AppendJSONBatch(nil, []*protocol.Encoded{
		protocol.Encode(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: tok, Device: "d"}),
		protocol.Encode(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "bench"}),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+first.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := o.http.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return nil, fmt.Errorf("POST: status %d", resp.StatusCode)
	}
	for {
		data, err := nextData(br)
		if err != nil {
			return nil, fmt.Errorf("waiting for the REPLY: %w", err)
		}
		if bytes.Contains(data, []byte(`"type":"reply"`)) {
			break
		}
		if bytes.Contains(data, []byte(`"type":"error"`)) || bytes.Contains(data, []byte(`"type":"disconnect"`)) {
			return nil, fmt.Errorf("refused: %s", data)
		}
	}
	if rest, _ := br.Peek(br.Buffered()); len(bytes.TrimSpace(rest)) > 0 { // the chunk's CRLF may be left
		return nil, fmt.Errorf("more data after the REPLY: %q", rest)
	}
	_ = nc.SetDeadline(time.Time{})
	ok = true
	return nc, nil
}

// nextData returns the data of the next SSE event, skipping the HTTP head
// and chunk sizes (lines that are not "data:").
func nextData(br *bufio.Reader) ([]byte, error) {
	var data []byte
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if rest, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			data = append(data, rest...)
			continue
		}
		if len(line) == 0 && data != nil {
			return data, nil
		}
	}
}

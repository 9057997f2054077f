package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// payloadHeader is the size of what every bench message starts with: the
// message's sequence number and the time it was scheduled to be sent (unix
// nanoseconds). Latency is measured from the scheduled time, so a
// publisher that falls behind shows up as latency instead of hiding it
// (open loop, no coordinated omission).
const payloadHeader = 16

// makePayload returns a payload of size bytes (at least payloadHeader).
func makePayload(seq int, scheduled time.Time, size int) []byte {
	p := make([]byte, max(size, payloadHeader))
	binary.BigEndian.PutUint64(p, uint64(seq))
	binary.BigEndian.PutUint64(p[8:], uint64(scheduled.UnixNano()))
	for i := payloadHeader; i < len(p); i++ {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// parsePayload reads the header of a bench payload.
func parsePayload(p []byte) (seq int, scheduled time.Time, ok bool) {
	if len(p) < payloadHeader {
		return 0, time.Time{}, false
	}
	return int(binary.BigEndian.Uint64(p)), time.Unix(0, int64(binary.BigEndian.Uint64(p[8:]))), true
}

// openLoop calls send(seq, scheduled) for seq 0..n-1 at rate per second,
// on up to conc goroutines, on schedule whether or not earlier calls have
// returned. It stops early when ctx is done and returns how many it started.
func openLoop(ctx context.Context, start time.Time, rate float64, n, conc int, send func(seq int, scheduled time.Time)) int {
	type job struct {
		seq   int
		sched time.Time
	}
	jobs := make(chan job, 4096)
	var wg sync.WaitGroup
	for range max(conc, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				send(j.seq, j.sched)
			}
		}()
	}
	started := 0
	interval := time.Duration(float64(time.Second) / rate)
	for seq := 0; seq < n; seq++ {
		sched := start.Add(time.Duration(seq) * interval)
		if d := time.Until(sched); d > 0 {
			t := time.NewTimer(d) // the schedule itself, not synchronisation
			select {
			case <-ctx.Done():
				t.Stop()
				close(jobs)
				wg.Wait()
				return started
			case <-t.C:
			}
		}
		select {
		case jobs <- job{seq, sched}:
			started++
		case <-ctx.Done():
			close(jobs)
			wg.Wait()
			return started
		}
	}
	close(jobs)
	wg.Wait()
	return started
}

// apiClient sends requests to the server API: with several targets (the
// API nodes of a cluster), to each in turn.
type apiClient struct {
	ts   []*Target
	next atomic.Uint64
	http *http.Client
}

func newAPIClient(ts []*Target, conc int) *apiClient {
	tr := &http.Transport{MaxIdleConns: conc * 2 * len(ts), MaxIdleConnsPerHost: conc * 2, IdleConnTimeout: time.Minute}
	return &apiClient{ts: ts, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// target returns the API node of the next request.
func (a *apiClient) target() *Target {
	return a.ts[(a.next.Add(1)-1)%uint64(len(a.ts))]
}

func (a *apiClient) close() { a.http.CloseIdleConnections() }

// post sends a JSON body and returns the status code.
func (a *apiClient) post(ctx context.Context, path string, body any) (int, error) {
	return a.postDecode(ctx, path, body, nil)
}

// postDecode is post that also decodes a 200 answer's JSON body into out
// (if not nil). An answer that does not decode is an error.
func (a *apiClient) postDecode(ctx context.Context, path string, body any, out any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	t := a.target()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.APIURL+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+t.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
	}
	drain(resp.Body)
	return resp.StatusCode, err
}

// message is the API body of a bench message.
func message(id string, payload []byte) map[string]string {
	return map[string]string{"id": id, "b64": base64.StdEncoding.EncodeToString(payload)}
}

// statusKind names an API outcome for error counts.
func statusKind(status int, err error) string {
	if err != nil {
		return "transport error"
	}
	return fmt.Sprintf("http %d", status)
}

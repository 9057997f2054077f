package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/redisstore"
)

// BenchmarkAppend measures durable appends of one 100-byte message with an
// id per call, from W concurrent writers each on its own stream or all on
// one stream, against the engines the cluster store could be built on:
//
//	redis=shared       this store on the shared Redis, as it is configured
//	redis=always       this store on a redis-server of the benchmark's own,
//	                   appendonly yes, appendfsync always (durable)
//	nats=shared        JetStream on the shared nats-server: one file-storage
//	                   stream, a subject per Herald stream, publish with ack
//	                   and Nats-Msg-Id (no per-stream seq: JetStream's seq
//	                   is the whole stream's)
//	nats=shared-cas    the same with a per-subject seq of Herald's own: a
//	                   header, published with Nats-Expected-Last-Subject-
//	                   Sequence, retried after reading the subject's last
//	                   message when another writer came first
//	nats=always        nats=shared on a nats-server of the benchmark's own
//	                   with sync_interval always (durable; needs
//	                   HERALD_BENCH_NATS_SERVER, a nats-server 2.10 or later)
//	nats=always-cas    nats=shared-cas on that server
//
// It reports appends/s, and the CPU time per append of the benchmark
// process (client) and of the server process (read from /proc; for the
// shared servers it includes whatever else they serve meanwhile).
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./internal/store/redisstore/
func BenchmarkAppend(b *testing.B) {
	engines := []struct {
		name string
		run  func(b *testing.B)
	}{
		{"redis=shared", benchRedisShared},
		{"redis=always", benchRedisAlways},
		{"nats=shared", func(b *testing.B) { benchNATSShared(b, false) }},
		{"nats=shared-cas", func(b *testing.B) { benchNATSShared(b, true) }},
		{"nats=always", func(b *testing.B) { benchNATSAlways(b, false) }},
		{"nats=always-cas", func(b *testing.B) { benchNATSAlways(b, true) }},
	}
	for _, e := range engines {
		b.Run(e.name, e.run)
	}
}

// appender appends message i of writer w to stream.
type appender func(ctx context.Context, stream string, w, i int) error

// benchShapes runs the writer counts and stream shapes against one engine.
// newAppender is called once per shape, with a name unique to it.
func benchShapes(b *testing.B, serverPID int, newAppender func(b *testing.B, name string) appender) {
	for _, writers := range []int{1, 8, 64} {
		for _, shared := range []bool{false, true} {
			streams := "each"
			if shared {
				streams = "one"
			}
			b.Run(fmt.Sprintf("writers=%d/streams=%s", writers, streams), func(b *testing.B) {
				app := newAppender(b, randomHex())
				runWriters(b, writers, serverPID, func(ctx context.Context, w, i int) error {
					stream := "one"
					if !shared {
						stream = fmt.Sprint("s", w)
					}
					return app(ctx, stream, w, i)
				})
			})
		}
	}
}

// runWriters runs b.N appends from exactly writers goroutines and reports
// appends/s and CPU per append.
func runWriters(b *testing.B, writers, serverPID int, op func(ctx context.Context, w, i int) error) {
	ctx := b.Context()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	client, server := procCPU(os.Getpid()), procCPU(serverPID)
	for w := range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(ctx, w, int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	client, server = procCPU(os.Getpid())-client, procCPU(serverPID)-server
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	if client > 0 {
		b.ReportMetric(float64(client.Microseconds())/float64(b.N), "client-cpu-µs/append")
	}
	if server > 0 {
		b.ReportMetric(float64(server.Microseconds())/float64(b.N), "server-cpu-µs/append")
	}
}

// procCPU returns the user and system CPU time of process pid from
// /proc, or 0 where that cannot be read. It assumes 100 clock ticks a
// second, as Linux has on every common platform.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

var payload100 = make([]byte, 100)

func randomHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// storeAppender appends through a redisstore.Store.
func storeAppender(s store.Store) appender {
	return func(ctx context.Context, stream string, w, i int) error {
		_, err := s.Append(ctx, stream, store.Message{ID: fmt.Sprintf("%d-%d", w, i), Payload: payload100})
		return err
	}
}

// openBench opens a store for a benchmark, with a connection per writer
// (the default pool, 10 per CPU, would bound W=64).
func openBench(b *testing.B, addr, prefix string) *redisstore.Store {
	s, err := redisstore.Open(b.Context(), redisstore.Options{Addr: addr, Prefix: prefix, PoolSize: 100})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func benchRedisShared(b *testing.B) {
	addr := sharedRedis(b)
	pid := redisPID(b, addr)
	benchShapes(b, pid, func(b *testing.B, _ string) appender {
		return storeAppender(openBench(b, addr, newPrefix(b, addr)))
	})
}

func benchRedisAlways(b *testing.B) {
	srv := startRedis(b, b.TempDir(), "--appendonly", "yes", "--appendfsync", "always")
	benchShapes(b, srv.pid(), func(b *testing.B, name string) appender {
		s := openBench(b, srv.addr(), "bench-"+name+":")
		if d := s.Durability(); !d.Durable {
			b.Fatalf("own redis-server is not durable: %s", d)
		}
		return storeAppender(s)
	})
}

// redisPID returns the process id of the Redis at addr, if it runs on
// this machine (a loopback address), else 0.
func redisPID(b *testing.B, addr string) int {
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return 0
	}
	rdb := newClient(addr)
	defer rdb.Close()
	info, err := rdb.Info(b.Context(), "server").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	return 0
}

// sharedNATS returns the URL of the shared nats-server (HERALD_TEST_NATS).
func sharedNATS(tb testing.TB) string {
	addr := service(tb, "nats", "HERALD_TEST_NATS", "127.0.0.1:4222")
	return "nats://" + strings.TrimPrefix(addr, "nats://")
}

func benchNATSShared(b *testing.B, cas bool) {
	url := sharedNATS(b)
	benchNATS(b, url, natsServerPID(), cas)
}

// benchNATSAlways runs a nats-server of the benchmark's own with
// sync_interval always: JetStream fsyncs every message before its ack.
func benchNATSAlways(b *testing.B, cas bool) {
	bin := os.Getenv("HERALD_BENCH_NATS_SERVER")
	if bin == "" {
		b.Skip("HERALD_BENCH_NATS_SERVER (a nats-server 2.10 or later, for sync_interval always) is not set")
	}
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	conf := filepath.Join(dir, "nats.conf")
	err = os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", port, filepath.Join(dir, "js")), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf, "-l", filepath.Join(dir, "nats.log"))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	waitFor(b, 20*time.Second, "own nats-server", func() error {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
		}
		return err
	})
	benchNATS(b, url, cmd.Process.Pid, cas)
}

// natsServerPID returns the pid of the one nats-server process on this
// machine, or 0 if there is not exactly one.
func natsServerPID() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == "nats-server" {
			if found != 0 {
				return 0
			}
			found = pid
		}
	}
	return found
}

// benchNATS measures JetStream appends on url: one file-storage stream
// per shape with a subject per Herald stream, one connection (as one node
// would have), deleted afterwards.
func benchNATS(b *testing.B, url string, serverPID int, cas bool) {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatalf("connecting to %s: %v", url, err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	benchShapes(b, serverPID, func(b *testing.B, name string) appender {
		cfg := jetstream.StreamConfig{
			Name:       "HERALD_BENCH_" + name,
			Subjects:   []string{"herald-bench-" + name + ".>"},
			Storage:    jetstream.FileStorage,
			Duplicates: 2 * time.Minute,
		}
		stream, err := js.CreateStream(b.Context(), cfg)
		if err != nil {
			b.Fatalf("creating stream %s: %v", cfg.Name, err)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := js.DeleteStream(ctx, cfg.Name); err != nil {
				b.Errorf("deleting stream %s: %v", cfg.Name, err)
			}
		})
		subject := func(s string) string { return "herald-bench-" + name + "." + s }
		if !cas {
			return func(ctx context.Context, s string, w, i int) error {
				_, err := js.Publish(ctx, subject(s), payload100, jetstream.WithMsgID(fmt.Sprintf("%d-%d", w, i)))
				return err
			}
		}
		seqs := &subjectSeqs{stream: stream, last: map[string]subjectSeq{}}
		return func(ctx context.Context, s string, w, i int) error {
			_, err := seqs.publish(ctx, js, subject(s), fmt.Sprintf("%d-%d", w, i))
			return err
		}
	})
}

// subjectSeqs gives each subject a seq of its own, as Herald needs per
// stream, on top of JetStream: the seq travels in a header, and a publish
// is accepted only if the subject's last message is still the one the
// writer based its seq on (Nats-Expected-Last-Subject-Sequence). A
// writer that lost the race reads the subject's last message and tries
// again. last caches what this process knows of each subject.
type subjectSeqs struct {
	stream jetstream.Stream
	mu     sync.Mutex
	last   map[string]subjectSeq
}

type subjectSeq struct {
	js     uint64 // JetStream seq of the subject's last message
	herald uint64 // its Herald seq
}

const heraldSeqHeader = "Herald-Seq"

func (q *subjectSeqs) publish(ctx context.Context, js jetstream.JetStream, subject, id string) (uint64, error) {
	for attempt := 0; attempt < 1000; attempt++ {
		q.mu.Lock()
		cur := q.last[subject]
		q.mu.Unlock()
		msg := nats.NewMsg(subject)
		msg.Data = payload100
		msg.Header.Set(heraldSeqHeader, strconv.FormatUint(cur.herald+1, 10))
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectLastSequencePerSubject(cur.js))
		if err == nil {
			if ack.Duplicate {
				// A retry of a stored id: its seq is in the stored message.
				return q.lookup(ctx, ack.Sequence)
			}
			q.advance(subject, subjectSeq{ack.Sequence, cur.herald + 1})
			return cur.herald + 1, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, err
		}
		last, err := q.stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return 0, fmt.Errorf("reading the last message of %s: %w", subject, err)
		}
		h, err := strconv.ParseUint(last.Header.Get(heraldSeqHeader), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: seq %d has no %s", subject, last.Sequence, heraldSeqHeader)
		}
		q.advance(subject, subjectSeq{last.Sequence, h})
	}
	return 0, fmt.Errorf("%s: no append after 1000 attempts", subject)
}

func (q *subjectSeqs) advance(subject string, s subjectSeq) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.js > q.last[subject].js {
		q.last[subject] = s
	}
}

func (q *subjectSeqs) lookup(ctx context.Context, seq uint64) (uint64, error) {
	m, err := q.stream.GetMsg(ctx, seq)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(m.Header.Get(heraldSeqHeader), 10, 64)
}

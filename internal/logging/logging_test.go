package logging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// blockingWriter blocks every Write until release is closed, and signals
// entered on the first Write.
type blockingWriter struct {
	syncBuffer
	entered   chan struct{}
	release   chan struct{}
	enterOnce sync.Once
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.enterOnce.Do(func() { close(w.entered) })
	<-w.release
	return w.syncBuffer.Write(p)
}

// textHandler returns a text handler without timestamps, for stable output.
func textHandler(w io.Writer) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
}

func mustClose(t *testing.T, a *Async) {
	t.Helper()
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestRecordsArriveInOrder(t *testing.T) {
	var out syncBuffer
	a := NewAsync(textHandler(&out), 1000)
	log := slog.New(a)
	for i := range 500 {
		log.Info("msg", "i", i)
	}
	mustClose(t, a)

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 500 {
		t.Fatalf("got %d lines, want 500", len(lines))
	}
	for i, l := range lines {
		if want := fmt.Sprintf("level=INFO msg=msg i=%d", i); l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
	if d := a.Dropped(); d != 0 {
		t.Errorf("Dropped = %d, want 0", d)
	}
}

func TestWithAttrsAndGroup(t *testing.T) {
	var out syncBuffer
	a := NewAsync(textHandler(&out), 16)
	base := slog.New(a)
	base.With("conn", 7).Info("one", "k", "v")
	base.WithGroup("g").With("a", 1).Info("two", "b", 2)
	base.Info("three")
	mustClose(t, a)

	want := "level=INFO msg=one conn=7 k=v\n" +
		"level=INFO msg=two g.a=1 g.b=2\n" +
		"level=INFO msg=three\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestEnabledDelegates(t *testing.T) {
	var out syncBuffer
	log, a, err := New(&out, "warn", "json", 16)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if log.Enabled(ctx, slog.LevelInfo) || !log.Enabled(ctx, slog.LevelWarn) {
		t.Error("Enabled does not follow the level")
	}
	log.Info("hidden")
	log.Warn("shown", "n", 1)
	mustClose(t, a)
	got := out.String()
	if strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown","n":1}`) {
		t.Errorf("output = %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		level, format string
		want          error
	}{
		{"verbose", "text", ErrUnknownLevel},
		{"", "text", ErrUnknownLevel},
		{"info", "xml", ErrUnknownFormat},
		{"info", "", ErrUnknownFormat},
	}
	for _, tt := range tests {
		if _, _, err := New(&syncBuffer{}, tt.level, tt.format, 1); !errors.Is(err, tt.want) {
			t.Errorf("New(%q, %q) error = %v, want %v", tt.level, tt.format, err, tt.want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"INFO", slog.LevelInfo},
		{"Warn", slog.LevelWarn},
		{"error", slog.LevelError},
	}
	for _, tt := range tests {
		if got, err := ParseLevel(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFullQueueDropsInsteadOfBlocking(t *testing.T) {
	w := newBlockingWriter()
	a := NewAsync(textHandler(w), 2)
	log := slog.New(a)

	log.Info("r1")
	<-w.entered // the goroutine holds r1 and is stuck writing it
	log.Info("r2")
	log.Info("r3") // queue now full
	log.Info("r4")
	log.Info("r5")
	if d := a.Dropped(); d != 2 {
		t.Errorf("Dropped = %d, want 2", d)
	}

	close(w.release)
	mustClose(t, a)
	want := "level=INFO msg=r1\nlevel=INFO msg=r2\nlevel=INFO msg=r3\n"
	if got := w.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestCloseDrains(t *testing.T) {
	w := newBlockingWriter()
	a := NewAsync(textHandler(w), 8)
	log := slog.New(a)
	log.Info("first")
	<-w.entered
	for i := range 5 {
		log.Info("queued", "i", i)
	}

	// Close must wait for the blocked write and then the whole queue.
	closed := make(chan error)
	go func() { closed <- a.Close(context.Background()) }()
	close(w.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	log.Info("after close") // dropped and counted, never written

	if n := strings.Count(w.String(), "msg=queued"); n != 5 {
		t.Errorf("%d queued records written, want 5:\n%s", n, w.String())
	}
	if strings.Contains(w.String(), "after close") {
		t.Error("record logged after Close was written")
	}
	if d := a.Dropped(); d != 1 {
		t.Errorf("Dropped = %d, want 1", d)
	}
}

func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	w := newBlockingWriter()
	a := NewAsync(textHandler(w), 8)
	log := slog.New(a)
	log.Info("stuck")
	<-w.entered
	log.Info("queued1")
	log.Info("queued2")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with cancelled context = %v, want context.Canceled", err)
	}
	close(w.release)
	mustClose(t, a) // waits for the goroutine to finish writing "stuck"

	if got, want := w.String(), "level=INFO msg=stuck\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if d := a.Dropped(); d != 2 {
		t.Errorf("Dropped = %d, want 2", d)
	}
}

func TestConcurrentLoggingAndClose(t *testing.T) {
	var out syncBuffer
	a := NewAsync(textHandler(&out), 64)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			log := slog.New(a).With("g", g)
			for i := range each {
				log.Info("m", "i", i)
			}
		})
	}
	mustClose(t, a) // concurrently with the writers
	wg.Wait()

	written := uint64(strings.Count(out.String(), "\n"))
	if written+a.Dropped() != writers*each {
		t.Errorf("written %d + dropped %d != %d", written, a.Dropped(), writers*each)
	}
}

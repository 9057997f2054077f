package bench

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// progressStep is one call on a Progress, after moving the clock.
type progressStep struct {
	after       time.Duration // clock advance before the call
	phase       string        // "" calls Done
	done, total int64
	extra       string
}

func TestProgress(t *testing.T) {
	tests := []struct {
		name     string
		enabled  bool
		terminal bool
		steps    []progressStep
		want     string // exact output
	}{
		{
			name:    "disabled writes nothing",
			enabled: false,
			steps:   []progressStep{{0, "ramp", 1, 10, ""}, {time.Second, "ramp", 10, 10, ""}, {0, "", 0, 0, ""}},
			want:    "",
		},
		{
			name:    "log: first update, throttled, completion, Done flushes the held-back update",
			enabled: true,
			steps: []progressStep{
				{0, "ramp", 0, 19000, "dialing"},
				{time.Second, "ramp", 3100, 19000, "held back"},
				{4 * time.Second, "ramp", 15500, 19000, "due"},
				{time.Second, "ramp", 19000, 19000, ""},
				{100 * time.Millisecond, "ramp", 19000, 19000, "again"},
				{0, "", 0, 0, ""},
			},
			want: "ramp  [..............................] 0/19000  dialing\n" +
				"ramp  [########################......] 15500/19000  3100/s  due\n" +
				"ramp  [##############################] 19000/19000  3180/s\n" +
				"ramp  [##############################] 19000/19000  3118/s  again\n",
		},
		{
			name:    "log: a new phase shows the last state of the old one",
			enabled: true,
			steps: []progressStep{
				{0, "ramp", 0, 100, ""},
				{time.Second, "ramp", 60, 100, ""},
				{time.Second, "steady", 5, 0, "pub 10/s"},
			},
			want: "ramp  [..............................] 0/100\n" +
				"ramp  [##################............] 60/100  60/s\n" +
				"steady 5  pub 10/s\n",
		},
		{
			name:     "terminal: redraws in place, blanks leftovers, Done ends the line",
			enabled:  true,
			terminal: true,
			steps: []progressStep{
				{0, "ramp", 12000, 19000, "long extra text"},
				{100 * time.Millisecond, "ramp", 12100, 19000, "held"},
				{200 * time.Millisecond, "ramp", 13000, 19000, "x"},
				{0, "", 0, 0, ""},
			},
			want: "\rramp  [##################............] 12000/19000  long extra text" +
				"\rramp  [####################..........] 13000/19000  3333/s  x" + strings.Repeat(" ", 6) +
				"\n",
		},
		{
			name:     "terminal: new phase starts a new line",
			enabled:  true,
			terminal: true,
			steps: []progressStep{
				{0, "ramp", 1, 2, ""},
				{time.Second, "ramp", 2, 2, ""},
				{time.Second, "drain", 0, 0, ""},
				{0, "", 0, 0, ""},
			},
			want: "\rramp  [###############...............] 1/2" +
				"\rramp  [##############################] 2/2  1/s" +
				"\n\rdrain 0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			clock := &fakeClock{t: t0}
			p := NewProgress(&buf, tt.enabled)
			p.now, p.terminal = clock.now, tt.terminal
			for _, s := range tt.steps {
				clock.t = clock.t.Add(s.after)
				if s.phase == "" {
					p.Done()
					continue
				}
				p.Update(s.phase, s.done, s.total, s.extra)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("output\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	p.Update("ramp", 12000, 19000, "3 failed")
	p.Done()
	out := buf.String()
	for _, want := range []string{"ramp  [", "#", ".]", "] 12000/19000", "3 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("output to a buffer has a carriage return: %q", out)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name string
		w    io.Writer
		want bool
	}{
		{"buffer", &bytes.Buffer{}, false},
		{"regular file", f, false},
		{"nil file", (*os.File)(nil), false},
	}
	for _, tt := range tests {
		if got := isTerminal(tt.w); got != tt.want {
			t.Errorf("%s: isTerminal = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestProgressConcurrent(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				p.Update("ramp", int64(g*200+i), 800, "")
			}
		}()
	}
	wg.Wait()
	p.Done()
	if !strings.Contains(buf.String(), "ramp  [") {
		t.Errorf("no bar in %q", buf.String())
	}
}

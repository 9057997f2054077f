package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "write testdata/example_report.html")

// simWorker is one simulated worker process of a sample run.
type simWorker struct {
	tl   *Timeline
	hist *Histogram
	sent int64
	got  int64
}

// merge turns the workers' reports into a Result the way the coordinator
// does: through JSON snapshots.
func merge(t *testing.T, r *Result, start time.Time, workers []*simWorker) {
	t.Helper()
	tl := NewTimeline(start)
	all := NewHistogram()
	for _, w := range workers {
		b, err := json.Marshal(struct {
			TL   TimelineSnapshot
			Hist HistSnapshot
		}{w.tl.Snapshot(), w.hist.Snapshot()})
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			TL   TimelineSnapshot
			Hist HistSnapshot
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		if err := MergeTimeline(tl, rep.TL); err != nil {
			t.Fatal(err)
		}
		h, err := HistogramFrom(rep.Hist)
		if err != nil {
			t.Fatal(err)
		}
		all.Merge(h)
		r.Sent += w.sent
		r.Delivered += w.got
	}
	r.Started = start
	r.Latency = all.Quantiles()
	r.Timeline = tl.Points()
}

// lognormal returns a latency around median with the given spread.
func lognormal(rng *rand.Rand, median time.Duration, sigma float64) time.Duration {
	return time.Duration(float64(median) * math.Exp(sigma*rng.NormFloat64()))
}

// sampleResults simulates two runs, deterministically, for the example
// report: a fan-out with a ramp and a latency spike, and a reconnect storm.
func sampleResults(t *testing.T) []Result {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	at := func(s int, frac float64) time.Time {
		return start.Add(time.Duration((float64(s) + frac) * float64(time.Second)))
	}

	// Fan-out: 3 workers ramp to 19,000 connections in 20 s, then ~1,800
	// messages a second flow from second 25 to 115, with a stall at 60–64.
	fan := Result{
		Scenario: "fanout",
		Params:   map[string]string{"conns": "19000", "workers": "3", "rate": "1800/s", "topic": "news", "payload": "256 B"},
		Duration: 120 * time.Second,
	}
	var workers []*simWorker
	for w := range 3 {
		sw := &simWorker{tl: NewTimeline(start), hist: NewHistogram()}
		workers = append(workers, sw)
		conns := int64(0)
		for s := range 120 {
			if s < 20 {
				conns = int64(float64(19000/3) * float64(s+1) / 20)
			}
			sw.tl.Connections(at(s, 0.99), conns)
			if s < 25 || s >= 115 {
				continue
			}
			n := 600 + rng.IntN(40) - 20
			sw.tl.Sent(at(s, 0.5), int64(n))
			sw.sent += int64(n)
			median, sigma := 1200*time.Microsecond, 0.35
			if s >= 60 && s < 65 {
				median, sigma = 25*time.Millisecond, 0.6
				if w == 1 {
					sw.tl.Error(at(s, 0.3))
				}
			}
			if s == 61 && w == 2 {
				n -= 37 // lost in the stall
			}
			for i := range n {
				d := lognormal(rng, median, sigma)
				sw.tl.Delivered(at(s, float64(i)/float64(n)), d)
				sw.hist.Record(d)
				sw.got++
			}
		}
	}
	merge(t, &fan, start, workers)
	fan.Connections = 18999
	fan.ConnectRate = 950
	fan.ConnectFail = map[string]int64{"dial timeout": 1}
	fan.Expected = fan.Sent
	fan.Missing = fan.Expected - fan.Delivered
	fan.Errors = map[string]int64{"slow consumer": 3, "disconnect: going away": 2}
	fan.Throughput = float64(fan.Delivered) / 90
	fan.ServerCPU = 41300 * time.Millisecond
	fan.ServerCPUPerOp = fan.ServerCPU / time.Duration(max(fan.Delivered, 1))
	fan.ServerRSSBefore = 17 << 20
	fan.ServerRSSAfter = 69 << 20
	fan.ServerRSSPerConn = float64(fan.ServerRSSAfter-fan.ServerRSSBefore) / float64(fan.Connections)
	fan.Notes = []string{"37 messages lost during the stall at 61 s (worker 2)", "server GC pause suspected at 60–64 s"}

	// Storm: 5,000 connections, the server drops them all at 30 s, and they
	// come back with backoff.
	storm := Result{
		Scenario: "reconnect-storm",
		Params:   map[string]string{"conns": "5000", "drop_at": "30s", "backoff": "exp 100ms..5s"},
		Duration: 60 * time.Second,
	}
	workers = nil
	for range 2 {
		sw := &simWorker{tl: NewTimeline(start), hist: NewHistogram()}
		workers = append(workers, sw)
		for s := range 60 {
			conns := int64(2500)
			switch {
			case s == 30:
				conns = 0
				for range 2500 {
					sw.tl.Error(at(s, 0.1))
				}
			case s > 30 && s < 38:
				conns = int64(2500 * (1 - math.Exp(-float64(s-30)/1.8)))
			}
			sw.tl.Connections(at(s, 0.99), conns)
			if s == 30 {
				continue
			}
			sw.tl.Sent(at(s, 0.5), 100)
			sw.sent += 100
			n := int(100 * conns / 2500)
			for i := range n {
				d := lognormal(rng, 900*time.Microsecond, 0.3)
				if s > 30 && s < 40 {
					d *= 4
				}
				sw.tl.Delivered(at(s, float64(i)/float64(max(n, 1))), d)
				sw.hist.Record(d)
				sw.got++
			}
		}
	}
	merge(t, &storm, start, workers)
	storm.Connections = 5000
	storm.ConnectRate = 640
	storm.ConnectFail = map[string]int64{"connection refused": 1204, "429 too many requests": 311}
	storm.Expected = storm.Sent
	storm.Missing = storm.Expected - storm.Delivered
	storm.Duplicates = 12
	storm.Errors = map[string]int64{"disconnect: server restart": 5000}
	storm.Throughput = float64(storm.Delivered) / 60
	storm.RecoveryTime = 7840 * time.Millisecond
	return []Result{fan, storm}
}

// svgRe finds the inline charts.
var svgRe = regexp.MustCompile(`(?s)<svg .*?</svg>`)

func TestWriteHTML(t *testing.T) {
	samples := sampleResults(t)
	hostile := Result{
		Scenario: `<script>alert("x")</script>`,
		Params:   map[string]string{"q": `a&b <i>`},
		Notes:    []string{`note with <b>tags</b> & "quotes"`},
		Errors:   map[string]int64{`<img src=x onerror=alert(1)>`: 1},
		Timeline: []Point{{Second: 0, Deliveries: 1, Latency: Quantiles{Count: 1, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond}}},
	}
	tests := []struct {
		name      string
		results   []Result
		want      []string
		wantNot   []string
		wantSVGs  int
		writeFile bool
	}{
		{
			name:    "example",
			results: samples,
			want: []string{
				"<!DOCTYPE html>", "</html>", "fanout", "reconnect-storm", "Overview",
				fmtCount(samples[0].Delivered), fmtCount(samples[0].Sent), fmtCount(samples[0].Missing),
				fmtDuration(samples[0].Latency.P50), fmtDuration(samples[0].Latency.P99),
				fmtDuration(samples[0].Latency.P999), fmtDuration(samples[0].Latency.Max),
				fmtRate(samples[0].Throughput), fmtDuration(samples[0].ServerCPUPerOp),
				fmtBytes(samples[0].ServerRSSPerConn), "18,999", "Recovery time", "7.84s",
				"slow consumer", "connection refused", "37 messages lost",
				"2026-11-21 10:00:00 UTC", "2m0s", "payload", "256 B",
				"delivered/s", "sent/s", "errors/s", "p50", "p99", "max", "latency (ms)",
				"time since start (s)", "open connections",
			},
			// Throughput, latency, connections and errors, twice.
			wantSVGs:  8,
			writeFile: true,
		},
		{
			name:    "escaping",
			results: []Result{hostile},
			want:    []string{"&lt;script&gt;", "a&amp;b &lt;i&gt;", "&lt;b&gt;tags&lt;/b&gt;", "&lt;img src=x"},
			wantNot: []string{"<script>", "<i>", "<b>tags", "<img"},
			// Throughput, latency, connections.
			wantSVGs: 3,
		},
		{
			name:     "hour-long run: minutes on the time axis, microseconds on the latency axis",
			results:  []Result{{Scenario: "soak", Timeline: longTimeline(3600)}},
			want:     []string{"time since start (min:s)", "60:00", "30:00", "latency (µs)"},
			wantNot:  []string{"Overview", "errors/s"},
			wantSVGs: 3,
		},
		{
			name:     "no timeline",
			results:  []Result{{Scenario: "connect-only", Connections: 10}},
			want:     []string{"No timeline was recorded", "connect-only"},
			wantNot:  []string{"Overview"},
			wantSVGs: 0,
		},
		{
			name:    "empty",
			results: nil,
			want:    []string{"<!DOCTYPE html>", "</html>"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteHTML(&buf, tt.results); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			for _, s := range tt.want {
				if !strings.Contains(out, s) && !strings.Contains(out, htmlEsc(s)) {
					t.Errorf("report lacks %q", s)
				}
			}
			for _, s := range append(tt.wantNot, "<script", "<link", "@import", "url(", "http://", "https://", "NaN", "Inf") {
				if s == "http://" {
					// The SVG namespace is the one URL allowed.
					out := strings.ReplaceAll(out, `xmlns="http://www.w3.org/2000/svg"`, "")
					if strings.Contains(out, s) {
						t.Errorf("report contains %q", s)
					}
					continue
				}
				if strings.Contains(out, s) {
					t.Errorf("report contains %q", s)
				}
			}
			svgs := svgRe.FindAllString(out, -1)
			if len(svgs) != tt.wantSVGs {
				t.Errorf("%d charts, want %d", len(svgs), tt.wantSVGs)
			}
			for i, svg := range svgs {
				if err := wellFormed(svg); err != nil {
					t.Errorf("chart %d is not well-formed XML: %v", i, err)
				}
			}
			if tt.writeFile && *update {
				path := filepath.Join("testdata", "example_report.html")
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s", path)
			}
		})
	}
}

// longTimeline returns n seconds of steady sub-millisecond deliveries.
func longTimeline(n int) []Point {
	ps := make([]Point, n)
	for i := range ps {
		d := time.Duration(300+i%50) * time.Microsecond
		ps[i] = Point{Second: i, Deliveries: 1000, Sent: 1000, Connections: 100,
			Latency: Quantiles{Count: 1000, P50: d, P99: d * 3 / 2, Max: 2 * d}}
	}
	return ps
}

// htmlEsc is what html/template makes of s in text.
func htmlEsc(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&#34;")
		case '\'':
			b.WriteString("&#39;")
		case '+':
			b.WriteString("&#43;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// wellFormed checks that s parses as XML.
func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestWriteText(t *testing.T) {
	r := Result{
		Scenario:         "fanout",
		Params:           map[string]string{"conns": "19000", "rate": "1800/s"},
		Started:          time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
		Duration:         2 * time.Minute,
		Connections:      19000,
		ConnectRate:      3100,
		ConnectFail:      map[string]int64{"dial timeout": 3},
		Sent:             162000,
		Delivered:        161963,
		Expected:         162000,
		Missing:          37,
		Duplicates:       2,
		Errors:           map[string]int64{"slow consumer": 5, "disconnect": 1},
		Throughput:       1799.6,
		Latency:          Quantiles{Count: 161963, Min: 210 * time.Microsecond, Mean: 1500 * time.Microsecond, P50: 1234 * time.Microsecond, P90: 2100 * time.Microsecond, P99: 8400 * time.Microsecond, P999: 31 * time.Millisecond, Max: 212 * time.Millisecond},
		ServerCPU:        41300 * time.Millisecond,
		ServerCPUPerOp:   255 * time.Microsecond,
		ServerRSSBefore:  17 << 20,
		ServerRSSAfter:   69 << 20,
		ServerRSSPerConn: 2800,
		RecoveryTime:     7840 * time.Millisecond,
		Notes:            []string{"first note", "second note"},
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	tests := []struct{ line, want string }{
		{"Scenario", "fanout"},
		{"Params", "conns=19000 rate=1800/s"},
		{"Started", "2026-11-21 10:00:00 UTC"},
		{"Duration", "2m0s"},
		{"Connections", "19,000  (ramp 3,100/s, 3 failed: dial timeout 3)"},
		{"Sent", "162,000"},
		{"Delivered", "161,963 of 162,000 expected"},
		{"Missing", "37 (0.02%)"},
		{"Duplicates", "2"},
		{"Throughput", "1,800/s"},
		{"Latency", "p50 1.23ms  p90 2.1ms  p99 8.4ms  p99.9 31ms  max 212ms  (mean 1.5ms, min 210µs, n=161,963)"},
		{"Errors", "6  (slow consumer 5, disconnect 1)"},
		{"Server CPU", "41.3s  (255µs/op)"},
		{"Server RSS", "17.0 MiB → 69.0 MiB  (2.73 KiB/conn)"},
		{"Recovery", "7.84s"},
		{"Notes", "first note"},
	}
	const valueCol = len("Connections  ") // the longest label and the gap
	for _, tt := range tests {
		want := tt.line + strings.Repeat(" ", valueCol-len(tt.line)) + tt.want + "\n"
		if !strings.Contains(out, want) {
			t.Errorf("missing line %q in\n%s", want, out)
		}
	}
	if !strings.Contains(out, "\n"+strings.Repeat(" ", valueCol)+"second note\n") {
		t.Errorf("second note not aligned:\n%s", out)
	}
}

func TestMarkdownRow(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{
			name: "full",
			r: Result{Scenario: "fanout", Params: map[string]string{"conns": "19000"}, Duration: 2 * time.Minute,
				Connections: 19000, ConnectRate: 3100, Sent: 1000, Delivered: 999, Throughput: 12345.6,
				Latency: Quantiles{Count: 9, P50: 1234 * time.Microsecond, P99: 9 * time.Millisecond, P999: 12 * time.Millisecond, Max: 2 * time.Second},
				Missing: 1, Errors: map[string]int64{"x": 2}, ServerCPUPerOp: 12300 * time.Nanosecond, ServerRSSPerConn: 2800},
			want: "| fanout | `conns=19000` | 2m0s | 19,000 | 3,100/s | 1,000 | 999 | 12,346/s | 1.23ms | 9ms | 12ms | 2s | 1 | 0 | 2 | 12.3µs | 2.73 KiB |",
		},
		{
			name: "empty, with a pipe to escape",
			r:    Result{Scenario: "a|b\nc"},
			want: `| a\|b c | — | 0s | 0 | — | 0 | 0 | 0/s | — | — | — | — | 0 | 0 | 0 | — | — |`,
		},
	}
	header := MarkdownHeader()
	headerCols := strings.Count(strings.SplitN(header, "\n", 2)[0], "|")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MarkdownRow(tt.r)
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if n := strings.Count(got, "|") - strings.Count(got, `\|`); n != headerCols {
				t.Errorf("%d cells, header has %d", n-1, headerCols-1)
			}
		})
	}
}

func TestFormatting(t *testing.T) {
	durations := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {850, "850ns"}, {1230 * time.Nanosecond, "1.23µs"}, {12345 * time.Nanosecond, "12.3µs"},
		{999 * time.Microsecond, "999µs"}, {1234 * time.Microsecond, "1.23ms"}, {1500 * time.Microsecond, "1.5ms"},
		{2 * time.Millisecond, "2ms"}, {45670 * time.Microsecond, "45.7ms"}, {4560 * time.Millisecond, "4.56s"},
		{59 * time.Second, "59s"}, {125400 * time.Millisecond, "2m5s"}, {-3 * time.Millisecond, "-3ms"},
	}
	for _, tt := range durations {
		if got := fmtDuration(tt.d); got != tt.want {
			t.Errorf("fmtDuration(%d) = %q, want %q", tt.d, got, tt.want)
		}
	}
	counts := []struct {
		n    int64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {19000, "19,000"}, {1234567, "1,234,567"}, {-1234, "-1,234"}}
	for _, tt := range counts {
		if got := fmtCount(tt.n); got != tt.want {
			t.Errorf("fmtCount(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	sizes := []struct {
		b    float64
		want string
	}{{0, "0 B"}, {512, "512 B"}, {2800, "2.73 KiB"}, {17 << 20, "17.0 MiB"}, {150 << 20, "150 MiB"}}
	for _, tt := range sizes {
		if got := fmtBytes(tt.b); got != tt.want {
			t.Errorf("fmtBytes(%v) = %q, want %q", tt.b, got, tt.want)
		}
	}
	ticks := []struct {
		v, step float64
		want    string
	}{{0, 1, "0"}, {2.5, 0.5, "2.5"}, {0.25, 0.25, "0.25"}, {750, 250, "750"}, {1000, 250, "1k"}, {1250, 250, "1.25k"},
		{12000, 2000, "12k"}, {1.5e6, 5e5, "1.5M"}, {3, 1, "3"}}
	for _, tt := range ticks {
		if got := fmtTick(tt.v, tt.step); got != tt.want {
			t.Errorf("fmtTick(%v, %v) = %q, want %q", tt.v, tt.step, got, tt.want)
		}
	}
	scales := []struct {
		max      float64
		n        int
		integer  bool
		steps    []float64
		step, to float64
	}{
		{1, 5, false, nil, 0.2, 1}, {3, 5, true, nil, 1, 3}, {1870, 5, false, nil, 500, 2000},
		{0.0042, 5, false, nil, 0.001, 0.005}, {119, 10, true, timeSteps, 15, 120}, {3599, 10, true, timeSteps, 600, 3600},
		{1, 10, true, timeSteps, 1, 1},
	}
	for _, tt := range scales {
		step, top := niceScale(tt.max, tt.n, tt.integer, tt.steps)
		if math.Abs(step-tt.step) > 1e-12 || math.Abs(top-tt.to) > 1e-12 {
			t.Errorf("niceScale(%v, %d) = %v, %v; want %v, %v", tt.max, tt.n, step, top, tt.step, tt.to)
		}
	}
}

// TestReportTopic checks that a storm's topic recovery shows in the text
// and HTML reports.
func TestReportTopic(t *testing.T) {
	r := Result{Scenario: "storm", Started: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
		TopicExpected: 15000, TopicDelivered: 14997, TopicMissing: 3, TopicRepeats: 12,
		TopicRecovered: 4999, TopicUnrecovered: 1}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	want := "Topic        4,999 of 5,000 subscriptions recovered, 1 not; missed messages: 14,997 of 15,000 accepted delivered, 3 missing, 0 duplicates, 12 repeats dropped by seq (allowed)\n"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("missing line %q in\n%s", want, buf.String())
	}
	buf.Reset()
	if err := WriteHTML(&buf, []Result{r}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Topic not recovered", "Topic missed delivered", "14,997 of 15,000"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("HTML report lacks %q", s)
		}
	}
}

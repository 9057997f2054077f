package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress draws a one-line progress display, such as
//
//	ramp  [#########.......] 12000/19000  3100/s  extra
//
// On a terminal it redraws the line in place (with a carriage return) at
// most every TermInterval; on anything else (a pipe, a log file, a buffer)
// it writes a new line at most every LogInterval, so logs stay short. It
// always draws the first update of a phase and the update that completes
// it. A disabled Progress writes nothing. Progress is safe for concurrent
// use.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	enabled  bool
	terminal bool
	now      func() time.Time // for tests

	phase      string
	phaseStart time.Time
	lastDraw   time.Time
	drawn      bool     // something is on the current line (terminal)
	lineLen    int      // length of the line last drawn (terminal)
	pending    string   // the last update not drawn, drawn by Done
	complete   bool     // the phase's completing update was drawn
	samples    []sample // recent (time, done) pairs for the rate
}

type sample struct {
	t    time.Time
	done int64
}

// Redraw intervals.
const (
	// TermInterval is the shortest time between redraws on a terminal.
	TermInterval = 250 * time.Millisecond
	// LogInterval is the shortest time between lines when the output is
	// not a terminal.
	LogInterval = 5 * time.Second
	// rateWindow is how far back the displayed rate looks.
	rateWindow = 2 * time.Second
	// sampleEvery is the spacing of the samples the rate is taken from.
	sampleEvery = 100 * time.Millisecond
	barWidth    = 30
)

// NewProgress returns a Progress writing to w, or writing nothing if
// enabled is false. It redraws in place if w is an *os.File that is a
// character device (a terminal).
func NewProgress(w io.Writer, enabled bool) *Progress {
	return &Progress{w: w, enabled: enabled && w != nil, terminal: isTerminal(w), now: time.Now}
}

// isTerminal reports whether w is a character device, which, using only the
// standard library, is the best guess at "a terminal".
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update reports that phase has done of total units done (total <= 0 if
// unknown), with extra shown after the rate. Call it as often as is
// convenient: it draws only as often as described on Progress.
func (p *Progress) Update(phase string, done, total int64, extra string) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	newPhase := phase != p.phase || p.phaseStart.IsZero()
	if newPhase {
		p.flushPendingLocked() // the previous phase's final state
		if p.terminal && p.drawn {
			io.WriteString(p.w, "\n")
			p.drawn, p.lineLen = false, 0
		}
		p.phase, p.phaseStart, p.samples, p.pending, p.complete = phase, now, nil, "", false
	}
	if n := len(p.samples); n == 0 || now.Sub(p.samples[n-1].t) >= sampleEvery {
		p.samples = append(p.samples, sample{now, done})
	}
	for len(p.samples) > 2 && now.Sub(p.samples[1].t) >= rateWindow {
		p.samples = p.samples[1:]
	}
	line := p.formatLocked(phase, done, total, extra, now)

	interval := LogInterval
	if p.terminal {
		interval = TermInterval
	}
	complete := total > 0 && done >= total
	force := newPhase || complete && !p.complete
	if !force && now.Sub(p.lastDraw) < interval {
		p.pending = line
		return
	}
	p.complete = p.complete || complete
	p.drawLocked(line, now)
}

// drawLocked writes line.
func (p *Progress) drawLocked(line string, now time.Time) {
	if p.terminal {
		pad := ""
		if n := p.lineLen - len([]rune(line)); n > 0 {
			pad = strings.Repeat(" ", n) // blank what a longer line left
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.lineLen = len([]rune(line))
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.lastDraw, p.pending = now, ""
}

// flushPendingLocked draws the last update if it was not drawn.
func (p *Progress) flushPendingLocked() {
	if p.pending != "" {
		p.drawLocked(p.pending, p.now())
	}
}

// formatLocked renders one progress line.
func (p *Progress) formatLocked(phase string, done, total int64, extra string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-5s ", phase)
	if total > 0 {
		filled := int(min(max(done, 0), total) * barWidth / total)
		b.WriteString("[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "] ")
		fmt.Fprintf(&b, "%d/%d", done, total)
	} else {
		fmt.Fprintf(&b, "%d", done)
	}
	if rate, ok := p.rateLocked(done, now); ok {
		fmt.Fprintf(&b, "  %.0f/s", rate)
	}
	if extra != "" {
		b.WriteString("  " + extra)
	}
	return b.String()
}

// rateLocked returns the rate from the oldest recent sample to (now, done),
// if there is a span to measure it over.
func (p *Progress) rateLocked(done int64, now time.Time) (float64, bool) {
	if len(p.samples) == 0 {
		return 0, false
	}
	first := p.samples[0]
	dt := now.Sub(first.t).Seconds()
	if dt <= 0 {
		return 0, false
	}
	return float64(done-first.done) / dt, true
}

// Done draws the last update if it was held back and ends the line. The
// next Update starts a new line.
func (p *Progress) Done() {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushPendingLocked()
	if p.terminal && p.drawn {
		io.WriteString(p.w, "\n")
	}
	p.drawn, p.lineLen, p.phase, p.phaseStart, p.samples = false, 0, "", time.Time{}, nil
}

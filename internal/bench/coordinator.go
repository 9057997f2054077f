package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// workerProc is a worker process seen from the coordinator.
type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan workerEvent
	done   chan struct{}

	mu     sync.Mutex
	open   int64
	failed int64
	result *WorkerResult
	err    string
	inbox  workerEvent // the latest "inbox" event
}

// maxPerWorker bounds the connections of one worker process: this machine
// allows 20,000 open files per process.
const maxPerWorker = 15000

// startWorkers starts len(as) worker processes (this binary, with
// workerArgs) and sends each its assignment.
func startWorkers(ctx context.Context, exe string, workerArgs []string, as []Assignment) ([]*workerProc, error) {
	var ws []*workerProc
	for _, a := range as {
		cmd := exec.Command(exe, workerArgs...)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = childAttr()
		stdin, err := cmd.StdinPipe()
		if err != nil {
			stopWorkers(ws)
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			stopWorkers(ws)
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stopWorkers(ws)
			return nil, fmt.Errorf("bench: start worker: %w", err)
		}
		w := &workerProc{cmd: cmd, stdin: stdin, events: make(chan workerEvent, 64), done: make(chan struct{})}
		go w.read(stdout)
		b, _ := json.Marshal(a)
		if _, err := fmt.Fprintf(stdin, "%s\n", b); err != nil {
			stopWorkers(append(ws, w))
			return nil, fmt.Errorf("bench: assign worker: %w", err)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func (w *workerProc) read(r io.Reader) {
	defer close(w.done)
	defer close(w.events)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e workerEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // stray output
		}
		w.mu.Lock()
		switch e.Event {
		case "progress", "ready", "recovered", "dropped":
			w.open, w.failed = e.Open, e.Failed
		case "inbox":
			w.inbox = e
		case "result":
			w.result = e.Result
		case "error":
			w.err = e.Error
		}
		w.mu.Unlock()
		select {
		case w.events <- e:
		default: // the coordinator reads progress from the fields; events are hints
		}
	}
}

func (w *workerProc) send(cmd string) {
	_, _ = fmt.Fprintln(w.stdin, cmd)
}

// counts returns the latest open and failed counts reported.
func (w *workerProc) counts() (open, failed int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open, w.failed
}

// inboxState returns the latest inbox progress the worker reported.
func (w *workerProc) inboxState() workerEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inbox
}

// waitEvent waits for an event named ev from every worker.
func waitEvent(ctx context.Context, ws []*workerProc, ev string, tick func()) ([]workerEvent, error) {
	out := make([]workerEvent, len(ws))
	got := make([]bool, len(ws))
	n := 0
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for n < len(ws) {
		progressed := false
		for i, w := range ws {
			if got[i] {
				continue
			}
			select {
			case e, ok := <-w.events:
				if !ok {
					return out, fmt.Errorf("bench: worker %d exited before %q (see its stderr)", i, ev)
				}
				progressed = true
				if e.Event == ev {
					out[i], got[i] = e, true
					n++
				}
			default:
			}
		}
		if progressed {
			continue
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-t.C:
			if tick != nil {
				tick()
			}
		}
	}
	return out, nil
}

// collect tells every worker to stop and returns their results.
func collect(ctx context.Context, ws []*workerProc) ([]*WorkerResult, error) {
	for _, w := range ws {
		w.send("stop")
	}
	var errs []error
	for i, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("worker %d: %w", i, ctx.Err()))
		}
	}
	stopWorkers(ws)
	res := make([]*WorkerResult, 0, len(ws))
	for i, w := range ws {
		w.mu.Lock()
		r, e := w.result, w.err
		w.mu.Unlock()
		if r == nil {
			errs = append(errs, fmt.Errorf("worker %d sent no result %s", i, e))
			continue
		}
		res = append(res, r)
	}
	return res, errors.Join(errs...)
}

func stopWorkers(ws []*workerProc) {
	for _, w := range ws {
		_ = w.stdin.Close()
	}
	for _, w := range ws {
		done := make(chan struct{})
		go func() { _ = w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = w.cmd.Process.Kill()
			<-done
		}
	}
}

// mergeWorkers folds worker results into r.
func mergeWorkers(r *Result, start time.Time, maxSeconds int, ws []*WorkerResult) error {
	h := NewHistogram()
	tl := NewTimelineLimit(start, maxSeconds)
	r.ConnectFail = map[string]int64{}
	r.Errors = map[string]int64{}
	var rampStart, rampEnd time.Time
	var missing []string
	reasons := map[string]int64{}
	for _, w := range ws {
		wh, err := HistogramFrom(w.Latency)
		if err != nil {
			return err
		}
		h.Merge(wh)
		if err := MergeTimeline(tl, w.Timeline); err != nil {
			return err
		}
		r.Connections += w.Connected
		for k, v := range w.ConnectFail {
			r.ConnectFail[k] += v
		}
		for k, v := range w.Disconnects {
			r.Errors["disconnect: "+k] += v
		}
		r.Expected += w.Expected + w.InboxExpected + w.TopicExpected
		r.Delivered += w.Received + w.InboxReceived + w.TopicReceived
		r.Missing += w.Missing + w.InboxMissing + w.TopicMissing
		r.Duplicates += w.Duplicates + w.InboxDuplicates + w.TopicDuplicates
		r.TopicExpected += w.TopicExpected
		r.TopicDelivered += w.TopicReceived
		r.TopicMissing += w.TopicMissing
		r.TopicDuplicates += w.TopicDuplicates
		r.TopicRepeats += w.TopicRepeats
		r.TopicUnconfirmed += w.TopicUnconfirmed
		r.TopicRecovered += w.TopicRecovered
		r.TopicUnrecovered += w.TopicUnrecovered
		for k, v := range w.TopicReasons {
			reasons[k] += v
		}
		if w.TopicEpochChanged > 0 {
			r.Errors["topic epoch changed"] += w.TopicEpochChanged
		}
		missing = append(missing, w.TopicMissingList...)
		r.InboxExpected += w.InboxExpected
		r.InboxDelivered += w.InboxReceived
		r.InboxMissing += w.InboxMissing
		r.InboxDuplicates += w.InboxDuplicates
		r.InboxRedelivered += w.InboxRedelivered
		r.InboxUnconfirmed += w.InboxUnconfirmed
		missing = append(missing, w.InboxMissingList...)
		if w.Unexpected > 0 {
			r.Errors["unexpected message"] += w.Unexpected
		}
		missing = append(missing, w.MissingList...)
		if rampStart.IsZero() || w.RampStart.Before(rampStart) {
			rampStart = w.RampStart
		}
		if w.RampEnd.After(rampEnd) {
			rampEnd = w.RampEnd
		}
	}
	r.Latency = h.Quantiles()
	r.Timeline = tl.Points()
	if d := rampEnd.Sub(rampStart).Seconds(); d > 0 {
		r.ConnectRate = float64(r.Connections) / d
	}
	if len(missing) > 5 {
		missing = missing[:5]
	}
	for _, m := range missing {
		r.Notes = append(r.Notes, "missing: "+m)
	}
	if len(reasons) > 0 {
		r.Notes = append(r.Notes, "topic not recovered: "+reasonsNote(reasons))
	}
	return nil
}

// plan splits users [0, n) over enough workers that none holds more than
// maxPerWorker connections (at least want).
func plan(n, want int) [][2]int {
	w := max(want, (n+maxPerWorker-1)/maxPerWorker, 1)
	var out [][2]int
	for i := range w {
		from, to := n*i/w, n*(i+1)/w
		out = append(out, [2]int{from, to})
	}
	return out
}

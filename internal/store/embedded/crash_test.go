//go:build unix

package embedded_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
)

// crashDirEnv tells the test binary to run as TestCrash's child, appending
// to the store in that directory.
const crashDirEnv = "HERALD_STORE_CRASH_DIR"

var crashStreams = []string{"inbox/app/u1", "topic/app/news"}

func crashPayload(id string) []byte { return []byte("payload of " + id) }

// TestCrashChild is the child process of TestCrash: it appends from several
// goroutines, with Append and with AppendMulti to every crash stream, and
// prints "ack STREAM SEQ ID" for every append acknowledged.
// It stops by itself after a while if nobody kills it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrash")
	}
	db, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			stream := crashStreams[w%len(crashStreams)]
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				res, err := db.Append(ctx, stream, store.Message{ID: id, Payload: crashPayload(id)})
				if err != nil {
					return
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %s %d %s\n", stream, res[0].Seq, id)
				out.Unlock()
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			appends := make([]store.StreamAppend, len(crashStreams))
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("multi%d-%d", w, i)
				for k, stream := range crashStreams {
					appends[k] = store.StreamAppend{Stream: stream, Msgs: []store.Message{{ID: id, Payload: crashPayload(id)}}}
				}
				res, err := db.AppendMulti(ctx, appends)
				if err != nil {
					return
				}
				out.Lock()
				for k, stream := range crashStreams {
					fmt.Fprintf(os.Stdout, "ack %s %d %s\n", stream, res[k][0].Seq, id)
				}
				out.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3) // not killed in time
}

// TestCrash kills a process in the middle of appending and checks that
// every append it acknowledged is in the store after reopening, and that
// each stream is contiguous.
//
// SIGKILL loses the process, not the page cache: this checks that an
// acknowledged append is in the log and that recovery from a torn tail is
// clean, not the fsync itself.
func TestCrash(t *testing.T) {
	const kill = 300 // acks to see before killing
	dir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		seq uint64
		id  string
	}
	acked := map[string][]ack{}
	n, killed := 0, false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			continue // test framework output
		}
		seq, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		acked[f[1]] = append(acked[f[1]], ack{seq, f[3]})
		if n++; n == kill {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		// Keep reading: lines written before the kill are acknowledged too.
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child ended after %d acks: %v\n%s", n, werr, stderr.Bytes())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed: %v\n%s", werr, stderr.Bytes())
	}
	t.Logf("%d appends acknowledged before the kill took effect", n)

	db, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer db.Close()
	ctx := t.Context()
	multis := map[string]int{} // AppendMulti id → streams holding it
	for _, stream := range crashStreams {
		_, first, last, err := db.Head(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		msgs, _, err := db.Range(ctx, stream, 0, int(last)+1)
		if err != nil {
			t.Fatal(err)
		}
		if first != 1 || uint64(len(msgs)) != last {
			t.Fatalf("%s: first %d, last %d, %d messages", stream, first, last, len(msgs))
		}
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d: not contiguous", stream, i, m.Seq)
			}
			if !bytes.Equal(m.Payload, crashPayload(m.ID)) {
				t.Fatalf("%s: seq %d: payload %q for id %q", stream, m.Seq, m.Payload, m.ID)
			}
			if strings.HasPrefix(m.ID, "multi") {
				multis[m.ID]++
			}
		}
		retry := make([]store.Message, 0, len(acked[stream]))
		for _, a := range acked[stream] {
			if a.seq > last || msgs[a.seq-1].ID != a.id {
				t.Fatalf("%s: acknowledged seq %d (%s) lost; last is %d", stream, a.seq, a.id, last)
			}
			retry = append(retry, store.Message{ID: a.id, Payload: crashPayload(a.id)})
		}
		// The id index survived too: retrying every acknowledged append
		// stores nothing.
		res, err := db.Append(ctx, stream, retry...)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if !r.Duplicate || r.Seq != acked[stream][i].seq {
				t.Fatalf("%s: retry of %s = %+v, want duplicate of %d", stream, retry[i].ID, r, acked[stream][i].seq)
			}
		}
		t.Logf("%s: %d acknowledged, %d held", stream, len(acked[stream]), last)
	}
	// An AppendMulti is one write: all of its parts survived or none.
	for id, n := range multis {
		if n != len(crashStreams) {
			t.Fatalf("AppendMulti %s is held by %d of %d streams", id, n, len(crashStreams))
		}
	}
	t.Logf("%d AppendMulti calls held", len(multis))
}

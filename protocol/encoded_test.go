package protocol

import (
	"bytes"
	"reflect"
	"sync"
	"testing"
)

func encodeAll(frames []*Frame) []*Encoded {
	out := make([]*Encoded, len(frames))
	for i, f := range frames {
		out[i] = Encode(f)
	}
	return out
}

func framesOf(fs []*Frame) []Frame {
	out := make([]Frame, len(fs))
	for i, f := range fs {
		out[i] = *f
	}
	return out
}

func TestEncoded(t *testing.T) {
	for _, f := range sampleFrames() {
		e := Encode(f)
		if e.Frame() != f {
			t.Fatal("Frame() is not the frame given to Encode")
		}
		if got, want := e.Framed(), AppendFramed(nil, f); !bytes.Equal(got, want) {
			t.Fatalf("%s: Framed() = % x, want % x", f.Type, got, want)
		}
		if got, want := e.JSON(), AppendJSON(nil, f); !bytes.Equal(got, want) {
			t.Fatalf("%s: JSON() = %s, want %s", f.Type, got, want)
		}
		// encoded once: later calls return the same bytes
		if &e.Framed()[0] != &e.Framed()[0] || &e.JSON()[0] != &e.JSON()[0] {
			t.Fatalf("%s: encoded more than once", f.Type)
		}
	}
}

// Run with -race: many connections share one Encoded.
func TestEncodedConcurrent(t *testing.T) {
	frames := sampleFrames()
	var wantBin, wantJSON [][]byte
	for _, f := range frames {
		wantBin = append(wantBin, AppendFramed(nil, f))
		wantJSON = append(wantJSON, AppendJSON(nil, f))
	}
	for round := 0; round < 20; round++ {
		shared := encodeAll(frames)
		var wg sync.WaitGroup
		errs := make(chan string, 64)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i, e := range shared {
					// half start with JSON, half with binary
					if g%2 == 0 {
						if !bytes.Equal(e.Framed(), wantBin[i]) || !bytes.Equal(e.JSON(), wantJSON[i]) {
							errs <- e.Frame().Type.String()
						}
					} else if !bytes.Equal(e.JSON(), wantJSON[i]) || !bytes.Equal(e.Framed(), wantBin[i]) {
						errs <- e.Frame().Type.String()
					}
				}
				_ = AppendFramedBatch(nil, shared)
				_ = AppendJSONBatch(nil, shared)
			}()
		}
		wg.Wait()
		close(errs)
		for name := range errs {
			t.Errorf("round %d: %s encoded wrongly under concurrency", round, name)
		}
	}
}

func TestAppendFramedBatch(t *testing.T) {
	lim := DefaultLimits()
	all := sampleFrames()
	for _, n := range []int{0, 1, 2, len(all)} {
		msg := AppendFramedBatch([]byte("keep"), encodeAll(all[:n]))
		if !bytes.HasPrefix(msg, []byte("keep")) {
			t.Fatal("AppendFramedBatch dropped dst")
		}
		r := &frameReader{lim: lim}
		r.write(msg[4:])
		if r.err != nil || len(r.buf) != 0 {
			t.Fatalf("%d frames: err %v, %d bytes left", n, r.err, len(r.buf))
		}
		if want := framesOf(all[:n]); !(n == 0 && r.frames == nil) && !reflect.DeepEqual(r.frames, want) {
			t.Fatalf("%d frames: got %+v\nwant %+v", n, r.frames, want)
		}
	}
}

func TestAppendJSONBatch(t *testing.T) {
	lim := DefaultLimits()
	all := sampleFrames()
	for _, n := range []int{0, 1, 2, len(all)} {
		msg := AppendJSONBatch(nil, encodeAll(all[:n]))
		switch {
		case n == 1 && msg[0] != '{':
			t.Fatalf("a batch of one is not an object: %s", msg)
		case n != 1 && msg[0] != '[':
			t.Fatalf("a batch of %d is not an array: %s", n, msg)
		}
		got, err := DecodeJSONBatch(msg, lim)
		if err != nil {
			t.Fatalf("%d frames: %v in %s", n, err, msg)
		}
		if want := framesOf(all[:n]); !reflect.DeepEqual(got, want) {
			t.Fatalf("%d frames: got %+v\nwant %+v", n, got, want)
		}
	}
	got := AppendJSONBatch([]byte("x"), encodeAll(all[:2]))
	if !bytes.HasPrefix(got, []byte("x[")) {
		t.Fatalf("AppendJSONBatch dropped dst: %s", got)
	}
}

func TestBatchCachedOncePerSlot(t *testing.T) {
	f1 := Encode(&Frame{Type: TypePush, Stream: "t:a", Seq: 1})
	f2 := Encode(&Frame{Type: TypePush, Stream: "t:a", Seq: 2})
	b := NewBatch(f1, f2)
	calls := 0
	build := func(fs []*Encoded) []byte { calls++; return AppendFramedBatch(nil, fs) }
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); b.Cached(0, build) }()
	}
	wg.Wait()
	if calls != 1 {
		t.Fatalf("slot 0 built %d times", calls)
	}
	if got, want := b.Cached(0, build), AppendFramedBatch(nil, []*Encoded{f1, f2}); string(got) != string(want) {
		t.Fatal("cached bytes differ from the batch encoding")
	}
	b.Cached(1, build)
	if calls != 2 || len(b.Frames()) != 2 {
		t.Fatalf("slot 1: calls %d frames %d", calls, len(b.Frames()))
	}
}

// TestEncodedStamp: a frame is unstamped until SetStamp, and the stamp
// changes nothing in its encodings.
func TestEncodedStamp(t *testing.T) {
	e := Encode(&Frame{Type: TypePush, Stream: "u:x", Payload: []byte("p")})
	if at, tag := e.Stamp(); at != 0 || tag != 0 {
		t.Fatalf("new frame stamped: %d, %d", at, tag)
	}
	bin := string(e.Framed())
	e.SetStamp(42, 7)
	if at, tag := e.Stamp(); at != 42 || tag != 7 {
		t.Fatalf("Stamp() = %d, %d; want 42, 7", at, tag)
	}
	if string(e.Framed()) != bin || string(Encode(e.Frame()).Framed()) != bin {
		t.Fatal("the stamp changed the encoding")
	}
}

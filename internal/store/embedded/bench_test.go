package embedded_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
)

// BenchmarkAppend measures Append of one 100-byte message with an id, from
// concurrent writers, each on its own stream or all on one stream.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./internal/store/embedded/
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []struct {
		name   string
		policy embedded.SyncPolicy
	}{
		{"SyncEvery", embedded.SyncEvery},
		{"SyncInterval=10ms", embedded.SyncInterval(10 * time.Millisecond)},
	} {
		for _, writers := range []int{2, 8, 64} {
			for _, shared := range []bool{false, true} {
				streams := "each"
				if shared {
					streams = "one"
				}
				name := fmt.Sprintf("%s/writers=%d/streams=%s", sync.name, writers, streams)
				b.Run(name, func(b *testing.B) {
					benchAppend(b, sync.policy, writers, shared)
				})
			}
		}
	}
}

func benchAppend(b *testing.B, policy embedded.SyncPolicy, writers int, shared bool) {
	db, err := embedded.Open(filepath.Join(b.TempDir(), "data"), embedded.Options{Sync: policy})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	payload := make([]byte, 100)
	var next atomic.Int64
	b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		w := next.Add(1)
		stream := "one"
		if !shared {
			stream = fmt.Sprint("stream/", w)
		}
		for i := 0; pb.Next(); i++ {
			_, err := db.Append(b.Context(), stream, store.Message{ID: fmt.Sprintf("%d-%d", w, i), Payload: payload})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportAppends(b, b.N, cpu)
}

// reportAppends reports appends/s and, where measured, the process's CPU
// time per append (including Pebble's background work) since cpu.
func reportAppends(b *testing.B, appends int, cpu time.Duration) {
	b.ReportMetric(float64(appends)/b.Elapsed().Seconds(), "appends/s")
	if cpu := cpuTime() - cpu; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(appends), "cpu-µs/append")
	}
}

// BenchmarkAppendMulti measures AppendMulti of one 100-byte message with an
// id to each of 100 streams per call, from concurrent callers on disjoint
// streams. appends/s counts messages, comparable with BenchmarkAppend.
//
//	go test -run '^$' -bench BenchmarkAppendMulti -benchtime 3s ./internal/store/embedded/
func BenchmarkAppendMulti(b *testing.B) {
	const streams = 100
	for _, callers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("SyncEvery/callers=%d/streams=%d", callers, streams), func(b *testing.B) {
			db, err := embedded.Open(filepath.Join(b.TempDir(), "data"), embedded.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			payload := make([]byte, 100)
			var next atomic.Int64
			b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				c := next.Add(1)
				appends := make([]store.StreamAppend, streams)
				for i := range appends {
					appends[i].Stream = fmt.Sprintf("app/u:%d-%d", c, i)
					appends[i].Msgs = make([]store.Message, 1)
				}
				for n := 0; pb.Next(); n++ {
					for i := range appends {
						appends[i].Msgs[0] = store.Message{ID: fmt.Sprintf("%d-%d-%d", c, i, n), Payload: payload}
					}
					if _, err := db.AppendMulti(b.Context(), appends); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportAppends(b, b.N*streams, cpu)
		})
	}
}

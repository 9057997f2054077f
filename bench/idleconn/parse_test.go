package main

import "testing"

func TestParseStatus(t *testing.T) {
	data := []byte("Name:\therald\nVmHWM:\t   70000 kB\nVmRSS:\t   68000 kB\nRssAnon:\t   60000 kB\nRssFile:\t    8000 kB\nThreads:\t13\n")
	s, err := parseStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	want := procStatus{VmRSS: 68000 << 10, RssAnon: 60000 << 10, RssFile: 8000 << 10, VmHWM: 70000 << 10, Threads: 13}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Fatal("no error without VmRSS")
	}
}

func TestParseMetrics(t *testing.T) {
	body := []byte(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 21
go_memstats_heap_inuse_bytes 5.8359808e+07
go_memstats_heap_alloc_bytes{x="y"} 1
go_gc_duration_seconds{quantile="0"} 2.1e-05
herald_connections 19200
`)
	m := parseMetrics(body)
	if m.Goroutines != 21 || m.HeapInuse != 58359808 || m.HeapAlloc != 0 {
		t.Fatalf("got %+v", m)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []int64
		want int64
	}{{nil, 0}, {[]int64{3}, 3}, {[]int64{5, 1, 3}, 3}, {[]int64{4, 1, 3, 2}, 2}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestResultCompute(t *testing.T) {
	r := &result{BaselineOpen: 200, FinalOpen: 1200}
	r.Baseline.RSS = 10 << 20
	r.Final.RSS = 10<<20 + 2048*1000
	r.Baseline.Go.Goroutines, r.Final.Go.Goroutines = 21, 21
	r.compute()
	if r.Measured != 1000 || r.PerConn == nil || r.PerConn.RSSBytes != 2048 || r.PerConn.RSSKiB != 2 || r.PerConn.Goroutines != 0 {
		t.Fatalf("got measured %d, %+v", r.Measured, r.PerConn)
	}
}

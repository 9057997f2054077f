package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/config"
)

// workerMsg is one JSON line a worker writes on its stdout.
type workerMsg struct {
	Worker  int      `json:"worker"`
	Event   string   `json:"event"` // "progress", "ready" or "fatal"
	Opened  int      `json:"opened"`
	Failed  int      `json:"failed"`
	Errors  []string `json:"errors,omitempty"`
	Elapsed float64  `json:"elapsed_s,omitempty"`
	NoFile  uint64   `json:"nofile,omitempty"` // soft open-files limit
}

// loadApp reads the development app the server created in dataDir.
func loadApp(dataDir string) (config.App, error) {
	if _, err := os.Stat(filepath.Join(dataDir, config.DevAppFile)); err != nil {
		return config.App{}, err // never let config.DevApp create a new one
	}
	app, _, err := config.DevApp(dataDir)
	return app, err
}

// runWorker opens o.count connections, reports on stdout, and holds them
// until stdin is closed, a signal arrives or o.deadline passes. Sockets are
// not closed one by one: the process exits and the kernel closes them.
func runWorker(ctx context.Context, o options) int {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()

	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	say := func(m workerMsg) {
		m.Worker = o.workerID
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	app, err := loadApp(o.dataDir)
	if err != nil {
		say(workerMsg{Event: "fatal", Errors: []string{err.Error()}})
		return 1
	}
	// Stop as soon as the coordinator closes stdin, even while opening.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	op := &opener{url: o.url, app: app.ID, secret: []byte(app.Secret), topic: o.topic, src: srcAddrs(o.srcIPs), timeout: o.dialTimeout}
	res := op.openMany(ctx, "u", o.first, o.count, o.rate, o.concurrency, func(opened, failed int) {
		say(workerMsg{Event: "progress", Opened: opened, Failed: failed})
	})
	runtime.GC() // drop the garbage of the dials; the server is what is measured
	say(workerMsg{Event: "ready", Opened: len(res.conns), Failed: res.failed, Errors: res.errs,
		Elapsed: time.Since(start).Seconds(), NoFile: noFile()})

	<-ctx.Done()
	runtime.KeepAlive(res.conns)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		fmt.Fprintf(os.Stderr, "idleconn worker %d: deadline reached, exiting\n", o.workerID)
	}
	return 0
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/logging"
	"github.com/herald-push/herald/internal/server"
)

// Environment of the profiling server (`idleconn serve`).
const (
	envProfile = "IDLECONN_HEAP_PROFILE" // heap profile written on SIGUSR1
	envRate    = "IDLECONN_MEMPROFILERATE"
)

// runServe runs the Herald server in this process, the way `herald serve`
// does (same configuration path, same server.New), with heap profiling on:
// on SIGUSR1 it collects garbage and writes the in-use heap profile to
// $IDLECONN_HEAP_PROFILE. It exists because herald exposes no pprof
// endpoint; it is only used with -heap-profile, and the RSS figures of such
// a run are not representative (profiling costs memory and time).
func runServe(args []string, stdout, stderr io.Writer) int {
	if v, err := strconv.Atoi(os.Getenv(envRate)); err == nil && v > 0 {
		runtime.MemProfileRate = v
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	devPath, _, err := cfg.EnsureDevApp()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil || devPath == "" {
		fmt.Fprintln(stderr, "serve: configuration:", err, devPath)
		return 1
	}
	logger, async, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format, cfg.Log.Buffer)
	if err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = async.Close(cctx)
	}()
	nbiolog.SetLogger(nbioLogger{logger.With("component", "nbio")})
	srv, err := server.New(cfg, server.Options{Logger: logger, LogsDropped: async.Dropped})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	// The banner startHerald reads.
	fmt.Fprintf(stdout, "Development app %q (secret and API key in %s)\n", cfg.Apps[0].ID, devPath)
	fmt.Fprintf(stdout, "  API key:   %s\n", cfg.Apps[0].APIKeys[0])
	fmt.Fprintf(stdout, "  WebSocket: %s\n", srv.WSURL())
	fmt.Fprintf(stdout, "  TCP:       %s\n", srv.TCPAddr())
	fmt.Fprintf(stdout, "  API:       %s\n", srv.APIURL())
	fmt.Fprintf(stdout, "  Token:     (profiling server)\n")

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for done := false; !done; {
		select {
		case <-usr1:
			if err := writeHeapProfile(os.Getenv(envProfile)); err != nil {
				logger.Error("heap profile", "err", err)
			}
		case <-ctx.Done():
			done = true
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx, ""); err != nil {
		logger.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// writeHeapProfile writes the in-use heap profile after a collection, to
// path+".tmp" and then renames it, so a reader never sees half a file.
func writeHeapProfile(path string) error {
	if path == "" {
		return fmt.Errorf("%s not set", envProfile)
	}
	runtime.GC()
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// nbioLogger sends the event loop library's logs to slog, as herald does.
type nbioLogger struct{ l *slog.Logger }

func (n nbioLogger) Debug(format string, v ...any) {
	n.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (n nbioLogger) Info(format string, v ...any) {
	n.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (n nbioLogger) Warn(format string, v ...any) {
	n.l.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (n nbioLogger) Error(format string, v ...any) {
	n.l.Error(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

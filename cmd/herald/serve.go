package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/logging"
	"github.com/herald-push/herald/internal/server"
)

// loadConfig parses -config and the config flags (only those named in
// only, when it is not nil), applies the environment, and validates,
// reporting every problem of the file, the environment, the flags and the
// values at once. With withDevApp, a missing app list is filled with the
// development app kept in the data directory.
func loadConfig(name string, args []string, stderr io.Writer, withDevApp bool, only []string, extra func(*flag.FlagSet)) (config.Config, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("HERALD_CONFIG"), "YAML configuration `file` (env HERALD_CONFIG)")
	bind := func(c *config.Config, fs *flag.FlagSet) {
		if only != nil {
			c.BindFlagsOnly(fs, only...)
		} else {
			c.BindFlags(fs)
		}
		if extra != nil {
			extra(fs)
		}
	}
	// A first pass finds -config; the second applies flags over file and env.
	pre := flag.NewFlagSet(name, flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	prePath := pre.String("config", *path, "")
	var scratch config.Config
	bind(&scratch, pre)
	_ = pre.Parse(args)
	cfg, loadErr := config.Load(*prePath, os.LookupEnv)
	if loadErr != nil && !errors.Is(loadErr, config.ErrPartial) {
		return cfg, "", exitError{reportErrors(stderr, loadErr)}
	}
	bind(&cfg, fs)
	if err := fs.Parse(args); err != nil {
		return cfg, "", exitError{err}
	}
	if loadErr != nil { // the rest of the configuration is checked too
		err := errors.Join(loadErr, cfg.Validate())
		return cfg, "", exitError{reportErrors(stderr, err)}
	}
	devPath := ""
	if withDevApp {
		if len(cfg.Apps) == 0 {
			if _, err := os.Stat(cfg.DataDir); err != nil {
				// No server has run here: minting a token for a new
				// development app would give one no server accepts.
				if name == "token" {
					return cfg, "", fmt.Errorf("token: no apps configured and no data directory at %s (where herald serve keeps its development app); give -config, or -data-dir of the server", cfg.DataDir)
				}
			}
		}
		p, created, err := cfg.EnsureDevApp()
		if err != nil {
			return cfg, "", fmt.Errorf("development app: %w", err)
		}
		if p != "" {
			devPath = p
			if created {
				fmt.Fprintf(stderr, "herald: no apps configured; created development app %q in %s\n", config.DevAppID, p)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", exitError{reportErrors(stderr, err)}
	}
	return cfg, devPath, nil
}

// reportErrors prints each of the (joined) errors on its own line.
func reportErrors(w io.Writer, err error) error {
	for _, e := range flatten(err) {
		fmt.Fprintln(w, "config:", strings.TrimPrefix(e.Error(), "config: "))
	}
	return err
}

// flatten lists the leaves of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// SIGHUP reloads the configuration; caught from the start so that it
	// never kills the process (one that comes before the server runs is
	// taken as a reload of what was just read).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	cfg, devPath, err := loadConfig("serve", args, stderr, true, nil, nil)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	lvl, err := logging.ParseLevel(cfg.Log.Level)
	if err != nil {
		return err
	}
	level.Set(lvl)
	logger, async, err := logging.NewLeveled(stderr, level, cfg.Log.Format, cfg.Log.Buffer)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = async.Close(cctx)
	}()
	nbiolog.SetLogger(nbioLogger{logger.With("component", "nbio")})
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}

	var srv *server.Server
	load := func() (config.Config, error) {
		var errOut strings.Builder
		c, _, err := loadConfig("serve", args, &errOut, true, nil, nil)
		if err != nil {
			return c, unwrapExit(err)
		}
		return c, nil
	}
	srv, err = server.New(cfg, server.Options{Logger: logger, LogsDropped: async.Dropped, LogLevel: level, Version: version, LoadConfig: load})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	if devPath != "" {
		app := cfg.Apps[0]
		fmt.Fprintf(stdout, "Development app %q (secret and API key in %s)\n", app.ID, devPath)
		fmt.Fprintf(stdout, "  API key:   %s\n", app.APIKeys[0])
		fmt.Fprintf(stdout, "  WebSocket: %s\n", srv.WSURL())
		if a := srv.TCPAddr(); a != "" {
			fmt.Fprintf(stdout, "  TCP:       %s\n", a)
		}
		fmt.Fprintf(stdout, "  API:       %s\n", srv.APIURL())
		fmt.Fprintf(stdout, "  Token:     herald token -data-dir %s -user alice -topics '*'\n", cfg.DataDir)
		if len(cfg.Admin.Tokens) > 0 {
			fmt.Fprintf(stdout, "  Dashboard: %s/admin/ (admin token: %s)\n", srv.APIURL(), cfg.Admin.Tokens[0])
		}
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			reload(srv, logger)
		}
	}
	logger.Info("shutting down: draining connections")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx, ""); err != nil {
		logger.Error("shutdown", "err", err)
		return err
	}
	logger.Info("stopped")
	return nil
}

// reload re-reads the configuration as serve did (the -config file, the
// environment, then the same command-line flags, which keep winning) and
// applies it to srv, logging what changed or every problem found; on a
// problem the configuration in force stays.
func reload(srv *server.Server, logger *slog.Logger) {
	res, err := srv.ReloadFromSource()
	if err != nil {
		var problems []string
		for _, e := range flatten(unwrapRefused(err)) {
			problems = append(problems, strings.TrimPrefix(e.Error(), "config: "))
		}
		logger.Error("reload refused: the configuration in force is unchanged", "problems", problems)
		return
	}
	logger.Info("reloaded", "changes", res.Changed, "took", res.Took)
}

// unwrapExit returns the error an exitError reported.
func unwrapExit(err error) error {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.error
	}
	return err
}

// unwrapRefused returns the problems of a refused reload, joined.
func unwrapRefused(err error) error {
	var re *server.RefusedError
	if errors.As(err, &re) {
		return errors.Join(re.Problems...)
	}
	return err
}

// nbioLogger sends the event-loop library's logs to slog.
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

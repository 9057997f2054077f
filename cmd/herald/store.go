package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/store/embedded"
)

const storeUsage = `Usage:
  herald store check   [-config FILE] [-data DIR]   open the message store as the server would and report
  herald store salvage [-config FILE] [-data DIR]   keep what is readable of a damaged store, start a new epoch

The store is data_dir/store (data_dir from the configuration, or -data).
See docs/operations.md, "Damaged storage".
`

// storeCmd runs "herald store": tools for the embedded message store.
func storeCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "salvage") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, storeUsage)
			return nil
		}
		if len(args) == 0 {
			fmt.Fprint(stderr, storeUsage)
			return exitError{errors.New("store: no subcommand")}
		}
		err := fmt.Errorf("store: unknown subcommand %q", args[0])
		fmt.Fprintf(stderr, "herald %v\n%s", err, storeUsage)
		return exitError{err}
	}
	sub := args[0]
	fs := flag.NewFlagSet("herald store "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("HERALD_CONFIG"), "YAML configuration `file` (env HERALD_CONFIG)")
	data := fs.String("data", "", "data `directory` (default: the configuration's data_dir)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{err}
	}
	cfg, err := config.Load(*path, os.LookupEnv)
	if err != nil {
		return exitError{reportErrors(stderr, err)}
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	if cfg.Store == "memory" {
		return errors.New("store: the configuration uses the memory store, which keeps nothing on disk")
	}
	dir := filepath.Join(cfg.DataDir, "store")
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("store: no message store at %s: %w", dir, err)
	}
	opts := embedded.Options{}
	if cfg.StoreSync > 0 {
		opts.Sync = embedded.SyncInterval(cfg.StoreSync)
	}
	if sub == "salvage" {
		return salvageStore(dir, opts, stdout)
	}
	db, err := embedded.Open(dir, opts)
	if err != nil {
		fmt.Fprintf(stdout, "store %s: DAMAGED: %v\n", dir, err)
		if errors.Is(err, embedded.ErrCorrupt) {
			fmt.Fprintln(stdout, "Run 'herald store salvage' with the same configuration to keep what is readable.")
		}
		return exitError{err}
	}
	rec := db.Recovery()
	switch {
	case rec.Lost:
		fmt.Fprintf(stdout, "store %s: acknowledged messages were LOST: %s\nStarted epoch %s (was %s): clients are told their positions cannot be recovered.\n",
			dir, rec.Reason, rec.Epoch, rec.PrevEpoch)
	case rec.NoMark:
		fmt.Fprintf(stdout, "store %s: opened, epoch %s; it had no acknowledged mark (older data): losses are detected from now on\n", dir, rec.Epoch)
	default:
		fmt.Fprintf(stdout, "store %s: ok, epoch %s; every acknowledged write is present\n", dir, rec.Epoch)
	}
	return db.Close()
}

func salvageStore(dir string, opts embedded.Options, stdout io.Writer) error {
	start := time.Now()
	rep, err := embedded.Salvage(dir, opts)
	if err != nil {
		return err
	}
	if rep.Healthy {
		fmt.Fprintf(stdout, "store %s opens as it is (epoch %s): nothing to salvage\n", dir, rep.Epoch)
		return nil
	}
	fmt.Fprintf(stdout, "store %s salvaged in %v:\n", dir, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  write-ahead logs moved to %s (delete them once you no longer need them)\n", rep.Moved)
	fmt.Fprintf(stdout, "  %d logs read back, %d write batches applied\n", rep.Logs, rep.Records)
	if rep.Stopped != nil {
		fmt.Fprintf(stdout, "  stopped at the damage: %v\n  everything written after it is lost\n", rep.Stopped)
	}
	fmt.Fprintf(stdout, "  new epoch %s (was %s): clients are told their positions cannot be recovered\n", rep.Epoch, rep.PrevEpoch)
	return nil
}

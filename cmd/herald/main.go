// Command herald is the Herald push server and its tools.
//
//	herald serve         run a server (embedded defaults, no external services)
//	herald token         mint a client token for trying it out
//	herald check-config  validate a configuration file
//	herald store         check or salvage the embedded message store
//	herald bench         the load generator
//	herald version       print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is the release this binary was built from.
const version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: the command printed its help
		}
		var ee exitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "herald:", err)
		}
		os.Exit(1)
	}
}

// exitError is an error that has already been reported to the user.
type exitError struct{ error }

// Unwrap returns the error reported.
func (e exitError) Unwrap() error { return e.error }

const usage = `herald: a real-time push server

Usage:
  herald serve        [-config FILE] [flags]   run the server
  herald token        [-config FILE] -user ID [-app ID] [-topics a,b.*] [-ttl 24h]
  herald check-config [-config FILE] [flags]   report every problem in a configuration
  herald store check|salvage [-config FILE]    check the message store; salvage a damaged one
  herald bench <scenario> [flags]              load generator: connect, fanout, unicast, storm, api
  herald version

Run "herald <command> -h" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{errors.New("no command")}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "token":
		return token(args[1:], stdout, stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "store":
		return storeCmd(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "herald", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", args[0], usage)
	return exitError{fmt.Errorf("unknown command %q", args[0])}
}

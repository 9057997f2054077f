package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line args and returns what it printed.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestHelp: every command's -h is help (exit 0), and shows that
// command's flags only.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string // flags listed
		notWant []string // flags not listed
	}{
		{[]string{"serve", "-h"}, []string{"-ws-addr", "-cluster-nats"}, nil},
		{[]string{"check-config", "-h"}, []string{"-config", "-heartbeat"}, nil},
		{[]string{"token", "-h"}, []string{"-user", "-app", "-ttl", "-data-dir", "-config"}, []string{"-ws-addr", "-heartbeat", "-cluster-redis"}},
		{[]string{"store", "check", "-h"}, []string{"-data"}, []string{"-ws-addr"}},
		{[]string{"help"}, []string{"herald serve"}, nil},
	} {
		out, errOut, err := runCLI(t, tc.args...)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: %v (help must exit 0)", tc.args, err)
		}
		text := out + errOut
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%v: help lacks %s:\n%s", tc.args, w, text)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(text, w+" ") {
				t.Errorf("%v: help lists %s, which is not this command's:\n%s", tc.args, w, text)
			}
		}
	}
}

// TestUnknownCommand: an unknown command is named, and fails.
func TestUnknownCommand(t *testing.T) {
	_, errOut, err := runCLI(t, "sevre")
	if err == nil || !strings.Contains(errOut, `unknown command "sevre"`) {
		t.Fatalf("err %v, stderr %q", err, errOut)
	}
}

// TestTokenWithoutData: herald token where no server ever ran says where
// it looked instead of inventing an app no server knows.
func TestTokenWithoutData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nothing-here")
	_, _, err := runCLI(t, "token", "-user", "alice", "-data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v; want one naming %s", err, dir)
	}
	if _, statErr := os.Stat(dir); statErr == nil {
		t.Fatalf("%s was created", dir)
	}
}

// TestCheckConfigOnePass: unknown keys, values of the wrong type and
// semantic problems are reported together.
func TestCheckConfigOnePass(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte("bogus: 1\nheartbeat: 5\nmax_frame_size: 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runCLI(t, "check-config", "-config", path)
	if err == nil {
		t.Fatal("a bad configuration passed")
	}
	for _, want := range []string{"field bogus not found", "line 2: cannot unmarshal", "max_frame_size: must be between"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, errOut)
		}
	}
	if n := strings.Count(errOut, "\n"); n < 3 {
		t.Errorf("want one problem per line, got:\n%s", errOut)
	}
}

// TestBenchFlags: bad numbers are refused with every problem named before
// anything starts (no panic, no server spawned).
func TestBenchFlags(t *testing.T) {
	if _, _, err := runCLI(t, "bench", "-h"); err != nil {
		t.Fatalf("bench -h: %v", err)
	}
	_, _, err := runCLI(t, "bench", "unicast", "-conns", "-5", "-rate", "0", "-size", "3", "-spawn=false")
	if err == nil {
		t.Fatal("bad numbers accepted")
	}
	for _, want := range []string{"-conns must be", "-rate must be positive", "-size must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

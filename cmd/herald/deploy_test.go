package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDeployFiles checks what deploy/ runs: the systemd unit's and the
// container's command lines are valid herald command lines (their flags
// exist and the configuration they make passes check-config), and the unit
// passes systemd-analyze where it is installed.
func TestDeployFiles(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(cfg, []byte("node: deploy-test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	check := func(what string, args []string) {
		t.Helper()
		if len(args) < 2 || args[0] != "/usr/local/bin/herald" {
			t.Fatalf("%s: not a herald command line: %q", what, args)
		}
		args = args[1:]
		for i, a := range args {
			switch a {
			case "serve":
				args[i] = "check-config" // same flags, nothing started
			case "/etc/herald/herald.yaml":
				args[i] = cfg
			case "/var/lib/herald", "/data":
				args[i] = data
			}
		}
		if out, errOut, err := runCLI(t, args...); err != nil {
			t.Errorf("%s: herald %s: %v\n%s%s", what, strings.Join(args, " "), err, out, errOut)
		}
	}

	unit, err := os.ReadFile("../../deploy/herald.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"ExecStartPre", "ExecStart"} {
		m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindSubmatch(unit)
		if m == nil {
			t.Fatalf("the unit has no %s", key)
		}
		check(key, strings.Fields(string(m[1])))
	}

	cf, err := os.ReadFile("../../deploy/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\nENTRYPOINT (\[.*?\])\n`).FindSubmatch(cf)
	if m == nil {
		t.Fatal("the Containerfile has no ENTRYPOINT")
	}
	var entry []string
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(m[1]), "\\\n", "")), &entry); err != nil {
		t.Fatalf("ENTRYPOINT: %v", err)
	}
	check("ENTRYPOINT", entry)

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is not checked")
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "herald.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/herald", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput()
	// Outside a booted systemd (containers, CI) verify may complain about
	// its environment; any word about the unit's own lines fails (it exits
	// 0 on unknown keys, so its output is what counts).
	if regexp.MustCompile(`herald\.service:\d+:`).Match(out) {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
}

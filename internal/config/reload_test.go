package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEveryFieldClassified: every leaf setting of Config is either
// reloadable or fixed, so that a new field cannot be silently ignored by a
// reload.
func TestEveryFieldClassified(t *testing.T) {
	covered := map[string]bool{}
	for _, n := range ReloadableSettings() {
		covered[n] = true
	}
	for _, f := range fixedSettings() {
		covered[f.name] = true
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
			if covered[name] {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(name+".", f.Type)
				continue
			}
			t.Errorf("setting %s is neither reloadable nor fixed (config/reload.go)", name)
		}
	}
	walk("", reflect.TypeOf(Config{}))
}

// TestFixedChanges: each fixed setting changed is named; reloadable ones
// and nil versus empty lists are not.
func TestFixedChanges(t *testing.T) {
	old := Default()
	new := old
	new.Apps = []App{{ID: "x"}}
	new.FrameRate++
	new.Log.Level = "debug"
	new.WS.AllowedOrigins = []string{}
	if errs := FixedChanges(old, new); len(errs) != 0 {
		t.Fatalf("FixedChanges = %v; want none", errs)
	}
	new.WS.Addr = "127.0.0.1:1"
	new.Node = "other"
	new.Cluster.Redis = "r:1"
	new.DataDir = "/elsewhere"
	var names []string
	for _, e := range FixedChanges(old, new) {
		names = append(names, strings.SplitN(e.Error(), ":", 2)[0])
	}
	slices.Sort(names)
	if want := []string{"cluster", "data_dir", "node", "ws.addr"}; !slices.Equal(names, want) {
		t.Fatalf("FixedChanges named %v; want %v", names, want)
	}
}

// TestPreviousSecrets: previous secrets are validated and accepted after
// the secret.
func TestPreviousSecrets(t *testing.T) {
	c := Default()
	c.Apps = []App{{ID: "a", Secret: "new-secret-0123456789", PreviousSecrets: []string{"old-secret-0123456789", "short", "new-secret-0123456789"}, APIKeys: []string{"key-0123456789abcdef"}}}
	err := c.Validate()
	for _, want := range []string{"apps[0].previous_secrets[1]: must be at least 16 bytes", "apps[0].previous_secrets[2]: is the same as secret"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v; want %q", err, want)
		}
	}
	c.Apps[0].PreviousSecrets = c.Apps[0].PreviousSecrets[:1]
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := c.AppSecretSets()["a"]
	if len(got) != 2 || string(got[0]) != "new-secret-0123456789" || string(got[1]) != "old-secret-0123456789" {
		t.Fatalf("AppSecretSets = %q", got)
	}
}

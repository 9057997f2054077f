package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/config"
)

func token(args []string, stdout, stderr io.Writer) error {
	var user, app, topics string
	var ttl time.Duration
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&user, "user", "", "user `id` the token is for (required)")
		fs.StringVar(&app, "app", "", "app `id`; default: the only configured app")
		fs.StringVar(&topics, "topics", "", "comma-separated topic `patterns` the user may subscribe to (name, prefix.*, *)")
		fs.DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime")
	}
	cfg, _, err := loadConfig("token", args, stderr, true, []string{"data-dir"}, extra)
	if err != nil {
		return err
	}
	if user == "" {
		return fmt.Errorf("token: -user is required")
	}
	var chosen *config.App
	for i := range cfg.Apps {
		if cfg.Apps[i].ID == app || (app == "" && len(cfg.Apps) == 1) {
			chosen = &cfg.Apps[i]
		}
	}
	if chosen == nil {
		return fmt.Errorf("token: no app %q in the configuration (use -app)", app)
	}
	var patterns []string
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			patterns = append(patterns, t)
		}
	}
	tok, err := auth.Mint(chosen.ID, []byte(chosen.Secret), user, patterns, ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	if _, _, err := loadConfig("check-config", args, stderr, false, nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "configuration OK")
	return nil
}

package config

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// DevAppFile is the name, inside the data directory, of the file holding the
// development app.
const DevAppFile = "dev-app.yaml"

// DevAppID is the id of the development app.
const DevAppID = "demo"

// devAppHeader starts a newly written development app file.
const devAppHeader = "# Development app created by herald because no apps are configured.\n" +
	"# Do not use in production: configure apps in the config file instead.\n"

// DevApp loads the development app from <dataDir>/dev-app.yaml or, if that
// file does not exist, creates the directory (0700) and the file (0600) with
// app id "demo", a random 32-byte hex secret and a random API key. created
// reports whether the file was written.
func DevApp(dataDir string) (app App, created bool, err error) {
	if dataDir == "" {
		return App{}, false, errors.New("config: dev app: data directory not set")
	}
	path := filepath.Join(dataDir, DevAppFile)
	app, err = readDevApp(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return app, false, err
	}

	app = newDevApp()
	data, err := yaml.Marshal(app)
	if err != nil {
		return App{}, false, fmt.Errorf("config: dev app: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return App{}, false, fmt.Errorf("config: dev app: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process just created it
		app, err = readDevApp(path)
		return app, false, err
	}
	if err != nil {
		return App{}, false, fmt.Errorf("config: dev app: %w", err)
	}
	_, err = f.Write(append([]byte(devAppHeader), data...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return App{}, false, fmt.Errorf("config: dev app: %w", err)
	}
	return app, true, nil
}

// readDevApp reads and checks a development app file. A missing file yields
// an error wrapping fs.ErrNotExist.
func readDevApp(path string) (App, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return App{}, fmt.Errorf("config: dev app: %w", err)
	}
	var app App
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&app); err != nil {
		return App{}, fmt.Errorf("config: dev app %s: %w", path, err)
	}
	var p problems
	checkApp(&p, "app", app)
	if err := errors.Join(p...); err != nil {
		return App{}, fmt.Errorf("config: dev app %s: %w", path, err)
	}
	return app, nil
}

// newDevApp returns a development app with fresh random credentials.
func newDevApp() App {
	secret := make([]byte, 32)
	rand.Read(secret) // never fails (Go 1.24+)
	return App{
		ID:      DevAppID,
		Secret:  hex.EncodeToString(secret),
		APIKeys: []string{rand.Text()},
	}
}

// EnsureDevApp sets c.Apps to the development app (see DevApp) when no apps
// are configured, and returns the path of its file and whether it was just
// created. It does nothing, returning "", false, nil, when c.Apps is not
// empty.
func (c *Config) EnsureDevApp() (path string, created bool, err error) {
	if len(c.Apps) > 0 {
		return "", false, nil
	}
	app, created, err := DevApp(c.DataDir)
	if err != nil {
		return "", false, err
	}
	c.Apps = []App{app}
	if len(c.Admin.Tokens) == 0 {
		tok, err := devAdminToken(c.DataDir)
		if err != nil {
			return "", false, err
		}
		c.Admin.Tokens = []string{tok}
	}
	return filepath.Join(c.DataDir, DevAppFile), created, nil
}

// DevAdminFile holds the development admin token, beside DevAppFile.
const DevAdminFile = "dev-admin-token"

// devAdminToken reads the development admin token from dataDir, making
// one the first time.
func devAdminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, DevAdminFile)
	if data, err := os.ReadFile(path); err == nil {
		if tok := strings.TrimSpace(string(data)); len(tok) >= 16 {
			return tok, nil
		}
		return "", fmt.Errorf("config: %s: not an admin token (16 characters or more)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("config: dev admin token: %w", err)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("config: dev admin token: %w", err)
	}
	tok := hex.EncodeToString(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process just made it
		return devAdminToken(dataDir)
	}
	if err != nil {
		return "", fmt.Errorf("config: dev admin token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("config: dev admin token: %w", err)
	}
	return tok, nil
}

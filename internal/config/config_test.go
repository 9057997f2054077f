package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeFile writes content to a new file in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// envMap returns a lookupEnv function reading m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// problemsOf splits a Validate error into its messages.
func problemsOf(err error) []string {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var msgs []string
	for _, e := range j.Unwrap() {
		msgs = append(msgs, e.Error())
	}
	return msgs
}

func validApp(id string) App {
	return App{ID: id, Secret: "0123456789abcdef", APIKeys: []string{id + "-key-0123456789ab"}}
}

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	path := writeFile(t, "bad.yaml", `
node: "has space"
data_dir: ""
ws:
  addr: "localhost"
  path: "ws"
  tls_cert: /nonexistent/cert.pem
tcp:
  addr: "127.0.0.1:99999"
  path: /tcp
api:
  addr: ""
heartbeat: 5s
heartbeat_grace: -1s
auth_timeout: 10s
max_frame_size: 512
max_payload: 0
max_connect_size: 100
frame_rate: 0
subscribe_burst: 5000000
outbound_limit: 100
max_subscriptions: 0
max_recipients: -1
duplicate_login: kick
fanout_workers: 0
log:
  level: loud
  format: xml
  buffer: 0
apps:
  - id: demo
    secret: 0123456789abcdef
    api_keys: [demo-key-0123456789]
  - id: other
    secret: short
    api_keys: [demo-key-0123456789, tiny]
  - id: demo
    secret: 0123456789abcdef
  - id: "bad id"
    secret: 0123456789abcdef
    api_keys: ["key with spaces 0123456789"]
`)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []string{
		"node:",
		"data_dir:",
		"ws.addr: address localhost: missing port in address",
		"ws.path: must start with \"/\"",
		"ws.tls_key: must be set when tls_cert is",
		"tcp.addr: port \"99999\"",
		"tcp.path: is not used",
		"api.addr: must not be empty",
		"heartbeat_grace: must be positive",
		"auth_timeout: must not exceed heartbeat (5s)",
		"max_frame_size: must be between 1024 and 16777216",
		"max_payload: must be positive",
		"max_connect_size: must be at least 1024",
		"frame_rate: must be at least 1",
		"frame_burst: must be at least subscribe_burst (5000000)",
		"subscribe_burst: must be between 1 and 4000000",
		"outbound_limit: must be at least 65536",
		"max_subscriptions: must be at least 1",
		"max_recipients: must be at least 1",
		"duplicate_login: must be \"replace\" or \"refuse\", not \"kick\"",
		"fanout_workers: must be at least 1",
		"log.level: logging: unknown level \"loud\"",
		"log.format: logging: unknown format \"xml\"",
		"log.buffer: must be at least 1",
		"apps[1].secret: must be at least 16 bytes",
		"apps[1].api_keys[0]: duplicate of apps[0].api_keys[0]",
		"apps[1].api_keys[1]: must be 16-128 printable characters",
		"apps[2].api_keys: must have at least one key",
		"apps[2].id: duplicate of apps[0].id \"demo\"",
		"apps[3].id: must be",
		"apps[3].api_keys[0]: must be 16-128 printable characters",
	}
	got := problemsOf(c.Validate())
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, g := range got {
		if strings.Contains(g, "demo-key") || strings.Contains(g, "0123456789abcdef") {
			t.Errorf("problem reveals a secret: %q", g)
		}
	}
}

func TestValidateRules(t *testing.T) {
	certFile, keyFile := writeCert(t)
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // prefix of the only problem; "" means valid
	}{
		{"tcp disabled", func(c *Config) { c.TCP.Addr = "" }, ""},
		{"cluster", func(c *Config) {
			c.Store, c.Cluster.Redis, c.Cluster.NATS = "redis", "127.0.0.1:6379", "nats://127.0.0.1:4222"
			c.Cluster.AdvertiseWS, c.Cluster.AdvertiseTCP = "ws://10.0.0.5:8080/ws", "10.0.0.5:8090"
		}, ""},
		{"cluster without nats", func(c *Config) { c.Store, c.Cluster.Redis = "redis", "127.0.0.1:6379" }, "cluster.nats: must be set"},
		{"cluster with the embedded store", func(c *Config) {
			c.Cluster.Redis, c.Cluster.NATS = "127.0.0.1:6379", "nats://127.0.0.1:4222"
		}, "store: must be \"redis\" in a cluster"},
		{"redis store alone", func(c *Config) { c.Store = "redis" }, "store: \"redis\" is the store of a cluster"},
		{"cluster prefix with a dot", func(c *Config) {
			c.Store, c.Cluster.Redis, c.Cluster.NATS, c.Cluster.Prefix = "redis", "127.0.0.1:6379", "nats://127.0.0.1:4222", "a.b"
		}, "cluster.prefix:"},
		{"cluster advertise not a URL", func(c *Config) {
			c.Store, c.Cluster.Redis, c.Cluster.NATS, c.Cluster.AdvertiseWS = "redis", "127.0.0.1:6379", "nats://127.0.0.1:4222", "10.0.0.5:8080"
		}, "cluster.advertise_ws:"},
		{"all interfaces", func(c *Config) { c.WS.Addr = ":8080" }, ""},
		{"ipv6", func(c *Config) { c.WS.Addr = "[::1]:8080" }, ""},
		{"port zero shared", func(c *Config) { c.WS.Addr, c.TCP.Addr, c.API.Addr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0" }, ""},
		{"api prefix", func(c *Config) { c.API.Path = "/herald" }, ""},
		{"api prefix relative", func(c *Config) { c.API.Path = "herald" }, "api.path:"},
		{"ws path empty", func(c *Config) { c.WS.Path = "" }, "ws.path: must not be empty"},
		{"ws path is the sse path", func(c *Config) { c.WS.Path = "/push/sse" }, "ws.path: must not end in /sse"},
		{"allowed origins", func(c *Config) {
			c.WS.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000", "*"}
		}, ""},
		{"allowed origin with a path", func(c *Config) { c.WS.AllowedOrigins = []string{"https://app.example.com/"} }, "ws.allowed_origins[0]:"},
		{"allowed origin without a scheme", func(c *Config) { c.WS.AllowedOrigins = []string{"*", "app.example.com"} }, "ws.allowed_origins[1]:"},
		{"allowed origins on tcp", func(c *Config) { c.TCP.AllowedOrigins = []string{"*"} }, "tcp.allowed_origins: is not used"},
		{"cors origins", func(c *Config) { c.API.CORSOrigins = []string{"https://admin.example.com:8443"} }, ""},
		{"cors origin with a query", func(c *Config) { c.API.CORSOrigins = []string{"https://admin.example.com?x"} }, "api.cors_origins[0]:"},
		{"cors origins on ws", func(c *Config) { c.WS.CORSOrigins = []string{"*"} }, "ws.cors_origins: is not used"},
		{"named port", func(c *Config) { c.API.Addr = "localhost:http" }, "api.addr: port \"http\""},
		{"shared address", func(c *Config) { c.API.Addr = c.WS.Addr }, "api.addr: same as ws.addr"},
		{"auth timeout equals heartbeat", func(c *Config) { c.AuthTimeout = c.Heartbeat }, ""},
		{"auth timeout zero", func(c *Config) { c.AuthTimeout = 0 }, "auth_timeout: must be positive"},
		{"heartbeat zero", func(c *Config) { c.Heartbeat = 0 }, "heartbeat: must be positive"},
		{"payload equals frame", func(c *Config) { c.MaxPayload = c.MaxFrameSize }, "max_payload: must be less than max_frame_size (65536)"},
		{"frame too large", func(c *Config) { c.MaxFrameSize, c.OutboundLimit = 32<<20, 64<<20 }, "max_frame_size:"},
		{"outbound below frame", func(c *Config) { c.MaxFrameSize, c.MaxPayload, c.OutboundLimit = 1<<20, 1<<19, 512<<10 }, "outbound_limit: must be at least max_frame_size"},
		{"refuse", func(c *Config) { c.DuplicateLogin = DuplicateRefuse }, ""},
		{"connect over frame", func(c *Config) { c.MaxConnectSize = c.MaxFrameSize + 1 }, "max_connect_size: must not exceed max_frame_size (65536)"},
		{"connect equals frame", func(c *Config) { c.MaxConnectSize = c.MaxFrameSize }, ""},
		{"subscribe burst below subscriptions", func(c *Config) { c.SubscribeBurst = c.MaxSubscriptions - 1 }, "subscribe_burst: must be at least max_subscriptions (128)"},
		{"frame burst below subscribe burst", func(c *Config) { c.FrameBurst = c.SubscribeBurst - 1 }, "frame_burst: must be at least subscribe_burst (256)"},
		{"frame burst too large", func(c *Config) { c.FrameBurst = MaxBurst + 1 }, "frame_burst: must be between 1 and 4000000"},
		{"subscribe rate zero", func(c *Config) { c.SubscribeRate = 0 }, "subscribe_rate: must be at least 1"},
		{"replay rate zero", func(c *Config) { c.ReplayRate = 0 }, "replay_rate: must be at least 1"},
		{"replay burst zero", func(c *Config) { c.ReplayBurst = 0 }, "replay_burst: must be at least 1"},
		{"log level upper case", func(c *Config) { c.Log.Level = "DEBUG" }, ""},
		{"tls pair", func(c *Config) { c.WS.TLSCert, c.WS.TLSKey = certFile, keyFile }, ""},
		{"tls key only", func(c *Config) { c.API.TLSKey = keyFile }, "api.tls_cert: must be set when tls_key is"},
		{"tls swapped", func(c *Config) { c.WS.TLSCert, c.WS.TLSKey = keyFile, certFile }, "ws.tls_cert: tls:"},
		{"tls missing file", func(c *Config) { c.WS.TLSCert, c.WS.TLSKey = certFile, keyFile+".missing" }, "ws.tls_key: stat"},
		{"tls directory", func(c *Config) { c.TCP.TLSCert, c.TCP.TLSKey = certFile, filepath.Dir(keyFile) }, "tcp.tls_key:"},
		{"apps", func(c *Config) { c.Apps = []App{validApp("a"), validApp("b")} }, ""},
		{"same key twice in one app", func(c *Config) {
			a := validApp("a")
			a.APIKeys = append(a.APIKeys, a.APIKeys[0])
			c.Apps = []App{a}
		}, "apps[0].api_keys[1]: duplicate of apps[0].api_keys[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			got := problemsOf(c.Validate())
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("unexpected problems:\n%s", strings.Join(got, "\n"))
			case tt.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.want)):
				t.Errorf("problems:\n%s\nwant one starting with %q", strings.Join(got, "\n"), tt.want)
			}
		})
	}
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Unix(1_700_000_000, 0),
		NotAfter:     time.Unix(1_700_000_000, 0).Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "hearbeat: 10s\n", "field hearbeat not found"},
		{"unknown nested key", "ws:\n  adr: 1.2.3.4:80\n", "field adr not found"},
		{"unknown app key", "apps:\n  - id: a\n    key: x\n", "field key not found"},
		{"integer duration", "heartbeat: 180\n", "time.Duration"},
		{"bad duration", "heartbeat: soon\n", "time.Duration"},
		{"string for int", "max_payload: big\n", "cannot unmarshal"},
		{"two documents", "node: a\n---\nnode: b\n", ErrMultipleDocuments.Error()},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
		{"syntax", "ws: [\n", "yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeFile(t, "c.yaml", tt.yaml), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load error = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadKeepsUnmentionedValues(t *testing.T) {
	path := writeFile(t, "c.yaml", "ws:\n  addr: 0.0.0.0:9000\nlog:\n  level: debug\n")
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.WS.Addr = "0.0.0.0:9000"
	want.Log.Level = "debug"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load = %+v\nwant %+v", c, want)
	}

	empty, err := Load(writeFile(t, "empty.yaml", "# nothing\n"), nil)
	if err != nil || !reflect.DeepEqual(empty, Default()) {
		t.Errorf("empty file: Load = %+v, %v; want defaults", empty, err)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "c.yaml", "ws:\n  addr: file:1\ntcp:\n  addr: file:2\nheartbeat: 60s\nlog:\n  level: warn\n")
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(Config) string // returns a complaint or ""
	}{
		{"file over defaults", nil, nil, func(c Config) string {
			if c.WS.Addr != "file:1" || c.Heartbeat != 60*time.Second || c.API.Addr != Default().API.Addr {
				return "file values not applied"
			}
			return ""
		}},
		{"env over file", map[string]string{"HERALD_WS_ADDR": "env:1", "HERALD_HEARTBEAT": "90s", "HERALD_LOG_LEVEL": "error"}, nil, func(c Config) string {
			if c.WS.Addr != "env:1" || c.Heartbeat != 90*time.Second || c.Log.Level != "error" || c.TCP.Addr != "file:2" {
				return "env values not applied"
			}
			return ""
		}},
		{"empty env disables tcp", map[string]string{"HERALD_TCP_ADDR": ""}, nil, func(c Config) string {
			if c.TCP.Addr != "" {
				return "tcp still enabled"
			}
			return ""
		}},
		{"origin lists from env and flags", map[string]string{"HERALD_WS_ALLOWED_ORIGINS": "https://a.example, http://localhost:3000,"},
			[]string{"-api-cors-origins", "https://admin.example"},
			func(c Config) string {
				if !slices.Equal(c.WS.AllowedOrigins, []string{"https://a.example", "http://localhost:3000"}) ||
					!slices.Equal(c.API.CORSOrigins, []string{"https://admin.example"}) {
					return "origin lists not applied"
				}
				return ""
			}},
		{"flags over env", map[string]string{"HERALD_WS_ADDR": "env:1", "HERALD_NODE": "env-node", "HERALD_MAX_PAYLOAD": "1000"},
			[]string{"-ws-addr", "flag:1", "-heartbeat", "2m", "-max-payload", "2000", "-duplicate-login", "refuse"},
			func(c Config) string {
				if c.WS.Addr != "flag:1" || c.Heartbeat != 2*time.Minute || c.MaxPayload != 2000 || c.DuplicateLogin != DuplicateRefuse {
					return "flag values not applied"
				}
				if c.Node != "env-node" || c.TCP.Addr != "file:2" || c.Log.Level != "warn" {
					return "values without flags lost"
				}
				return ""
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(file, envMap(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			fs := flag.NewFlagSet("herald", flag.ContinueOnError)
			c.BindFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}
}

func TestEnvErrorsReportedTogether(t *testing.T) {
	_, err := Load("", envMap(map[string]string{
		"HERALD_HEARTBEAT":      "forever",
		"HERALD_MAX_FRAME_SIZE": "big",
		"HERALD_NODE":           "fine",
	}))
	msgs := problemsOf(err)
	if len(msgs) != 2 || !strings.Contains(msgs[0], "HERALD_HEARTBEAT") || !strings.Contains(msgs[1], "HERALD_MAX_FRAME_SIZE") {
		t.Errorf("Load error = %v, want HERALD_HEARTBEAT and HERALD_MAX_FRAME_SIZE problems", err)
	}
}

func TestBindFlags(t *testing.T) {
	c := Default()
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	c.BindFlags(fs)
	for _, name := range []string{"data-dir", "ws-addr", "tcp-addr", "api-addr", "node", "heartbeat", "log-level", "log-format", "duplicate-login"} {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("flag -%s not defined", name)
			continue
		}
		env := "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if !strings.Contains(f.Usage, env) {
			t.Errorf("flag -%s usage %q does not name %s", name, f.Usage, env)
		}
	}
	if got := fs.Lookup("heartbeat").DefValue; got != "3m0s" {
		t.Errorf("-heartbeat default = %q, want 3m0s", got)
	}
}

func TestDevApp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	app, created, err := DevApp(dir)
	if err != nil || !created {
		t.Fatalf("DevApp = %+v, %v, %v; want created", app, created, err)
	}
	if app.ID != DevAppID || len(app.Secret) != 64 || len(app.APIKeys) != 1 {
		t.Errorf("dev app = %+v", app)
	}
	c := Default()
	c.Apps = []App{app}
	if err := c.Validate(); err != nil {
		t.Errorf("config with dev app: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, DevAppFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("dev app file mode = %v, want 0600", perm)
	}

	again, created, err := DevApp(dir)
	if err != nil || created || !reflect.DeepEqual(again, app) {
		t.Errorf("second DevApp = %+v, %v, %v; want %+v, false, nil", again, created, err, app)
	}
}

func TestDevAppRejectsBadFile(t *testing.T) {
	tests := []struct{ name, content string }{
		{"short secret", "id: demo\nsecret: short\napi_keys: [0123456789abcdef]\n"},
		{"unknown key", "id: demo\nsecret: 0123456789abcdef\napi_keys: [0123456789abcdef]\nextra: 1\n"},
		{"not yaml", "{{{"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Dir(writeFile(t, DevAppFile, tt.content))
			if _, _, err := DevApp(dir); err == nil {
				t.Error("DevApp accepted a bad file")
			}
		})
	}
}

func TestEnsureDevApp(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	path, created, err := c.EnsureDevApp()
	if err != nil || !created || path != filepath.Join(c.DataDir, DevAppFile) || len(c.Apps) != 1 {
		t.Fatalf("EnsureDevApp = %q, %v, %v; apps %d", path, created, err, len(c.Apps))
	}

	configured := Default()
	configured.DataDir = filepath.Join(t.TempDir(), "unused")
	configured.Apps = []App{validApp("mine")}
	path, created, err = configured.EnsureDevApp()
	if err != nil || created || path != "" || configured.Apps[0].ID != "mine" {
		t.Errorf("EnsureDevApp with apps = %q, %v, %v; apps %+v", path, created, err, configured.Apps)
	}
	if _, err := os.Stat(configured.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("EnsureDevApp with apps touched the data directory: %v", err)
	}
}

func TestExample(t *testing.T) {
	c, err := Load(writeFile(t, "example.yaml", Example()), nil)
	if err != nil {
		t.Fatalf("Load(Example): %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Example does not validate: %v", err)
	}
	// The example documents the defaults: apart from its app, it must match.
	want := Default()
	want.Apps = c.Apps
	if len(c.Apps) != 1 || !reflect.DeepEqual(c, want) {
		t.Errorf("Example = %+v\nwant defaults %+v", c, want)
	}
	// Every key must be documented.
	for _, key := range yamlKeys(reflect.TypeFor[Config]()) {
		if !strings.Contains(Example(), key+":") {
			t.Errorf("Example does not mention %q", key)
		}
	}
}

// yamlKeys returns the yaml keys of the struct type t and its nested structs.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		keys = append(keys, strings.Split(f.Tag.Get("yaml"), ",")[0])
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]() {
			keys = append(keys, yamlKeys(ft)...)
		}
	}
	return keys
}

func TestAppSecretsAndKeys(t *testing.T) {
	c := Default()
	c.Apps = []App{validApp("a"), {ID: "b", Secret: "bbbbbbbbbbbbbbbb", APIKeys: []string{"b-key-1-0123456789", "b-key-2-0123456789"}}}
	secrets := c.AppSecrets()
	if len(secrets) != 2 || !bytes.Equal(secrets["b"], []byte("bbbbbbbbbbbbbbbb")) {
		t.Errorf("AppSecrets = %q", secrets)
	}
	want := map[string]string{"a-key-0123456789ab": "a", "b-key-1-0123456789": "b", "b-key-2-0123456789": "b"}
	if got := c.APIKeys(); !reflect.DeepEqual(got, want) {
		t.Errorf("APIKeys = %v, want %v", got, want)
	}
}

// FuzzLoadYAML checks that decoding arbitrary bytes and validating the
// result never panics. Seeds are in testdata/fuzz/FuzzLoadYAML.
func FuzzLoadYAML(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := decode(bytes.NewReader(data), &c); err != nil {
			return
		}
		if c.Validate() == nil && c.MaxPayload >= c.MaxFrameSize {
			t.Fatalf("accepted max_payload %d >= max_frame_size %d", c.MaxPayload, c.MaxFrameSize)
		}
	})
}

func TestValidateQuotas(t *testing.T) {
	c := Default()
	a := validApp("a")
	a.Limits = AppLimits{MaxConnections: -1, APIRate: -1, APIBurst: MaxBurst + 1, PublishBurst: 5}
	c.Apps = []App{a}
	c.Protection = Protection{ConnRatePerIP: -2, Flap: Flap{Connects: 3}, AllowIPs: []string{"10.0.0.0/8", "nope"},
		DenyIPs: []string{"10.0.0.1", "300.0.0.0/8"}, MaxConnections: -1, MaxMemory: -1}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad quotas")
	}
	for _, want := range []string{
		"apps[0].limits.max_connections:", "apps[0].limits.api_rate:", "apps[0].limits.api_burst:",
		"apps[0].limits.publish_burst: is set but publish_rate is 0",
		"protection.conn_rate_per_ip:", "protection.flap.window:", "protection.flap.ban:",
		"protection.allow_ips[1]:", "protection.deny_ips[1]:", "protection.max_connections:", "protection.max_memory:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	for _, bad := range []string{"allow_ips[0]", "deny_ips[0]"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("Validate refused a good entry %s:\n%v", bad, err)
		}
	}

	good := Default()
	a.Limits = AppLimits{MaxConnections: 10, APIRate: 100, PublishRate: 1000, PublishBurst: 5000}
	good.Apps = []App{a}
	good.Protection = Protection{ConnRatePerIP: 5, Flap: Flap{Connects: 20, Window: time.Minute, Ban: 5 * time.Minute},
		AllowIPs: []string{"10.0.0.0/8", "::1"}, DenyIPs: []string{"10.1.2.3"}, MaxConnections: 100000, MaxMemory: 4 << 30}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate refused good quotas: %v", err)
	}
	ps, err := Prefixes([]string{"10.1.2.3", "::ffff:10.0.0.0/104", "fd00::/8"})
	if err != nil || ps[0].String() != "10.1.2.3/32" || ps[1].String() != "10.0.0.0/8" || ps[2].String() != "fd00::/8" {
		t.Fatalf("Prefixes = %v, %v", ps, err)
	}
}

package server

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/herald-push/herald/internal/metrics"
)

// exposed is what a /metrics text holds: each sample name with the values
// each of its labels takes.
type exposed map[string]map[string]map[string]bool

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"`)
	// A metric Herald (or the Go and process collectors) exports, with
	// its label matchers if any.
	metricRef = regexp.MustCompile(`\b((?:herald|go|process)_[a-zA-Z0-9_:]*)(\{[^}]*\})?`)
)

func parseExposed(text string) exposed {
	out := exposed{}
	for _, line := range strings.Split(text, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "#") {
			continue
		}
		labels := out[m[1]]
		if labels == nil {
			labels = map[string]map[string]bool{}
			out[m[1]] = labels
		}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			if labels[p[1]] == nil {
				labels[p[1]] = map[string]bool{}
			}
			labels[p[1]][p[3]] = true
		}
	}
	return out
}

// check reports the metrics and label values expr names that ex lacks.
// Labels Prometheus adds (instance, job) and values with dashboard
// variables are not checked.
func (ex exposed) check(expr string) []string {
	var problems []string
	for _, ref := range metricRef.FindAllStringSubmatch(expr, -1) {
		name := ref[1]
		labels, ok := ex[name]
		if !ok {
			problems = append(problems, "no metric "+name)
			continue
		}
		for _, p := range labelPair.FindAllStringSubmatch(ref[2], -1) {
			label, op, value := p[1], p[2], p[3]
			if label == "instance" || label == "job" || strings.Contains(value, "$") {
				continue
			}
			values, ok := labels[label]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s has no label %s", name, label))
				continue
			}
			if op == "!=" || op == "!~" {
				continue
			}
			re, err := regexp.Compile("^(?:" + value + ")$")
			if op == "=" {
				re = regexp.MustCompile("^" + regexp.QuoteMeta(value) + "$")
			} else if err != nil {
				problems = append(problems, fmt.Sprintf("%s{%s=~%q}: %v", name, label, value, err))
				continue
			}
			found := false
			for v := range values {
				found = found || re.MatchString(v)
			}
			if !found {
				problems = append(problems, fmt.Sprintf("%s{%s%s%q} matches no series", name, label, op, value))
			}
		}
	}
	return problems
}

// collectExprs returns every "expr" and "definition" string in a decoded
// JSON document.
func collectExprs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			collectExprs(x, out)
		}
	case []any:
		for _, x := range v {
			collectExprs(x, out)
		}
	}
}

// TestDashboardAndAlertsMetrics: every metric (and label value) that
// docs/grafana/herald.json and docs/prometheus/herald-alerts.yml name
// exists in a running server's /metrics (with what a node of a cluster
// adds), so that the files cannot rot.
func TestDashboardAndAlertsMetrics(t *testing.T) {
	t.Parallel()
	h := startServerWith(t, Options{LogsDropped: func() uint64 { return 0 }})
	a := h.connect(wsBinary, "alice", h.token(appA, "alice"), "d")
	h.pushLive(a, appA, "alice")       // so that the histogram has a series
	h.flip("presence_off", appB, true) // so that herald_switch_on has a series
	text := h.metricsText()
	// The broker and registry metrics of a node of a cluster.
	cm := metrics.New(metrics.Sources{Cluster: func() metrics.ClusterStats { return metrics.ClusterStats{} }})
	rec := httptest.NewRecorder()
	cm.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	ex := parseExposed(text + rec.Body.String())

	root := filepath.Join("..", "..", "docs")
	raw, err := os.ReadFile(filepath.Join(root, "grafana", "herald.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("herald.json: %v", err)
	}
	if !strings.Contains(string(raw), `"name": "DS_PROMETHEUS"`) || strings.Count(string(raw), `"uid": "${DS_PROMETHEUS}"`) < 2 {
		t.Error("herald.json does not take its datasource from the DS_PROMETHEUS input")
	}
	var exprs []string
	collectExprs(dash, &exprs)
	if len(exprs) < 10 {
		t.Fatalf("herald.json: %d expressions found", len(exprs))
	}
	for _, e := range exprs {
		for _, p := range ex.check(e) {
			t.Errorf("herald.json: %s (in %s)", p, e)
		}
	}

	raw, err = os.ReadFile(filepath.Join(root, "prometheus", "herald-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("herald-alerts.yml: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("herald-alerts.yml: rule %+v lacks alert or expr", r)
			}
			for _, p := range ex.check(r.Expr) {
				t.Errorf("herald-alerts.yml %s: %s", r.Alert, p)
			}
		}
	}
	if n < 9 {
		t.Fatalf("herald-alerts.yml: %d rules", n)
	}
}

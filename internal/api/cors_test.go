package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/origin"
)

// corsRequest sends method to the test server with an Origin and, for a
// preflight, the method and headers asked for.
func corsRequest(t *testing.T, srv *httptest.Server, method, path, from, askMethod string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if from != "" {
		req.Header.Set("Origin", from)
	}
	if askMethod != "" {
		req.Header.Set("Access-Control-Request-Method", askMethod)
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	}
	if method != http.MethodOptions {
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestCORS(t *testing.T) {
	list, err := origin.Parse([]string{"https://admin.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	a, svc := testAPI(func(c *Config) { c.CORS = &list })
	srv := httptest.NewServer(a)
	defer srv.Close()
	const push = "/v1/apps/" + testApp + "/users/alice/messages"

	t.Run("preflight allowed", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodOptions, push, "https://admin.example.com", "POST", "")
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://admin.example.com" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
			h.Get("Access-Control-Max-Age") == "" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("preflight: %d %v", resp.StatusCode, h)
		}
		if c := svc.taken(); len(c) != 0 {
			t.Errorf("a preflight reached the service: %v", c)
		}
	})
	t.Run("preflight refused", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodOptions, push, "https://evil.example.com", "POST", "")
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
		}
		var body struct{ Error struct{ Code string } }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != "origin_not_allowed" {
			t.Errorf("body: %+v, %v", body, err)
		}
	})
	t.Run("preflight for no route", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodOptions, "/v1/nothing", "https://admin.example.com", "POST", "")
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight for no route: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("request allowed", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodPost, push, "https://admin.example.com", "", `{"data":{"x":1}}`)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "https://admin.example.com" ||
			!strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
			t.Errorf("request: %d %v", resp.StatusCode, resp.Header)
		}
		svc.taken()
	})
	t.Run("request from another origin", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodGet, "/v1/apps/"+testApp+"/users/alice/presence", "https://evil.example.com", "", "")
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("CORS headers for another origin: %v", resp.Header)
		}
	})
	t.Run("no origin", func(t *testing.T) {
		resp := corsRequest(t, srv, http.MethodGet, "/v1/apps/"+testApp+"/users/alice/presence", "", "", "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("request without Origin: %d %v", resp.StatusCode, resp.Header)
		}
	})
}

func TestNoCORSByDefault(t *testing.T) {
	a, _ := testAPI()
	srv := httptest.NewServer(a)
	defer srv.Close()
	resp := corsRequest(t, srv, http.MethodOptions, "/v1/apps/"+testApp+"/broadcast", "https://admin.example.com", "POST", "")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode == http.StatusNoContent {
		t.Errorf("CORS answered without cors_origins: %d %v", resp.StatusCode, resp.Header)
	}
}

package gateway

import (
	"encoding/json"
	"net/http"
)

// originAllowed checks the request's Origin against the allowed origins.
// A disallowed origin gets 403 with the API's JSON error shape and a log
// line, and false.
func (g *Gateway) originAllowed(w http.ResponseWriter, r *http.Request) bool {
	o := r.Header.Get("Origin")
	if g.cfg.AllowedOrigins.Allowed(o) {
		return true
	}
	g.stats.originRefused.Add(1)
	g.log.Info("origin not allowed", "origin", o, "remote", r.RemoteAddr, "path", r.URL.Path)
	writeJSONError(w, http.StatusForbidden, "origin_not_allowed",
		"this origin may not connect; the server's ws.allowed_origins lists the origins that may")
	return false
}

// writeJSONError answers with the server API's JSON error shape:
// {"error":{"code":...,"message":...}}.
func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

package main

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"os"
	"sort"
	"time"
)

//go:embed web
var webFiles embed.FS

// tokenTTL is how long a client token minted for the page is valid.
const tokenTTL = 12 * time.Hour

// Handler returns the backend's HTTP handler: the web page, the SDK's
// browser bundle (read from bundle), and the JSON API the page uses.
//
// This is a demo: /api/session gives a token to whoever names a user. A
// real backend would authenticate the user first.
func (s *Service) Handler(bundle string) http.Handler {
	mux := http.NewServeMux()
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /herald.min.js", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(bundle)
		if err != nil {
			s.Log.Error("sdk bundle", "err", err)
			http.Error(w, "the SDK's browser bundle is missing: run npm run build in sdk/js", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /api/session", s.handleSession)
	mux.HandleFunc("GET /api/quotes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"quotes": s.Market.Quotes()})
	})
	mux.HandleFunc("GET /api/alerts", s.handleListAlerts)
	mux.HandleFunc("POST /api/alerts", s.handleAddAlert)
	mux.HandleFunc("POST /api/move", s.handleMove)
	return mux
}

func (s *Service) handleSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User string `json:"user"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if !validUser(req.User) {
		writeError(w, http.StatusBadRequest, "user: 1 to 64 letters, digits, '-' or '_'")
		return
	}
	tok, err := s.Herald.Token(req.User, []string{PricesTopic}, tokenTTL)
	if err != nil {
		s.Log.Error("mint token", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot mint a token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "token": tok, "ws": s.Herald.WS, "topic": PricesTopic})
}

// alertView is one alert as the page lists it.
type alertView struct {
	Symbol string  `json:"symbol"`
	Pct    float64 `json:"pct"`
}

func (s *Service) handleListAlerts(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if !validUser(user) {
		writeError(w, http.StatusBadRequest, "user: 1 to 64 letters, digits, '-' or '_'")
		return
	}
	list := []alertView{}
	for sym, bps := range s.Index.Alerts(user) {
		for _, bp := range bps {
			list = append(list, alertView{Symbol: sym, Pct: float64(bp) / 100})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Symbol != list[j].Symbol {
			return list[i].Symbol < list[j].Symbol
		}
		return list[i].Pct < list[j].Pct
	})
	writeJSON(w, http.StatusOK, map[string]any{"alerts": list})
}

func (s *Service) handleAddAlert(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User   string  `json:"user"`
		Symbol string  `json:"symbol"`
		Pct    float64 `json:"pct"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if !validUser(req.User) {
		writeError(w, http.StatusBadRequest, "user: 1 to 64 letters, digits, '-' or '_'")
		return
	}
	bp := int(math.Round(req.Pct * 100))
	added, err := s.Index.Add(req.User, req.Symbol, bp)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.Log.Info("alert set", "user", req.User, "symbol", req.Symbol, "bp", bp, "new", added)
	writeJSON(w, http.StatusOK, map[string]any{"symbol": req.Symbol, "pct": float64(bp) / 100, "new": added})
}

// handleMove moves one stock to a given change from its reference, as if
// the market had ticked there: the demo's and the tests' way to cross a
// threshold on purpose.
func (s *Service) handleMove(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Symbol string  `json:"symbol"`
		Pct    float64 `json:"pct"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	mv, err := s.Market.SetPct(req.Symbol, int(math.Round(req.Pct*100)))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var moves []Move
	if mv.From != mv.To {
		moves = append(moves, mv)
	}
	res, err := s.Apply(r.Context(), moves)
	if err != nil {
		s.Log.Error("move", "symbol", req.Symbol, "err", err)
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"symbol": mv.Symbol, "from": mv.From, "to": mv.To, "alerts": res.Alerts, "accepted": res.Accepted})
}

// validUser reports whether u is an acceptable user id for the demo.
func validUser(u string) bool {
	if u == "" || len(u) > 64 {
		return false
	}
	for _, c := range u {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// readJSON decodes the request body into v, answering 400 on failure.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad json: %v", err))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone: nothing to do
}

package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/jsonstr"
)

// Seed corpora are also committed under testdata/fuzz/<FuzzName>/.

// fuzzRoutes are the routes that take a body.
var fuzzRoutes = []string{
	"/v1/apps/app-a/users/alice/messages",
	"/v1/apps/app-a/messages",
	"/v1/apps/app-a/push",
	"/v1/apps/app-a/topics/news/messages",
	"/v1/apps/app-a/broadcast",
	"/v1/apps/app-a/presence",
	"/v1/apps/app-a/users/alice/kick",
}

// errorStatus is the status of each error code a body can cause.
var errorStatus = map[string]int{
	"bad_json":            http.StatusBadRequest,
	"bad_name":            http.StatusBadRequest,
	"bad_id":              http.StatusBadRequest,
	"bad_payload":         http.StatusBadRequest,
	"bad_ttl":             http.StatusBadRequest,
	"bad_reason":          http.StatusBadRequest,
	"no_recipients":       http.StatusBadRequest,
	"payload_too_large":   http.StatusRequestEntityTooLarge,
	"body_too_large":      http.StatusRequestEntityTooLarge,
	"too_many_recipients": http.StatusRequestEntityTooLarge,
}

// post drives the handler with one request and checks that the answer is
// JSON: a 200 or an error with a known code and its status. It returns
// the status and, for an error, the code.
func post(t *testing.T, a *API, path string, body []byte) (int, string) {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+testKey)
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("POST %s %q: Content-Type %q", path, body, ct)
	}
	var e struct {
		Error *struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !utf8.Valid(w.Body.Bytes()) {
		t.Fatalf("POST %s %q: answer %q is not JSON text: %v", path, body, w.Body.Bytes(), err)
	}
	if w.Code == http.StatusOK {
		if e.Error != nil {
			t.Fatalf("POST %s %q: 200 with an error %q", path, body, w.Body.Bytes())
		}
		return w.Code, ""
	}
	if e.Error == nil || e.Error.Message == "" || errorStatus[e.Error.Code] != w.Code {
		t.Fatalf("POST %s %q: %d %q is not a known error", path, body, w.Code, w.Body.Bytes())
	}
	return w.Code, e.Error.Code
}

// FuzzAPIBody posts arbitrary bodies to every route that takes one. The
// handler never panics and always answers JSON, 200 or a known error; a
// refused call reaches nothing; and every name or id that reaches the
// service is a valid name.
func FuzzAPIBody(f *testing.F) {
	for i, b := range []string{
		`{"id":"order-17","data":{"a":1}}`,
		`{"users":["alice","bob"],"data":1}`,
		`{"messages":[{"user":"alice","id":"m1","data":"x"},{"user":"bob","b64":"AAE="}]}`,
		`{"id":"x","b64":"AAE=","ttl":60}`,
		`{"data":[true,null]}`,
		`{"users":["alice"]}`,
		`{"device":"phone","reason":"bye"}`,
	} {
		f.Add(uint8(i), []byte(b))
	}
	f.Add(uint8(0), []byte("{\"id\":\"order-\xff\",\"data\":1}"))
	f.Add(uint8(0), []byte(`{"id":"order-\ud800","data":1}`))
	f.Add(uint8(1), []byte(`{"users":["\udc00"],"data":1}`))
	f.Add(uint8(0), []byte(`{"data":"\ud800"}`))
	f.Add(uint8(6), []byte(`null`))
	f.Add(uint8(4), []byte(`{"data":1}}`))
	a, svc := testAPI(func(c *Config) { c.BodyTimeout = 0 }) // a recorder has no connection
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := fuzzRoutes[int(route)%len(fuzzRoutes)]
		status, _ := post(t, a, path, body)
		calls := svc.taken()
		if status == http.StatusOK && !json.Valid(body) && strings.TrimSpace(string(body)) != "" {
			t.Fatalf("POST %s %q: 200 for a body that is not JSON", path, body)
		}
		if status != http.StatusOK {
			if len(calls) != 0 {
				t.Fatalf("POST %s %q: refused with %d, but reached the service: %+v", path, body, status, calls)
			}
			return
		}
		if len(calls) != 1 {
			t.Fatalf("POST %s %q: 200 after %d calls to the service", path, body, len(calls))
		}
		for _, n := range calls[0].names {
			if n != "" && !auth.ValidName(n) {
				t.Fatalf("POST %s %q: name %q reached the service", path, body, n)
			}
		}
		if calls[0].op == "kick" {
			if r := calls[0].ids[0]; !utf8.ValidString(r) {
				t.Fatalf("POST %s %q: reason %q reached the service", path, body, r)
			}
			return
		}
		for _, id := range calls[0].ids {
			if id != "" && !auth.ValidName(id) {
				t.Fatalf("POST %s %q: id %q reached the service", path, body, id)
			}
		}
	})
}

// FuzzName sends arbitrary bytes as the JSON string of a message id and of
// a user name. The call is accepted exactly when the string decodes,
// without rewriting, to a valid name, and then the service gets that name
// as encoding/json decodes it: valid text is taken as it is, and nothing
// else is ever taken.
func FuzzName(f *testing.F) {
	for _, s := range []string{"order-17", "order-\xff", "order-\xfe", `order-\ud800`, `\udc00`, `\ud83d\ude00`,
		`caf\u00e9`, `a b`, `\u0000`, `x\"y`, `\\ud800`, "\xed\xa0\x80", ""} {
		f.Add([]byte(s))
	}
	a, svc := testAPI(func(c *Config) { c.BodyTimeout = 0 })
	f.Fuzz(func(t *testing.T, in []byte) {
		lit := `"` + string(in) + `"`
		decoded, decErr := jsonstr.Decode([]byte(lit))
		for _, tc := range []struct {
			path, body, code string
		}{
			{"/v1/apps/app-a/users/alice/messages", `{"id":` + lit + `,"data":1}`, "bad_id"},
			{"/v1/apps/app-a/messages", `{"users":[` + lit + `],"id":"m","data":1}`, "bad_name"},
		} {
			status, code := post(t, a, tc.path, []byte(tc.body))
			calls := svc.taken()
			switch {
			case decErr != nil:
				// not one JSON string: the body may be anything, and post
				// has checked that the answer is a known one
			case decoded == "" && tc.code == "bad_id": // no id: one is made
				if status != http.StatusOK {
					t.Fatalf("%s: %d %s; want 200", tc.body, status, code)
				}
			case !auth.ValidName(decoded):
				if code != tc.code {
					t.Fatalf("%s: %d %s; want %s", tc.body, status, code, tc.code)
				}
			default:
				var std string
				if err := json.Unmarshal([]byte(lit), &std); err != nil || std != decoded {
					t.Fatalf("%s: valid name %q, but encoding/json decodes it to %q, %v", tc.body, decoded, std, err)
				}
				if status != http.StatusOK || len(calls) != 1 {
					t.Fatalf("%s: %d %s with %d calls; want 200", tc.body, status, code, len(calls))
				}
				got := calls[0].ids[0]
				if tc.code == "bad_name" {
					got = calls[0].names[0]
				}
				if got != std {
					t.Fatalf("%s: the service got %q; want %q", tc.body, got, std)
				}
			}
		}
	})
}

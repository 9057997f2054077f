package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store/embedded/damage"
)

// TestStoreDiskFailure: while the disk refuses writes, pushes and
// publishes answer 503 with a JSON body and nothing is acknowledged;
// connections stay up; once the disk takes writes again the server
// recovers by itself, a retry of the refused push is stored once and
// delivered, and everything acknowledged before is still there after a
// restart.
func TestStoreDiskFailure(t *testing.T) {
	t.Parallel()
	fs, disk := damage.FullDisk()
	h := startServerWith(t, Options{StoreFS: fs, StoreRetry: 10 * time.Millisecond})
	c := h.connect(rawTCP, "c", h.token(appA, "fay", "*"), "d")
	c.subscribe(1, "disk")
	for i := 1; i <= 3; i++ {
		h.pushID(appA, "fay", fmt.Sprintf("m%d", i), i)
		c.expectPush("u:fay", []byte(fmt.Sprint(i)))
	}
	healthz := func() int {
		resp, err := h.http.Get(h.srv.APIURL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := healthz(); got != http.StatusOK {
		t.Fatalf("healthz before the fault: %d", got)
	}

	disk.On()
	h.apiError("POST", "/v1/apps/"+appA+"/users/fay/messages", keyA, map[string]any{"id": "m4", "data": 4}, http.StatusServiceUnavailable, "store_unavailable")
	h.apiError("POST", "/v1/apps/"+appA+"/topics/disk/messages", keyA, map[string]any{"id": "p1", "data": "p"}, http.StatusServiceUnavailable, "store_unavailable")
	h.apiError("POST", "/v1/apps/"+appA+"/push", keyA, map[string]any{"messages": []any{map[string]any{"user": "fay", "id": "m5", "data": 5}}}, http.StatusServiceUnavailable, "store_unavailable")
	if got := healthz(); got != http.StatusServiceUnavailable {
		t.Fatalf("healthz with a failing disk: %d; want 503", got)
	}
	var st struct{ Store storeStatus }
	h.apiOK("GET", "/v1/stats", keyA, nil, &st)
	if st.Store.Healthy {
		t.Fatalf("stats with a failing disk: %+v", st.Store)
	}

	disk.Off()
	waitFor(t, "store recovered", func() error {
		if got := healthz(); got != http.StatusOK {
			return fmt.Errorf("healthz %d", got)
		}
		return nil
	})
	// The connection stayed up: the retried push reaches it, once stored.
	var r struct {
		Seq uint64 `json:"seq"`
	}
	h.apiOK("POST", "/v1/apps/"+appA+"/users/fay/messages", keyA, map[string]any{"id": "m4", "data": 4}, &r)
	if r.Seq != 4 {
		t.Fatalf("retry stored as seq %d, want 4", r.Seq)
	}
	if f := c.expectPush("u:fay", []byte("4")); f.Seq != 4 {
		t.Fatalf("retry delivered as %s", describe(f))
	}
	h.pushID(appA, "fay", "m5", 5)
	if f := c.expectPush("u:fay", []byte("5")); f.Seq != 5 {
		t.Fatalf("next push delivered as %s", describe(f))
	}
	p := h.publish(appA, "disk", "p")
	if f := c.expectPush("t:disk", []byte(`"p"`)); f.MsgID != p.ID {
		t.Fatalf("publish after recovery: %s", describe(f))
	}
	_, metrics := h.apiCall("GET", "/metrics", "", nil)
	for _, want := range []string{"\nherald_store_up 1\n", "\nherald_store_reopens_total 1\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics after recovery lack %q", strings.TrimSpace(want))
		}
	}
}

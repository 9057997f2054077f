package api

import (
	"strings"
	"testing"
)

// TestServerAnswerLeavesOthers: only the exact answers net/http writes by
// itself are replaced; the API's own answers, and anything written in
// pieces, go out as they are.
func TestServerAnswerLeavesOthers(t *testing.T) {
	for _, p := range []string{
		"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nDate: Sat, 21 Nov 2026 07:42:24 GMT\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nok",
		"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n404 page not found",
		"HTTP/1.1 417 Expectation Failed\r\nDate: x\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n",
		`{"error":{"code":"bad_json"}}`,
		"HTTP/1.1 4xx Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n",
		"",
	} {
		if got, ok := serverAnswer([]byte(p)); ok {
			t.Errorf("serverAnswer(%q) replaced it with %q", p, got)
		}
	}
	got, ok := serverAnswer([]byte("HTTP/1.1 431 Request Header Fields Too Large" + plainErrorHeaders + "431 Request Header Fields Too Large"))
	want := "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 87\r\n\r\n" +
		`{"error":{"code":"headers_too_large","message":"431 Request Header Fields Too Large"}}` + "\n"
	if !ok || string(got) != want {
		t.Fatalf("431:\n got %q\nwant %q", got, want)
	}
	if got, ok := serverAnswer([]byte("HTTP/1.0 400 Bad Request" + plainToTLS)); !ok || !strings.Contains(string(got), `"code":"bad_request"`) {
		t.Fatalf("plain HTTP to TLS: %q, %v", got, ok)
	}
}

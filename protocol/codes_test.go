package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

var (
	_ error = Disconnect{}
	_ error = (*Error)(nil)
)

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		code  ErrorCode
		name  string
		fatal bool
	}{
		{CodeBadRequest, "bad request", false},
		{CodeForbidden, "forbidden", false},
		{CodeTooManySubscriptions, "too many subscriptions", false},
		{CodeNotSupported, "not supported", false},
		{CodeBadName, "bad name", false},
		{1999, "error(1999)", false},
		{CodeMalformed, "malformed frame", true},
		{CodeTooLarge, "frame too large", true},
		{CodeUnsupportedVersion, "unsupported version", true},
		{CodeNotAuthenticated, "not authenticated", true},
		{CodeBadToken, "bad token", true},
		{CodeTokenExpired, "token expired", true},
		{CodeRateLimited, "rate limited", true},
		{CodeAppConnectionLimit, "app connection limit", true},
		{CodeInternal, "internal error", true},
		{2999, "error(2999)", true},
	}
	for _, tt := range tests {
		if got := tt.code.String(); got != tt.name {
			t.Errorf("%d.String() = %q, want %q", uint32(tt.code), got, tt.name)
		}
		if got := tt.code.Fatal(); got != tt.fatal {
			t.Errorf("%d.Fatal() = %v, want %v", uint32(tt.code), got, tt.fatal)
		}
	}
	// the numbering is part of the wire protocol
	nums := map[ErrorCode]uint32{CodeBadRequest: 1000, CodeForbidden: 1001, CodeTooManySubscriptions: 1002,
		CodeNotSupported: 1003, CodeBadName: 1004, CodeMalformed: 2000, CodeTooLarge: 2001,
		CodeUnsupportedVersion: 2002, CodeNotAuthenticated: 2003, CodeBadToken: 2004, CodeTokenExpired: 2005,
		CodeRateLimited: 2006, CodeAppConnectionLimit: 2007, CodeInternal: 2500}
	for c, n := range nums {
		if uint32(c) != n {
			t.Errorf("%s = %d, want %d", c, uint32(c), n)
		}
	}
}

func TestDisconnectCodes(t *testing.T) {
	tests := []struct {
		code      DisconnectCode
		num       uint32
		name      string
		reconnect bool
	}{
		{DisconnectNormal, 3000, "normal", false},
		{DisconnectShutdown, 3001, "shutdown", true},
		{DisconnectSlowConsumer, 3002, "slow consumer", true},
		{DisconnectReplaced, 3003, "replaced", false},
		{DisconnectKicked, 3004, "kicked", false},
		{DisconnectIdleTimeout, 3005, "idle timeout", true},
		{DisconnectAuthTimeout, 3006, "auth timeout", true},
		{DisconnectAuthFailed, 3007, "auth failed", false},
		{DisconnectProtocolError, 3008, "protocol error", false},
		{DisconnectDuplicateRefused, 3009, "duplicate refused", false},
		{DisconnectConnectionLost, 3010, "connection lost", true},
		{DisconnectServerError, 3011, "server error", true},
		{DisconnectPolicyViolation, 3012, "policy violation", true},
		{DisconnectAppConnectionLimit, 3013, "app connection limit", true},
		{DisconnectUnavailable, 3014, "unavailable", true},
	}
	all := AllDisconnectCodes()
	if len(all) != len(tests) {
		t.Fatalf("AllDisconnectCodes has %d codes, want %d", len(all), len(tests))
	}
	for i, tt := range tests {
		if all[i] != tt.code {
			t.Errorf("AllDisconnectCodes()[%d] = %d, want %d", i, all[i], tt.code)
		}
		if uint32(tt.code) != tt.num {
			t.Errorf("%s = %d, want %d", tt.name, uint32(tt.code), tt.num)
		}
		if got := tt.code.String(); got != tt.name {
			t.Errorf("%d.String() = %q, want %q", tt.num, got, tt.name)
		}
		if got := tt.code.Reconnect(); got != tt.reconnect {
			t.Errorf("%d.Reconnect() = %v, want %v", tt.num, got, tt.reconnect)
		}
	}
	for _, c := range []DisconnectCode{0, 2999, 3015} {
		if got, want := c.String(), fmt.Sprintf("disconnect(%d)", uint32(c)); got != want {
			t.Errorf("%d.String() = %q, want %q", uint32(c), got, want)
		}
		if c.Reconnect() {
			t.Errorf("unknown code %d advises reconnecting", uint32(c))
		}
	}
}

func TestDisconnect(t *testing.T) {
	d := NewDisconnect(DisconnectShutdown)
	if d.Code != DisconnectShutdown || d.Reason != "shutdown" || !d.Reconnect || d.Alt != "" {
		t.Fatalf("NewDisconnect = %+v", d)
	}
	if got := d.Error(); got != "disconnected: shutdown (3001)" {
		t.Fatalf("Error() = %q", got)
	}
	d.Alt = "10.0.0.2:8090"
	f := d.Frame()
	want := Frame{Type: TypeDisconnect, Code: 3001, Reason: "shutdown", Reconnect: true, Alt: "10.0.0.2:8090"}
	if !reflect.DeepEqual(*f, want) {
		t.Fatalf("Frame() = %+v", *f)
	}
	if got := DisconnectFrom(f); got != d {
		t.Fatalf("DisconnectFrom(Frame()) = %+v, want %+v", got, d)
	}

	tests := []struct {
		d    Disconnect
		want string
	}{
		{Disconnect{Code: DisconnectReplaced}, "disconnected: replaced (3003)"},
		{Disconnect{Code: DisconnectKicked, Reason: "banned"}, "disconnected: kicked (3004): banned"},
		{Disconnect{Code: 4000, Reason: "x"}, "disconnected: disconnect(4000) (4000): x"},
	}
	for _, tt := range tests {
		if got := tt.d.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}

	// a read loop returns it wrapped; callers find it with errors.As
	err := fmt.Errorf("read: %w", NewDisconnect(DisconnectReplaced))
	var got Disconnect
	if !errors.As(err, &got) || got.Code != DisconnectReplaced || got.Reconnect {
		t.Fatalf("errors.As = %+v", got)
	}
}

func TestError(t *testing.T) {
	e := &Error{ID: 3, Code: CodeForbidden, Text: "topic x"}
	if got := e.Error(); got != "herald error 1001 (forbidden): topic x" {
		t.Fatalf("Error() = %q", got)
	}
	if got := (&Error{Code: CodeInternal}).Error(); got != "herald error 2500 (internal error)" {
		t.Fatalf("Error() = %q", got)
	}
	f := e.Frame()
	if f.Type != TypeError || f.ID != 3 || f.Code != 1001 || f.Reason != "topic x" {
		t.Fatalf("Frame() = %+v", *f)
	}
	var target *Error
	if !errors.As(fmt.Errorf("subscribe: %w", e), &target) || target != e {
		t.Fatal("errors.As does not find *Error")
	}
	if !strings.Contains(e.Error(), e.Code.String()) {
		t.Fatal("Error() does not name the code")
	}
}

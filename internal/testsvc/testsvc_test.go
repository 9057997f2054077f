package testsvc_test

import (
	"net"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/testsvc"
)

func TestPrefix(t *testing.T) {
	a, b := testsvc.Prefix(t), testsvc.Prefix(t)
	if a == b {
		t.Fatalf("Prefix twice: %q", a)
	}
	if strings.ContainsAny(a, ".*> /:") || !strings.HasPrefix(a, "herald-test-TestPrefix-") {
		t.Fatalf("Prefix = %q", a)
	}
}

func dials(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		_ = c.Close()
	}
	return err == nil
}

func TestStartNATS(t *testing.T) {
	s := testsvc.StartNATS(t)
	if !dials(s.Addr()) {
		t.Fatal("not reachable after StartNATS")
	}
	s.Stop()
	if dials(s.Addr()) {
		t.Fatal("reachable after Stop")
	}
	s.Start()
	if !dials(s.Addr()) {
		t.Fatal("not reachable after Start")
	}
	s.Kill()
	if dials(s.Addr()) {
		t.Fatal("reachable after Kill")
	}
	s.Start()
}

func TestStartRedis(t *testing.T) {
	s := testsvc.StartRedis(t, t.TempDir())
	s.Stop()
	s.Start()
	if !dials(s.Addr()) {
		t.Fatal("not reachable after Start")
	}
}

func TestShared(t *testing.T) {
	if testsvc.NATS(t) == "" || testsvc.Redis(t) == "" {
		t.Fatal("empty address")
	}
}

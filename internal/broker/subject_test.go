package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestEncodeToken(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"alice", "alice"},
		{"A-z_09", "A-z_09"},
		{"a.b", "a%2Eb"},
		{"*", "%2A"},
		{">", "%3E"},
		{"%", "%25"},
		{"%2E", "%252E"},
		{"a b\t", "a%20b%09"},
		{"é", "%C3%A9"},
		{"用户", "%E7%94%A8%E6%88%B7"},
		{"a@b.com", "a%40b%2Ecom"},
	} {
		got := EncodeToken(c.in)
		if got != c.want {
			t.Errorf("EncodeToken(%q) = %q, want %q", c.in, got, c.want)
		}
		back, err := DecodeToken(got)
		if err != nil || back != c.in {
			t.Errorf("DecodeToken(%q) = %q, %v; want %q", got, back, err, c.in)
		}
	}
	for _, bad := range []string{"a.b", "%", "%2", "%2e", "%41", "%G0", "*", "é"} {
		if got, err := DecodeToken(bad); err == nil {
			t.Errorf("DecodeToken(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzEncodeToken(f *testing.F) {
	for _, s := range []string{"alice", "a.b", "*", ">", "%", "%2E", "é", "a b", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := EncodeToken(name)
		if name != "" && tok == "" {
			t.Fatalf("EncodeToken(%q) is empty", name)
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !tokenSafe(c) && c != '%' {
				t.Fatalf("EncodeToken(%q) = %q holds %q", name, tok, c)
			}
		}
		back, err := DecodeToken(tok)
		if err != nil || back != name {
			t.Fatalf("DecodeToken(EncodeToken(%q)) = %q, %v", name, back, err)
		}
	})
}

func TestNATSSubject(t *testing.T) {
	const p = "herald.c1"
	for _, c := range []struct {
		s    Subject
		want string
	}{
		{UserSubject("app", "alice"), "herald.c1.u.app.alice"},
		{TopicSubject("app", "news.eu"), "herald.c1.t.app.news%2Eeu"},
		{BroadcastSubject("app"), "herald.c1.b.app"},
		{NodeSubject("node-1"), "herald.c1.n.node-1"},
		{UserSubject("x", "a.b"), "herald.c1.u.x.a%2Eb"},
		{UserSubject("x.a", "b"), "herald.c1.u.x%2Ea.b"},
		{TopicSubject("app", ">"), "herald.c1.t.app.%3E"},
	} {
		got, err := NATSSubject(p, c.s)
		if err != nil || got != c.want {
			t.Errorf("NATSSubject(%v) = %q, %v; want %q", c.s, got, err, c.want)
		}
	}

	// Names that collide under a naive encoding (joining raw names with
	// dots), and the same name under every kind, give distinct subjects.
	seen := map[string]Subject{}
	for _, s := range []Subject{
		UserSubject("x", "a.b"), UserSubject("x.a", "b"), UserSubject("x", "a%2Eb"),
		TopicSubject("x", "a.b"), TopicSubject("x.a", "b"),
		UserSubject("u", "x"), TopicSubject("u", "x"), BroadcastSubject("u"), NodeSubject("u"),
		BroadcastSubject("u.x"), NodeSubject("u.x"), UserSubject("*", ">"),
	} {
		n, err := NATSSubject(p, s)
		if err != nil {
			t.Fatalf("NATSSubject(%v): %v", s, err)
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("%v and %v both map to %q", prev, s, n)
		}
		seen[n] = s
	}

	long := strings.Repeat("x", MaxNameLen)
	if _, err := NATSSubject(p, UserSubject(long, long)); err != nil {
		t.Errorf("names of MaxNameLen bytes: %v", err)
	}
	for _, s := range []Subject{
		{},
		{Kind: 9, App: "a", Name: "b"},
		{Kind: User, App: "a"},
		{Kind: User, Name: "b"},
		{Kind: Topic, App: "a"},
		{Kind: Broadcast},
		{Kind: Broadcast, App: "a", Name: "b"},
		{Kind: Node},
		{Kind: Node, App: "a", Name: "b"},
		UserSubject("a", long+"x"),
		UserSubject(long+"x", "b"),
	} {
		if _, err := NATSSubject(p, s); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("NATSSubject(%v) error = %v, want ErrInvalidSubject", s, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, ok := range []string{"herald", "herald.test.a1b2", "a-b_c.D9"} {
		if err := ValidatePrefix(ok); err != nil {
			t.Errorf("ValidatePrefix(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "a*", "a.>", "a b", "é", "$SYS", strings.Repeat("a", 129)} {
		if err := ValidatePrefix(bad); err == nil {
			t.Errorf("ValidatePrefix(%q) = nil, want an error", bad)
		}
	}
}

package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	testNow    = time.Unix(1_700_000_000, 0)
	testSecret = []byte("0123456789abcdef0123456789abcdef")
)

// testVerifier knows app "demo" (testSecret) and "short" (unusable secret),
// and whose clock reads at.
func testVerifier(at time.Time) *Verifier {
	return NewVerifier(map[string][]byte{
		"demo":  testSecret,
		"short": []byte("tooshort"),
	}, func() time.Time { return at })
}

// sign signs arbitrary claims with any method, for building bad tokens.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// goodClaims returns valid claims for app "demo", expiring an hour after testNow.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":    "alice",
		"app":    "demo",
		"exp":    testNow.Add(time.Hour).Unix(),
		"iat":    testNow.Unix(),
		"topics": []string{"chat.*"},
	}
}

func with(key string, value any) jwt.MapClaims {
	c := goodClaims()
	if value == nil {
		delete(c, key)
	} else {
		c[key] = value
	}
	return c
}

// forge builds a token with an arbitrary header, HMAC-signed with secret.
func forge(header string, claims jwt.MapClaims) string {
	enc := base64.RawURLEncoding
	payload, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SigningString()
	body := strings.SplitN(payload, ".", 2)[1]
	signing := enc.EncodeToString([]byte(header)) + "." + body
	sig, _ := jwt.SigningMethodHS256.Sign(signing, testSecret)
	return signing + "." + enc.EncodeToString(sig)
}

// forgeClaims builds a validly signed token from the JSON text of its
// claims, for claims that json.Marshal would not write.
func forgeClaims(claims string) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	sig, _ := jwt.SigningMethodHS256.Sign(signing, testSecret)
	return signing + "." + enc.EncodeToString(sig)
}

// TestVerifyClaimsText: claims that are not valid text are refused, not
// rewritten to U+FFFD, which would make "alice\ud800" and "alice\xff" the
// user "alice\uFFFD".
func TestVerifyClaimsText(t *testing.T) {
	exp := fmt.Sprint(testNow.Add(time.Hour).Unix())
	for _, tc := range []struct{ name, claims string }{
		{"sub with lone surrogate", `{"sub":"alice\ud800","app":"demo","exp":` + exp + `}`},
		{"sub with lone low surrogate", `{"sub":"\udc00","app":"demo","exp":` + exp + `}`},
		{"sub with invalid utf-8", "{\"sub\":\"alice\xff\",\"app\":\"demo\",\"exp\":" + exp + "}"},
		{"topic with lone surrogate", `{"sub":"alice","app":"demo","exp":` + exp + `,"topics":["news\udbff"]}`},
		{"app with lone surrogate", `{"sub":"alice","app":"demo\ud800","exp":` + exp + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := testVerifier(testNow).Verify(forgeClaims(tc.claims))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalid", c, err)
			}
		})
	}
	// Escaped valid text is fine.
	c, err := testVerifier(testNow).Verify(forgeClaims(`{"sub":"al\u00efce\ud83d\ude00","app":"demo","exp":` + exp + `,"topics":["\\ud800"]}`))
	if err != nil || c.User != "alïce😀" || len(c.Topics) != 1 || c.Topics[0] != `\ud800` {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	topics := []string{"news", "chat.*"}
	tok, err := Mint("demo", testSecret, "alice", topics, 90*time.Second, testNow)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	c, err := testVerifier(testNow.Add(89 * time.Second)).Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.App != "demo" || c.User != "alice" || strings.Join(c.Topics, ",") != "news,chat.*" {
		t.Errorf("claims = %+v", c)
	}
	if want := testNow.Add(90 * time.Second); !c.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v", c.Expiry, want)
	}
}

func TestVerifyErrors(t *testing.T) {
	good := sign(t, jwt.SigningMethodHS256, testSecret, goodClaims())
	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"expired", good, testNow.Add(2 * time.Hour), ErrExpired},
		{"exactly at exp", good, testNow.Add(time.Hour), ErrExpired},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes......"), goodClaims()), testNow, ErrInvalid},
		{"expired and wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes......"), goodClaims()), testNow.Add(2 * time.Hour), ErrInvalid},
		{"unknown app", sign(t, jwt.SigningMethodHS256, testSecret, with("app", "nope")), testNow, ErrUnknownApp},
		{"app with short secret", sign(t, jwt.SigningMethodHS256, []byte("tooshort"), with("app", "short")), testNow, ErrInvalid},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, goodClaims()), testNow, ErrInvalid},
		{"alg RS256 header, HMAC signature", forge(`{"alg":"RS256","typ":"JWT"}`, goodClaims()), testNow, ErrInvalid},
		{"alg none header, HMAC signature", forge(`{"alg":"none","typ":"JWT"}`, goodClaims()), testNow, ErrInvalid},
		{"HS512", sign(t, jwt.SigningMethodHS512, testSecret, goodClaims()), testNow, ErrInvalid},
		{"missing sub", sign(t, jwt.SigningMethodHS256, testSecret, with("sub", nil)), testNow, ErrInvalid},
		{"empty sub", sign(t, jwt.SigningMethodHS256, testSecret, with("sub", "")), testNow, ErrInvalid},
		{"sub with space", sign(t, jwt.SigningMethodHS256, testSecret, with("sub", "al ice")), testNow, ErrInvalid},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, testSecret, with("sub", 42)), testNow, ErrInvalid},
		{"missing app", sign(t, jwt.SigningMethodHS256, testSecret, with("app", nil)), testNow, ErrInvalid},
		{"missing exp", sign(t, jwt.SigningMethodHS256, testSecret, with("exp", nil)), testNow, ErrInvalid},
		{"exp not a number", sign(t, jwt.SigningMethodHS256, testSecret, with("exp", "soon")), testNow, ErrInvalid},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, testSecret, with("nbf", testNow.Add(time.Minute).Unix())), testNow, ErrInvalid},
		{"topics not an array", sign(t, jwt.SigningMethodHS256, testSecret, with("topics", "chat.*")), testNow, ErrInvalid},
		{"bad topic pattern", sign(t, jwt.SigningMethodHS256, testSecret, with("topics", []string{"a b"})), testNow, ErrInvalid},
		{"tampered payload", good[:strings.Index(good, ".")+1] + "e30" + good[strings.LastIndex(good, "."):], testNow, ErrInvalid},
		{"truncated signature", good[:len(good)-3], testNow, ErrInvalid},
		{"empty", "", testNow, ErrInvalid},
		{"dots", "..", testNow, ErrInvalid},
		{"garbage", "not a token", testNow, ErrInvalid},
		{"four parts", good + ".x", testNow, ErrInvalid},
		{"json header only", "eyJhbGciOiJIUzI1NiJ9..", testNow, ErrInvalid},
	}
	sentinels := []error{ErrExpired, ErrInvalid, ErrUnknownApp}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testVerifier(tt.now).Verify(tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
		})
	}
}

func TestVerifierCopiesSecrets(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	secrets := map[string][]byte{"demo": secret}
	v := NewVerifier(secrets, func() time.Time { return testNow })
	secret[0] = 'X'
	delete(secrets, "demo")
	tok, err := Mint("demo", testSecret, "bob", nil, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.TopicAllowed("anything") {
		t.Error("token without topics allows a topic")
	}
}

func TestMintRejects(t *testing.T) {
	tests := []struct {
		name   string
		app    string
		secret []byte
		user   string
		topics []string
		ttl    time.Duration
	}{
		{"empty app", "", testSecret, "u", nil, time.Minute},
		{"short secret", "demo", []byte("short"), "u", nil, time.Minute},
		{"empty user", "demo", testSecret, "", nil, time.Minute},
		{"user with space", "demo", testSecret, "a b", nil, time.Minute},
		{"bad topic", "demo", testSecret, "u", []string{""}, time.Minute},
		{"zero ttl", "demo", testSecret, "u", nil, 0},
		{"negative ttl", "demo", testSecret, "u", nil, -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Mint(tt.app, tt.secret, tt.user, tt.topics, tt.ttl, testNow); !errors.Is(err, ErrInvalid) {
				t.Errorf("Mint error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestTopicAllowed(t *testing.T) {
	tests := []struct {
		patterns []string
		topic    string
		want     bool
	}{
		{nil, "news", false},
		{[]string{}, "news", false},
		{[]string{"news"}, "news", true},
		{[]string{"news"}, "news2", false},
		{[]string{"news"}, "new", false},
		{[]string{"chat.*"}, "chat.room1", true},
		{[]string{"chat.*"}, "chat.room1.sub", true},
		{[]string{"chat.*"}, "chat.", false},
		{[]string{"chat.*"}, "chat", false},
		{[]string{"chat.*"}, "chatroom", false},
		{[]string{"chat.*"}, "xchat.room", false},
		{[]string{"a.b.*"}, "a.b.c", true},
		{[]string{"a.b.*"}, "a.c", false},
		{[]string{"*"}, "anything.at.all", true},
		{[]string{"*"}, "", false},
		{[]string{"*"}, "has space", false},
		{[]string{"chat*"}, "chatroom", false},
		{[]string{"chat*"}, "chat*", true},
		{[]string{"news", "chat.*"}, "chat.x", true},
		{[]string{"news", "chat.*"}, "sport", false},
	}
	for _, tt := range tests {
		got := Claims{Topics: tt.patterns}.TopicAllowed(tt.topic)
		if got != tt.want {
			t.Errorf("patterns %q: TopicAllowed(%q) = %v, want %v", tt.patterns, tt.topic, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"alice", true},
		{"user-42@example.com", true},
		{"chat.*", true},
		{"ünïcødé", true},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\u00a0b", false}, // no-break space
		{"\xff", false},     // invalid UTF-8
	}
	for _, tt := range tests {
		if got := ValidName(tt.s); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestKeys(t *testing.T) {
	k := NewKeys(map[string]string{
		"key-one-0123456789": "app1",
		"key-two-0123456789": "app2",
		"":                   "ignored",
	})
	tests := []struct {
		key, app string
		ok       bool
	}{
		{"key-one-0123456789", "app1", true},
		{"key-two-0123456789", "app2", true},
		{"key-one-012345678", "", false},
		{"KEY-ONE-0123456789", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		app, ok := k.App(tt.key)
		if app != tt.app || ok != tt.ok {
			t.Errorf("App(%q) = %q, %v; want %q, %v", tt.key, app, ok, tt.app, tt.ok)
		}
	}
}

// FuzzVerify checks that Verify never panics, always returns one of the
// sentinel errors, and only accepts tokens whose claims are valid.
// Seeds live in testdata/fuzz/FuzzVerify (valid, expired, unknown app,
// alg none, RS256 header, garbage).
func FuzzVerify(f *testing.F) {
	v := testVerifier(testNow)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrUnknownApp) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if c.App != "demo" || !ValidName(c.User) || !testNow.Before(c.Expiry) {
			t.Fatalf("accepted bad claims %+v", c)
		}
		for _, p := range c.Topics {
			if !ValidName(p) {
				t.Fatalf("accepted bad topic pattern %q", p)
			}
		}
	})
}

// TestRotatingVerifier: a token signed with any of an app's secrets
// verifies; SetSecrets replaces them for later verifications.
func TestRotatingVerifier(t *testing.T) {
	now := time.Now()
	oldS, newS := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	oldTok, err := Mint("a", oldS, "u", nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	newTok, err := Mint("a", newS, "u", nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	v := NewRotatingVerifier(map[string][][]byte{"a": {newS, oldS}}, nil)
	for _, tok := range []string{oldTok, newTok} {
		if _, err := v.Verify(tok); err != nil {
			t.Fatalf("Verify during rotation: %v", err)
		}
	}
	v.SetSecrets(map[string][][]byte{"a": {newS}})
	if _, err := v.Verify(oldTok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("old token after rotation: %v; want ErrInvalid", err)
	}
	if _, err := v.Verify(newTok); err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
	v.SetSecrets(map[string][][]byte{"b": {newS}})
	if _, err := v.Verify(newTok); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("token of a removed app: %v; want ErrUnknownApp", err)
	}
}

// TestKeysSet: Set replaces the keys.
func TestKeysSet(t *testing.T) {
	k := NewKeys(map[string]string{"old-key": "a"})
	k.Set(map[string]string{"new-key": "a"})
	if _, ok := k.App("old-key"); ok {
		t.Fatal("old key still works")
	}
	if app, ok := k.App("new-key"); !ok || app != "a" {
		t.Fatalf("new key: %q %v", app, ok)
	}
}

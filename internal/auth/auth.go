// Package auth verifies client tokens (HS256 JWTs minted by an app backend)
// and resolves server API keys to the app they belong to.
//
// A client token carries these claims:
//
//	sub     user id (required)
//	app     app id; selects the HMAC secret (required)
//	exp     expiry, seconds since the epoch (required)
//	iat     issue time (optional, informational)
//	topics  topic patterns the user may subscribe to (optional; absent = none)
//
// A topic pattern is an exact topic name, "prefix.*" (any topic that starts
// with "prefix." and has something after it) or "*" (every topic).
package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-push/herald/internal/jsonstr"
)

// Sentinel errors returned (wrapped) by Verify and Mint; test with errors.Is.
var (
	// ErrExpired means the token was valid but its exp time has passed.
	ErrExpired = errors.New("auth: token expired")
	// ErrInvalid means the token is malformed, badly signed, uses a
	// signing method other than HS256 or has missing or invalid claims.
	ErrInvalid = errors.New("auth: invalid token")
	// ErrUnknownApp means the token's app claim names no configured app.
	ErrUnknownApp = errors.New("auth: unknown app")
)

// MaxNameLen is the longest user id, app id or topic, in bytes.
const MaxNameLen = 128

// MinSecretLen is the shortest HS256 secret, in bytes, that Mint accepts and
// Verify trusts.
const MinSecretLen = 16

// ValidName reports whether s is acceptable as a user id, app id, topic or
// topic pattern: 1 to MaxNameLen bytes of valid UTF-8, printable, no spaces.
func ValidName(s string) bool {
	if s == "" || len(s) > MaxNameLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// Claims are the verified contents of a client token.
type Claims struct {
	App    string    // app id (the "app" claim)
	User   string    // user id (the "sub" claim)
	Topics []string  // allowed topic patterns (the "topics" claim)
	Expiry time.Time // the "exp" claim; the token is valid strictly before it
}

// TopicAllowed reports whether topic matches one of c.Topics. An invalid
// topic name never matches; an empty Topics list allows nothing.
func (c Claims) TopicAllowed(topic string) bool {
	if !ValidName(topic) {
		return false
	}
	for _, p := range c.Topics {
		if topicMatch(p, topic) {
			return true
		}
	}
	return false
}

// topicMatch reports whether the single pattern p matches topic.
func topicMatch(p, topic string) bool {
	switch {
	case p == "*":
		return true
	case strings.HasSuffix(p, ".*"):
		prefix := p[:len(p)-1] // keep the dot
		return len(topic) > len(prefix) && strings.HasPrefix(topic, prefix)
	default:
		return p == topic
	}
}

// tokenClaims is the JSON form of a client token's claims.
type tokenClaims struct {
	App    string   `json:"app"`
	Topics []string `json:"topics,omitempty"`
	jwt.RegisteredClaims
}

// Verifier checks client tokens against per-app secrets. It is safe for
// concurrent use, SetSecrets included.
type Verifier struct {
	secrets atomic.Pointer[map[string][][]byte] // app id -> accepted secrets
	parser  *jwt.Parser
}

// NewVerifier returns a Verifier for the given app id -> secret map (copied).
// Tokens of an app whose secret is shorter than MinSecretLen never verify.
// now is the clock used for expiry checks; nil means time.Now.
func NewVerifier(secrets map[string][]byte, now func() time.Time) *Verifier {
	many := make(map[string][][]byte, len(secrets))
	for app, s := range secrets {
		many[app] = [][]byte{s}
	}
	return NewRotatingVerifier(many, now)
}

// NewRotatingVerifier is NewVerifier for apps that accept several secrets
// at once (a key rotation: the new secret and the old ones). A token
// verifies if it is signed with any of its app's secrets.
func NewRotatingVerifier(secrets map[string][][]byte, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithTimeFunc(now),
		),
	}
	v.SetSecrets(secrets)
	return v
}

// SetSecrets replaces, atomically, the app id -> secrets map (copied).
// Verifications under way finish with the map they started with; a
// connection already verified is not affected.
func (v *Verifier) SetSecrets(secrets map[string][][]byte) {
	cp := make(map[string][][]byte, len(secrets))
	for app, list := range secrets {
		for _, s := range list {
			cp[app] = append(cp[app], append([]byte(nil), s...))
		}
	}
	v.secrets.Store(&cp)
}

// Verify checks token's signature and claims and returns the claims. Every
// error wraps exactly one of ErrExpired, ErrInvalid or ErrUnknownApp. An
// expired token is reported as ErrExpired only if its signature is valid.
func (v *Verifier) Verify(token string) (Claims, error) {
	if err := checkClaimsText(token); err != nil {
		return Claims{}, err
	}
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(token, &tc, v.key)
	switch {
	case errors.Is(err, ErrUnknownApp):
		return Claims{}, fmt.Errorf("%w %q", ErrUnknownApp, tc.App)
	case errors.Is(err, ErrInvalid):
		return Claims{}, err
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, fmt.Errorf("%w: user %q", ErrExpired, tc.Subject)
	case err != nil:
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := checkClaims(tc.Subject, tc.Topics); err != nil {
		return Claims{}, err
	}
	return Claims{
		App:    tc.App,
		User:   tc.Subject,
		Topics: tc.Topics,
		Expiry: tc.ExpiresAt.Time,
	}, nil
}

// checkClaimsText refuses a token whose claims are not valid text: invalid
// UTF-8 or a \u escape of a lone surrogate. The jwt parser decodes the
// claims with encoding/json, which would rewrite those to U+FFFD, so that
// the users "alice\ud800" and "alice\xff" would both be "alice\uFFFD". A
// token the parser cannot split or decode is left to it.
func checkClaimsText(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	if err := jsonstr.Check(claims); err != nil {
		return fmt.Errorf("%w: claims: %w", ErrInvalid, err)
	}
	return nil
}

// key is the jwt.Keyfunc: it selects the secret by the (not yet verified)
// app claim.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	tc, ok := t.Claims.(*tokenClaims)
	if !ok || tc.App == "" {
		return nil, fmt.Errorf("%w: missing app claim", ErrInvalid)
	}
	secrets, ok := (*v.secrets.Load())[tc.App]
	if !ok {
		return nil, ErrUnknownApp
	}
	var set jwt.VerificationKeySet
	for _, s := range secrets {
		if len(s) >= MinSecretLen {
			set.Keys = append(set.Keys, s)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("%w: app %q has no usable secret", ErrInvalid, tc.App)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// checkClaims validates the user id and topic patterns of a token.
func checkClaims(user string, topics []string) error {
	if user == "" {
		return fmt.Errorf("%w: missing sub claim", ErrInvalid)
	}
	if !ValidName(user) {
		return fmt.Errorf("%w: invalid user id %q", ErrInvalid, user)
	}
	for _, t := range topics {
		if !ValidName(t) {
			return fmt.Errorf("%w: invalid topic pattern %q", ErrInvalid, t)
		}
	}
	return nil
}

// Mint returns a signed HS256 token for user in app, allowing topics and
// expiring ttl after now (the exp claim has one-second precision). It is what
// an app backend does; herald uses it in tests and in the CLI. Invalid
// arguments yield an error wrapping ErrInvalid.
func Mint(app string, secret []byte, user string, topics []string, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case !ValidName(app):
		return "", fmt.Errorf("%w: invalid app id %q", ErrInvalid, app)
	case len(secret) < MinSecretLen:
		return "", fmt.Errorf("%w: secret shorter than %d bytes", ErrInvalid, MinSecretLen)
	case ttl <= 0:
		return "", fmt.Errorf("%w: ttl %v is not positive", ErrInvalid, ttl)
	}
	if err := checkClaims(user, topics); err != nil {
		return "", err
	}
	tc := tokenClaims{
		App:    app,
		Topics: topics,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return s, nil
}

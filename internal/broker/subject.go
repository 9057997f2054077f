package broker

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the default first token(s) of every NATS subject.
const DefaultPrefix = "herald"

// maxPrefixLen bounds the prefix, so that every subject fits a NATS
// protocol line (4 KiB by default) with room to spare.
const maxPrefixLen = 128

// The token after the prefix that says what follows.
const (
	tokUser      = "u"  // <prefix>.u.<app>.<user>
	tokTopic     = "t"  // <prefix>.t.<app>.<topic>
	tokBroadcast = "b"  // <prefix>.b.<app>
	tokNode      = "n"  // <prefix>.n.<node>
	tokCheck     = "hc" // <prefix>.hc.<node>.<dispatcher>: the self-check
)

// tokenSafe reports whether c stands for itself in an encoded token.
func tokenSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

const hexDigits = "0123456789ABCDEF"

// EncodeToken encodes name as one NATS subject token: ASCII letters,
// digits, '-' and '_' stand for themselves; every other byte (including
// '.', '*', '>', '%', spaces and each byte of a multi-byte UTF-8 character)
// becomes '%' and two upper-case hex digits. The result never contains a
// token separator or a wildcard, and two different names never encode the
// same ('%' is itself escaped, so the mapping is reversible: DecodeToken).
// An empty name encodes to "", which is not a valid token: subjects never
// contain one (Subject.Validate).
func EncodeToken(name string) string {
	n := 0
	for i := 0; i < len(name); i++ {
		if !tokenSafe(name[i]) {
			n++
		}
	}
	if n == 0 {
		return name
	}
	var b strings.Builder
	b.Grow(len(name) + 2*n)
	appendToken(&b, name)
	return b.String()
}

func appendToken(b *strings.Builder, name string) {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// DecodeToken reverses EncodeToken. It fails on anything EncodeToken does
// not produce.
func DecodeToken(tok string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		if c != '%' || i+2 >= len(tok) {
			return "", fmt.Errorf("broker: bad token %q at byte %d", tok, i)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("broker: bad token %q at byte %d", tok, i)
		}
		v := byte(hi<<4 | lo)
		if tokenSafe(v) {
			return "", fmt.Errorf("broker: bad token %q: %%%02X is not escaped by EncodeToken", tok, v)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ValidatePrefix checks a subject prefix: one or more dot-separated tokens
// of ASCII letters, digits, '-' and '_', at most 128 bytes.
func ValidatePrefix(prefix string) error {
	if prefix == "" || len(prefix) > maxPrefixLen {
		return fmt.Errorf("broker: prefix %q must be 1-%d bytes", prefix, maxPrefixLen)
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("broker: prefix %q has an empty token", prefix)
		}
		for i := 0; i < len(tok); i++ {
			if !tokenSafe(tok[i]) {
				return fmt.Errorf("broker: prefix %q may only hold ASCII letters, digits, '-', '_' and '.'", prefix)
			}
		}
	}
	return nil
}

// NATSSubject returns the NATS subject of s under prefix (which must pass
// ValidatePrefix):
//
//	<prefix>.u.<app>.<user>
//	<prefix>.t.<app>.<topic>
//	<prefix>.b.<app>
//	<prefix>.n.<node>
//
// with app, user, topic and node each encoded by EncodeToken. The kind
// token keeps kinds apart, and every name is exactly one token, so two
// different subjects never share a NATS subject and none is a wildcard.
func NATSSubject(prefix string, s Subject) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(prefix) + 4 + 3*(len(s.App)+len(s.Name)))
	b.WriteString(prefix)
	b.WriteByte('.')
	switch s.Kind {
	case User, Topic:
		if s.Kind == User {
			b.WriteString(tokUser)
		} else {
			b.WriteString(tokTopic)
		}
		b.WriteByte('.')
		appendToken(&b, s.App)
		b.WriteByte('.')
		appendToken(&b, s.Name)
	case Broadcast:
		b.WriteString(tokBroadcast)
		b.WriteByte('.')
		appendToken(&b, s.App)
	case Node:
		b.WriteString(tokNode)
		b.WriteByte('.')
		appendToken(&b, s.Name)
	}
	return b.String(), nil
}

// checkSubject is the subject of node's self-check through dispatcher i.
func checkSubject(prefix, node string, i int) string {
	return fmt.Sprintf("%s.%s.%s.%d", prefix, tokCheck, EncodeToken(node), i)
}

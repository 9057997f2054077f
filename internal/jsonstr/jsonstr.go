// Package jsonstr decodes JSON strings without rewriting them.
//
// encoding/json replaces invalid UTF-8 and \u escapes of lone surrogates
// with U+FFFD when it decodes a string, so "order-\xff", "order-\xfe" and
// "order-\ud800" all become "order-\uFFFD": three different ids that
// collide. String decodes a JSON string and keeps such content as it is:
// invalid bytes stay as they are, and a lone surrogate escape becomes the
// three bytes that encode the surrogate (its WTF-8 form), which are not
// valid UTF-8 either. A string that was not valid text therefore never
// decodes to valid UTF-8, and a validator that requires UTF-8 (such as
// auth.ValidName) rejects it instead of accepting a rewritten string.
//
// Check tells whether a whole JSON text (a payload, a frame) would decode
// without any such rewriting.
package jsonstr

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// Sentinel errors, wrapped by Decode, Check and String.UnmarshalJSON.
var (
	// ErrSyntax means the input is not a JSON string literal.
	ErrSyntax = errors.New("jsonstr: not a JSON string")
	// ErrInvalidUTF8 means the JSON text holds bytes that are not UTF-8.
	ErrInvalidUTF8 = errors.New("jsonstr: invalid UTF-8")
	// ErrLoneSurrogate means the JSON text holds a \u escape of a UTF-16
	// surrogate that is not half of a pair.
	ErrLoneSurrogate = errors.New("jsonstr: lone surrogate escape")
)

// String is a string decoded from JSON without rewriting (see the package
// comment). JSON null leaves it unchanged, as encoding/json does for a
// string.
type String string

// UnmarshalJSON implements json.Unmarshaler.
func (s *String) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	v, err := Decode(b)
	if err != nil {
		return err
	}
	*s = String(v)
	return nil
}

// Decode returns the value of the JSON string literal lit, quotes
// included. Valid text decodes as encoding/json decodes it. Bytes that are
// not UTF-8 are kept as they are, and the escape of a lone surrogate
// becomes its WTF-8 bytes, so that the result is valid UTF-8 exactly when
// lit is valid UTF-8 without lone surrogate escapes.
func Decode(lit []byte) (string, error) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", fmt.Errorf("%w: %.20q", ErrSyntax, lit)
	}
	body := lit[1 : len(lit)-1]
	for i, c := range body {
		switch {
		case c == '\\':
			return unescape(body, i)
		case c < 0x20 || c == '"':
			return "", fmt.Errorf("%w: byte %#x at %d must be escaped", ErrSyntax, c, i+1)
		}
	}
	return string(body), nil // the fast path: nothing to unescape
}

// unescape decodes body, whose first i bytes need no unescaping.
func unescape(body []byte, i int) (string, error) {
	out := make([]byte, i, len(body))
	copy(out, body[:i])
	for i < len(body) {
		c := body[i]
		if c != '\\' {
			if c < 0x20 || c == '"' {
				return "", fmt.Errorf("%w: byte %#x at %d must be escaped", ErrSyntax, c, i+1)
			}
			out = append(out, c)
			i++
			continue
		}
		if i+1 == len(body) {
			return "", fmt.Errorf("%w: escape at the end", ErrSyntax)
		}
		switch e := body[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n, ok := escapedRune(body[i:])
			if !ok {
				return "", fmt.Errorf("%w: bad \\u escape at %d", ErrSyntax, i+1)
			}
			if utf16.IsSurrogate(r) { // lone: n is 6
				out = append(out, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
			} else {
				out = utf8.AppendRune(out, r)
			}
			i += n
			continue
		default:
			return "", fmt.Errorf("%w: bad escape \\%c at %d", ErrSyntax, e, i+1)
		}
		i += 2
	}
	return string(out), nil
}

// escapedRune decodes the \uXXXX escape at the start of b, and the low
// surrogate escape after it when the first is a high surrogate. It returns
// the rune (a surrogate when it is lone), the bytes used (6 or 12) and
// whether b starts with a well-formed \u escape.
func escapedRune(b []byte) (r rune, n int, ok bool) {
	r, ok = hex4(b)
	if !ok {
		return 0, 0, false
	}
	if r >= 0xd800 && r < 0xdc00 {
		if r2, ok2 := hex4(b[6:]); ok2 && r2 >= 0xdc00 && r2 < 0xe000 {
			return utf16.DecodeRune(r, r2), 12, true
		}
	}
	return r, 6, true
}

// hex4 decodes a \uXXXX escape at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// Check reports whether the JSON text js decodes without rewriting: it
// must be valid UTF-8 and have no \u escape of a lone surrogate. It does
// not check the JSON syntax (json.Valid does): it is meant for text that
// is, or will be, parsed as JSON. The error says what is wrong and where.
func Check(js []byte) error {
	if !utf8.Valid(js) {
		return fmt.Errorf("%w at byte %d", ErrInvalidUTF8, firstInvalid(js))
	}
	// In valid JSON a backslash only occurs in a string, where it starts
	// an escape: skip each escape whole, so that "\\ud800" is no \u escape.
	for i := 0; ; {
		j := bytes.IndexByte(js[i:], '\\')
		if j < 0 {
			return nil
		}
		i += j
		if i+1 == len(js) {
			return nil // not JSON; a syntax check reports it
		}
		if js[i+1] == 'u' {
			r, n, ok := escapedRune(js[i:])
			if ok && utf16.IsSurrogate(r) {
				return fmt.Errorf("%w \\u%04x at byte %d", ErrLoneSurrogate, r, i)
			}
			if ok {
				i += n
				continue
			}
		}
		i += 2
	}
}

// firstInvalid returns the offset of the first byte of b that does not
// start a valid UTF-8 sequence.
func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

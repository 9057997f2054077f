package jsonstr

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, lit, want string
	}{
		{"plain", `"order-17"`, "order-17"},
		{"empty", `""`, ""},
		{"utf-8", `"h\u00e9 é ✓ 😀"`, "hé é ✓ 😀"},
		{"escapes", `"a\"b\\c\/d\b\f\n\r\te"`, "a\"b\\c/d\b\f\n\r\te"},
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"upper-case hex", `"\u00E9\uD83D\uDE00"`, "é😀"},
		{"escape after text", `"abc\u0041"`, "abcA"},
		{"raw invalid byte", "\"order-\xff\"", "order-\xff"},
		{"raw invalid byte, escapes", "\"\\n-\xfe\"", "\n-\xfe"},
		{"lone high surrogate", `"order-\ud800"`, "order-\xed\xa0\x80"},
		{"lone low surrogate", `"\udc00x"`, "\xed\xb0\x80x"},
		{"high then high", `"\ud800\ud800"`, "\xed\xa0\x80\xed\xa0\x80"},
		{"high then letter", `"\ud800\u0041"`, "\xed\xa0\x80A"},
		{"low then high", `"\udfff\udbff"`, "\xed\xbf\xbf\xed\xaf\xbf"},
		{"escaped backslash before u", `"\\ud800"`, `\ud800`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.lit))
			if err != nil || got != tt.want {
				t.Fatalf("Decode(%s) = %q, %v; want %q", tt.lit, got, err, tt.want)
			}
			var s String
			if err := json.Unmarshal([]byte(tt.lit), &s); err != nil || string(s) != tt.want {
				t.Fatalf("json.Unmarshal into String = %q, %v; want %q", s, err, tt.want)
			}
			// valid text exactly when the literal is
			clean := Check([]byte(tt.lit)) == nil
			if utf8.ValidString(got) != clean {
				t.Fatalf("decoded %q: valid UTF-8 %v, but Check says clean %v", got, !clean, clean)
			}
			if clean {
				var std string
				if err := json.Unmarshal([]byte(tt.lit), &std); err != nil || std != got {
					t.Fatalf("encoding/json decodes %s to %q, %v; String to %q", tt.lit, std, err, got)
				}
			}
		})
	}
}

// TestCollisions is the bug this package exists for: encoding/json makes
// one string of three different ids.
func TestCollisions(t *testing.T) {
	lits := []string{"\"order-\xff\"", "\"order-\xfe\"", `"order-\ud800"`, `"order-\ufffd"`}
	seen := map[string]string{}
	for _, lit := range lits {
		var std string
		if err := json.Unmarshal([]byte(lit), &std); err != nil || std != "order-\ufffd" {
			t.Fatalf("encoding/json decodes %q to %q, %v; this test assumes U+FFFD", lit, std, err)
		}
		got, err := Decode([]byte(lit))
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[got]; dup {
			t.Fatalf("%q and %q both decode to %q", lit, other, got)
		}
		seen[got] = lit
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, lit := range []string{
		``, `"`, `x`, `"abc`, `abc"`, `null`, `1`, `{}`,
		`"a"b"`, "\"a\nb\"", "\"\x00\"",
		`"\"`, `"\x"`, `"\u12"`, `"\u12g4"`, `"\U0041"`, `"a\`,
	} {
		if got, err := Decode([]byte(lit)); !errors.Is(err, ErrSyntax) {
			t.Errorf("Decode(%q) = %q, %v; want ErrSyntax", lit, got, err)
		}
	}
	// String accepts null (no change) and rejects other non-strings.
	s := String("kept")
	if err := s.UnmarshalJSON([]byte("null")); err != nil || s != "kept" {
		t.Fatalf("null: %q, %v", s, err)
	}
	var v struct{ S String }
	if err := json.Unmarshal([]byte(`{"S":12}`), &v); err == nil {
		t.Fatalf("a number decoded into String: %q", v.S)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		js   string
		want error
	}{
		{"object", `{"a":"b","c":[1,"\u00e9",{"d":null}]}`, nil},
		{"pair", `"\ud83d\ude00"`, nil},
		{"escaped backslash then u", `["\\ud800"]`, nil},
		{"escaped backslash then pair", `"\\\ud83d\ude00"`, nil},
		{"text with utf-8", `"ü€😀"`, nil},
		{"raw invalid", "{\"a\":\"\xff\"}", ErrInvalidUTF8},
		{"truncated utf-8", "\"\xe2\x82\"", ErrInvalidUTF8},
		{"encoded surrogate", "\"\xed\xa0\x80\"", ErrInvalidUTF8},
		{"lone high", `{"a":"x\ud800"}`, ErrLoneSurrogate},
		{"lone high at the end", `"\ud800"`, ErrLoneSurrogate},
		{"lone low", `"\udc00"`, ErrLoneSurrogate},
		{"reversed pair", `"\ude00\ud83d"`, ErrLoneSurrogate},
		{"in a key", `{"\udfff":1}`, ErrLoneSurrogate},
		{"escaped backslash then lone", `"\\\ud800"`, ErrLoneSurrogate},
		{"trailing backslash", `"\`, nil}, // not JSON: not Check's business
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check([]byte(tt.js))
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Check(%q) = %v; want %v", tt.js, err, tt.want)
			}
		})
	}
}

// BenchmarkCheck measures what the protocol's JSON decoder adds to each
// message: a CONNECT of 300 bytes, with and without escapes.
func BenchmarkCheck(b *testing.B) {
	for _, tc := range []struct{ name, js string }{
		{"plain", `{"type":"connect","version":1,"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhcHAiOiJkZW1vIiwic3ViIjoiYWxpY2UiLCJleHAiOjE3MDAwMDM2MDB9.RoOy1-dfAtx8Vgn_3IbTBk4Xs_blLxn-2S-c1N2cQbc","device":"3f1c9a2e-7b4d-4e8a-9c61-0d2f5b7e8a90","client":"herald-js/1.2.0","resume":[{"stream":"u:alice","epoch":"1700000000","seq":812}]}`},
		{"escapes", `{"type":"uplink","data":{"text":"caf\u00e9 \ud83d\ude00 \"quoted\" \\ back\nslash","more":"\u003c\u003e"}}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			js := []byte(tc.js)
			b.SetBytes(int64(len(js)))
			for b.Loop() {
				if err := Check(js); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

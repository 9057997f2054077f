package jsonstr

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzDecode decodes arbitrary bytes as the inside of a JSON string
// literal. Valid text comes out as encoding/json decodes it, and survives
// a round trip through json.Marshal unchanged; anything that is not valid
// text never comes out as valid UTF-8. Check agrees with both.
// Seed corpus: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"order-17", "order-\xff", `order-\ud800`, `\ud83d\ude00`, `\\ud800`, `\n\"`, "é"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lit := append(append([]byte{'"'}, in...), '"')
		got, err := Decode(lit)
		var std string
		stdErr := json.Unmarshal(lit, &std)
		checkErr := Check(lit)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Decode(%q): %v does not wrap ErrSyntax", lit, err)
			}
			if stdErr == nil {
				t.Fatalf("Decode(%q) failed (%v) but encoding/json decodes it to %q", lit, err, std)
			}
			return
		}
		if stdErr != nil {
			t.Fatalf("Decode(%q) = %q but encoding/json fails: %v", lit, got, stdErr)
		}
		var s String
		if err := json.Unmarshal(lit, &s); err != nil || string(s) != got {
			t.Fatalf("String of %q = %q, %v; want %q", lit, s, err, got)
		}
		if utf8.ValidString(got) != (checkErr == nil) {
			t.Fatalf("Decode(%q) = %q (valid UTF-8: %v), but Check says %v", lit, got, utf8.ValidString(got), checkErr)
		}
		if checkErr != nil {
			if !errors.Is(checkErr, ErrInvalidUTF8) && !errors.Is(checkErr, ErrLoneSurrogate) {
				t.Fatalf("Check(%q) = %v wraps no sentinel", lit, checkErr)
			}
			return
		}
		if got != std {
			t.Fatalf("valid text %q: Decode = %q, encoding/json = %q", lit, got, std)
		}
		enc, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(enc)
		if err != nil || again != got || Check(enc) != nil {
			t.Fatalf("round trip of %q through %s: %q, %v", got, enc, again, err)
		}
	})
}

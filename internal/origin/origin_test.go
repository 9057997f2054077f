package origin

import "testing"

func TestCheck(t *testing.T) {
	for _, ok := range []string{"*", "https://app.example.com", "http://localhost:3000", "HTTPS://App.Example.com:443", "http://[::1]:8080"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "app.example.com", "https://app.example.com/", "https://app.example.com/x",
		"https://app.example.com?q", "https://app.example.com#f", "https://u@app.example.com", "https://app.example.com:99999",
		"https://app.example.com:", "**", "https://", "null"} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) = nil; want an error", bad)
		}
	}
}

func TestAllowed(t *testing.T) {
	l, err := Parse([]string{"https://app.example.com", "http://localhost:3000"})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"":                            true, // not a browser
		"https://app.example.com":     true,
		"https://APP.example.com:443": true,
		"http://localhost:3000":       true,
		"http://app.example.com":      false,
		"https://evil.example.com":    false,
		"http://localhost:3001":       false,
		"null":                        false,
		"garbage":                     false,
	} {
		if got := l.Allowed(origin); got != want {
			t.Errorf("Allowed(%q) = %v; want %v", origin, got, want)
		}
	}
	for _, entries := range [][]string{nil, {"*"}, {"https://a.example", "*"}} {
		l, err := Parse(entries)
		if err != nil || !l.Any() || !l.Allowed("https://anything.example") {
			t.Errorf("Parse(%q): any = %v, err %v; want any origin", entries, l.Any(), err)
		}
	}
	if !(List{}).Allowed("https://x.example") {
		t.Error("the zero List refuses an origin")
	}
	if _, err := Parse([]string{"https://ok.example", "bad"}); err == nil {
		t.Error("Parse accepted a bad entry")
	}
}

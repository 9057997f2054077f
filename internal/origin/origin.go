// Package origin matches the Origin header of browser requests against a
// configured list of allowed origins, for the gateway's WebSocket and SSE
// endpoints and for CORS on the server API.
//
// An entry is "*" (any origin) or an origin as browsers send it:
// scheme://host[:port], without a path, query or fragment. Scheme and host
// compare without regard to case, and a default port (80 for http, 443 for
// https) is the same as none.
package origin

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// List is a parsed list of allowed origins. The zero List allows any
// origin.
type List struct {
	any     bool
	origins map[string]bool
}

// Parse checks every entry and returns the list. An empty list allows any
// origin.
func Parse(entries []string) (List, error) {
	l := List{any: len(entries) == 0, origins: make(map[string]bool, len(entries))}
	var errs []error
	for i, e := range entries {
		if e == "*" {
			l.any = true
			continue
		}
		n, err := normalize(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("[%d] %q: %w", i, e, err))
			continue
		}
		l.origins[n] = true
	}
	if err := errors.Join(errs...); err != nil {
		return List{}, err
	}
	return l, nil
}

// Check reports what is wrong with one entry, or nil.
func Check(entry string) error {
	if entry == "*" {
		return nil
	}
	_, err := normalize(entry)
	return err
}

// Any reports whether every origin is allowed.
func (l List) Any() bool { return l.any || l.origins == nil }

// Allowed reports whether a request with this Origin header may proceed.
// An empty origin (no header: not a browser) is always allowed.
func (l List) Allowed(origin string) bool {
	if origin == "" || l.Any() {
		return true
	}
	n, err := normalize(origin)
	return err == nil && l.origins[n]
}

// normalize returns s as scheme://host[:port] in lower case without a
// default port, or why s is not an origin.
func normalize(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty origin")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("not an origin: %w", err)
	}
	switch {
	case u.Scheme == "" || u.Host == "":
		return "", errors.New("want scheme://host[:port], like https://app.example.com")
	case u.User != nil:
		return "", errors.New("an origin has no user info")
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.HasSuffix(s, "#"):
		return "", errors.New("an origin has no path, query or fragment (not even a trailing /)")
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", errors.New("an origin needs a host")
	}
	if strings.HasSuffix(u.Host, ":") {
		return "", errors.New("empty port")
	}
	if port != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	host = strings.ToLower(host)
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}

//go:build !(linux || darwin || netbsd || freebsd || openbsd || dragonfly)

package gateway

import "github.com/lesismal/nbio"

// waitPollers does nothing where nbio runs on the standard library's
// network poller (Windows): see the Unix version for why it exists there.
func waitPollers(*nbio.Engine) error { return nil }

// isProbe reports false: waitPollers adds no sockets here.
func isProbe(*nbio.Conn) bool { return false }

package gateway

import (
	"net/http"
	"sync/atomic"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// parserGuard stands in, as the connection's session, for the HTTP parser
// of a connection of the WebSocket listener that has not been upgraded.
//
// HTTP handlers run on the event loop, inside the parser's Parse, which
// holds the parser's lock. A connection closed while its handler runs (a
// write to a client that reset, "Connection: close", nbhttp's keep-alive
// timer firing on another goroutine) has its close job queued behind the
// handler, and nbio runs that job next, on the same goroutine, still
// inside Parse: the parser's CloseAndClean then waits for the lock Parse
// holds, and the event loop, with every connection on it, hangs for good.
// The guard's CloseAndClean, called while Parse runs, hands the cleanup to
// a goroutine of its own, which takes the lock once Parse returns.
type parserGuard struct {
	*nbhttp.Parser
	parsing atomic.Bool
}

var _ nbhttp.ParserCloser = (*parserGuard)(nil)

// Parse implements nbhttp.ParserCloser.
func (g *parserGuard) Parse(data []byte) error {
	g.parsing.Store(true)
	defer g.parsing.Store(false)
	return g.Parser.Parse(data)
}

// CloseAndClean implements nbhttp.ParserCloser.
func (g *parserGuard) CloseAndClean(err error) {
	if g.parsing.Load() {
		go g.Parser.CloseAndClean(err)
		return
	}
	g.Parser.CloseAndClean(err)
}

// guardParser puts a parserGuard in front of c's HTTP parser, if c has one
// without a guard. It runs on c's event loop, before c's data is parsed.
func guardParser(c *nbio.Conn) {
	if p, ok := c.Session().(*nbhttp.Parser); ok {
		c.SetSession(&parserGuard{Parser: p})
	}
}

// unguardParser gives the connection of w its parser back as its session,
// for the WebSocket upgrade, which looks for it there. It returns the
// function that puts the same guard back (Parse is still running in it),
// for an upgrade that failed; a no-op when there was no guard. Called in a
// handler, on the event loop.
func unguardParser(w http.ResponseWriter) (reguard func()) {
	res, ok := w.(*nbhttp.Response)
	if !ok || res.Parser == nil || res.Parser.Conn == nil {
		return func() {}
	}
	nc := nbioConn(res.Parser.Conn)
	if nc == nil {
		return func() {}
	}
	g, ok := nc.Session().(*parserGuard)
	if !ok {
		return func() {}
	}
	nc.SetSession(g.Parser)
	return func() {
		if nc.Session() == g.Parser { // not upgraded, not cleared
			nc.SetSession(g)
		}
	}
}

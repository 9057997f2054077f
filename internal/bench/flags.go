package bench

import (
	"errors"
	"fmt"
	"time"
)

// Bounds of the numbers a run takes.
const (
	// MaxConns is the most connections one run opens (several worker
	// processes of at most 15,000 each).
	MaxConns = 1_000_000
	// MaxSize is the largest payload a run sends; the server's
	// max_payload (32 KiB by default) may be lower.
	MaxSize = 1 << 20
	// MaxBatch is the most messages in one bulk request.
	MaxBatch = 10_000
	// MaxSrcIPs is the most client source addresses (127.0.0.2 up).
	MaxSrcIPs = 250
)

// CheckNumbers reports every number of o that a run cannot use, at once:
// counts below one, negative or zero rates and durations, payloads smaller
// than the bench's header. Run calls it too; a command line calls it before
// it starts any server.
func (o Options) CheckNumbers() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("bench: "+format, args...)) }
	if o.Conns < 1 || o.Conns > MaxConns {
		bad("-conns must be 1 to %d, not %d", MaxConns, o.Conns)
	}
	if o.ConnectRate < 0 {
		bad("-connect-rate must be positive, not %v", o.ConnectRate)
	}
	switch o.Scenario {
	case "fanout", "unicast", "api":
		if o.Rate <= 0 {
			bad("-rate must be positive, not %v", o.Rate)
		}
		if o.Duration <= 0 {
			bad("-duration must be positive, not %v", o.Duration)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"hold", o.Hold}, {"drain", o.Drain}, {"timeout", o.Timeout}} {
		if d.v < 0 {
			bad("-%s must not be negative, not %v", d.name, d.v)
		}
	}
	if o.Warmup < 0 {
		bad("-warmup must not be negative, not %d", o.Warmup)
	}
	if o.Size != 0 && (o.Size < payloadHeader || o.Size > MaxSize) {
		bad("-size must be %d to %d bytes (the bench stamps each payload with %d bytes), not %d", payloadHeader, MaxSize, payloadHeader, o.Size)
	}
	if o.Batch < 0 || o.Batch > MaxBatch {
		bad("-batch must be 1 to %d, not %d", MaxBatch, o.Batch)
	}
	if o.Workers < 0 {
		bad("-workers must not be negative, not %d", o.Workers)
	}
	if o.SrcIPs < 0 || o.SrcIPs > MaxSrcIPs {
		bad("-src-ips must be 1 to %d, not %d", MaxSrcIPs, o.SrcIPs)
	}
	if o.Concurrency < 0 {
		bad("-concurrency must be positive, not %d", o.Concurrency)
	}
	return errors.Join(errs...)
}

//go:build !unix

package server

import "time"

// processCPU is not measured here: the node reports no CPU load.
func processCPU() (time.Duration, bool) { return 0, false }

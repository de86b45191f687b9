// Package fuzzbound gives fuzz targets a per-input time bound. Go's fuzzer
// has none: an input that makes the code under test spin shows up only as
// "execs: 0/sec". Calling Limit at the top of a fuzz function turns such an
// input into a crash that the fuzzer records in testdata/fuzz like any
// other failure, with every goroutine's stack to show where it spun.
package fuzzbound

import (
	"fmt"
	"runtime/debug"
	"testing"
	"time"
)

// Default is the bound most targets use: generous for a loaded 2-core
// machine, far below what any hostile input deserves.
const Default = 3 * time.Second

// Limit crashes the test binary if the current input (t) has not finished
// within d. A panic is the only way to stop a goroutine that does not
// return; the fuzzer treats the dying worker as a failing input.
func Limit(t testing.TB, d time.Duration) {
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("fuzzbound: %s: one input ran longer than %v (slow input: a finding)", name, d))
	})
	t.Cleanup(func() { timer.Stop() })
}

package session

import (
	"runtime"
	"sync"
)

// bulkProcs is how many Ps the agent runs with while it moves a tree of
// files. With a single P (a one-vCPU guest), each system call slower than
// the runtime's ~20 µs threshold has its P handed to another thread, and
// under emulation nearly every filesystem call is that slow: extracting
// 1,000 small files took twice as long as with a second, idle P, which lets
// a call run on without a hand-off. Commands, on the other hand, run
// faster with one P (their pipes and the port are then served by one
// thread), so the second P is there only while a transfer runs.
const bulkProcs = 2

var bulk struct {
	mu     sync.Mutex
	active int
	before int
}

// beginBulk raises GOMAXPROCS to bulkProcs until the returned function is
// called; overlapping transfers share the raise.
func beginBulk() (end func()) {
	bulk.mu.Lock()
	defer bulk.mu.Unlock()
	if bulk.active == 0 {
		bulk.before = runtime.GOMAXPROCS(0)
		if bulk.before < bulkProcs {
			runtime.GOMAXPROCS(bulkProcs)
		}
	}
	bulk.active++
	var once sync.Once
	return func() {
		once.Do(func() {
			bulk.mu.Lock()
			defer bulk.mu.Unlock()
			bulk.active--
			if bulk.active == 0 && bulk.before < bulkProcs {
				runtime.GOMAXPROCS(bulk.before)
			}
		})
	}
}

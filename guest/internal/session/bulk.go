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

// procsRaiser raises the number of Ps while any bulk operation runs.
type procsRaiser struct {
	set    func(int) int // runtime.GOMAXPROCS
	mu     sync.Mutex
	active int
	before int
}

var bulk = &procsRaiser{set: runtime.GOMAXPROCS}

// beginBulk raises GOMAXPROCS to bulkProcs until the returned function is
// called; overlapping transfers share the raise.
func beginBulk() (end func()) { return bulk.begin() }

func (r *procsRaiser) begin() (end func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active == 0 {
		r.before = r.set(0)
		if r.before < bulkProcs {
			r.set(bulkProcs)
		}
	}
	r.active++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.active--
			if r.active == 0 && r.before < bulkProcs {
				r.set(r.before)
			}
		})
	}
}

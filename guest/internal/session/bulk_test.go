package session

import "testing"

func TestBulkRaisesProcsWhileAnyTransferRuns(t *testing.T) {
	procs := 1
	r := &procsRaiser{set: func(n int) int {
		old := procs
		if n > 0 {
			procs = n
		}
		return old
	}}
	endA := r.begin()
	endB := r.begin()
	if procs != bulkProcs {
		t.Fatalf("%d Ps during transfers, want %d", procs, bulkProcs)
	}
	endA()
	endA() // a second call changes nothing
	if procs != bulkProcs {
		t.Fatalf("%d Ps with one transfer left, want %d", procs, bulkProcs)
	}
	endB()
	if procs != 1 {
		t.Fatalf("%d Ps after the transfers, want 1", procs)
	}
	// A guest with more vCPUs keeps its own count.
	procs = 4
	end := r.begin()
	if procs != 4 {
		t.Fatalf("%d Ps on a 4-vCPU guest, want 4", procs)
	}
	end()
	if procs != 4 {
		t.Fatalf("%d Ps after, want 4", procs)
	}
}

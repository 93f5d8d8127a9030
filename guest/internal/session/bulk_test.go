package session

import (
	"runtime"
	"testing"
)

func TestBulkRaisesProcsWhileAnyTransferRuns(t *testing.T) {
	before := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(before)
	endA := beginBulk()
	endB := beginBulk()
	if got := runtime.GOMAXPROCS(0); got != bulkProcs {
		t.Fatalf("GOMAXPROCS %d during transfers, want %d", got, bulkProcs)
	}
	endA()
	endA() // a second call changes nothing
	if got := runtime.GOMAXPROCS(0); got != bulkProcs {
		t.Fatalf("GOMAXPROCS %d with one transfer left, want %d", got, bulkProcs)
	}
	endB()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS %d after the transfers, want 1", got)
	}
}

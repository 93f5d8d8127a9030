package pty

import (
	"strings"
	"testing"
	"time"
)

func TestOpenSizeAndIO(t *testing.T) {
	master, slave, err := Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	if !strings.HasPrefix(slave.Name(), "/dev/pts/") {
		t.Fatalf("slave %q", slave.Name())
	}
	if err := SetSize(master, 123, 45); err != nil {
		t.Fatal(err)
	}
	if cols, rows, err := Size(master); err != nil || cols != 123 || rows != 45 {
		t.Fatalf("size %d×%d %v", cols, rows, err)
	}
	// What the slave writes comes out of the master (with the terminal's
	// newline translation).
	if _, err := slave.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	_ = master.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := master.Read(buf)
	if err != nil || string(buf[:n]) != "hi\r\n" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	// No session has the terminal as its controlling terminal yet.
	if pg, err := ForegroundPgrp(master); err == nil && pg > 0 {
		t.Logf("foreground group %d", pg)
	}
	// Close interrupts a blocked read (the master is non-blocking).
	_ = master.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := master.Read(buf)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	master.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after close succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not interrupt the read")
	}
}

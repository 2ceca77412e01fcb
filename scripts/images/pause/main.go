// The pod sandbox ("pause") image of Flotilla's real nodes: it holds the
// pod's namespaces, reaps the zombies of processes re-parented to it and
// exits on SIGTERM or SIGINT. Built statically (CGO_ENABLED=0) by
// scripts/node-runtime.sh into a one-file image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// One SIGCHLD may stand for several exits: reap until none is left.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

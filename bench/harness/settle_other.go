//go:build !linux

package harness

import "time"

// unlinkWindow is 0 but on Linux: the window is ext4's (settle_linux.go).
func unlinkWindow(string) (time.Duration, string) { return 0, "" }

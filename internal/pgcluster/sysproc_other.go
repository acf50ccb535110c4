//go:build !linux

package pgcluster

import "syscall"

// sysProcAttr runs a server as cred, in a process group of its own. Only
// Linux can tie the server's life to the caller's; elsewhere a caller that
// dies without stopping it leaves it running.
func sysProcAttr(cred *syscall.Credential, _ syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

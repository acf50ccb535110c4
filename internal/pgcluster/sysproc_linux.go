package pgcluster

import "syscall"

// sysProcAttr runs a server as cred, in a process group of its own, and has
// the kernel send it deathSig if the calling thread dies first.
func sysProcAttr(cred *syscall.Credential, deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: deathSig}
}

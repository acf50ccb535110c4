package move

import "time"

// StopRenewal makes m's runners stop renewing their leases, as a runner
// that stalls would: they stop their work when the lease could run out.
func StopRenewal(m *Mover) { m.renew = 24 * time.Hour }

// Unfenced makes m's runners neither renew their leases nor stop when
// they could run out: a runner whose clock or scheduling failed it, which
// only the control plane's fencing stops.
func Unfenced(m *Mover) { m.unfenced = true }

package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// account is the operating-system user the servers run as.
type account struct {
	name   string
	uid    int
	gid    int
	groups []int
	cred   *syscall.Credential // nil: run as the current process's user
}

// serverAccount returns the account to run servers as: the current user, or
// the postgres system user when the process is root, because initdb and
// postgres refuse to run as root.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return &account{name: "the current user", uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to, but there is no postgres system user to run it as (%v): run scripts/install-deps.sh, whose packages create one", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("postgres user: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("postgres user: gid %q: %w", u.Gid, err)
	}
	a := &account{name: "postgres", uid: uid, gid: gid, groups: []int{gid}}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil && !slices.Contains(a.groups, g) {
				a.groups = append(a.groups, g)
			}
		}
	}
	a.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	for _, g := range a.groups {
		a.cred.Groups = append(a.cred.Groups, uint32(g))
	}
	return a, nil
}

// canSearch reports whether a may enter the directory fi describes, by its
// mode bits (ACLs are not consulted).
func (a *account) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || a.cred == nil {
		return true
	}
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == a.uid:
		return mode&0o100 != 0
	case slices.Contains(a.groups, int(st.Gid)):
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// workDir resolves dir, finds the account the server runs as and prepares
// dir for it, for a cluster or a PgBouncer: the absolute dir, the account
// and logf, or a no-op logger when logf is nil.
func workDir(dir string, logf func(string, ...any)) (string, *account, func(string, ...any), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, nil, fmt.Errorf("pgcluster: %w", err)
	}
	acct, err := serverAccount()
	if err != nil {
		return "", nil, nil, fmt.Errorf("pgcluster: %w", err)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := prepareDir(abs, acct, logf); err != nil {
		return "", nil, nil, fmt.Errorf("pgcluster: %w", err)
	}
	return abs, acct, logf, nil
}

// prepareDir creates dir (absolute) for a server owned by a, and makes sure
// a can reach it. A parent a cannot enter is opened for it (search only, no
// listing) when it is one prepareDir created or lies inside the temporary
// directory; any other is an ErrDirNotReachable.
func prepareDir(dir string, a *account, logf func(string, ...any)) error {
	var missing []string // parents of dir, and dir, that do not exist yet
	p := dir
	for {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if a.cred != nil {
		tmp := filepath.Clean(os.TempDir())
		for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
			if !slices.Contains(missing, p) {
				fi, err := os.Stat(p)
				if err != nil {
					return err
				}
				if !a.canSearch(fi) {
					if !strings.HasPrefix(p, tmp+string(filepath.Separator)) {
						st := fi.Sys().(*syscall.Stat_t)
						return fmt.Errorf("%w: the %s user (uid %d) runs PostgreSQL and cannot enter %s (mode %04o, owner uid %d): put the cluster elsewhere, or run `chmod o+x %s`",
							ErrDirNotReachable, a.name, a.uid, p, fi.Mode().Perm(), st.Uid, p)
					}
					if err := addSearch(p, fi); err != nil {
						return err
					}
					logf("pgcluster: let %s enter %s (chmod o+x)", a.name, p)
				}
			}
			if filepath.Dir(p) == p {
				break
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if a.cred == nil {
		return nil
	}
	// Parents created with a strict umask: open them for the server user.
	for _, p := range missing {
		if p == dir {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !a.canSearch(fi) {
			if err := addSearch(p, fi); err != nil {
				return err
			}
		}
	}
	return os.Chown(dir, a.uid, a.gid)
}

func addSearch(p string, fi fs.FileInfo) error {
	keep := fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if err := os.Chmod(p, fi.Mode()&keep|0o001); err != nil {
		return fmt.Errorf("let the server user enter %s: %w", p, err)
	}
	return nil
}

// chownTree hands the tree at root to a when root is not a's already.
func chownTree(root string, a *account) error {
	if a.cred == nil {
		return nil
	}
	fi, err := os.Stat(root)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == a.uid {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, a.uid, a.gid)
	})
}

// createLog opens path for appending, owned by a, and returns it with its
// current size: the offset this run's output starts at.
func createLog(path string, a *account) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, err
	}
	if a.cred != nil {
		if err := f.Chown(a.uid, a.gid); err != nil {
			f.Close()
			return nil, 0, err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// logTail returns the last lines of path from offset on, indented, for
// error messages.
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "\n%s says:", path)
	for _, l := range lines {
		out.WriteString("\n    " + l)
	}
	return out.String()
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on right
// now. Another process may take it before the server binds it; callers
// retry with a new one when binding fails.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portOutsideEphemeral returns a TCP port on 127.0.0.1 that nothing
// listens on right now and that lies outside the kernel's range for
// outgoing connections (/proc/sys/net/ipv4/ip_local_port_range; Linux's
// default where that cannot be read), so that no outgoing connection can
// hold it when the server binds it. Another process may still take it
// first; callers retry with a new one when binding fails.
func portOutsideEphemeral() (int, error) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				lo, hi = l, h
			}
		}
	}
	// Below the range from 10000 (under it live well-known services),
	// and above it.
	var spans [][2]int
	if lo > 10000 {
		spans = append(spans, [2]int{10000, lo - 1})
	}
	if hi < 65535 {
		spans = append(spans, [2]int{hi + 1, 65535})
	}
	total := 0
	for _, s := range spans {
		total += s[1] - s[0] + 1
	}
	if total == 0 {
		return 0, fmt.Errorf("no port outside the ephemeral range %d-%d", lo, hi)
	}
	for range 200 {
		n := rand.IntN(total)
		port := 0
		for _, s := range spans {
			if size := s[1] - s[0] + 1; n < size {
				port = s[0] + n
				break
			} else {
				n -= size
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port outside the ephemeral range %d-%d: 200 tried, all taken", lo, hi)
}

// proc is a server process this package started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and err is set
	err  error
}

// startProc starts name as a, in a process group of its own (a terminal's
// Ctrl-C is for the caller to handle, not the servers), with stdout and
// stderr going to log. If the calling process dies without stopping it, the
// kernel sends it deathSig (on Linux).
func startProc(a *account, log *os.File, deathSig syscall.Signal, name string, args ...string) (*proc, error) {
	p := &proc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// child exits, not the process; Go may retire threads, so pin
		// this goroutine to its thread for as long as the child lives.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = sysProcAttr(a.cred, deathSig)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.cmd = cmd
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends each signal in turn, waiting up to its grace period for the
// process to exit, then kills it. It returns the process's exit error.
func (p *proc) stop(steps ...stopStep) error {
	for _, s := range steps {
		if p.exited() {
			break
		}
		_ = p.cmd.Process.Signal(s.sig)
		t := time.NewTimer(s.grace)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	if !p.exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

type stopStep struct {
	sig   syscall.Signal
	grace time.Duration
}

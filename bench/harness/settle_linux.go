package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ext4Magic is the f_type statfs(2) gives for ext2, ext3 and ext4.
const ext4Magic = 0xEF53

// unlinkWindow returns how long after freeing many inodes creating files in
// dir stays slow, and the file system, as "ext4 without a journal on vda":
// recentlyDeletedWindow there, 0 elsewhere or when it cannot tell.
func unlinkWindow(dir string) (time.Duration, string) {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err != nil || sfs.Type != ext4Magic {
		return 0, ""
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, ""
	}
	dev := uint64(st.Dev) // major and minor as glibc's gnu_dev_makedev packs them
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor))
	if err != nil {
		return 0, ""
	}
	name := filepath.Base(link)
	// The journal's thread, "<none>" without one (kernel 5.x and later).
	b, err := os.ReadFile(filepath.Join("/sys/fs/ext4", name, "journal_task"))
	if err != nil || strings.TrimSpace(string(b)) != "<none>" {
		return 0, ""
	}
	return recentlyDeletedWindow, "ext4 without a journal on " + name
}

package harness

import (
	"os"
	"testing"
)

// TestUnlinkWindowOnlyWhereTheAllocatorWaits checks that settle waits only
// on ext4 without a journal: not on a memory file system, and on the file
// system the bench's clusters live on only when it is one (logged: the
// bench's machines are).
func TestUnlinkWindowOnlyWhereTheAllocatorWaits(t *testing.T) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if w, fs := unlinkWindow("/dev/shm"); w != 0 || fs != "" {
			t.Errorf("unlinkWindow(/dev/shm) = %s, %q; want no window on a memory file system", w, fs)
		}
	}
	dir := t.TempDir()
	w, fs := unlinkWindow(dir)
	t.Logf("unlinkWindow(%s) = %s (%s)", dir, w, fs)
	if (w > 0) != (fs != "") {
		t.Errorf("unlinkWindow(%s) = %s, %q: a window names its file system, and only a window does", dir, w, fs)
	}
	if w > 0 && w < recentlyDeletedWindow {
		t.Errorf("unlinkWindow(%s) = %s, shorter than ext4's %s", dir, w, recentlyDeletedWindow)
	}
}

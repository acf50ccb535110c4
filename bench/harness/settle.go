package harness

// Dropped relations and the file system. PostgreSQL unlinks the files of
// a dropped relation at the next checkpoint (the main fork is truncated at
// commit and unlinked after the checkpoint that follows), so dropping the
// tenant tables of thousands of tenants — the reset — or thousands of
// fresh schemas — an anchor pass — frees hundreds of thousands of inodes
// at whatever moment the next checkpoint completes, in whatever phase is
// running then. On ext4 without a journal, the file system of the machines
// this bench runs on, creating a file then costs a look at every inode of
// the block group freed in the last minute (six while the inode's table
// block is dirty): the allocator skips them (find_inode_bit and
// recently_deleted in fs/ext4/ialloc.c; a journalled ext4 does no such
// check). Measured on such a machine, 10,000 tenant schemas: goose into
// 300 fresh schemas, 4 at a time, took 35 ms a schema right after a
// checkpoint had unlinked about 400,000 files, 19–23 ms in the minutes
// after, and 8.5–8.9 ms once six minutes had passed — a psql script the
// same 8.7 ms then; perf put 21–23 % of the server's CPU time in
// recently_deleted during the slow runs. The scripts pay alike: 43.5 and
// 26.3 ms a schema in turns with goose's 30.1 and 24.3 ms right after a
// checkpoint that unlinked some 100,000 files, 11.0 and 10.7 against 13.6
// and 12.8 ms six minutes later (bench/migscale). Every migration creates
// some 35 files per schema, so the phase that happens to follow such a
// checkpoint (the anchor or migrate, whichever) is the slower: 81 s and
// 147 s for the same script before and after migrate in one run of make
// bench/scale.
//
// So the timed migration phases start with nothing left to unlink and the
// last unlinks out of that window: settle checkpoints (the unlinks happen
// then, untimed) and, on such a file system, waits the window out.

import (
	"context"
	"fmt"
	"time"
)

// recentlyDeletedWindow is how long ext4 without a journal keeps passing
// over a freed inode: 60 s, and 300 s more while its inode table block is
// dirty (RECENTCY_MIN and RECENTCY_DIRTY in fs/ext4/ialloc.c), with a
// margin.
const recentlyDeletedWindow = 370 * time.Second

// settle makes the files of every relation dropped so far on the plain
// cluster go now, with a checkpoint, and, with Config.Settle, waits until
// creating files no longer pays for their inodes (unlinkWindow of the
// cluster's directory).
func (h *harness) settle(ctx context.Context, why string) error {
	if err := h.exec(ctx, "postgres", "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint after %s: %w", why, err)
	}
	wait, fs := unlinkWindow(h.cluster.Dir())
	if wait <= 0 || !h.cfg.Settle {
		return nil
	}
	h.logf("after %s: waiting %s for %s to stop passing over the inodes just freed", why, wait, fs)
	waited, _ := h.get("settle_s")
	h.set("settle_s", waited+wait.Seconds())
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settleSettings says, for the report, what settle did.
func (h *harness) settleSettings() string {
	wait, fs := unlinkWindow(h.cluster.Dir())
	waited, _ := h.get("settle_s")
	switch {
	case wait <= 0:
		return "a checkpoint after the drops (the files of the dropped relations unlinked then); no wait: the file system does not pass over recently freed inodes"
	case !h.cfg.Settle:
		return "a checkpoint after the drops; no wait (-settle=false), though the cluster is on " + fs + ": the first timed migration phase may create its files past inodes freed minutes before"
	}
	return fmt.Sprintf("a checkpoint after the drops, then %.0f s of waiting in all: the cluster is on %s, which passes over inodes freed in the last minutes when it creates a file", waited, fs)
}

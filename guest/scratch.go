package guest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/agent/securemount"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm/console"
)

// Guest paths of the scratch disk's tools (vm.ScratchTools).
const (
	cryptsetupBin = "/usr/sbin/cryptsetup"
	mkfsBin       = "/usr/sbin/mkfs.ext4"
	scratchMapper = "coffer-scratch"
)

// mountScratch opens the LUKS2 scratch disk sc names with its key from
// the broker (formatting it when it holds no LUKS header) and mounts it
// where the pull stages and unpacks the image (the directory holding
// rootfsDir). A disk another key formatted fails with spec.ErrNoKey and
// nothing is mounted. What a re-opened disk held is removed.
func mountScratch(ctx context.Context, keys resource.Getter, sc *console.Scratch, logf func(string, ...any)) error {
	dev, err := findDisk(ctx, sc.Serial)
	if err != nil {
		return err
	}
	empty := !securemount.HasLUKSHeader(dev)
	// The disk's key is a broker secret, not a passphrase: a cheap PBKDF
	// costs no security and keeps TCG boots fast.
	m, err := securemount.New(securemount.WithKeys(keys), securemount.WithTools(cryptsetupBin, mkfsBin),
		securemount.WithPBKDF("pbkdf2", 1000))
	if err != nil {
		return err
	}
	src := map[bool]string{true: "empty", false: "encrypted"}[empty]
	if err := os.MkdirAll("/run/cryptsetup", 0o700); err != nil { // cryptsetup's lock directory
		return err
	}
	mnt := filepath.Dir(rootfsDir)
	opts := map[string]string{
		"devicePath": dev, "sourceType": src, "encryptionType": "luks2", "targetType": "fileSystem",
		"filesystemType": "ext4", "key": sc.KeyID, "mapperName": scratchMapper,
		"mkfsOpts": "-m 0 -E lazy_itable_init=1,lazy_journal_init=1",
	}
	if sc.Integrity {
		// Inode tables are written at once: lazily initialised ones would
		// be read before written on an unwiped integrity device.
		opts["dataIntegrity"], opts["mkfsOpts"] = "true", "-m 0 -E lazy_itable_init=0,lazy_journal_init=1"
	}
	err = m.Mount(ctx, &securemount.Request{VolumeType: "block-device", MountPoint: mnt, Options: opts})
	if err != nil {
		return fmt.Errorf("scratch disk %s (key %s): %w", dev, sc.KeyID, err)
	}
	logf("scratch disk %s: LUKS2 volume %s and mounted on %s", dev, map[bool]string{true: "formatted", false: "opened"}[empty], mnt)
	if !empty {
		ents, err := os.ReadDir(mnt)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Name() != "lost+found" {
				if err := os.RemoveAll(filepath.Join(mnt, e.Name())); err != nil {
					return fmt.Errorf("scratch disk: clearing the last run's files: %w", err)
				}
			}
		}
	}
	return nil
}

// findDisk returns /dev/NAME of the virtio-blk disk whose serial is
// serial, waiting up to 5 s for it to appear.
func findDisk(ctx context.Context, serial string) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := os.ReadDir("/sys/block")
		for _, e := range ents {
			b, err := readBounded(filepath.Join("/sys/block", e.Name(), "serial"), 256)
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("scratch disk: no virtio-blk disk with serial %s (virtio_blk not loaded?): %w", serial, spec.ErrNotFound)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

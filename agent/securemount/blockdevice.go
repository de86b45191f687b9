package securemount

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// BlockDevice is a validated "block-device" request's options (CDH's
// BlockDeviceParameters with the luks2 encryption type).
type BlockDevice struct {
	// Major and Minor are deviceId ("MAJ:MIN"); HasID says it was given
	// (it wins over DevicePath, as in CDH).
	Major, Minor uint32
	HasID        bool
	DevicePath   string // devicePath: under /dev
	// Empty is sourceType "empty": format the device (destroying what it
	// holds); otherwise ("encrypted") it already is a LUKS device.
	Empty bool
	// Key is where the volume key comes from: kbs:///repo/type/tag,
	// sealed.…, or file:///path; "" means a random 4096-byte key
	// (ephemeral storage; sourceType "empty" only).
	Key string
	// Device is targetType "device": expose /dev/mapper/NAME at the
	// mount point as a symlink instead of mounting a file system.
	Device   bool
	MkfsArgs []string // mkfsOpts, split on white space and checked
	// Integrity is dataIntegrity "true": hmac-sha256 sector tags
	// (dm-integrity) when the device is formatted; an opened device
	// brings its own setting.
	Integrity  bool
	MapperName string // mapperName, or "" for a random coffer-… name
}

// blockDeviceOptions are the option names the block-device driver knows.
// encryptType (value "luks") and encryptKey are the names of CDH's first
// block-device driver, still accepted.
var blockDeviceOptions = []string{"deviceId", "devicePath", "sourceType", "encryptionType", "encryptType",
	"key", "encryptKey", "targetType", "filesystemType", "mkfsOpts", "dataIntegrity", "mapperName"}

var mapperName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ParseBlockDevice validates the options of a block-device request.
// Unknown options are refused (CDH ignores them; a misspelt one here
// would silently change what is mounted).
func ParseBlockDevice(opts map[string]string) (*BlockDevice, error) {
	if len(opts) > MaxOptions {
		return nil, badRequest("%d options (at most %d)", len(opts), MaxOptions)
	}
	for k, v := range opts {
		if len(k) > MaxOptionBytes || len(v) > MaxOptionBytes {
			return nil, badRequest("an option of more than %d bytes", MaxOptionBytes)
		}
		if !slices.Contains(blockDeviceOptions, k) {
			return nil, badRequest("block-device: unknown option %q (known: %s)", trunc(k), strings.Join(blockDeviceOptions, ", "))
		}
	}
	var b BlockDevice
	if id, ok := opts["deviceId"]; ok {
		maj, min, found := strings.Cut(id, ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !found || err1 != nil || err2 != nil {
			return nil, badRequest("block-device: deviceId %q: want MAJ:MIN", trunc(id))
		}
		b.Major, b.Minor, b.HasID = uint32(ma), uint32(mi), true
	}
	if p, ok := opts["devicePath"]; ok {
		if err := checkPath("devicePath", p); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(p, "/dev/") {
			return nil, badRequest("block-device: devicePath %s is not under /dev", p)
		}
		b.DevicePath = p
	}
	if !b.HasID && b.DevicePath == "" {
		return nil, badRequest("block-device: deviceId or devicePath is required")
	}
	switch s := opts["sourceType"]; s {
	case "empty":
		b.Empty = true
	case "encrypted":
	case "":
		return nil, badRequest(`block-device: sourceType is required ("empty" or "encrypted")`)
	default:
		return nil, badRequest(`block-device: sourceType %q: want "empty" or "encrypted"`, trunc(s))
	}
	et, legacy := opts["encryptionType"], opts["encryptType"]
	switch {
	case et != "" && legacy != "":
		return nil, badRequest("block-device: encryptionType and encryptType both given")
	case et == "luks2":
	case et == "zfs":
		return nil, fmt.Errorf("block-device: encryptionType zfs (ZFS native encryption) is not supported by coffer: %w", ErrUnimplemented)
	case et != "":
		return nil, badRequest(`block-device: encryptionType %q: want "luks2"`, trunc(et))
	case strings.EqualFold(legacy, "luks"):
	case legacy != "":
		return nil, badRequest(`block-device: encryptType %q: want "luks"`, trunc(legacy))
	default:
		return nil, badRequest(`block-device: encryptionType is required ("luks2")`)
	}
	switch t := opts["targetType"]; {
	case t == "device":
		b.Device = true
	case t == "fileSystem", t == "" && legacy != "": // CDH's first driver always mounted ext4
	case t == "":
		return nil, badRequest(`block-device: targetType is required ("device" or "fileSystem")`)
	default:
		return nil, badRequest(`block-device: targetType %q: want "device" or "fileSystem"`, trunc(t))
	}
	if fs := opts["filesystemType"]; fs != "" && fs != "ext4" || fs != "" && b.Device {
		return nil, badRequest(`block-device: filesystemType %q: want "ext4", with targetType "fileSystem"`, trunc(fs))
	}
	if o := opts["mkfsOpts"]; o != "" {
		args, err := parseMkfsOpts(o)
		if err != nil {
			return nil, err
		}
		b.MkfsArgs = args
	}
	switch v := opts["dataIntegrity"]; v {
	case "", "false":
	case "true":
		b.Integrity = true
	default:
		return nil, badRequest(`block-device: dataIntegrity %q: want "true" or "false"`, trunc(v))
	}
	if n, ok := opts["mapperName"]; ok {
		if !mapperName.MatchString(n) {
			return nil, badRequest("block-device: mapperName %q: want 1 to 64 of A-Z a-z 0-9 _ . - (not first)", trunc(n))
		}
		b.MapperName = n
	}
	k, legacyKey := opts["key"], opts["encryptKey"]
	if k != "" && legacyKey != "" {
		return nil, badRequest("block-device: key and encryptKey both given")
	}
	if k == "" {
		k = legacyKey
	}
	if k != "" {
		if err := checkKeySource(k); err != nil {
			return nil, err
		}
	} else if !b.Empty {
		return nil, badRequest(`block-device: sourceType "encrypted" needs a key (a random key opens nothing)`)
	}
	b.Key = k
	return &b, nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// checkKeySource accepts kbs:///repo/type/tag, sealed.… and file:///path.
// It never echoes a sealed secret.
func checkKeySource(k string) error {
	switch {
	case strings.HasPrefix(k, "sealed."):
		return nil
	case strings.HasPrefix(k, "kbs+"):
		return badRequest("block-device: key %q: kbs+<plugin>:// resources are not served by coffer's broker", trunc(k))
	case strings.HasPrefix(k, "kbs:"):
		if _, err := resource.ParseKID(k); err != nil {
			return badRequest("block-device: key: %v", err)
		}
		return nil
	case strings.HasPrefix(k, "file://"):
		return checkPath("key file", strings.TrimPrefix(k, "file://"))
	}
	return badRequest("block-device: key: want kbs:///repo/type/tag, sealed.… or file:///path")
}

// mkfs.ext4 options a request may pass: those taking a value, and plain
// flags. Options naming files or devices (-d, -J, -z, -l, -c) are not
// among them.
var (
	mkfsValued = "bCeEgGiILmNoOrTU"
	mkfsFlags  = "jFqv"
	mkfsValue  = regexp.MustCompile(`^[A-Za-z0-9_=,.:^+-]{1,256}$`)
)

func parseMkfsOpts(s string) ([]string, error) {
	if len(s) > 1024 {
		return nil, badRequest("block-device: mkfsOpts of %d bytes (at most 1024)", len(s))
	}
	args := strings.Fields(s)
	if len(args) > 32 {
		return nil, badRequest("block-device: mkfsOpts has %d words (at most 32)", len(args))
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !mkfsValue.MatchString(a) {
			return nil, badRequest("block-device: mkfsOpts word %q: only A-Z a-z 0-9 _ = , . : ^ + - are allowed", trunc(a))
		}
		if len(a) < 2 || a[0] != '-' {
			return nil, badRequest("block-device: mkfsOpts word %q is not an option", trunc(a))
		}
		c := a[1:2]
		switch {
		case strings.Contains(mkfsFlags, c) && len(a) == 2:
		case strings.Contains(mkfsValued, c) && len(a) > 2: // -Evalue
		case strings.Contains(mkfsValued, c) && len(a) == 2:
			if i+1 == len(args) || strings.HasPrefix(args[i+1], "-") {
				return nil, badRequest("block-device: mkfsOpts option %s needs a value", a)
			}
			if !mkfsValue.MatchString(args[i+1]) {
				return nil, badRequest("block-device: mkfsOpts value %q: only A-Z a-z 0-9 _ = , . : ^ + - are allowed", trunc(args[i+1]))
			}
			i++
		default:
			return nil, badRequest("block-device: mkfsOpts option %q is not allowed (allowed: -%s with a value, -%s)", trunc(a),
				strings.Join(strings.Split(mkfsValued, ""), " -"), strings.Join(strings.Split(mkfsFlags, ""), " -"))
		}
	}
	return args, nil
}

// blockDevice is the "block-device" driver: LUKS2 through cryptsetup.
type blockDevice struct{}

func (blockDevice) Mount(ctx context.Context, m *Mounter, req *Request) error {
	p, err := ParseBlockDevice(req.Options)
	if err != nil {
		return err
	}
	if len(req.Flags) > 0 {
		m.log.Info("securemount: block-device ignores flags, as CDH does", "flags", len(req.Flags))
	}
	return m.MountBlockDevice(ctx, p, req.MountPoint)
}

// MountBlockDevice opens the LUKS2 device p names with its key (after
// formatting it when p.Empty) and mounts its ext4 file system at
// mountPoint (created if missing; made with mkfs.ext4 when p.Empty), or
// symlinks mountPoint to the cleartext device when p.Device. On failure
// nothing stays open or mounted. The key never leaves memory: it reaches
// cryptsetup on its stdin.
func (m *Mounter) MountBlockDevice(ctx context.Context, p *BlockDevice, mountPoint string) error {
	if err := checkMountPoint(mountPoint); err != nil {
		return err
	}
	dev := p.DevicePath
	if p.HasID {
		d, err := devicePath(p.Major, p.Minor)
		if err != nil {
			return err
		}
		dev = d
	}
	fi, err := os.Stat(dev)
	if err != nil {
		return fmt.Errorf("block-device: %w", err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return badRequest("block-device: %s is not a block device", dev)
	}
	if !p.Empty && !HasLUKSHeader(dev) {
		return fmt.Errorf("block-device: %s holds no LUKS header (sourceType \"encrypted\" wants a LUKS device; \"empty\" formats it): %w", dev, spec.ErrNotFound)
	}
	key, err := m.key(ctx, p.Key)
	if err != nil {
		return err
	}
	defer clear(key)
	name := p.MapperName
	if name == "" {
		var r [8]byte
		rand.Read(r[:])
		name = "coffer-" + hex.EncodeToString(r[:])
	}
	if p.Empty {
		m.log.Warn("securemount: formatting the device as LUKS2: what it held is lost", "device", dev)
		if err := m.luksFormat(ctx, dev, key, p.Integrity); err != nil {
			return err
		}
	}
	if err := m.luksOpen(ctx, dev, name, key); err != nil {
		return err
	}
	clear(key)
	mapped := "/dev/mapper/" + name
	ok := false
	defer func() {
		if !ok {
			m.luksClose(context.WithoutCancel(ctx), name)
		}
	}()
	if p.Device {
		if err := os.MkdirAll(filepath.Dir(mountPoint), 0o755); err != nil {
			return fmt.Errorf("block-device: %w", err)
		}
		if err := os.Symlink(mapped, mountPoint); err != nil {
			return fmt.Errorf("block-device: exposing %s: %w", mapped, err)
		}
		ok = true
		m.log.Info("securemount: LUKS2 device opened", "device", dev, "mapper", name, "target", mountPoint)
		return nil
	}
	if p.Empty {
		if err := m.mkfs(ctx, mapped, p.MkfsArgs, p.Integrity); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(mountPoint, 0o755); err != nil {
		return fmt.Errorf("block-device: %w", err)
	}
	if err := unix.Mount(mapped, mountPoint, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("block-device: mounting %s (ext4) on %s: %w", mapped, mountPoint, err)
	}
	ok = true
	m.log.Info("securemount: LUKS2 volume mounted", "device", dev, "mapper", name, "mount_point", mountPoint, "formatted", p.Empty)
	return nil
}

// devicePath resolves MAJ:MIN through /sys/dev/block/MAJ:MIN/uevent.
func devicePath(maj, min uint32) (string, error) {
	b, err := readBounded(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", maj, min), 4096)
	if err != nil {
		return "", fmt.Errorf("block-device: deviceId %d:%d: %w", maj, min, spec.ErrNotFound)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if n, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			p := "/dev/" + n
			if n == "" || filepath.Clean(p) != p || !strings.HasPrefix(p, "/dev/") {
				break
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("block-device: deviceId %d:%d has no device name: %w", maj, min, spec.ErrNotFound)
}

// key returns the volume key src names (a random one for "").
func (m *Mounter) key(ctx context.Context, src string) ([]byte, error) {
	var k []byte
	var err error
	switch {
	case src == "":
		k = make([]byte, 4096)
		rand.Read(k)
		return k, nil
	case strings.HasPrefix(src, "sealed."):
		if m.unseal == nil {
			return nil, fmt.Errorf("block-device: a sealed-secret key, and no unsealer is configured: %w", ErrUnimplemented)
		}
		k, err = m.unseal(ctx, src)
	case strings.HasPrefix(src, "kbs:"):
		p, perr := resource.ParseKID(src)
		if perr != nil {
			return nil, badRequest("block-device: key: %v", perr)
		}
		if m.keys == nil {
			return nil, fmt.Errorf("block-device: key %s: no broker is configured: %w", p.KID(), ErrUnimplemented)
		}
		k, err = m.keys.Get(ctx, p)
		if err != nil {
			err = fmt.Errorf("fetching %s: %w", p.KID(), err)
		}
	case strings.HasPrefix(src, "file://"):
		k, err = readBounded(strings.TrimPrefix(src, "file://"), MaxKeyBytes)
	default:
		return nil, badRequest("block-device: key: want kbs:///repo/type/tag, sealed.… or file:///path")
	}
	if err != nil {
		return nil, fmt.Errorf("block-device: volume key: %w", err)
	}
	if len(k) == 0 || len(k) > MaxKeyBytes {
		clear(k)
		return nil, fmt.Errorf("block-device: volume key of %d bytes: want 1 to %d: %w", len(k), MaxKeyBytes, spec.ErrUnsupported)
	}
	return k, nil
}

// readBounded reads at most max bytes of a file.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		clear(b)
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, max, spec.ErrUnsupported)
	}
	return b, nil
}

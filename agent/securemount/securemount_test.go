package securemount_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/securemount"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// base is CDH's documented LUKS2 file-system request (docs/use-cases/
// secure-mount-with-block-device.md), with a broker key.
func base(kv ...string) map[string]string {
	o := map[string]string{"devicePath": "/dev/vdb", "sourceType": "empty", "encryptionType": "luks2",
		"targetType": "fileSystem", "filesystemType": "ext4", "key": "kbs:///default/disk/key"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<del>" {
			delete(o, kv[i])
		} else {
			o[kv[i]] = kv[i+1]
		}
	}
	return o
}

func TestParseBlockDevice(t *testing.T) {
	t.Parallel()
	good := []struct {
		name string
		opts map[string]string
		want securemount.BlockDevice
	}{
		{"cdh fileSystem", base(), securemount.BlockDevice{DevicePath: "/dev/vdb", Empty: true, Key: "kbs:///default/disk/key"}},
		{"deviceId wins", base("deviceId", "252:16"), securemount.BlockDevice{Major: 252, Minor: 16, HasID: true, DevicePath: "/dev/vdb", Empty: true, Key: "kbs:///default/disk/key"}},
		{"device target, random key", base("targetType", "device", "filesystemType", "<del>", "key", "<del>"), securemount.BlockDevice{DevicePath: "/dev/vdb", Empty: true, Device: true}},
		{"encrypted, mapper, mkfs", base("sourceType", "encrypted", "mapperName", "data_1", "mkfsOpts", "-E lazy_journal_init=1 -m 0 -F", "dataIntegrity", "false"),
			securemount.BlockDevice{DevicePath: "/dev/vdb", Key: "kbs:///default/disk/key", MapperName: "data_1", MkfsArgs: []string{"-E", "lazy_journal_init=1", "-m", "0", "-F"}}},
		{"first CDH driver's names", map[string]string{"deviceId": "8:0", "encryptType": "LUKS", "sourceType": "encrypted", "encryptKey": "file:///run/k"},
			securemount.BlockDevice{Major: 8, HasID: true, Key: "file:///run/k"}},
		{"sealed key", base("key", "sealed.a.b.c"), securemount.BlockDevice{DevicePath: "/dev/vdb", Empty: true, Key: "sealed.a.b.c"}},
		{"integrity", base("dataIntegrity", "true"), securemount.BlockDevice{DevicePath: "/dev/vdb", Empty: true, Key: "kbs:///default/disk/key", Integrity: true}},
	}
	for _, c := range good {
		got, err := securemount.ParseBlockDevice(c.opts)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if g, w := *got, c.want; g.Major != w.Major || g.Minor != w.Minor || g.HasID != w.HasID || g.DevicePath != w.DevicePath ||
			g.Empty != w.Empty || g.Key != w.Key || g.Device != w.Device || g.Integrity != w.Integrity || g.MapperName != w.MapperName || strings.Join(g.MkfsArgs, " ") != strings.Join(w.MkfsArgs, " ") {
			t.Errorf("%s: got %+v, want %+v", c.name, g, w)
		}
	}
	bad := []struct {
		name   string
		opts   map[string]string
		want   string
		unimpl bool
	}{
		{"no device", base("devicePath", "<del>"), "deviceId or devicePath is required", false},
		{"device outside /dev", base("devicePath", "/tmp/disk"), "not under /dev", false},
		{"device not clean", base("devicePath", "/dev/../etc/shadow"), "clean absolute path", false},
		{"bad deviceId", base("deviceId", "8"), "want MAJ:MIN", false},
		{"deviceId overflow", base("deviceId", "4294967296:0"), "want MAJ:MIN", false},
		{"no sourceType", base("sourceType", "<del>"), "sourceType is required", false},
		{"bad sourceType", base("sourceType", "plain"), `sourceType "plain"`, false},
		{"no encryptionType", base("encryptionType", "<del>"), "encryptionType is required", false},
		{"zfs", base("encryptionType", "zfs"), "ZFS", true},
		{"both encryption names", base("encryptType", "luks"), "both given", false},
		{"no targetType", base("targetType", "<del>"), "targetType is required", false},
		{"xfs", base("filesystemType", "xfs"), `filesystemType "xfs"`, false},
		{"integrity typo", base("dataIntegrity", "yes"), `dataIntegrity "yes"`, false},
		{"mapper name", base("mapperName", "../x"), "mapperName", false},
		{"unknown option", base("cipher", "null"), `unknown option "cipher"`, false},
		{"encrypted needs a key", base("sourceType", "encrypted", "key", "<del>"), "needs a key", false},
		{"key scheme", base("key", "http://evil/key"), "want kbs:///repo/type/tag", false},
		{"kbs plugin", base("key", "kbs+vault:///a/b/c"), "kbs+<plugin>", false},
		{"kbs path", base("key", "kbs:///a/b"), "key:", false},
		{"key file relative", base("key", "file://run/k"), "clean absolute path", false},
		{"mkfs -d", base("mkfsOpts", "-d /etc"), "not allowed", false},
		{"mkfs -J", base("mkfsOpts", "-J device=/dev/sda"), "not allowed", false},
		{"mkfs value missing", base("mkfsOpts", "-E"), "needs a value", false},
		{"mkfs word", base("mkfsOpts", "-m 0 extra"), "not an option", false},
		{"mkfs too long", base("mkfsOpts", strings.Repeat("-F ", 400)), "at most 1024", false},
		{"option too long", base("mapperName", strings.Repeat("a", 5000)), "more than 4096 bytes", false},
	}
	for _, c := range bad {
		_, err := securemount.ParseBlockDevice(c.opts)
		sentinel := securemount.ErrBadRequest
		if c.unimpl {
			sentinel = securemount.ErrUnimplemented
		}
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %v containing %q", c.name, err, sentinel, c.want)
		}
	}
}

func TestMountRefusals(t *testing.T) {
	t.Parallel()
	m, err := securemount.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	many := map[string]string{}
	for i := range 40 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for _, c := range []struct {
		name string
		req  *securemount.Request
		want string
		s    error
	}{
		{"nil", nil, "volume_type is empty", securemount.ErrBadRequest},
		{"unknown type", &securemount.Request{VolumeType: "nfs", MountPoint: "/mnt"}, `unknown volume type "nfs"`, securemount.ErrBadRequest},
		{"oss", &securemount.Request{VolumeType: "alibaba-cloud-oss", MountPoint: "/mnt"}, "Alibaba Cloud OSS", securemount.ErrUnimplemented},
		{"no mount point", &securemount.Request{VolumeType: "block-device", Options: base()}, "mount_point is empty", securemount.ErrBadRequest},
		{"mount on /", &securemount.Request{VolumeType: "block-device", Options: base(), MountPoint: "/"}, "system directory", securemount.ErrBadRequest},
		{"mount under /proc", &securemount.Request{VolumeType: "block-device", Options: base(), MountPoint: "/proc/sys"}, "under /proc/", securemount.ErrBadRequest},
		{"relative mount", &securemount.Request{VolumeType: "block-device", Options: base(), MountPoint: "mnt"}, "clean absolute", securemount.ErrBadRequest},
		{"control char", &securemount.Request{VolumeType: "block-device", Options: base(), MountPoint: "/mnt/a\nb"}, "control character", securemount.ErrBadRequest},
		{"too many options", &securemount.Request{VolumeType: "block-device", Options: many, MountPoint: "/mnt"}, "40 options", securemount.ErrBadRequest},
		{"too many flags", &securemount.Request{VolumeType: "block-device", Options: base(), Flags: make([]string, 33), MountPoint: "/mnt"}, "33 flags", securemount.ErrBadRequest},
		{"not a block device", &securemount.Request{VolumeType: "block-device", Options: base("devicePath", "/dev/null"), MountPoint: "/mnt/x"}, "not a block device", securemount.ErrBadRequest},
		{"missing device", &securemount.Request{VolumeType: "block-device", Options: base("devicePath", "/dev/coffer-none"), MountPoint: "/mnt/x"}, "no such file", os.ErrNotExist},
		{"missing deviceId", &securemount.Request{VolumeType: "block-device", Options: base("deviceId", "4000:4000"), MountPoint: "/mnt/x"}, "deviceId 4000:4000", spec.ErrNotFound},
	} {
		err := m.Mount(ctx, c.req)
		if !errors.Is(err, c.s) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %v containing %q", c.name, err, c.s, c.want)
		}
	}
}

// TestFormatAndCheckKey runs Debian's cryptsetup on an image file (no
// device-mapper needed): Format as a block-device "empty" request would,
// then the format's key opens a key slot and another key does not, with
// ErrWrongKey and no key bytes in the error.
func TestFormatAndCheckKey(t *testing.T) {
	t.Parallel()
	cs := testutil.RequireTool(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	keyA, keyB := bytes.Repeat([]byte("A"), 32), bytes.Repeat([]byte("B"), 32)
	m, err := securemount.New(securemount.WithTools(cs, ""), securemount.WithPBKDF("pbkdf2", 1000))
	if err != nil {
		t.Fatal(err)
	}
	if securemount.HasLUKSHeader(img) {
		t.Fatal("a zero file has a LUKS header")
	}
	if err := m.Format(t.Context(), img, keyA); err != nil {
		t.Fatal(err)
	}
	if !securemount.HasLUKSHeader(img) {
		t.Fatal("no LUKS header after Format")
	}
	if err := m.CheckKey(t.Context(), img, keyA); err != nil {
		t.Fatalf("the format's key: %v", err)
	}
	err = m.CheckKey(t.Context(), img, keyB)
	if !errors.Is(err, securemount.ErrWrongKey) || !errors.Is(err, spec.ErrNoKey) || strings.Contains(err.Error(), "BBBB") {
		t.Fatalf("another key: %v, want ErrWrongKey without the key", err)
	}
	t.Logf("another key: %v", err)
	if _, err := securemount.New(securemount.WithPBKDF("pbkdf2", 10)); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("pbkdf2 with 10 iterations: %v, want refused", err)
	}
}

// TestBrokerGetterIsUsed: a broker that refuses the key fails the mount
// before cryptsetup runs (reached through a real
// block device only, so via a loop device when the host has one).
func TestBrokerGetterIsUsed(t *testing.T) {
	t.Parallel()
	var asked resource.Path
	g := resource.GetterFunc(func(_ context.Context, p resource.Path) ([]byte, error) {
		asked = p
		return nil, spec.ErrPolicyDenied
	})
	m, _ := securemount.New(securemount.WithKeys(g))
	// /dev/loop0 is a block device on most hosts; without one the
	// refusal is "not a block device" and the getter is not asked.
	if fi, err := os.Stat("/dev/loop0"); err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		t.Skip("no /dev/loop0 block device on this host")
	}
	err := m.Mount(t.Context(), &securemount.Request{VolumeType: "block-device", Options: base("devicePath", "/dev/loop0"), MountPoint: "/mnt/coffer-test"})
	if !errors.Is(err, spec.ErrPolicyDenied) || asked.KID() != "kbs:///default/disk/key" {
		t.Fatalf("mount with a refusing broker: %v (asked %v), want the broker's denial", err, asked)
	}
}

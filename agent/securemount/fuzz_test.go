package securemount_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/securemount"
)

// FuzzParseBlockDevice feeds option maps (as JSON objects) to the
// parser: it must not panic, and what it accepts must hold only clean
// paths and allowed mkfs options.
func FuzzParseBlockDevice(f *testing.F) {
	for _, o := range []map[string]string{
		base(), base("deviceId", "252:0", "targetType", "device", "key", "<del>"),
		base("mkfsOpts", "-E lazy_journal_init=1 -m 0", "mapperName", "x"),
		{"deviceId": "8:0", "encryptType": "luks", "sourceType": "encrypted", "encryptKey": "sealed.x"},
		base("devicePath", "/dev/../x"), base("mkfsOpts", "-d /"),
	} {
		b, _ := json.Marshal(o)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var o map[string]string
		if json.Unmarshal(data, &o) != nil {
			return
		}
		b, err := securemount.ParseBlockDevice(o)
		if err != nil {
			return
		}
		if b.DevicePath != "" && (filepath.Clean(b.DevicePath) != b.DevicePath || !strings.HasPrefix(b.DevicePath, "/dev/")) {
			t.Fatalf("accepted device path %q", b.DevicePath)
		}
		if !b.HasID && b.DevicePath == "" {
			t.Fatal("accepted no device")
		}
		for _, a := range b.MkfsArgs {
			if strings.Contains(a, "/") || strings.HasPrefix(a, "-d") || strings.HasPrefix(a, "-J") {
				t.Fatalf("accepted mkfs argument %q", a)
			}
		}
		if b.Key == "" && !b.Empty {
			t.Fatal("accepted an encrypted source without a key")
		}
	})
}

// FuzzCheckRequest: bounds and mount-point checks on arbitrary requests.
func FuzzCheckRequest(f *testing.F) {
	f.Add("block-device", "/mnt/data", "flag")
	f.Add("x", "/proc/../", "")
	f.Add("", "relative", "")
	f.Fuzz(func(t *testing.T, vt, mp, flag string) {
		req := &securemount.Request{VolumeType: vt, MountPoint: mp, Flags: []string{flag}}
		if securemount.CheckRequest(req) == nil {
			if filepath.Clean(mp) != mp || !filepath.IsAbs(mp) || mp == "/" || strings.HasPrefix(mp, "/proc/") {
				t.Fatalf("accepted mount point %q", mp)
			}
		}
	})
}

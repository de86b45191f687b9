package server

import (
	"fmt"
	"testing"
	"time"
)

// Override copies exactly the named keys: how flags override a config file.
func TestConfigOverride(t *testing.T) {
	file := DefaultConfig()
	file.Listen, file.RateLimit, file.SessionTTL = "0.0.0.0:9", 7, time.Minute
	flags := DefaultConfig()
	flags.Listen, flags.RateLimit, flags.AllowSampleTee = "127.0.0.1:1", 0, true
	if err := file.Override(flags, "rate_limit", "allow_sample_tee"); err != nil {
		t.Fatal(err)
	}
	if file.Listen != "0.0.0.0:9" || file.RateLimit != 0 || !file.AllowSampleTee || file.SessionTTL != time.Minute {
		t.Fatalf("after Override: %+v", file)
	}
	if err := file.Override(flags, "no_such_key"); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestParseAdminACL(t *testing.T) {
	t.Parallel()
	got, err := ParseAdminACL([]string{"tenant-a=tenant-a/*/*,shared/k/*", "tenant-b=tenant-b/*/*", "tenant-a=x/y/z"})
	want := map[string][]string{"tenant-a": {"tenant-a/*/*", "shared/k/*", "x/y/z"}, "tenant-b": {"tenant-b/*/*"}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"tenant-a", "=a/b/c", "tenant-a="} {
		if _, err := ParseAdminACL([]string{bad}); err == nil {
			t.Errorf("ParseAdminACL(%q) accepted", bad)
		}
	}
}

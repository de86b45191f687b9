package server

import (
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

package ratelimit_test

import (
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/ratelimit"
)

func TestKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:5000", "127.0.0.1"},
		{"[::ffff:10.0.0.1]:1", "10.0.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"not an address", "not an address"},
	} {
		if got := ratelimit.Key(tc.in); got != tc.want {
			t.Errorf("Key(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAllow(t *testing.T) {
	t.Parallel()
	l := ratelimit.New(1, 2, 10)
	now := time.Unix(1000, 0)
	var got []bool
	for range 3 {
		ok, _ := l.Allow("a", now)
		got = append(got, ok)
	}
	ok, _ := l.Allow("b", now) // another address has its own bucket
	got = append(got, ok)
	ok, _ = l.Allow("a", now.Add(time.Second)) // refilled one token
	got = append(got, ok)
	want := []bool{true, true, false, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Allow sequence %v, want %v", got, want)
		}
	}
	if ok, _ := (*ratelimit.PerAddr)(nil).Allow("a", now); !ok || ratelimit.New(0, 1, 1) != nil {
		t.Error("a zero rate must mean no limit")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
		ok    bool
	}{{0, 0, true}, {50, 200, true}, {-1, 10, false}, {5, -1, false}} {
		if err := ratelimit.Validate(tc.rate, tc.burst); (err == nil) != tc.ok {
			t.Errorf("Validate(%v, %d) = %v, want ok=%v", tc.rate, tc.burst, err, tc.ok)
		}
	}
}

package cli

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeFlag is a byte count given as a number with an optional binary unit
// (K, M, G, T, with or without "iB"/"B": 64G = 64GiB = 64×2³⁰ bytes).
type sizeFlag struct{ n int64 }

func (s *sizeFlag) String() string {
	if s.n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if s.n%(1<<u.shift) == 0 {
			return strconv.FormatInt(s.n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(s.n, 10)
}

func (s *sizeFlag) Type() string { return "size" }

func (s *sizeFlag) Set(v string) error {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(v), "B"), "i")
	shift := uint(0)
	if t != "" {
		switch t[len(t)-1] {
		case 'K', 'k':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q: want a positive size such as 512M or 64G", v)
	}
	s.n = n << shift
	return nil
}

package ctddecoder

import (
	"errors"
	"slices"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func TestRefPrefixes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref  string
		want []string
	}{
		{"127.0.0.1:5000/team-a/app:v1", []string{"127.0.0.1:5000/team-a/app", "127.0.0.1:5000/team-a", "127.0.0.1:5000"}},
		{"docker.io/library/busybox:latest", []string{"docker.io/library/busybox", "docker.io/library", "docker.io"}},
		{"reg.example/a/b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", []string{"reg.example/a/b/c", "reg.example/a/b", "reg.example/a", "reg.example"}},
		{"reg.example:443/x:tag", []string{"reg.example:443/x", "reg.example:443"}},
		{"", nil},
		{"../../etc:x", nil},
		{"reg.example/../x:1", nil},
		{"reg.example//x:1", nil},
		{"UPPER/x", nil},
	} {
		got, err := refPrefixes(tc.ref)
		if tc.want == nil {
			if err == nil || !errors.Is(err, spec.ErrPolicyDenied) {
				t.Errorf("%q: got %q, %v; want a policy refusal", tc.ref, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
}

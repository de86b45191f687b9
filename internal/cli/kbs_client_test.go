package cli

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func TestKBSClientVerbs(t *testing.T) {
	t.Setenv("COFFER_TEE", "sample") // no TEE here: flags other than --tee are under test
	b, kek := brokerWithKEK(t, "default/image_key/app")
	t.Setenv("COFFER_KBS_URL", "")

	out, stderr, err := runCofferSplit(t, nil, "kbs", "get-resource", "--url", b.URL, "--path", "default/image_key/app", "--tee", "sample")
	if err != nil || out != string(kek) {
		t.Fatalf("get-resource = %d bytes, %v (stderr %q); want the 32-byte KEK", len(out), err, stderr)
	}
	// --output base64: kbs-client's form.
	out, _, err = runCofferSplit(t, nil, "kbs", "get-resource", "--url", b.URL, "--path", "default/image_key/app", "--tee", "sample", "--output", "base64")
	if got, derr := base64.StdEncoding.DecodeString(strings.TrimSuffix(out, "\n")); err != nil || derr != nil || string(got) != string(kek) || !strings.HasSuffix(out, "\n") {
		t.Errorf("get-resource --output base64 = %q, %v", out, err)
	}
	if _, _, err := runCofferSplit(t, nil, "kbs", "get-resource", "--url", b.URL, "--path", "default/image_key/app", "--output", "hex"); !errors.Is(err, ErrUsage) {
		t.Errorf("--output hex: %v, want a usage error", err)
	}
	// RSA tee key, URL from the environment.
	t.Setenv("COFFER_KBS_URL", b.URL)
	if out, _, err := runCofferSplit(t, nil, "kbs", "get-resource", "--path", "default/image_key/app", "--tee-key", "rsa"); err != nil || out != string(kek) {
		t.Errorf("get-resource (rsa, COFFER_KBS_URL) = %d bytes, %v", len(out), err)
	}

	out, _, err = runCofferSplit(t, nil, "kbs", "attest", "--tee", "sample")
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	tok := strings.TrimSuffix(out, "\n")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || strings.Count(out, "\n") != 1 {
		t.Fatalf("attest printed %q, want one JWT line", out)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Submods map[string]struct {
			Evidence map[string]json.RawMessage `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims.Submods["cpu0"].Evidence["sample"]; !ok {
		t.Errorf("EAR claims %s: want submods.cpu0 with sample evidence", payload)
	}

	for _, tc := range []struct {
		name string
		args []string
		want error
	}{
		{"missing", []string{"kbs", "get-resource", "--path", "default/image_key/none"}, spec.ErrNotFound},
		{"bad path", []string{"kbs", "get-resource", "--path", "default/../x"}, ErrUsage},
		{"too many segments", []string{"kbs", "get-resource", "--path", "a/b/c/d"}, ErrUsage},
		{"unknown tee", []string{"kbs", "attest", "--tee", "nosuch"}, spec.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCofferSplit(t, nil, tc.args...)
			if !errors.Is(err, tc.want) || out != "" {
				t.Errorf("coffer %v = %q, %v; want no output and %v", tc.args, out, err, tc.want)
			}
		})
	}

	b.DenyAll(t)
	out, _, err = runCofferSplit(t, nil, "kbs", "get-resource", "--path", "default/image_key/app")
	if !errors.Is(err, spec.ErrPolicyDenied) || out != "" || !strings.Contains(err.Error(), "denied") {
		t.Errorf("get-resource under deny = %q, %v; want ErrPolicyDenied and no output", out, err)
	}

	t.Setenv("COFFER_KBS_URL", "")
	for _, args := range [][]string{{"kbs", "attest"}, {"kbs", "get-resource", "--path", "a/b/c"}} {
		if _, _, err := runCofferSplit(t, nil, args...); !errors.Is(err, ErrUsage) {
			t.Errorf("coffer %v without --url: %v, want ErrUsage", args, err)
		}
	}
}

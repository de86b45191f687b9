package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/vm/console"
)

// RefValue is one reference value: coffer kbs set-reference-value NAME VALUE.
type RefValue struct{ Name, Value string }

// Reference value names the broker's default policy reads for vm guests.
const (
	RefAKPublic = "tpm_ak_public"      // the AK (trusted by pin; an EK under --tpm-ek-ca vouches too)
	RefInitData = "tpm_boot_init_data" // SHA-256 of init-data, extended into PCR 8
	RefCmdline  = "tpm_boot_cmdline"   // SHA-256 of the kernel command line, extended into PCR 9
	RefInit     = "tpm_boot_init"      // SHA-256 of /init (coffer) as IMA measured it into PCR 10
)

// Measure boots the guest once as Run would (same kernel, initramfs,
// command line, init-data), has it quote its PCRs, and returns the
// reference values of exactly that boot: the AK, PCRs 0-7 (firmware),
// and the digests of init-data, the command line and /init. The guest
// contacts nothing.
func Measure(ctx context.Context, opts ...Option) ([]RefValue, error) {
	o, err := collect(opts)
	if err != nil {
		return nil, err
	}
	res, err := boot(ctx, o, console.GuestConfig{Mode: "measure"})
	if err != nil {
		return nil, err
	}
	if res.evidence == nil {
		return nil, fmt.Errorf("vm measure: the guest sent no evidence")
	}
	if o.evidence != nil {
		o.evidence(res.evidence)
	}
	var ev tpm.Evidence
	if err := json.Unmarshal(res.evidence, &ev); err != nil || len(ev.Quote.PCRs) != tpm.NumPCRs {
		return nil, fmt.Errorf("vm measure: the guest's evidence is malformed (%v): %w", err, spec.ErrUnsupported)
	}
	refs := []RefValue{{RefAKPublic, ev.AKPublic}}
	for i := 0; i < 8; i++ {
		refs = append(refs, RefValue{fmt.Sprintf("tpm_pcr%02d", i), ev.Quote.PCRs[i]})
	}
	want := map[string]string{"cmdline": sha256Hex([]byte(Cmdline(o.appendArgs)))}
	if o.initData != "" {
		b, err := os.ReadFile(o.initData)
		if err != nil {
			return nil, err
		}
		want["init-data"] = sha256Hex(b)
		refs = append(refs, RefValue{RefInitData, want["init-data"]})
	}
	refs = append(refs, RefValue{RefCmdline, want["cmdline"]})
	for _, e := range ev.InitLog {
		if w, ok := want[e.Event]; ok && w != e.Digest {
			return nil, fmt.Errorf("vm measure: the guest measured %s %s, the host expected %s: %w", e.Event, e.Digest, w, spec.ErrIntegrity)
		}
	}
	init, err := os.ReadFile(o.init)
	if err != nil {
		return nil, err
	}
	refs = append(refs, RefValue{RefInit, sha256Hex(init)})
	return refs, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

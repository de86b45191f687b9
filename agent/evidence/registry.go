package evidence

import (
	"fmt"
	"os"
	"strings"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// TEE is one row of the attester table: a TEE type, the devices whose
// presence means this machine has it, and how to make its attester.
// Adding a TEE is its attester's file plus one Register line in builtins.
type TEE struct {
	Name protocol.Tee
	// Probes are device paths Detect checks, in table order.
	Probes []string
	// TSM: Detect tries this TEE when only Linux's configfs-tsm report
	// interface is present.
	TSM bool
	// New makes the attester; probe is the device Detect found ("" from
	// ForTee). Nil: the TEE is known, but coffer has no attester for it.
	New func(o options, probe string) (Attester, error)
}

// table is the registered TEEs: Detect's probe order is the order of
// registration, as the CoCo attestation agent probes (a TPM last: it is
// no TEE).
var table []TEE

// Register adds t to the attester table.
func Register(t TEE) {
	for _, e := range table {
		if e.Name == t.Name {
			panic("evidence: TEE " + string(t.Name) + " registered twice")
		}
	}
	table = append(table, t)
}

// builtins is coffer's table, in CoCo's probe order.
func builtins() {
	Register(TEE{Name: protocol.TeeTDX, Probes: []string{"/dev/tdx_guest", "/dev/tdx-guest"}, TSM: true, New: func(options, string) (Attester, error) { return NewTDX() }})
	Register(TEE{Name: protocol.TeeSNP, Probes: []string{"/dev/sev-guest"}, TSM: true, New: func(options, string) (Attester, error) { return NewSNP() }})
	Register(TEE{Name: protocol.TeeSGX, Probes: []string{"/dev/attestation/quote"}})
	Register(TEE{Name: protocol.TeeCCA, Probes: []string{"/dev/cca_attestation"}})
	Register(TEE{Name: protocol.TeeSE, Probes: []string{"/dev/uv"}})
	Register(TEE{Name: protocol.TeeAzSNPvTPM})
	Register(TEE{Name: protocol.TeeAzTDXvTPM})
	Register(TEE{Name: protocol.TeeTPM, Probes: []string{"/dev/tpmrm0"}, New: func(o options, probe string) (Attester, error) {
		if probe != "" {
			return &TPM{addr: probe}, nil
		}
		return NewTPM(o.tpmAddr)
	}})
	Register(TEE{Name: protocol.TeeSample, New: func(options, string) (Attester, error) { return Sample{}, nil }})
}

func init() { builtins() }

func lookup(name string) (TEE, bool) {
	for _, t := range table {
		if string(t.Name) == name {
			return t, true
		}
	}
	return TEE{}, false
}

func (t TEE) attester(o options, probe string) (Attester, error) {
	if t.New == nil {
		return unimplemented{string(t.Name)}, nil
	}
	return t.New(o, probe)
}

// Detect returns the attester for this machine's TEE, probing as the CoCo
// attestation agent does; ErrNoTEE when there is none (it never falls back
// to the sample TEE, which a broker refuses unless told otherwise).
func Detect() (Attester, error) {
	for _, t := range table {
		for _, p := range t.Probes {
			if _, err := os.Stat(p); err == nil {
				return t.attester(options{}, p)
			}
		}
	}
	if _, err := os.Stat(configfsTSM); err == nil {
		for _, t := range table {
			if t.TSM && t.New != nil {
				if a, err := t.New(options{}, ""); err == nil {
					return a, nil
				}
			}
		}
	}
	return nil, ErrNoTEE
}

// ForTee returns the attester named by tee ("" = Detect()).
func ForTee(tee string, opts ...Option) (Attester, error) {
	if tee == "" {
		return Detect()
	}
	t, ok := lookup(tee)
	if !ok {
		names := make([]string, len(table))
		for i, t := range table {
			names[i] = string(t.Name)
		}
		return nil, fmt.Errorf("unknown tee %q (known: %s): %w", tee, strings.Join(names, ", "), spec.ErrUnsupported)
	}
	return t.attester(collectOptions(opts), "")
}

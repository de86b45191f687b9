package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/internal/atomicfile"
)

// State files kept in the state directory (WithStateDir) so that policies
// and reference values set through the admin API survive a restart.
const (
	stateResourcePolicy    = "resource-policy.rego"
	stateAttestationPolicy = "attestation-policy.json" // {"id":…, "policy":…}
	stateReferenceValues   = "reference-values.json"   // {"name":[values]}
)

// WithStateDir keeps admin-set policies and reference values in dir (created
// 0700; files 0600, written atomically) and loads them at start, over any
// policy given with WithPolicy. Default: "" (in memory only).
func WithStateDir(dir string) Option {
	return func(o *options) error { o.stateDir = dir; return nil }
}

type attestationPolicyState struct {
	ID     string `json:"id"`
	Policy string `json:"policy"`
}

// loadState applies the saved state to the policy engine.
func (s *Server) loadState(ctx context.Context) error {
	dir := s.o.stateDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kbs state dir: %w", err)
	}
	read := func(name string) ([]byte, bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return b, err == nil, err
	}
	if b, ok, err := read(stateResourcePolicy); err != nil {
		return err
	} else if ok {
		if err := s.o.engine.SetResourcePolicy(ctx, string(b)); err != nil {
			return fmt.Errorf("saved resource policy: %w", err)
		}
	}
	if b, ok, err := read(stateAttestationPolicy); err != nil {
		return err
	} else if ok {
		var ap attestationPolicyState
		if err := json.Unmarshal(b, &ap); err != nil {
			return fmt.Errorf("saved attestation policy: %w", err)
		}
		if err := s.o.engine.SetAttestationPolicy(ctx, ap.ID, ap.Policy); err != nil {
			return fmt.Errorf("saved attestation policy: %w", err)
		}
	}
	if b, ok, err := read(stateReferenceValues); err != nil {
		return err
	} else if ok {
		var rv map[string][]any
		if err := json.Unmarshal(b, &rv); err != nil {
			return fmt.Errorf("saved reference values: %w", err)
		}
		for name, vs := range rv {
			if err := s.o.engine.SetReferenceValue(ctx, name, vs); err != nil {
				return err
			}
		}
	}
	return nil
}

// saveState writes one state file atomically; a failure is logged, the
// running state is already changed.
func (s *Server) saveState(name string, data []byte) {
	if s.o.stateDir == "" {
		return
	}
	if err := writeAtomic(filepath.Join(s.o.stateDir, name), data); err != nil {
		s.o.logger.Error("kbs state not saved: the change is lost on restart", "file", name, "err", err)
	}
}

func (s *Server) saveReferenceValues() {
	if s.o.stateDir == "" {
		return
	}
	b, _ := json.Marshal(s.o.engine.ReferenceValues())
	s.saveState(stateReferenceValues, b)
}

func writeAtomic(path string, data []byte) error { return atomicfile.Write(path, data) }

package shim

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// Annotations the shim reads from a container's OCI spec.
const (
	// AnnotationContainerType and AnnotationSandboxID are set by
	// containerd's CRI plugin: "sandbox" for the pod's sandbox container,
	// and the pod's sandbox ID on each of its containers.
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	// AnnotationImageName is the image reference CRI puts on a container.
	AnnotationImageName = "io.kubernetes.cri.image-name"
	// AnnotationImage names the image for clients that set no CRI
	// annotation (ctr run --annotation); else the shim asks containerd.
	AnnotationImage = "io.coffer.image"
)

// Bounds on what the shim reads of a bundle.
const (
	maxSpec     = 4 << 20
	maxArgs     = 1024
	maxArgBytes = 256 << 10
)

// procSpec is the part of an OCI process the guest runs.
type procSpec struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	Terminal bool     `json:"terminal"`
}

// taskSpec is the part of a bundle's config.json the shim uses.
type taskSpec struct {
	Process     *procSpec         `json:"process"`
	Annotations map[string]string `json:"annotations"`
}

// readSpec reads bundle/config.json, bounded.
func readSpec(bundle string) (*taskSpec, error) {
	raw, err := bounded.ReadFile(filepath.Join(bundle, "config.json"), maxSpec)
	if err != nil {
		return nil, err
	}
	return parseSpec(raw)
}

// parseSpec decodes an OCI runtime spec's process and annotations and
// checks their size.
func parseSpec(raw []byte) (*taskSpec, error) {
	if len(raw) > maxSpec {
		return nil, fmt.Errorf("OCI spec larger than %d bytes: %w", maxSpec, spec.ErrUnsupported)
	}
	var s taskSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("OCI spec: %v: %w", err, spec.ErrUnsupported)
	}
	if s.Process != nil {
		if err := s.Process.check(); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// parseProcess decodes an exec's OCI process.
func parseProcess(raw []byte) (*procSpec, error) {
	if len(raw) > maxSpec {
		return nil, fmt.Errorf("OCI process larger than %d bytes: %w", maxSpec, spec.ErrUnsupported)
	}
	var p procSpec
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("OCI process: %v: %w", err, spec.ErrUnsupported)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *procSpec) check() error {
	if p.Terminal {
		return fmt.Errorf("a terminal is not supported by the coffer runtime yet: %w", spec.ErrUnsupported)
	}
	if len(p.Args)+len(p.Env) > maxArgs {
		return fmt.Errorf("OCI process with %d args and env (at most %d): %w", len(p.Args)+len(p.Env), maxArgs, spec.ErrUnsupported)
	}
	n := len(p.Cwd)
	for _, list := range [][]string{p.Args, p.Env} {
		for _, s := range list {
			n += len(s)
		}
	}
	if n > maxArgBytes {
		return fmt.Errorf("OCI process args and env of %d bytes (at most %d): %w", n, maxArgBytes, spec.ErrUnsupported)
	}
	return nil
}

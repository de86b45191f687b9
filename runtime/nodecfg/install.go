// Package nodecfg checks and writes the runtime configuration a node needs
// to run encrypted images: containerd's stream processors (coffer
// ctd-decoder), its key directory and key providers, and CRI-O's
// decryption_keys_path.
//
// TOML is parsed with BurntSushi/toml (already coffer's TOML library for
// the broker config) for reading only; install edits the file as text: it
// appends (or replaces) one marked block and removes conflicting
// stream-processor tables by their header lines, so every other byte of
// the file stays as it was.
package nodecfg

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/spec"
)

// Defaults of a stock Debian containerd node.
const (
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultKeysPath         = "/etc/containerd/ocicrypt/keys"
	DefaultContainerdRoot   = "/var/lib/containerd"
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
)

// Processor is one containerd stream processor coffer installs.
type Processor struct{ ID, Accepts, Returns string }

// Processors are the three ocicrypt decoders containerd needs: plain tar,
// gzip and zstd layers (the non-distributable types reuse them).
var Processors = []Processor{
	{"io.containerd.ocicrypt.decoder.v1.tar.gzip", spec.MediaTypeLayerGzip + spec.EncryptedSuffix, spec.MediaTypeLayerGzip},
	{"io.containerd.ocicrypt.decoder.v1.tar.zstd", spec.MediaTypeLayerZstd + spec.EncryptedSuffix, spec.MediaTypeLayerZstd},
	{"io.containerd.ocicrypt.decoder.v1.tar", spec.MediaTypeLayer + spec.EncryptedSuffix, spec.MediaTypeLayer},
}

// Install says what the stream-processor stanza runs.
type Install struct {
	// Coffer is the absolute path of the coffer binary containerd runs.
	Coffer string
	// KeysPath is the node key directory (default DefaultKeysPath).
	KeysPath string
	// ContainerdRoot is containerd's root, where the decoder finds layer
	// descriptors when no payload is sent (default DefaultContainerdRoot).
	ContainerdRoot string
	// KeyProviderConfig, if set, becomes OCICRYPT_KEYPROVIDER_CONFIG in the
	// processors' env.
	KeyProviderConfig string
	// PerNamespace turns on per-tenant keys (KEYS_PATH/<namespace>/).
	PerNamespace bool
	// Socket is containerd's socket (default DefaultContainerdSocket), asked
	// which layer (and, per namespace, for whom) is being extracted.
	Socket string
	// PerImage turns on per-image-reference keys
	// (KEYS_PATH/by-image/<registry>/<path prefix>/), the tenant scoping
	// that works under Kubernetes; with CRI it also turns CRI's snapshot
	// annotations on, which carry the reference.
	PerImage bool
	// CRI writes the CRI plugin's settings for the node key model (see
	// CRIStanza); SandboxImage and Mirrors go with them.
	CRI bool
	// SandboxImage is CRI's pod sandbox ("pause") image, if set.
	SandboxImage string
	// Mirrors are loopback registries (HOST:PORT) CRI reaches over plain
	// http.
	Mirrors []string
	// Shim writes the guest-pull runtime (see ShimStanza): the coffer
	// snapshotter at SnapshotterSocket and, with CRI, the runtime handler
	// "coffer" whose shim reads ShimConfig.
	Shim                          bool
	SnapshotterSocket, ShimConfig string
	// GuestPullDefault (with CRI) makes the coffer snapshotter CRI's
	// default: containerd 1.6's CRI pulls every image with its default
	// snapshotter (a runtime's own snapshotter came in 1.7), so a node
	// whose pods run with the coffer runtime needs it.
	GuestPullDefault bool
}

const (
	beginMarker = "# BEGIN coffer stream processors (written by `coffer runtime install containerd`; edits inside are replaced)"
	endMarker   = "# END coffer stream processors"
)

func (in Install) withDefaults() (Install, error) {
	if in.KeysPath == "" {
		in.KeysPath = DefaultKeysPath
	}
	if in.ContainerdRoot == "" {
		in.ContainerdRoot = DefaultContainerdRoot
	}
	if in.Socket == "" {
		in.Socket = DefaultContainerdSocket
	}
	for _, p := range []string{in.Coffer, in.KeysPath, in.ContainerdRoot} {
		if !filepath.IsAbs(p) {
			return in, fmt.Errorf("%q is not an absolute path (containerd runs the decoder from its own directory)", p)
		}
	}
	return in, nil
}

// Stanza renders the marked block of stream processors.
func (in Install) Stanza() (string, error) {
	in, err := in.withDefaults()
	if err != nil {
		return "", err
	}
	args := []string{"ctd-decoder", "--decryption-keys-path", in.KeysPath, "--containerd-root", in.ContainerdRoot, "--containerd-address", in.Socket}
	if in.PerNamespace {
		args = append(args, "--per-namespace-keys")
	}
	if in.PerImage {
		args = append(args, "--per-image-keys")
	}
	var b strings.Builder
	b.WriteString(beginMarker + "\n")
	for _, p := range Processors {
		fmt.Fprintf(&b, "[stream_processors.%q]\n  accepts = [%q]\n  returns = %q\n  path = %q\n  args = %s\n",
			p.ID, p.Accepts, p.Returns, in.Coffer, tomlStrings(args))
		if in.KeyProviderConfig != "" {
			fmt.Fprintf(&b, "  env = %s\n", tomlStrings([]string{"OCICRYPT_KEYPROVIDER_CONFIG=" + in.KeyProviderConfig}))
		}
	}
	b.WriteString(endMarker + "\n")
	return b.String(), nil
}

func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// InstallContainerd writes the stream-processor stanza (and with in.CRI
// the CRI plugin's settings, see CRIStanza) into the containerd
// config at path (created with `version = 2` if missing) and creates the
// key directory (0700) if missing. Idempotent: a second run with the same
// settings changes nothing and reports changed false. Every byte outside
// coffer's marked block stays as it was, except stream-processor tables
// that claim the same IDs or encrypted media types (imgcrypt's
// ctd-decoder), which are removed: containerd would otherwise pick either.
func InstallContainerd(path string, in Install) (changed bool, err error) {
	block, err := in.Stanza()
	if err != nil {
		return false, err
	}
	in, _ = in.withDefaults()
	old, err := os.ReadFile(path)
	mode := os.FileMode(0o644)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return false, err
	default:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	next, err := withStanza(old, block)
	if err == nil {
		// The guest-pull block goes last, after the CRI settings are placed
		// (its runtime tables are under the CRI plugin's header).
		next, _, err = cutBlock(next, shimBegin, shimEnd)
	}
	if err == nil {
		next, err = withCRI(next, in)
	}
	if err == nil {
		next, err = withShim(next, in)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(in.KeysPath, 0o700); err != nil {
		return false, fmt.Errorf("creating the key directory: %w", err)
	}
	if bytes.Equal(old, next) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	return true, atomicfile.Write(path, next, atomicfile.Mode(mode))
}

// withStanza returns cfg with block in place of coffer's marked block, or
// appended after removing conflicting stream-processor tables.
func withStanza(cfg []byte, block string) ([]byte, error) {
	if len(bytes.TrimSpace(cfg)) == 0 {
		return []byte("version = 2\n\n" + block), nil
	}
	var parsed containerdConfig
	if _, err := toml.Decode(string(cfg), &parsed); err != nil {
		return nil, fmt.Errorf("not valid TOML (%v): fix it first", err)
	}
	if parsed.Version < 2 {
		return nil, fmt.Errorf("config version %d: containerd reads [stream_processors] only from version 2 on; add `version = 2` (and migrate the plugin sections) first", parsed.Version)
	}
	if i := bytes.Index(cfg, []byte(beginMarker)); i >= 0 {
		j := bytes.Index(cfg[i:], []byte(endMarker))
		if j < 0 {
			return nil, fmt.Errorf("coffer's block has no %q line: repair or remove it", endMarker)
		}
		end := i + j + len(endMarker)
		if end < len(cfg) && cfg[end] == '\n' {
			end++
		}
		return slices.Concat(cfg[:i], []byte(block), cfg[end:]), nil
	}
	out := cfg
	for id, sp := range parsed.StreamProcessors {
		if !conflicts(id, sp) {
			continue
		}
		var ok bool
		if out, ok = removeTable(out, "stream_processors", id); !ok {
			return nil, fmt.Errorf("stream processor %q also decrypts layers but is not written as a [stream_processors.%q] table: remove it by hand", id, id)
		}
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(append(out, '\n'), block...), nil
}

func conflicts(id string, sp streamProcessor) bool {
	for _, p := range Processors {
		if id == p.ID || slices.Contains(sp.Accepts, p.Accepts) {
			return true
		}
	}
	return false
}

// removeTable cuts the table [parent."id"] (or [parent.id]) from its header
// line to the next table header. It reports false when no header is found.
func removeTable(cfg []byte, parent, id string) ([]byte, bool) {
	lines := bytes.SplitAfter(cfg, []byte("\n"))
	start := -1
	for i, l := range lines {
		if start < 0 {
			if isHeader(l, parent, id) {
				start = i
			}
			continue
		}
		if t := bytes.TrimSpace(l); bytes.HasPrefix(t, []byte("[")) {
			return slices.Concat(bytes.Join(lines[:start], nil), bytes.Join(lines[i:], nil)), true
		}
	}
	if start < 0 {
		return cfg, false
	}
	return bytes.Join(lines[:start], nil), true
}

func isHeader(line []byte, parent, id string) bool {
	// Exactly [parent.id]: a subtable's header ([parent.id.x]) is not it.
	p := headerPath(line)
	return len(p) == 2 && p[0] == parent && p[1] == id
}

type streamProcessor struct {
	Accepts []string `toml:"accepts"`
	Returns string   `toml:"returns"`
	Path    string   `toml:"path"`
	Args    []string `toml:"args"`
	Env     []string `toml:"env"`
}

type containerdConfig struct {
	Version          int                        `toml:"version"`
	Root             string                     `toml:"root"`
	StreamProcessors map[string]streamProcessor `toml:"stream_processors"`
}

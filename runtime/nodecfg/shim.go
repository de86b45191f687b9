package nodecfg

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Names of coffer's guest-pull runtime in containerd.
const (
	ShimRuntimeType = "io.containerd.coffer.v2" // runtime_type; binary containerd-shim-coffer-v2
	ShimHandler     = "coffer"                  // CRI runtime handler (a RuntimeClass's handler)
	ShimSnapshotter = "coffer"                  // the proxy snapshotter's name

	DefaultSnapshotterSocket = "/run/coffer/snapshotter.sock"
	DefaultShimConfig        = "/etc/coffer/shim.toml"

	// initDataAnnotation is the pod annotation the shim reads init-data
	// from; CRI passes only the pod annotations a runtime lists.
	initDataAnnotation = "io.katacontainers.config.runtime.cc_init_data"
)

const (
	shimBegin = "# BEGIN coffer guest-pull runtime (written by `coffer runtime install containerd --shim`; edits inside are replaced)"
	shimEnd   = "# END coffer guest-pull runtime"
)

// ShimStanza renders the guest-pull runtime's block: the coffer
// snapshotter as a proxy plugin, and (with CRI) the runtime handler
// "coffer" of type io.containerd.coffer.v2 with the snapshotter, the
// init-data pod annotation passed through and the shim's config path.
// withRunc also declares CRI's default runc runtime, which a file that
// declares no runtime of its own would otherwise lose.
func (in Install) ShimStanza(withRunc bool) (string, error) {
	sock, cfg := in.SnapshotterSocket, in.ShimConfig
	if sock == "" {
		sock = DefaultSnapshotterSocket
	}
	if cfg == "" {
		cfg = DefaultShimConfig
	}
	for _, p := range []string{sock, cfg} {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, "\"\\\n") {
			return "", fmt.Errorf("%q is not a plain absolute path", p)
		}
	}
	var b strings.Builder
	b.WriteString(shimBegin + "\n")
	fmt.Fprintf(&b, "[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = %q\n", ShimSnapshotter, sock)
	if in.CRI {
		rt := fmt.Sprintf("[plugins.%q.containerd.runtimes", CRIPlugin)
		if withRunc {
			fmt.Fprintf(&b, "%s.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", rt)
		}
		fmt.Fprintf(&b, "%s.%s]\n  runtime_type = %q\n  snapshotter = %q\n  pod_annotations = [%q]\n", rt, ShimHandler, ShimRuntimeType, ShimSnapshotter, initDataAnnotation)
		fmt.Fprintf(&b, "%s.%s.options]\n  ConfigPath = %q\n", rt, ShimHandler, cfg)
	}
	b.WriteString(shimEnd + "\n")
	return b.String(), nil
}

// withShim returns cfg with coffer's guest-pull block replaced or
// appended; Shim false removes it.
func withShim(cfg []byte, in Install) ([]byte, error) {
	rest, at, err := cutBlock(cfg, shimBegin, shimEnd)
	if err != nil {
		return nil, err
	}
	if !in.Shim {
		return rest, nil
	}
	var parsed struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]toml.Primitive `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if _, err := toml.Decode(string(rest), &parsed); err != nil {
		return nil, fmt.Errorf("not valid TOML (%v): fix it first", err)
	}
	runtimes := parsed.Plugins[CRIPlugin].Containerd.Runtimes
	if _, ok := runtimes[ShimHandler]; ok {
		return nil, fmt.Errorf("the file declares a CRI runtime %q of its own: remove it, coffer's block declares it", ShimHandler)
	}
	block, err := in.ShimStanza(len(runtimes) == 0)
	if err != nil {
		return nil, err
	}
	if at < 0 || at > len(rest) {
		at = len(rest)
	}
	if at > 0 && rest[at-1] != '\n' {
		rest = slices.Insert(rest, at, '\n')
		at++
	}
	return slices.Concat(rest[:at], []byte(block), rest[at:]), nil
}

// shimInstalled reads coffer's guest-pull block back into in.
func shimInstalled(cfg []byte, in *Install) error {
	i := bytes.Index(cfg, []byte(shimBegin))
	if i < 0 {
		return nil
	}
	j := bytes.Index(cfg[i:], []byte(shimEnd))
	if j < 0 {
		return fmt.Errorf("coffer's block has no %q line: repair or remove it", shimEnd)
	}
	var s struct {
		Proxy map[string]struct {
			Address string `toml:"address"`
		} `toml:"proxy_plugins"`
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]struct {
					Options struct {
						ConfigPath string `toml:"ConfigPath"`
					} `toml:"options"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if _, err := toml.Decode(string(cfg[i:i+j]), &s); err != nil {
		return fmt.Errorf("coffer's guest-pull block is not valid TOML (%v): repair or remove it", err)
	}
	in.Shim = true
	in.SnapshotterSocket = s.Proxy[ShimSnapshotter].Address
	in.ShimConfig = s.Plugins[CRIPlugin].Containerd.Runtimes[ShimHandler].Options.ConfigPath
	return nil
}

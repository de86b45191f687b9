package nodecfg

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// CRIPlugin is the ID of containerd's built-in CRI plugin.
const CRIPlugin = "io.containerd.grpc.v1.cri"

const (
	criBegin = "# BEGIN coffer CRI settings (written by `coffer runtime install containerd --cri`; edits inside are replaced)"
	criEnd   = "# END coffer CRI settings"
)

// criHeader is the table header the CRI settings live under.
var criHeader = fmt.Sprintf("[plugins.%q]", CRIPlugin)

// CRIStanza renders the CRI plugin's settings for the node key model, as
// keys of the [plugins."io.containerd.grpc.v1.cri"] table (dotted keys, so
// the block can sit right under an existing header of that table):
//   - image_decryption.key_model = "node": CRI unpacks encrypted layers
//     through the stream processors (coffer ctd-decoder) with the node's
//     keys;
//   - restrict_oom_score_adj = true: containers never get an oom_score_adj
//     below containerd's own (needed where containerd lacks
//     CAP_SYS_RESOURCE, as in this VM, or every sandbox fails with runc's
//     "can't get final child's PID from pipe: EOF");
//   - sandbox_image, if set;
//   - containerd.disable_snapshot_annotations = false with PerImage: CRI
//     then labels each snapshot with the image reference it pulls, which
//     per-image keys need;
//   - registry.mirrors."HOST".endpoint = ["http://HOST"] for each loopback
//     registry in Mirrors (plain http: refused for any other host).
//
// withHeader puts the table header inside the block (the file has none).
func (in Install) CRIStanza(withHeader bool) (string, error) {
	var b strings.Builder
	b.WriteString(criBegin + "\n")
	if withHeader {
		b.WriteString(criHeader + "\n")
	}
	b.WriteString("  restrict_oom_score_adj = true\n")
	if in.SandboxImage != "" {
		fmt.Fprintf(&b, "  sandbox_image = %q\n", in.SandboxImage)
	}
	b.WriteString("  image_decryption.key_model = \"node\"\n")
	if in.PerImage {
		b.WriteString("  containerd.disable_snapshot_annotations = false\n")
	}
	if in.GuestPullDefault {
		fmt.Fprintf(&b, "  containerd.snapshotter = %q\n", ShimSnapshotter)
	}
	for _, m := range in.Mirrors {
		if err := LocalRegistry(m); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  registry.mirrors.%q.endpoint = [%q]\n", m, "http://"+m)
	}
	b.WriteString(criEnd + "\n")
	return b.String(), nil
}

// LocalRegistry accepts HOST:PORT with a loopback HOST (127.0.0.0/8, ::1,
// localhost): the only registries a plain-http mirror may name.
func LocalRegistry(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil || port == "" || strings.ContainsAny(hp, "/\"\\ ") {
		return fmt.Errorf("registry %q: want HOST:PORT", hp)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("registry %q is not on a loopback address: plain-http mirrors are only written for local registries (configure TLS registries with containerd's hosts.toml)", hp)
	}
	return nil
}

// withCRI returns cfg with coffer's CRI block replaced, inserted under the
// file's CRI table header, or appended with one; cri false removes the
// block. The result must still parse: settings the file makes itself
// (say its own restrict_oom_score_adj or [..cri.image_decryption] table)
// clash, and the install is refused naming the clash.
func withCRI(cfg []byte, in Install) ([]byte, error) {
	rest, at, err := cutBlock(cfg, criBegin, criEnd)
	if err != nil {
		return nil, err
	}
	if !in.CRI {
		return rest, nil
	}
	if err := criClashes(rest, in); err != nil {
		return nil, err
	}
	header := -1
	lines := bytes.SplitAfter(rest, []byte("\n"))
	for i, l := range lines {
		if isHeader(l, "plugins", CRIPlugin) {
			header = i
			break
		}
	}
	block, err := in.CRIStanza(header < 0)
	if err != nil {
		return nil, err
	}
	var out []byte
	switch {
	case header >= 0:
		pos := len(bytes.Join(lines[:header+1], nil))
		if pos > 0 && rest[pos-1] != '\n' {
			rest = slices.Insert(rest, pos, '\n')
			pos++
		}
		out = slices.Concat(rest[:pos], []byte(block), rest[pos:])
	case at >= 0 && at <= len(rest):
		out = slices.Concat(rest[:at], []byte(block), rest[at:])
	default:
		out = rest
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(append(out, '\n'), block...)
	}
	var probe map[string]any
	if _, err := toml.Decode(string(out), &probe); err != nil {
		return nil, fmt.Errorf("coffer's CRI settings clash with the file's own (%v): remove those settings from the file, or set them there and leave out --cri", err)
	}
	return out, nil
}

// criClashes names a setting of coffer's CRI block that cfg (without the
// block) already makes: the file would then set it twice.
func criClashes(cfg []byte, in Install) error {
	var root map[string]any
	if _, err := toml.Decode(string(cfg), &root); err != nil {
		return fmt.Errorf("not valid TOML (%v): fix it first", err)
	}
	keys := [][]string{{"restrict_oom_score_adj"}, {"image_decryption", "key_model"}}
	if in.SandboxImage != "" {
		keys = append(keys, []string{"sandbox_image"})
	}
	if in.PerImage {
		keys = append(keys, []string{"containerd", "disable_snapshot_annotations"})
	}
	for _, m := range in.Mirrors {
		keys = append(keys, []string{"registry", "mirrors", m})
	}
	// A dotted key may not extend a table the file defines with a header
	// (TOML 1.0; some parsers let it pass, containerd's need not).
	headers := map[string]bool{}
	for _, l := range bytes.SplitAfter(cfg, []byte("\n")) {
		if p := headerPath(l); p != nil {
			headers[strings.Join(p, "\x00")] = true
		}
	}
	for _, k := range keys {
		for i := 1; i < len(k); i++ {
			tbl := append([]string{"plugins", CRIPlugin}, k[:i]...)
			if headers[strings.Join(tbl, "\x00")] {
				return fmt.Errorf("coffer's CRI settings set %s, but the file has its own [plugins.%q.%s] table: add the setting there and leave out --cri, or move that table's settings out", strings.Join(k, "."), CRIPlugin, strings.Join(k[:i], "."))
			}
		}
	}
	for _, k := range keys {
		var v any = root
		for _, part := range append([]string{"plugins", CRIPlugin}, k...) {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		if v != nil {
			return fmt.Errorf("the file sets %s of [plugins.%q] itself, as coffer's CRI settings do: remove it from the file (or leave out --cri)", strings.Join(k, "."), CRIPlugin)
		}
	}
	return nil
}

// headerPath returns the key path of a [table] header line (nil: none).
func headerPath(line []byte) []string {
	t := strings.TrimSpace(string(line))
	if !strings.HasPrefix(t, "[") || strings.HasPrefix(t, "[[") {
		return nil
	}
	var probe map[string]any
	if _, err := toml.Decode(t+"\n", &probe); err != nil {
		return nil
	}
	var path []string
	for len(probe) == 1 {
		for k, v := range probe {
			path = append(path, k)
			probe, _ = v.(map[string]any)
		}
	}
	return path
}

// cutBlock removes the marked block from cfg and says where it was (-1:
// absent).
func cutBlock(cfg []byte, begin, end string) ([]byte, int, error) {
	i := bytes.Index(cfg, []byte(begin))
	if i < 0 {
		return cfg, -1, nil
	}
	j := bytes.Index(cfg[i:], []byte(end))
	if j < 0 {
		return nil, 0, fmt.Errorf("coffer's block has no %q line: repair or remove it", end)
	}
	e := i + j + len(end)
	if e < len(cfg) && cfg[e] == '\n' {
		e++
	}
	return slices.Concat(cfg[:i], cfg[e:]), i, nil
}

// criInstalled reads coffer's CRI block back into in (CRI false: none).
func criInstalled(cfg []byte, in *Install) error {
	i := bytes.Index(cfg, []byte(criBegin))
	if i < 0 {
		return nil
	}
	j := bytes.Index(cfg[i:], []byte(criEnd))
	if j < 0 {
		return fmt.Errorf("coffer's block has no %q line: repair or remove it", criEnd)
	}
	body := strings.Replace(string(cfg[i:i+j]), criHeader, "", 1)
	var s struct {
		SandboxImage    string `toml:"sandbox_image"`
		ImageDecryption struct {
			KeyModel string `toml:"key_model"`
		} `toml:"image_decryption"`
		Registry struct {
			Mirrors map[string]struct {
				Endpoint []string `toml:"endpoint"`
			} `toml:"mirrors"`
		} `toml:"registry"`
		Containerd struct {
			Snapshotter string `toml:"snapshotter"`
		} `toml:"containerd"`
	}
	if _, err := toml.Decode(body, &s); err != nil {
		return fmt.Errorf("coffer's CRI block is not valid TOML (%v): repair or remove it", err)
	}
	in.CRI = true
	in.SandboxImage = s.SandboxImage
	in.GuestPullDefault = s.Containerd.Snapshotter == ShimSnapshotter
	in.Mirrors = slices.Sorted(func(yield func(string) bool) {
		for m := range s.Registry.Mirrors {
			if !yield(m) {
				return
			}
		}
	})
	return nil
}

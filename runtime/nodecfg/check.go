package nodecfg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// CheckOption configures Check.
type CheckOption func(*checkOptions)

type checkOptions struct {
	containerd, crio string
	dialTimeout      time.Duration
	probeTimeout     time.Duration
}

// WithContainerdConfig checks the containerd config.toml at path.
func WithContainerdConfig(path string) CheckOption {
	return func(o *checkOptions) { o.containerd = path }
}

// WithCRIOConfig checks CRI-O's crio.conf at path (its decryption_keys_path).
func WithCRIOConfig(path string) CheckOption { return func(o *checkOptions) { o.crio = path } }

// WithDialTimeout bounds each key-provider reachability probe. Default 2 s.
func WithDialTimeout(d time.Duration) CheckOption { return func(o *checkOptions) { o.dialTimeout = d } }

// WithProbeTimeout bounds each key provider's answer to the probe request
// (see Check). Default 20 s (a provider may attest first).
func WithProbeTimeout(d time.Duration) CheckOption {
	return func(o *checkOptions) { o.probeTimeout = d }
}

// Check reports, one line each, what would stop the configured runtimes
// from running encrypted images: missing or wrong stream processors, a
// decoder that is not executable, key directories that are missing,
// unreadable, world-accessible or hold no key, key providers that cannot
// be reached or fail when run as the decoder runs them (argv, env; a node
// without a TEE fails here with the provider's reason). No problems: an
// empty list.
func Check(ctx context.Context, opts ...CheckOption) ([]string, error) {
	o := checkOptions{dialTimeout: 2 * time.Second, probeTimeout: 20 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if o.containerd == "" && o.crio == "" {
		return nil, errors.New("nothing to check: give a containerd config and/or a CRI-O config")
	}
	var c checker
	c.o = o
	if o.containerd != "" {
		c.containerd(ctx, o.containerd)
	}
	if o.crio != "" {
		c.crio(o.crio)
	}
	return c.problems, nil
}

type checker struct {
	o        checkOptions
	problems []string
}

// add records a problem once (the three decoders usually share a binary,
// keys and providers).
func (c *checker) add(format string, args ...any) {
	if p := fmt.Sprintf(format, args...); !slices.Contains(c.problems, p) {
		c.problems = append(c.problems, p)
	}
}

func (c *checker) containerd(ctx context.Context, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		c.add("%s: %v (run `coffer runtime install containerd`)", path, unwrapPath(err))
		return
	}
	var cfg containerdConfig
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		c.add("%s: not valid TOML: %v", path, err)
		return
	}
	if cfg.Version < 2 {
		c.add("%s: config version %d: containerd reads [stream_processors] only from version 2 on", path, cfg.Version)
	}
	root := cfg.Root
	if root == "" {
		root = DefaultContainerdRoot
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range cfg.StreamProcessors {
			if !yield(id) {
				return
			}
		}
	})
	for _, p := range Processors {
		var accepting []string
		for _, id := range ids {
			if slices.Contains(cfg.StreamProcessors[id].Accepts, p.Accepts) {
				accepting = append(accepting, id)
			}
		}
		switch len(accepting) {
		case 0:
			c.add("%s: no stream processor accepts %s: containerd cannot unpack such layers (missing [stream_processors.%q])", path, p.Accepts, p.ID)
			continue
		case 1:
		default:
			c.add("%s: stream processors %s all accept %s: containerd picks one of them", path, strings.Join(accepting, ", "), p.Accepts)
		}
		if got := cfg.StreamProcessors[accepting[0]].Returns; got != p.Returns {
			c.add("%s: stream processor %q returns %q for %s, want %q", path, accepting[0], got, p.Accepts, p.Returns)
		}
	}
	for _, id := range ids {
		sp := cfg.StreamProcessors[id]
		if !conflicts(id, sp) {
			continue
		}
		c.decoder(ctx, path, id, sp, root)
	}
}

// decoder checks one decrypting stream processor: its binary, and for
// coffer's decoder its keys, content-store root and key providers.
func (c *checker) decoder(ctx context.Context, cfgPath, id string, sp streamProcessor, root string) {
	where := cfgPath + ": decoder"
	bin, err := exec.LookPath(sp.Path)
	if err != nil {
		c.add("%s: decoder %q is not an executable file (%v)", where, sp.Path, unwrapPath(err))
	} else if !filepath.IsAbs(sp.Path) {
		c.add("%s: decoder %q is found through PATH (%s here); containerd's PATH may differ: give the absolute path", where, sp.Path, bin)
	}
	var (
		keyDirs     []string
		ctdRoot     string
		perNS       bool
		perImage    bool
		hasProvider bool
	)
	for i := 0; i < len(sp.Args); i++ {
		a := sp.Args[i]
		name, val, hasVal := strings.Cut(a, "=")
		next := func() string {
			if hasVal {
				return val
			}
			if i+1 < len(sp.Args) {
				i++
				return sp.Args[i]
			}
			return ""
		}
		switch name {
		case "--decryption-keys-path":
			keyDirs = append(keyDirs, next())
		case "--containerd-root":
			ctdRoot = next()
		case "--per-namespace-keys":
			perNS = true
		case "--per-image-keys":
			perImage = true
		}
	}
	for _, e := range sp.Env {
		if v, ok := strings.CutPrefix(e, "OCICRYPT_KEYPROVIDER_CONFIG="); ok {
			hasProvider = true
			c.providers(ctx, where, v, sp.Env)
		}
	}
	isCoffer := slices.Contains(sp.Args, "ctd-decoder")
	if isCoffer && err == nil {
		c.probeDecoder(ctx, where, bin, sp)
	}
	if isCoffer && ctdRoot != "" && filepath.Clean(ctdRoot) != filepath.Clean(root) {
		c.add("%s: --containerd-root %s is not containerd's root %s: layers pulled without a payload (plain ctr, CRI) will not be found", where, ctdRoot, root)
	}
	if perImage {
		c.criImageRefs(cfgPath)
	}
	if len(keyDirs) == 0 && !hasProvider {
		c.add("%s: no --decryption-keys-path and no OCICRYPT_KEYPROVIDER_CONFIG: only clients sending keys in the payload (ctr-enc) can decrypt", where)
	}
	for _, d := range keyDirs {
		c.keyDir(where, d, perNS, !hasProvider && !perNS && !perImage)
	}
}

// usageErrors are what coffer (cobra) says when its arguments do not parse.
var usageErrors = []string{"unknown flag", "unknown shorthand flag", "unknown command", "flag needs an argument", "invalid argument", "accepts no arguments", ": usage"}

// probeDecoder runs coffer's decoder as containerd would (the stanza's
// argv, containerd's environment plus the stanza's env and
// STREAM_PROCESSOR_MEDIATYPE), with an empty layer on stdin and no
// payload: it cannot decode nothing, but a binary that does not take the
// stanza's arguments (say an older coffer than the one that wrote them)
// fails here as it would on every pull.
func (c *checker) probeDecoder(ctx context.Context, where, bin string, sp streamProcessor) {
	if len(sp.Accepts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.probeTimeout)
	defer cancel()
	x := exec.CommandContext(ctx, bin, sp.Args...)
	x.Env = append(append(os.Environ(), sp.Env...), "STREAM_PROCESSOR_MEDIATYPE="+sp.Accepts[0])
	var stderr strings.Builder
	x.Stderr = &limitWriter{w: &stderr, n: 4 << 10}
	x.WaitDelay = time.Second
	err := x.Run()
	if err == nil || ctx.Err() != nil {
		return
	}
	msg := strings.TrimSpace(stderr.String())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	var exit *exec.ExitError
	usage := errors.As(err, &exit) && exit.ExitCode() == 2
	for _, u := range usageErrors {
		usage = usage || strings.Contains(msg, u)
	}
	if usage {
		c.add("%s: %s does not accept its configured arguments (%s): is it the coffer that wrote them? re-run `coffer runtime install containerd` with it", where, bin, msg)
	}
}

// criImageRefs checks what per-image keys need from containerd's CRI
// plugin: that it runs, and that it labels snapshots with the image
// reference (disable_snapshot_annotations = false; containerd 1.6's default
// is true).
func (c *checker) criImageRefs(cfgPath string) {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return
	}
	var cfg struct {
		Disabled []string `toml:"disabled_plugins"`
		Plugins  map[string]struct {
			Containerd struct {
				DisableSnapshotAnnotations *bool `toml:"disable_snapshot_annotations"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		return
	}
	if slices.Contains(cfg.Disabled, CRIPlugin) || slices.Contains(cfg.Disabled, "cri") {
		c.add("%s: --per-image-keys, but the CRI plugin is disabled: only CRI pulls name their image reference, every other unpack is refused", cfgPath)
		return
	}
	if d := cfg.Plugins[CRIPlugin].Containerd.DisableSnapshotAnnotations; d == nil || *d {
		c.add("%s: --per-image-keys needs [plugins.%q] containerd.disable_snapshot_annotations = false (CRI then labels snapshots with the image reference; `coffer runtime install containerd --cri --per-image-keys` writes it)", cfgPath, CRIPlugin)
	}
}

// keyDir checks a key directory: present, readable, not accessible to
// everyone, keys not world-readable, and (needKey) at least one key.
func (c *checker) keyDir(where, dir string, perNS, needKey bool) {
	st, err := os.Stat(dir)
	if err != nil {
		c.add("%s: key directory %s: %v", where, dir, unwrapPath(err))
		return
	}
	if !st.IsDir() {
		c.add("%s: key directory %s is not a directory", where, dir)
		return
	}
	if st.Mode().Perm()&0o007 != 0 {
		c.add("%s: key directory %s is accessible to every user (mode %04o): chmod 700 it", where, dir, st.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.add("%s: key directory %s is not readable: %v", where, dir, unwrapPath(err))
		return
	}
	usable := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fst, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fst.IsDir() && perNS {
			c.keyDir(where, p, false, false)
			continue
		}
		if !fst.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fst.Mode().Perm()&0o004 != 0 {
			c.add("%s: key file %s is world-readable (mode %04o): chmod 600 it", where, p, fst.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			c.add("%s: key file %s is not readable: %v", where, p, unwrapPath(err))
			continue
		}
		m, err := recipients.ParseMaterial(p, data, nil)
		clear(data)
		if err != nil {
			c.add("%s: %v (the decoder skips it)", where, err)
			continue
		}
		if m.Private != nil || len(m.OpenPGP) > 0 {
			usable++
		}
	}
	if needKey && usable == 0 {
		c.add("%s: key directory %s holds no private key: nothing can be decrypted", where, dir)
	}
}

// providers checks an ocicrypt keyprovider config and runs each provider
// the way the decoder will when containerd unpacks a layer: a command
// provider with its configured argv and the decoder's environment (this
// process's, standing in for containerd's, plus the stanza's env), a gRPC
// provider over its address; each is sent a probe unwrap request (see
// probeProvider).
func (c *checker) providers(ctx context.Context, where, path string, env []string) {
	cfg, err := keyprovider.LoadConfig(path)
	if err != nil {
		c.add("%s: OCICRYPT_KEYPROVIDER_CONFIG %s: %v", where, path, err)
		return
	}
	for _, name := range cfg.Names() {
		p, _ := cfg.Provider(name)
		switch {
		case p.Command != nil:
			if _, err := exec.LookPath(p.Command.Path); err != nil {
				c.add("%s: key provider %q: command %s is not executable (%v)", where, name, p.Command.Path, unwrapPath(err))
				continue
			}
			if msg := c.probeCommand(ctx, p.Command, env); msg != "" {
				c.add("%s: key provider %q (%s) fails as the decoder runs it: %s", where, name, strings.Join(append([]string{p.Command.Path}, p.Command.Args...), " "), msg)
			}
		case p.GRPC != "":
			network, addr := "tcp", p.GRPC
			if a, ok := strings.CutPrefix(addr, "unix://"); ok {
				network, addr = "unix", a
			}
			d := net.Dialer{Timeout: c.o.dialTimeout}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				c.add("%s: key provider %q at %s is unreachable: %v", where, name, p.GRPC, err)
				continue
			}
			conn.Close()
			u, err := cfg.Unwrapper(name)
			if err != nil {
				c.add("%s: key provider %q: %v", where, name, err)
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, c.o.probeTimeout)
			_, err = u.Unwrap(pctx, probeAnnotation)
			cancel()
			if msg := probeVerdict(err, ""); msg != "" {
				c.add("%s: key provider %q at %s fails the probe: %s", where, name, p.GRPC, msg)
			}
		}
	}
}

// probeAnnotation is the annotation entry of the probe: an empty JSON
// object, which no provider can unwrap. A provider that starts, finds its
// TEE, parses its flags and reads the request refuses it for what it is
// (coffer's: "annotation entry lacks kid, …"); one that cannot start fails
// with its own reason (coffer's on a node without a TEE: "no TEE found").
var probeAnnotation = []byte("{}")

// probeRequest is the keyunwrap request the decoder sends, carrying
// probeAnnotation (WIRE.md §2).
const probeRequest = `{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":{"Parameters":{}},"annotation":"e30="}}`

// probeCommand runs a command provider as the decoder would (its own
// environment is containerd's plus the stanza's env; providers inherit
// it) with the probe request on stdin, and returns what is wrong ("" if
// the provider answered the probe).
func (c *checker) probeCommand(ctx context.Context, cmd *keyprovider.Command, env []string) string {
	ctx, cancel := context.WithTimeout(ctx, c.o.probeTimeout)
	defer cancel()
	x := exec.CommandContext(ctx, cmd.Path, cmd.Args...)
	x.Env = append(os.Environ(), env...)
	x.Stdin = strings.NewReader(probeRequest)
	var stderr strings.Builder
	x.Stderr = &limitWriter{w: &stderr, n: 4 << 10}
	x.WaitDelay = time.Second
	err := x.Run()
	if ctx.Err() != nil {
		return fmt.Sprintf("no answer within %s", c.o.probeTimeout)
	}
	return probeVerdict(err, stderr.String())
}

// probeVerdict: nil (the provider unwrapped "{}"?) or a refusal that
// names the annotation means the provider is up; anything else is its
// first stderr line (or the error).
func probeVerdict(err error, stderr string) string {
	if err == nil {
		return ""
	}
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		msg = err.Error()
	}
	if strings.Contains(msg, "annotation") {
		return ""
	}
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

type limitWriter struct {
	w interface{ WriteString(string) (int, error) }
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p[:min(len(p), l.n)]
		l.n -= len(q)
		l.w.WriteString(string(q))
	}
	return len(p), nil
}

// crio checks CRI-O's decryption_keys_path ([crio.runtime] in older
// releases, [crio.image] in newer; default /etc/crio/keys).
func (c *checker) crio(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		c.add("%s: %v", path, unwrapPath(err))
		return
	}
	var cfg struct {
		Crio struct {
			Runtime struct {
				Keys string `toml:"decryption_keys_path"`
			} `toml:"runtime"`
			Image struct {
				Keys string `toml:"decryption_keys_path"`
			} `toml:"image"`
		} `toml:"crio"`
	}
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		c.add("%s: not valid TOML: %v", path, err)
		return
	}
	dir := cmpOr(cfg.Crio.Image.Keys, cfg.Crio.Runtime.Keys, "/etc/crio/keys")
	c.keyDir(path+": decryption_keys_path", dir, false, true)
}

func cmpOr(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// unwrapPath drops the *PathError wrapping (the caller names the path).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/transport"
)

// registryFlags are the registry access flags shared by image verbs;
// AddTransferFlags adds those of the verbs that copy layers.
type registryFlags struct {
	creds    string
	insecure bool
	jobs     int
	progress progressMode
}

func (f *registryFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.creds, "creds", "", "registry credentials USER:PASSWORD (default: docker config.json)")
	fs.BoolVar(&f.insecure, "insecure", false, "allow plain HTTP and unverified TLS registries (loopback registries are always allowed over HTTP)")
}

// AddTransferFlags adds --jobs and --progress (encrypt, decrypt, rekey, pull).
func (f *registryFlags) AddTransferFlags(fs *pflag.FlagSet) {
	fs.IntVar(&f.jobs, "jobs", defaultJobs, "layers transferred in parallel")
	addProgressFlag(fs, &f.progress)
}

const defaultJobs = 4

// options are the transport options of the flags and of the command's
// TLS trust (--cacert; --insecure verifies nothing anyway).
func (f *registryFlags) options(ctx context.Context) []transport.Option {
	jobs := f.jobs
	if jobs <= 0 {
		jobs = defaultJobs
	}
	opts := []transport.Option{transport.WithInsecure(f.insecure), transport.WithJobs(jobs)}
	if rt := trustOf(ctx).roundTripper(); rt != nil && !f.insecure {
		opts = append(opts, transport.WithTransport(rt))
	}
	if f.creds != "" {
		opts = append(opts, transport.WithCreds(f.creds))
	}
	return opts
}

// selectFlags choose layers and platforms.
type selectFlags struct {
	layers    []int
	platforms []string
}

func (f *selectFlags) AddFlags(fs *pflag.FlagSet) {
	fs.IntSliceVar(&f.layers, "layer", nil, "layer index to process (0-based, negative from the top; repeatable; default all)")
	fs.StringSliceVar(&f.platforms, "platform", nil, "platform OS/ARCH[/VARIANT] of an index to process (repeatable; default all)")
}

func (f *selectFlags) options() ([]imagecrypt.Option, error) {
	opts := []imagecrypt.Option{imagecrypt.WithLayers(f.layers...)}
	for _, p := range f.platforms {
		pl, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("--platform %q: %w: %w", p, err, ErrUsage)
		}
		opts = append(opts, imagecrypt.WithPlatforms(*pl))
	}
	return opts, nil
}

// keyFlags are private keys (--key) and recipients (--recipient).
type keyFlags struct {
	keys       []string
	recipients []string
	pkcs11Dirs []string
}

func (f *keyFlags) addKeys(fs *pflag.FlagSet, usage string) {
	fs.StringArrayVar(&f.keys, "key", nil, usage)
	f.addPKCS11(fs)
}

func (f *keyFlags) addRecipients(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.recipients, "recipient", nil, "recipient jwe:PUBKEY | pkcs7:CERT | pgp:PUBKEY | mlkem:PUBKEY | pkcs11:KEYFILE|PUBKEY | provider:NAME[:PARAMS] (repeatable)")
	f.addPKCS11(fs)
}

func (f *keyFlags) addPKCS11(fs *pflag.FlagSet) {
	if fs.Lookup("pkcs11-module-dir") == nil {
		fs.StringArrayVar(&f.pkcs11Dirs, "pkcs11-module-dir", nil,
			"directory whose PKCS#11 modules pkcs11 key files may load, besides OCICRYPT_CONFIG's pkcs11: allowed-module-paths (repeatable)")
	}
}

// env is what the key schemes take from the environment: the keyprovider
// config, ocicrypt's pkcs11 config (OCICRYPT_CONFIG, …) plus
// --pkcs11-module-dir, and OCICRYPT_OAEP_HASHALG. An unreadable pkcs11
// config fails a run with pkcs11 recipients (strict); otherwise it is a
// warning (no module is then allowed), as runs without pkcs11 keys do
// not need it.
func (f *keyFlags) env(strict bool) (recipients.Env, error) {
	p11, err := pkcs11.LoadConfig(os.Getenv)
	if err != nil {
		if strict {
			return recipients.Env{}, fmt.Errorf("pkcs11 config: %w", err)
		}
		slog.Warn("ignoring the pkcs11 config: no PKCS#11 module may load", "err", err)
		p11 = pkcs11.Config{}
	}
	for _, d := range f.pkcs11Dirs {
		if !filepath.IsAbs(d) {
			return recipients.Env{}, fmt.Errorf("--pkcs11-module-dir %q is not an absolute path: %w", d, ErrUsage)
		}
		p11.AllowDir(d)
	}
	return recipients.Env{
		KeyProviderConfig: os.Getenv("OCICRYPT_KEYPROVIDER_CONFIG"),
		PKCS11:            p11,
		OAEPHash:          os.Getenv("OCICRYPT_OAEP_HASHALG"),
	}, nil
}

func (f *keyFlags) unwrappers(ctx context.Context) ([]keywrap.Unwrapper, error) {
	if len(f.keys) == 0 {
		return nil, nil
	}
	env, err := f.env(false)
	if err != nil {
		return nil, err
	}
	return recipients.ParseKeys(ctx, f.keys, env)
}

func (f *keyFlags) wrappers(ctx context.Context) ([]keywrap.Wrapper, error) {
	if len(f.recipients) == 0 {
		return nil, nil
	}
	strict := slices.ContainsFunc(f.recipients, func(r string) bool { return strings.HasPrefix(r, recipients.SchemePKCS11+":") })
	env, err := f.env(strict)
	if err != nil {
		return nil, err
	}
	return recipients.ParseRecipients(ctx, f.recipients, env)
}

// parseRefs parses image references before any other work (keys, broker),
// so that a mistyped reference fails first: an unknown transport with exit
// 7 (unsupported), any other malformed reference with 2 (usage).
func parseRefs(refs ...string) ([]transport.Reference, error) {
	out := make([]transport.Reference, len(refs))
	for i, s := range refs {
		r, err := transport.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, ErrUsage)
		}
		out[i] = r
	}
	return out, nil
}

// imageJob reads SRC, transforms it and writes DST (imagecrypt.Copy),
// with a layer counter on a terminal. encrypts: the output holds encrypted
// layers, so a sink that cannot carry them is refused before any work.
func imageJob(cmd *cobra.Command, src, dst string, reg *registryFlags, opts []imagecrypt.Option, t imagecrypt.Transform, encrypts bool) error {
	return imageRun(cmd, src, dst, reg, opts, encrypts, func(sref, dref transport.Reference, topts []transport.Option, opts []imagecrypt.Option) (int, error) {
		return imagecrypt.Copy(cmd.Context(), sref, dref, t, topts, opts...)
	})
}

// imageRun is imageJob with the copy done by run (given the transport and
// image options with progress), e.g. a pkg/coffer entry point.
func imageRun(cmd *cobra.Command, src, dst string, reg *registryFlags, opts []imagecrypt.Option, encrypts bool,
	run func(sref, dref transport.Reference, topts []transport.Option, opts []imagecrypt.Option) (int, error)) error {
	refs, err := parseRefs(src, dst)
	if err != nil {
		return err
	}
	sref, dref := refs[0], refs[1]
	if encrypts && !dref.CarriesEncryption() {
		return transport.ErrSinkCannotCarry(dref)
	}
	p := newProgress(cmd.ErrOrStderr(), reg.progress)
	topts := reg.options(cmd.Context())
	if dref.Transport() == "docker" {
		if ch := p.pushing(dref.String()); ch != nil {
			topts = append(topts, transport.WithProgress(ch))
		}
	}
	n, err := run(sref, dref, topts, append(opts, imagecrypt.WithBlobProgress(p.blob)))
	p.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %d layer(s) changed, written to %s\n", cmd.Name(), n, dref)
	return nil
}

package recipients

import (
	"context"
	"fmt"
	"strings"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/spec"
)

// providerEnv loads the keyprovider config once, when first needed.
type providerEnv struct {
	loaded bool
	cfg    *keyprovider.Config
}

func (p *providerEnv) config(env Env) (*keyprovider.Config, error) {
	if !p.loaded {
		p.loaded = true
		if env.KeyProviderConfig != "" {
			c, err := keyprovider.LoadConfig(env.KeyProviderConfig)
			if err != nil {
				return nil, err
			}
			p.cfg = c
		}
	}
	return p.cfg, nil
}

func (p *providerEnv) has(env Env, name string) (bool, error) {
	cfg, err := p.config(env)
	if err != nil {
		return false, err
	}
	if cfg == nil {
		return false, nil
	}
	_, ok := cfg.Provider(name)
	return ok, nil
}

// wrapper: a configured provider of that name wins; otherwise
// attestation-agent is done natively with the KEK read from keypath.
func (p *providerEnv) wrapper(name, params string, env Env) (keywrap.Wrapper, error) {
	ok, err := p.has(env, name)
	if err != nil {
		return nil, err
	}
	if ok {
		return p.cfg.Wrapper(name, params)
	}
	if name != aa.ProviderName {
		return nil, notConfigured(name, env)
	}
	ap, err := aa.ParseParams(params)
	if err != nil {
		return nil, err
	}
	if ap.KeyPath == "" {
		return nil, fmt.Errorf("attestation-agent without a configured keyprovider needs keypath=KEKFILE::keyid=kbs:///REPO/TYPE/TAG")
	}
	kek, err := aa.ReadKEK(ap.KeyPath)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	return aa.NewWrapper(kek, ap.KeyID)
}

// unwrapper: a configured provider of that name wins; otherwise
// "provider:attestation-agent:keypath=KEKFILE[::keyid=KID]" opens entries
// with a local KEK (only those of that kid, when given).
func (p *providerEnv) unwrapper(name, params string, env Env) (keywrap.Unwrapper, error) {
	ok, err := p.has(env, name)
	if err != nil {
		return nil, err
	}
	if ok {
		return p.cfg.Unwrapper(name)
	}
	if name != aa.ProviderName {
		return nil, notConfigured(name, env)
	}
	var keyPath, kid string
	for field := range strings.SplitSeq(params, "::") {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "keypath":
			keyPath = v
		case "keyid":
			kid = v
		case "", "algorithm":
		default:
			return nil, fmt.Errorf("attestation-agent key parameters: unknown key %q (want keypath, keyid)", k)
		}
	}
	if keyPath == "" {
		return nil, fmt.Errorf("attestation-agent is not in the keyprovider config; to decrypt with a local KEK give provider:attestation-agent:keypath=KEKFILE: %w",
			spec.ErrNotFound)
	}
	kek, err := aa.ReadKEK(keyPath)
	if err != nil {
		return nil, err
	}
	return aa.NewUnwrapper(aa.KeyResolver(func(_ context.Context, got string) ([]byte, error) {
		if kid != "" && got != kid {
			return nil, fmt.Errorf("local KEK %s is for %s, not %s: %w", keyPath, kid, got, spec.ErrNoKey)
		}
		return append([]byte(nil), kek...), nil
	})), nil
}

func notConfigured(name string, env Env) error {
	if env.KeyProviderConfig == "" {
		return fmt.Errorf("keyprovider %q: no keyprovider config (set OCICRYPT_KEYPROVIDER_CONFIG): %w", name, spec.ErrNotFound)
	}
	return fmt.Errorf("keyprovider %q is not in %s: %w", name, env.KeyProviderConfig, spec.ErrNotFound)
}

func describeProvider(name string, entry []byte) ([]string, error) {
	if name == aa.ProviderName {
		kid, err := aa.Describe(entry)
		if err != nil {
			return nil, err
		}
		return []string{"provider " + name + " kid " + printable(kid)}, nil
	}
	return []string{"provider " + name}, nil
}

func printable(s string) string { return bounded.Printable(s, 0) }

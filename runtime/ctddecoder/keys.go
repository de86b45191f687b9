package ctddecoder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// maxKeyFile bounds one key file read from the keys directory.
const maxKeyFile = 1 << 20

// payloadMaterial parses the keys a payload carries, as ocicrypt's
// DecryptConfig names them. pkcs11 entries are not supported and ignored.
func payloadMaterial(p *Payload) ([]*keys.Material, []string, error) {
	if p == nil {
		return nil, nil, nil
	}
	var (
		ms      []*keys.Material
		skipped []string
	)
	add := func(kind string, datas, passwords [][]byte) {
		for i, d := range datas {
			var pw []byte
			if i < len(passwords) {
				pw = passwords[i]
			}
			m, err := recipients.ParseMaterial(fmt.Sprintf("payload %s[%d]", kind, i), d, pw)
			if err != nil {
				skipped = append(skipped, err.Error())
				continue
			}
			ms = append(ms, m)
		}
	}
	add("privkeys", p.Params["privkeys"], p.Params["privkeys-passwords"])
	add("x509s", p.Params["x509s"], nil)
	add("gpg-privatekeys", p.Params["gpg-privatekeys"], p.Params["gpg-privatekeys-passwords"])
	return ms, skipped, nil
}

// dirMaterial reads every regular file directly in dir, in lexical order
// (symlinks are followed: Kubernetes mounts Secrets through them;
// subdirectories are not entered). A file that is not a key, or is a
// password-protected one, is skipped and reported in skipped.
func dirMaterial(dir string) ([]*keys.Material, []string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("decryption keys path: %w", err)
	}
	var (
		ms      []*keys.Material
		skipped []string
	)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		data, err := readBounded(p)
		if err != nil {
			return nil, nil, err
		}
		m, err := recipients.ParseMaterial(p, data, nil)
		clear(data)
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		ms = append(ms, m)
	}
	return ms, skipped, nil
}

func readBounded(p string) ([]byte, error) { return bounded.ReadFile(p, maxKeyFile) }

// providerUnwrappers returns one unwrapper per provider in the keyprovider
// config at path (OCICRYPT_KEYPROVIDER_CONFIG), each sent only entries of
// its own scheme.
func providerUnwrappers(path string) ([]keywrap.Unwrapper, error) {
	if path == "" {
		return nil, nil
	}
	cfg, err := keyprovider.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	var out []keywrap.Unwrapper
	for _, name := range slices.Sorted(slices.Values(cfg.Names())) {
		u, err := cfg.Unwrapper(name)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// unwrappers gathers every key source: the payload's keys, the node's key
// directory, the configured key providers, then extra.
func (o *options) unwrappers(p *Payload, nsDirs ...string) ([]keywrap.Unwrapper, []string, error) {
	var ms []*keys.Material
	pm, skipped, err := payloadMaterial(p)
	if err != nil {
		return nil, nil, err
	}
	ms = append(ms, pm...)
	for i, dir := range append(slices.Clone(o.keyDirs), nsDirs...) {
		dm, s, err := dirMaterial(dir)
		if i >= len(o.keyDirs) && errors.Is(err, fs.ErrNotExist) {
			skipped = append(skipped, "no key directory "+dir+" for this namespace or image")
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		ms = append(ms, dm...)
		skipped = append(skipped, s...)
	}
	// A key no scheme can use (say ed25519) is skipped, not fatal.
	usable := ms[:0]
	for _, m := range ms {
		if _, err := recipients.Unwrappers([]*keys.Material{m}); err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		usable = append(usable, m)
	}
	ms = usable
	provs, err := providerUnwrappers(o.providerConfig)
	if err != nil {
		return nil, nil, err
	}
	us, err := recipients.Unwrappers(ms, append(provs, o.extra...)...)
	if err != nil {
		return nil, nil, err
	}
	return us, skipped, nil
}

var errNoKeySource = errors.New("no decryption keys: containerd sent no payload keys, and neither --decryption-keys-path nor OCICRYPT_KEYPROVIDER_CONFIG gives any")

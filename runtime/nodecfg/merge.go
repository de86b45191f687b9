package nodecfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Installed reads the settings of coffer's marked block in the containerd
// config at path: what the last `runtime install containerd` wrote. found
// is false when the file or the block does not exist.
func Installed(path string) (in Install, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Install{}, false, nil
	}
	if err != nil {
		return Install{}, false, err
	}
	return installedIn(data)
}

func installedIn(data []byte) (in Install, found bool, err error) {
	hasStream, hasCRI := strings.Contains(string(data), beginMarker), strings.Contains(string(data), criBegin)
	hasShim := strings.Contains(string(data), shimBegin)
	if !hasStream && !hasCRI && !hasShim {
		return Install{}, false, nil
	}
	if err := criInstalled(data, &in); err != nil {
		return Install{}, false, err
	}
	if err := shimInstalled(data, &in); err != nil {
		return Install{}, false, err
	}
	if !hasStream {
		return in, true, nil
	}
	var cfg containerdConfig
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		return Install{}, false, fmt.Errorf("not valid TOML (%v): fix it first", err)
	}
	sp, ok := cfg.StreamProcessors[Processors[0].ID]
	if !ok {
		return Install{}, false, fmt.Errorf("coffer's block has no [stream_processors.%q]: repair or remove the block", Processors[0].ID)
	}
	in.Coffer = sp.Path
	for i := 0; i < len(sp.Args); i++ {
		val := func() string {
			if i+1 < len(sp.Args) {
				i++
				return sp.Args[i]
			}
			return ""
		}
		switch sp.Args[i] {
		case "--decryption-keys-path":
			in.KeysPath = val()
		case "--containerd-root":
			in.ContainerdRoot = val()
		case "--containerd-address":
			in.Socket = val()
		case "--per-namespace-keys":
			in.PerNamespace = true
		case "--per-image-keys":
			in.PerImage = true
		}
	}
	for _, e := range sp.Env {
		if v, ok := strings.CutPrefix(e, "OCICRYPT_KEYPROVIDER_CONFIG="); ok {
			in.KeyProviderConfig = v
		}
	}
	return in, true, nil
}

// UpdateContainerd is InstallContainerd over the settings already
// installed: it reads coffer's block in path (if any), lets edit change
// the settings the operator named, and writes the result. So a second run
// with one more option keeps the earlier ones (a keyprovider config stays
// when --per-namespace-keys is added); edit sets a field to its zero value
// to remove it.
func UpdateContainerd(path string, edit func(*Install)) (changed bool, err error) {
	in, _, err := Installed(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if edit != nil {
		edit(&in)
	}
	return InstallContainerd(path, in)
}

package unpack

import (
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/atomicfile"
)

// WriteConfig writes the image config cfg as JSON to the file path (for
// example rootfs + ".config.json", next to the rootfs), the input an OCI
// runtime config.json is derived from. It writes a temporary file in the
// same directory and renames it into place, mode 0644, so readers never see
// a partial file.
func WriteConfig(path string, cfg *v1.ConfigFile) (err error) {
	if cfg == nil {
		return errors.New("writing image config: nil config")
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding image config: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), atomicfile.Mode(0o644)); err != nil {
		return fmt.Errorf("writing image config: %w", err)
	}
	return nil
}

package shim

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// DefaultConfigPath is where the shim reads its configuration when
// containerd passes none (the runtime's options.ConfigPath, or ctr run's
// --runtime-config-path) and COFFER_SHIM_CONFIG is unset.
const DefaultConfigPath = "/etc/coffer/shim.toml"

// maxConfig bounds the configuration file.
const maxConfig = 64 << 10

// Config is the shim's configuration: where the guest's kernel is, the
// broker it attests to, and the machine's state (its vTPM, whose EK CA
// the broker trusts: kbs serve --tpm-ek-ca STATE/ek-ca.pem).
type Config struct {
	// KBS is the broker as the host sees it (http://127.0.0.1:PORT); the
	// guest reaches it through a forwarded port.
	KBS string `toml:"kbs"`
	// KernelDir is the extracted Debian linux-image package.
	KernelDir string `toml:"kernel_dir"`
	// StateDir holds the vTPM and its EK CA. One guest uses it at a time:
	// the shim holds a lock on it while its guest runs.
	StateDir string `toml:"state_dir"`
	// MemoryMiB is the guest's memory (default vm.DefaultMemoryMiB).
	MemoryMiB int `toml:"memory_mib"`
	// Accel is QEMU's accelerator: tcg (default) or kvm.
	Accel string `toml:"accel"`
	// Forward lists more host loopback addresses the guest may reach (a
	// registry at 127.0.0.1:PORT). A loopback registry named by the image
	// reference is forwarded by itself.
	Forward []string `toml:"forward"`
	// InitData is an init-data TOML file for pods that carry no
	// io.katacontainers.config.runtime.cc_init_data annotation.
	InitData string `toml:"init_data"`
	// BootTimeout bounds the guest's boot and attestation (default 5m).
	BootTimeout duration `toml:"boot_timeout"`
	// GuestInit is the coffer binary the guest's initramfs is made of
	// (default: this executable; it must be static).
	GuestInit string `toml:"guest_init"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	raw, err := bounded.ReadFile(path, maxConfig)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("coffer shim: no configuration at %s (write one, or name it in the runtime's options ConfigPath): %w", path, spec.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("coffer shim: %w", err)
	}
	return ParseConfig(raw)
}

// ParseConfig parses a configuration; unknown keys are refused by name.
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(raw), &c)
	if err != nil {
		return nil, fmt.Errorf("coffer shim: configuration: %v: %w", err, spec.ErrUnsupported)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return nil, fmt.Errorf("coffer shim: configuration: unknown key %q: %w", u[0].String(), spec.ErrUnsupported)
	}
	if c.KBS == "" || c.KernelDir == "" || c.StateDir == "" {
		return nil, fmt.Errorf("coffer shim: configuration needs kbs, kernel_dir and state_dir: %w", spec.ErrUnsupported)
	}
	if c.BootTimeout.Duration <= 0 {
		c.BootTimeout.Duration = 5 * time.Minute
	}
	return &c, nil
}

package keyprovider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// EnvConfig names the environment variable ocicrypt reads the provider
// configuration path from. The library never reads it; the CLI does.
const EnvConfig = "OCICRYPT_KEYPROVIDER_CONFIG"

// DefaultTimeout bounds one provider call (command run or gRPC round trip)
// when the caller's context has no deadline.
const DefaultTimeout = 2 * time.Minute

// Config is a parsed OCICRYPT_KEYPROVIDER_CONFIG file:
//
//	{"key-providers": {
//	   "NAME": {"cmd": {"path": "/usr/bin/x", "args": ["a"]}},
//	   "OTHER": {"grpc": "127.0.0.1:50000", "grpc-tls": {"root-ca-file": "..."}}}}
type Config struct {
	providers map[string]Provider
	// Timeout bounds each provider call when the context has no deadline;
	// zero means DefaultTimeout.
	Timeout time.Duration
}

// Provider is one entry of the configuration: exactly one of Command and
// GRPC is set.
type Provider struct {
	Command *Command `json:"cmd,omitempty"`
	GRPC    string   `json:"grpc,omitempty"`
	GRPCTLS *GRPCTLS `json:"grpc-tls,omitempty"`
}

// Command is a "cmd" provider: the program is run once per operation with
// the request on stdin and the response on stdout.
type Command struct {
	Path string   `json:"path,omitempty"`
	Args []string `json:"args,omitempty"`
}

// GRPCTLS is ocicrypt's optional TLS setting of a "grpc" provider. Without
// it the connection is plaintext (as in ocicrypt).
type GRPCTLS struct {
	RootCAFile         string `json:"root-ca-file,omitempty"`
	CertFile           string `json:"cert-file,omitempty"`
	KeyFile            string `json:"key-file,omitempty"`
	ServerName         string `json:"server-name,omitempty"`
	InsecureSkipVerify bool   `json:"insecure-skip-verify,omitempty"`
}

type fileFormat struct {
	KeyProviders map[string]Provider `json:"key-providers"`
}

// LoadConfig reads and parses a keyprovider configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading keyprovider config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("keyprovider config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses the JSON of a keyprovider configuration file. Every
// provider must name exactly one transport.
func ParseConfig(data []byte) (*Config, error) {
	var f fileFormat
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parsing keyprovider config: %w", err)
	}
	c := &Config{providers: make(map[string]Provider, len(f.KeyProviders))}
	for name, p := range f.KeyProviders {
		if err := validName(name); err != nil {
			return nil, err
		}
		switch {
		case p.Command != nil && p.GRPC != "":
			return nil, fmt.Errorf("keyprovider %q names both cmd and grpc", name)
		case p.Command != nil:
			if p.Command.Path == "" {
				return nil, fmt.Errorf("keyprovider %q: cmd without path", name)
			}
		case p.GRPC != "":
		default:
			return nil, fmt.Errorf("keyprovider %q names neither cmd nor grpc: %w", name, spec.ErrUnsupported)
		}
		c.providers[name] = p
	}
	return c, nil
}

// validName rejects names that cannot be an annotation suffix.
func validName(name string) error {
	if name == "" || strings.ContainsAny(name, ":,= \t\r\n/") {
		return fmt.Errorf("invalid keyprovider name %q", name)
	}
	return nil
}

// Names returns the configured provider names, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.providers))
	for n := range c.providers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Provider returns the configuration of one provider.
func (c *Config) Provider(name string) (Provider, bool) {
	p, ok := c.providers[name]
	return p, ok
}

func (c *Config) lookup(name string) (Provider, error) {
	if c == nil {
		return Provider{}, fmt.Errorf("keyprovider %q: no keyprovider config (set %s): %w", name, EnvConfig, spec.ErrNotFound)
	}
	p, ok := c.providers[name]
	if !ok {
		return Provider{}, fmt.Errorf("keyprovider %q is not in the keyprovider config: %w", name, spec.ErrNotFound)
	}
	return p, nil
}

func (c *Config) timeout() time.Duration {
	if c == nil || c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

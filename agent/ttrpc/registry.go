package ttrpc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// Bounds on registry documents fetched from the broker or the guest.
const (
	maxRegistryAuth   = 1 << 20
	maxRegistryConfig = 256 << 10
	maxRegistries     = 256
	maxMirrors        = 16
)

// registryAuth fetches the docker config.json named by the credentials URI
// for this pull and returns an in-memory keychain over it (nil without a
// URI). The credentials live only in this pull's memory: nothing is written
// to the guest's disk.
func (s *Server) registryAuth(ctx context.Context) (authn.Keychain, error) {
	if s.o.credsURI == "" {
		return nil, nil
	}
	data, err := s.fetch(ctx, s.o.credsURI, maxRegistryAuth)
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", s.o.credsURI, err)
	}
	defer clear(data)
	return ParseDockerConfig(data)
}

// ParseDockerConfig parses a docker config.json's "auths" (each entry an
// "auth" of base64 user:password, or "username" and "password", or an
// "identitytoken") into a keychain matching registries by host.
func ParseDockerConfig(data []byte) (authn.Keychain, error) {
	if len(data) > maxRegistryAuth {
		return nil, badInput("registry credentials of %d bytes (at most %d)", len(data), maxRegistryAuth)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, badInput("registry credentials are not a docker config.json: %v", err)
	}
	k := dockerKeychain{}
	for host, a := range cfg.Auths {
		c := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, badInput("registry credentials for %q: auth is not base64", host)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, badInput("registry credentials for %q: auth is not user:password", host)
			}
			c.Username, c.Password = u, p
		}
		k[normalizeRegistryHost(host)] = c
	}
	return k, nil
}

// normalizeRegistryHost turns config.json keys ("https://index.docker.io/v1/",
// "reg.example:5000") into go-containerregistry's registry names.
func normalizeRegistryHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if h == "docker.io" || h == "registry-1.docker.io" {
		h = name.DefaultRegistry
	}
	return h
}

type dockerKeychain map[string]authn.AuthConfig

// Resolve implements authn.Keychain.
func (k dockerKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := k[r.RegistryStr()]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

// RegistryConfig is image-rs's registry configuration (the
// containers-registries.conf v2 subset CDH's registry_configuration_uri and
// [image.registry_config] carry).
type RegistryConfig struct {
	UnqualifiedSearch []string   `toml:"unqualified-search-registries" json:"unqualified-search-registries"`
	Registries        []Registry `toml:"registry" json:"registry"`
}

// Registry is one [[registry]] entry.
type Registry struct {
	Prefix   string `toml:"prefix" json:"prefix"`
	Location string `toml:"location" json:"location"`
	Blocked  bool   `toml:"blocked" json:"blocked"`
	Insecure bool   `toml:"insecure" json:"insecure"`
	// MirrorByDigestOnly: mirrors serve only digest references.
	MirrorByDigestOnly bool     `toml:"mirror-by-digest-only" json:"mirror-by-digest-only"`
	Mirrors            []Mirror `toml:"mirror" json:"mirror"`
}

// Mirror is one [[registry.mirror]] entry. PullFromMirror is "all" (or
// empty), "digest-only" or "tag-only", as containers-registries.conf(5)
// defines it.
type Mirror struct {
	Location       string `toml:"location" json:"location"`
	Insecure       bool   `toml:"insecure" json:"insecure"`
	PullFromMirror string `toml:"pull-from-mirror" json:"pull-from-mirror"`
}

// ParseRegistryConfig parses a registry configuration (TOML).
func ParseRegistryConfig(data []byte) (*RegistryConfig, error) {
	if len(data) > maxRegistryConfig {
		return nil, badInput("registry configuration of %d bytes (at most %d)", len(data), maxRegistryConfig)
	}
	var rc RegistryConfig
	if _, err := toml.Decode(string(data), &rc); err != nil {
		return nil, badInput("registry configuration: %v", err)
	}
	if len(rc.Registries) > maxRegistries {
		return nil, badInput("registry configuration has %d registries (at most %d)", len(rc.Registries), maxRegistries)
	}
	for _, r := range rc.Registries {
		if len(r.Mirrors) > maxMirrors {
			return nil, badInput("registry %q has %d mirrors (at most %d)", r.Prefix+r.Location, len(r.Mirrors), maxMirrors)
		}
		for _, m := range r.Mirrors {
			switch m.PullFromMirror {
			case "", "all", "digest-only", "tag-only":
			default:
				return nil, badInput("registry %q: mirror %q: pull-from-mirror %q (want all, digest-only or tag-only)", r.Prefix+r.Location, m.Location, m.PullFromMirror)
			}
		}
	}
	return &rc, nil
}

// Resolve applies the configuration to a registry reference and returns
// the primary source: the longest matching prefix (or location, when no
// prefix is given) decides; a blocked one refuses the pull, a location
// different from the prefix rewrites the reference.
func (rc *RegistryConfig) Resolve(ref transport.Reference) (transport.Reference, error) {
	src, err := rc.Sources(ref)
	if err != nil {
		return nil, err
	}
	return src[len(src)-1], nil
}

// Sources returns where to pull ref from, in order, as containers/image
// does: the matching registry's mirrors that serve this kind of reference
// (mirror-by-digest-only, pull-from-mirror), then the primary location.
// A blocked registry refuses the pull (its mirrors too).
func (rc *RegistryConfig) Sources(ref transport.Reference) ([]transport.Reference, error) {
	n, ok := transport.DockerName(ref)
	if !ok {
		return []transport.Reference{ref}, nil
	}
	repo := imageName(n)
	var best *Registry
	bestLen := -1
	for i := range rc.Registries {
		r := &rc.Registries[i]
		p := r.Prefix
		if p == "" {
			p = r.Location
		}
		if p == "" || !prefixMatch(repo, p) || len(p) <= bestLen {
			continue
		}
		best, bestLen = r, len(p)
	}
	if best == nil {
		return []transport.Reference{ref}, nil
	}
	if best.Blocked {
		return nil, fmt.Errorf("image %s: registry %q is blocked by the registry configuration: %w", ref, best.Prefix+best.Location, spec.ErrPolicyDenied)
	}
	prefix := best.Prefix
	if prefix == "" {
		prefix = best.Location
	}
	_, isDigest := n.(name.Digest)
	rewrite := func(loc string) (transport.Reference, error) {
		newRepo := strings.TrimSuffix(loc, "/") + strings.TrimPrefix(repo, normalizePrefix(prefix))
		sep := ":"
		if isDigest {
			sep = "@"
		}
		return transport.Parse("docker://" + newRepo + sep + n.Identifier())
	}
	var out []transport.Reference
	for _, m := range best.Mirrors {
		switch {
		case m.Location == "",
			isDigest && m.PullFromMirror == "tag-only",
			!isDigest && (best.MirrorByDigestOnly || m.PullFromMirror == "digest-only"):
			continue
		}
		r, err := rewrite(m.Location)
		if err != nil {
			return nil, badInput("registry %q: mirror %q: %v", prefix, m.Location, err)
		}
		out = append(out, r)
	}
	primary := ref
	if best.Prefix != "" && best.Location != "" && best.Location != best.Prefix {
		r, err := rewrite(best.Location)
		if err != nil {
			return nil, err
		}
		primary = r
	}
	return append(out, primary), nil
}

// imageName spells a reference's repository as containers/image does
// (docker.io/library/nginx, not index.docker.io/…), the form registry
// configurations are written in.
func imageName(n name.Reference) string {
	host := n.Context().RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return host + "/" + n.Context().RepositoryStr()
}

// prefixMatch reports whether repo is p or lies below it; p's registry is
// spelled as imageName spells it.
func prefixMatch(repo, p string) bool {
	p = normalizePrefix(p)
	return repo == p || strings.HasPrefix(repo, p+"/")
}

// normalizePrefix spells Docker Hub's aliases as docker.io.
func normalizePrefix(p string) string {
	p = strings.TrimSuffix(p, "/")
	host, rest, _ := strings.Cut(p, "/")
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		host = "docker.io"
	}
	if rest == "" {
		return host
	}
	return host + "/" + rest
}

// registrySources fetches the registry configuration (if any) for this
// pull and returns the sources to try for ref, in order.
func (s *Server) registrySources(ctx context.Context, ref transport.Reference) ([]transport.Reference, error) {
	if s.o.regConfigURI == "" {
		if s.o.regConfig != nil {
			return s.o.regConfig.Sources(ref)
		}
		return []transport.Reference{ref}, nil
	}
	data, err := s.fetch(ctx, s.o.regConfigURI, maxRegistryConfig)
	if err != nil {
		return nil, fmt.Errorf("registry configuration %s: %w", s.o.regConfigURI, err)
	}
	rc, err := ParseRegistryConfig(data)
	if err != nil {
		return nil, err
	}
	return rc.Sources(ref)
}

// nextSourceAfter reports whether a pull that failed with err should try
// the next source: a source that is unreachable, lacks the image or
// refuses the credentials, yes; a policy, signature, integrity or key
// refusal is the image's verdict, not the source's, and ends the pull.
func nextSourceAfter(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, final := range []error{spec.ErrPolicyDenied, spec.ErrIntegrity, spec.ErrNoKey, errBadInput} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

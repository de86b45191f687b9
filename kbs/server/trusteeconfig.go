package server

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// trustee's kbs-config.toml (the layout of trustee v0.11 to v0.14:
// [http_server], [admin] auth_public_key, [attestation_token],
// [attestation_service], [policy_engine], [[plugins]]) read into Config.
// Every key trustee documents for that layout is known: those coffer acts
// on are mapped, those that only tune trustee's own implementation are
// accepted and named in Config.Notes, and those that would change what is
// trusted in a way coffer cannot honour (an external attestation service,
// JWK sets, a plugin other than the LocalFs resource store) are refused,
// naming the key. Any other key is refused with its name.

// trusteeTables are the top-level tables that mark the trustee layout.
var trusteeTables = []string{"http_server", "admin", "attestation_token", "attestation_service", "policy_engine", "plugins"}

type trusteeConfig struct {
	HTTPServer struct {
		Sockets            []string `toml:"sockets"`
		PrivateKey         string   `toml:"private_key"`
		Certificate        string   `toml:"certificate"`
		InsecureHTTP       bool     `toml:"insecure_http"`
		PayloadRequestSize *int64   `toml:"payload_request_size"` // MiB
		WorkerCount        *int     `toml:"worker_count"`
	} `toml:"http_server"`
	Admin struct {
		AuthPublicKey string `toml:"auth_public_key"`
		InsecureAPI   bool   `toml:"insecure_api"`
	} `toml:"admin"`
	AttestationToken struct {
		Type              string   `toml:"type"`
		InsecureKey       bool     `toml:"insecure_key"`
		InsecureAPI       bool     `toml:"insecure_api"`
		TrustedCertsPaths []string `toml:"trusted_certs_paths"`
		TrustedJWKSets    []string `toml:"trusted_jwk_sets"`
		ExtraTeekeyPaths  []string `toml:"extra_teekey_paths"`
	} `toml:"attestation_token"`
	AttestationService struct {
		Type         string   `toml:"type"`
		WorkDir      string   `toml:"work_dir"`
		PolicyEngine string   `toml:"policy_engine"`
		Timeout      *int     `toml:"timeout"`
		PolicyIDs    []string `toml:"policy_ids"`
		TokenBroker  struct {
			Type        string `toml:"type"`
			DurationMin int    `toml:"duration_min"`
			IssuerName  string `toml:"issuer_name"`
			PolicyDir   string `toml:"policy_dir"`
			Signer      struct {
				KeyPath  string `toml:"key_path"`
				CertPath string `toml:"cert_path"`
			} `toml:"signer"`
		} `toml:"attestation_token_broker"`
		RVPS struct {
			Type    string `toml:"type"`
			Address string `toml:"address"`
			Storage struct {
				Type     string `toml:"type"`
				FilePath string `toml:"file_path"`
			} `toml:"storage"`
			StoreType string `toml:"store_type"`
		} `toml:"rvps_config"`
		// coco_as_grpc and intel_ta keys: known, and refused with the type.
		ASAddr               string `toml:"as_addr"`
		PoolSize             int    `toml:"pool_size"`
		BaseURL              string `toml:"base_url"`
		APIKey               string `toml:"api_key"`
		CertsFile            string `toml:"certs_file"`
		AllowUnmatchedPolicy bool   `toml:"allow_unmatched_policy"`
	} `toml:"attestation_service"`
	PolicyEngine struct {
		PolicyPath string `toml:"policy_path"`
	} `toml:"policy_engine"`
	Plugins []map[string]any `toml:"plugins"`
}

// isTrusteeLayout reports whether a decoded file uses trustee's tables.
func isTrusteeLayout(md toml.MetaData) bool {
	for _, k := range md.Keys() {
		if len(k) == 0 {
			continue
		}
		for _, t := range trusteeTables {
			if k[0] == t {
				return true
			}
		}
	}
	return false
}

// loadTrusteeConfig maps trustee's layout onto DefaultConfig.
func loadTrusteeConfig(path string, raw []byte) (Config, error) {
	c := DefaultConfig()
	var tc trusteeConfig
	md, err := toml.Decode(string(raw), &tc)
	if err != nil {
		return c, fmt.Errorf("reading kbs config %s: %w", path, err)
	}
	fail := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("kbs config %s (trustee layout): %s", path, fmt.Sprintf(format, a...))
	}
	if und := md.Undecoded(); len(und) > 0 {
		var names []string
		for _, k := range und {
			if k[0] != "plugins" { // checked below, per plugin
				names = append(names, k.String())
			}
		}
		if len(names) > 0 {
			return fail("unknown key %s", strings.Join(names, ", "))
		}
	}
	note := func(format string, a ...any) { c.Notes = append(c.Notes, fmt.Sprintf(format, a...)) }

	h := tc.HTTPServer
	switch len(h.Sockets) {
	case 0: // trustee's default socket is coffer's: 127.0.0.1:8080
	case 1:
		c.Listen = h.Sockets[0]
	default:
		return fail("http_server.sockets: coffer listens on one address, got %d", len(h.Sockets))
	}
	if h.InsecureHTTP {
		if h.PrivateKey != "" || h.Certificate != "" {
			note("http_server.insecure_http = true: private_key and certificate are not used (plain HTTP, as trustee)")
		}
	} else {
		if h.PrivateKey == "" || h.Certificate == "" {
			return fail("http_server: insecure_http is false (trustee's default) but private_key and certificate are not both set")
		}
		c.TLSKey, c.TLSCert = h.PrivateKey, h.Certificate
	}
	if h.PayloadRequestSize != nil {
		if *h.PayloadRequestSize <= 0 || *h.PayloadRequestSize > 1<<10 {
			return fail("http_server.payload_request_size = %d: want 1 to 1024 (MiB)", *h.PayloadRequestSize)
		}
		c.MaxBodyBytes = *h.PayloadRequestSize << 20
	}
	if h.WorkerCount != nil {
		note("http_server.worker_count is not used (Go schedules requests itself)")
	}

	if tc.Admin.AuthPublicKey != "" {
		c.AdminPublicKeys = []string{tc.Admin.AuthPublicKey}
	}
	c.InsecureAdmin = tc.Admin.InsecureAPI

	at := tc.AttestationToken
	if len(at.TrustedJWKSets) > 0 {
		return fail("attestation_token.trusted_jwk_sets is not supported: give the token signers' CA certificates in trusted_certs_paths")
	}
	if len(at.ExtraTeekeyPaths) > 0 {
		return fail("attestation_token.extra_teekey_paths is not supported")
	}
	c.TrustedTokenCerts = at.TrustedCertsPaths

	as := tc.AttestationService
	switch as.Type {
	case "", "coco_as_builtin":
	default:
		return fail("attestation_service.type = %q: coffer verifies evidence itself (coco_as_builtin); an external attestation service is not supported", as.Type)
	}
	if as.WorkDir != "" {
		note("attestation_service.work_dir is not used (policies and reference values: state_dir or the store)")
	}
	if as.PolicyEngine != "" && as.PolicyEngine != "opa" {
		return fail("attestation_service.policy_engine = %q: want opa (Rego)", as.PolicyEngine)
	}
	tb := as.TokenBroker
	switch tb.Type {
	case "", "Ear":
	case "Simple":
		note("attestation_service.attestation_token_broker.type = Simple: coffer issues EAR tokens")
	default:
		return fail("attestation_service.attestation_token_broker.type = %q: want Ear or Simple", tb.Type)
	}
	if tb.DurationMin < 0 {
		return fail("attestation_service.attestation_token_broker.duration_min = %d", tb.DurationMin)
	} else if tb.DurationMin > 0 {
		c.TokenTTL = time.Duration(tb.DurationMin) * time.Minute
	}
	if tb.PolicyDir != "" || tb.IssuerName != "" {
		note("attestation_service.attestation_token_broker: policy_dir and issuer_name are not used")
	}
	c.TokenKey, c.TokenCert = tb.Signer.KeyPath, tb.Signer.CertPath
	switch as.RVPS.Type {
	case "", "BuiltIn":
	default:
		return fail("attestation_service.rvps_config.type = %q: coffer keeps reference values itself (BuiltIn)", as.RVPS.Type)
	}
	if as.RVPS.Storage.Type != "" || as.RVPS.StoreType != "" {
		note("attestation_service.rvps_config storage is not used (reference values: state_dir or the store)")
	}

	if p := tc.PolicyEngine.PolicyPath; p != "" {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			note("policy_engine.policy_path %s does not exist: the broker starts with its default resource policy", p)
		} else {
			c.ResourcePolicyFile = p
		}
	}

	for i, pl := range tc.Plugins {
		name, _ := pl["name"].(string)
		typ, _ := pl["type"].(string)
		if name != "resource" {
			return fail("plugins[%d]: plugin %q is not supported (coffer serves resources only)", i, name)
		}
		if typ != "LocalFs" {
			return fail("plugins[%d]: resource plugin type %q is not supported (want LocalFs)", i, typ)
		}
		var extra []string
		for k := range pl {
			if k != "name" && k != "type" && k != "dir_path" {
				extra = append(extra, "plugins["+fmt.Sprint(i)+"]."+k)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			return fail("unknown key %s", strings.Join(extra, ", "))
		}
		dir, _ := pl["dir_path"].(string)
		if dir == "" {
			return fail("plugins[%d]: the LocalFs resource plugin needs dir_path", i)
		}
		c.Store, c.Repository = "fs", dir
	}
	return c, nil
}

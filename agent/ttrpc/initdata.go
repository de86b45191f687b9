package ttrpc

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// AnnotationInitData is the pod annotation Kata carries init-data in:
// base64 (standard) of the gzip of the init-data TOML.
const AnnotationInitData = "io.katacontainers.config.runtime.cc_init_data"

// Bounds on init-data: the TOML itself is bounded by attest.MaxInitDataBytes
// (checked on the decompressed stream, never trusting a declared size); the
// annotation by what base64 of a gzip of that could be, generously.
const (
	MaxInitData           = attest.MaxInitDataBytes
	MaxInitDataAnnotation = 4*MaxInitData/3 + 1024
	maxInitDataFile       = 64 << 10 // aa.toml, cdh.toml, policy.rego each
)

// InitData is a decoded init-data document.
type InitData struct {
	Version   string
	Algorithm string
	// Data holds the files: aa.toml, cdh.toml, policy.rego.
	Data map[string]string
	// TOML is the document as delivered; Digest its hash by Algorithm
	// (what TDX mr_config_id, SNP host_data or TPM PCR 8 bind).
	TOML   []byte
	Digest []byte
}

// DecodeAnnotation decodes the value of the cc_init_data annotation:
// base64, then gzip, then the TOML (ParseInitData). The decompressed size
// is bounded while it is read, so a gzip bomb stops at MaxInitData+1 bytes.
func DecodeAnnotation(v string) (*InitData, error) {
	if len(v) > MaxInitDataAnnotation {
		return nil, badInput("init-data annotation of %d bytes (at most %d)", len(v), MaxInitDataAnnotation)
	}
	gz, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return nil, badInput("init-data annotation is not base64: %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, badInput("init-data annotation is not gzip: %v", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxInitData+1))
	if err != nil {
		return nil, badInput("init-data annotation: gzip: %v", err)
	}
	if len(raw) > MaxInitData {
		return nil, badInput("init-data decompresses to more than %d bytes", MaxInitData)
	}
	return ParseInitData(raw)
}

// EncodeAnnotation returns the annotation value of an init-data TOML (as
// Kata's tooling makes it: gzip, then standard base64).
func EncodeAnnotation(toml []byte) (string, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(toml); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// ParseInitData parses an init-data TOML (trustee's kbs/docs/initdata.md:
// version 0.1.0, algorithm, [data] of strings) and computes its digest.
// Size and nesting are checked before parsing (initDataDigest).
func ParseInitData(raw []byte) (*InitData, error) {
	digest, err := initDataDigest(raw)
	if err != nil {
		return nil, badInput("%v", err)
	}
	var doc struct {
		Version   string            `toml:"version"`
		Algorithm string            `toml:"algorithm"`
		Data      map[string]string `toml:"data"`
	}
	if _, err := toml.Decode(string(raw), &doc); err != nil {
		return nil, badInput("init-data: %v", err)
	}
	if doc.Version != "0.1.0" {
		return nil, badInput("init-data version %q, want 0.1.0", doc.Version)
	}
	for k, v := range doc.Data {
		if len(v) > maxInitDataFile {
			return nil, badInput("init-data file %q of %d bytes (at most %d)", k, len(v), maxInitDataFile)
		}
	}
	return &InitData{Version: doc.Version, Algorithm: doc.Algorithm, Data: doc.Data, TOML: raw, Digest: digest}, nil
}

// initDataDigest is the one place this package reaches the init-data
// digest (kbs/attest's, bounds and shape checks included); repoint it when
// init-data moves to a package of its own.
func initDataDigest(raw []byte) ([]byte, error) {
	return attest.InitDataDigest(&protocol.InitData{Format: "toml", Body: string(raw)})
}

// AgentConfig is what init-data's aa.toml and cdh.toml configure.
type AgentConfig struct {
	// KBSURL and KBSCert are the broker (cdh.toml [kbc] url and kbs_cert,
	// else aa.toml [token_configs.kbs] url and cert).
	KBSURL, KBSCert string
	// Options configure the CDH and AA services: image security policy,
	// registry credentials and configuration, event log, coco_as.
	Options []Option
	// InitData is the document (set by ReadInitData).
	InitData *InitData
	// AgentPolicy is policy.rego, kata-agent's own API policy, which kata-agent
	// (not coffer) enforces; kept for the caller.
	AgentPolicy string
}

// HTTPClient returns an HTTP client that trusts only KBSCert (nil when no
// certificate is given, for the default roots).
func (c *AgentConfig) HTTPClient() (*http.Client, error) {
	if c.KBSCert == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.KBSCert)) {
		return nil, badInput("init-data kbs_cert holds no PEM certificate")
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:           nil,
	}}, nil
}

// Config reads aa.toml and cdh.toml of the init-data (both optional).
// Unknown keys are ignored, as guest-components' serde does.
func (d *InitData) Config() (*AgentConfig, error) {
	var cdhDoc struct {
		AA struct {
			Socket string `toml:"aa_socket"`
		} `toml:"aa"`
		KBC struct {
			URL     string `toml:"url"`
			KBSCert string `toml:"kbs_cert"`
		} `toml:"kbc"`
		Image struct {
			PolicyURI      string          `toml:"image_security_policy_uri"`
			Policy         string          `toml:"image_security_policy"`
			CredentialsURI string          `toml:"authenticated_registry_credentials_uri"`
			RegistryURI    string          `toml:"registry_configuration_uri"`
			Registry       *RegistryConfig `toml:"registry_config"`
		} `toml:"image"`
	}
	var aaDoc struct {
		TokenConfigs struct {
			CoCoAS struct {
				URL string `toml:"url"`
			} `toml:"coco_as"`
			KBS struct {
				URL  string `toml:"url"`
				Cert string `toml:"cert"`
			} `toml:"kbs"`
		} `toml:"token_configs"`
		Eventlog struct {
			InitPCR *uint64 `toml:"init_pcr"`
			Enable  bool    `toml:"enable_eventlog"`
		} `toml:"eventlog_config"`
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"cdh.toml", &cdhDoc}, {"aa.toml", &aaDoc}} {
		text, ok := d.Data[f.name]
		if !ok {
			continue
		}
		if err := attestShape(text); err != nil {
			return nil, badInput("init-data %s: %v", f.name, err)
		}
		if _, err := toml.Decode(text, f.v); err != nil {
			return nil, badInput("init-data %s: %v", f.name, err)
		}
	}
	c := &AgentConfig{KBSURL: cdhDoc.KBC.URL, KBSCert: cdhDoc.KBC.KBSCert, AgentPolicy: d.Data["policy.rego"]}
	if c.KBSURL == "" {
		c.KBSURL, c.KBSCert = aaDoc.TokenConfigs.KBS.URL, aaDoc.TokenConfigs.KBS.Cert
	}
	if c.KBSURL != "" && !strings.HasPrefix(c.KBSURL, "http://") && !strings.HasPrefix(c.KBSURL, "https://") {
		return nil, badInput("init-data broker url %q: want http(s)://host[:port]", c.KBSURL)
	}
	if cdhDoc.AA.Socket != "" {
		c.Options = append(c.Options, WithAASocket(cdhDoc.AA.Socket))
	}
	img := cdhDoc.Image
	if img.PolicyURI != "" {
		c.Options = append(c.Options, WithImagePolicy(img.PolicyURI))
	} else if img.Policy != "" {
		c.Options = append(c.Options, WithImagePolicyDocument([]byte(img.Policy)))
	}
	if img.CredentialsURI != "" {
		c.Options = append(c.Options, WithRegistryCredentials(img.CredentialsURI))
	}
	if img.RegistryURI != "" {
		c.Options = append(c.Options, WithRegistryConfig(img.RegistryURI))
	} else if img.Registry != nil {
		if len(img.Registry.Registries) > maxRegistries {
			return nil, badInput("init-data registry_config has %d registries (at most %d)", len(img.Registry.Registries), maxRegistries)
		}
		c.Options = append(c.Options, WithRegistryConfigDocument(img.Registry))
	}
	if aaDoc.TokenConfigs.CoCoAS.URL != "" {
		c.Options = append(c.Options, WithTokenConfig(TokenConfig{CoCoASURL: aaDoc.TokenConfigs.CoCoAS.URL}))
	}
	if aaDoc.Eventlog.Enable {
		pcr := uint64(DefaultPCR)
		if aaDoc.Eventlog.InitPCR != nil {
			pcr = *aaDoc.Eventlog.InitPCR
		}
		c.Options = append(c.Options, WithEventLog(DefaultEventLog, pcr, nil))
	}
	return c, nil
}

// attestShape bounds an embedded TOML file before it is parsed: the
// document's nesting check skipped it (it is a string there), so it gets
// the same size and nesting checks of its own, through initDataDigest
// (aa.toml and cdh.toml have no top-level "algorithm" to trip it).
func attestShape(text string) error {
	if len(text) > maxInitDataFile {
		return fmt.Errorf("%d bytes, more than %d", len(text), maxInitDataFile)
	}
	_, err := initDataDigest([]byte(text))
	return err
}

// ReadInitData reads init-data from a file holding either the annotation
// value (base64 of gzip, as Kata carries it) or the TOML itself, and
// returns the configuration it carries (with the document in InitData).
func ReadInitData(path string) (*AgentConfig, error) {
	data, err := readBounded(path, MaxInitDataAnnotation)
	if err != nil {
		return nil, err
	}
	var d *InitData
	// "H4sI" is base64 of gzip's magic and method bytes.
	if t := bytes.TrimSpace(data); bytes.HasPrefix(t, []byte("H4sI")) {
		d, err = DecodeAnnotation(string(t))
	} else {
		d, err = ParseInitData(data)
	}
	if err != nil {
		return nil, err
	}
	c, err := d.Config()
	if err != nil {
		return nil, err
	}
	c.InitData = d
	return c, nil
}

// ClientOptions are the broker client's options init-data implies: send
// the init-data document with each attestation (when read by ReadInitData),
// and trust only kbs_cert, when given.
func (c *AgentConfig) ClientOptions() ([]client.Option, error) {
	var opts []client.Option
	if c.InitData != nil {
		opts = append(opts, client.WithInitData(c.InitData.TOML))
	}
	hc, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	if hc != nil {
		opts = append(opts, client.WithHTTPClient(hc))
	}
	return opts, nil
}

// ReadConfigFiles reads an aa.toml and a cdh.toml as kata-agent writes them
// from init-data (/run/aa.toml, /run/cdh.toml; either path may be "") and
// returns the configuration they carry, as ReadInitData would; with a
// cdh.toml, pulls are recorded through the AA at DefaultAASocket unless
// its [aa] aa_socket names another (guest-components' default).
func ReadConfigFiles(aaPath, cdhPath string) (*AgentConfig, error) {
	d := &InitData{Data: map[string]string{}}
	for _, f := range []struct{ name, path string }{{"aa.toml", aaPath}, {"cdh.toml", cdhPath}} {
		if f.path == "" {
			continue
		}
		b, err := readBounded(f.path, maxInitDataFile)
		if err != nil {
			return nil, err
		}
		d.Data[f.name] = string(b)
	}
	c, err := d.Config()
	if err != nil {
		return nil, err
	}
	if cdhPath != "" {
		// A standalone CDH records its pulls through the AA at
		// guest-components' default socket unless cdh.toml names another
		// (the later option wins).
		c.Options = append([]Option{WithAASocket(DefaultAASocket)}, c.Options...)
	}
	return c, nil
}

// LoadConfig reads the agent's configuration from init-data (initData: the
// annotation value or the TOML, see ReadInitData) or from kata-agent's
// aa.toml and cdh.toml (ReadConfigFiles); the two sources exclude each
// other, and with neither it returns nil.
func LoadConfig(initData, aaPath, cdhPath string) (*AgentConfig, error) {
	switch {
	case initData != "" && aaPath+cdhPath != "":
		return nil, badInput("init-data and aa.toml/cdh.toml files exclude each other")
	case initData != "":
		return ReadInitData(initData)
	case aaPath+cdhPath != "":
		return ReadConfigFiles(aaPath, cdhPath)
	}
	return nil, nil
}

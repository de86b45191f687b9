package recipients

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// Names of the built-in recipient schemes (the schemes table has them all,
// in the order their wrappers are returned; providers last, in the order
// given).
const (
	SchemeJWE      = "jwe"
	SchemePKCS7    = "pkcs7"
	SchemePGP      = "pgp"
	SchemeProvider = "provider"
)

// Recipient is one parsed --recipient argument.
type Recipient struct {
	// Scheme is the name of a scheme of the table (jwe, pkcs7, pgp, mlkem,
	// provider).
	Scheme string
	// File is the key or certificate file (every scheme but provider).
	File string
	// Provider and Params are set for provider:NAME[:PARAMS].
	Provider, Params string
}

// ParseRecipient parses "SCHEME:VALUE" for a scheme of the table
// ("jwe:FILE", "pkcs7:FILE", "pgp:FILE", "mlkem:FILE",
// "provider:NAME[:PARAMS]"). An unknown scheme is an error wrapping
// spec.ErrUnsupported that names the accepted ones.
func ParseRecipient(s string) (Recipient, error) {
	scheme, value, ok := strings.Cut(s, ":")
	if !ok {
		return Recipient{}, fmt.Errorf("recipient %q has no scheme: want %s: %w", s, accepted(), spec.ErrUnsupported)
	}
	if scheme == SchemeProvider {
		name, params, err := cutProvider(value)
		if err != nil {
			return Recipient{}, fmt.Errorf("recipient %q: %w", s, err)
		}
		return Recipient{Scheme: scheme, Provider: name, Params: params}, nil
	}
	if lookup(scheme) == nil {
		return Recipient{}, fmt.Errorf("unknown recipient scheme %q in %q: want %s: %w", scheme, s, accepted(), spec.ErrUnsupported)
	}
	if value == "" {
		return Recipient{}, fmt.Errorf("recipient %q: missing file name after %s:", s, scheme)
	}
	return Recipient{Scheme: scheme, File: value}, nil
}

// cutProvider splits a provider recipient's NAME[:PARAMS].
func cutProvider(value string) (name, params string, err error) {
	name, params, _ = strings.Cut(value, ":")
	return name, params, validProviderName(name)
}

func validProviderName(name string) error {
	if name == "" {
		return fmt.Errorf("missing provider name (provider:NAME[:PARAMS])")
	}
	if strings.ContainsAny(name, ",= \t\r\n/") {
		return fmt.Errorf("invalid provider name %q", name)
	}
	return nil
}

// PasswordSource says where the password of a key file comes from.
type PasswordSource int

// Password sources of a --key argument.
const (
	PasswordNone    PasswordSource = iota // FILE
	PasswordLiteral                       // FILE:pass=PASSWORD
	PasswordFile                          // FILE:file=PASSFILE
	PasswordFD                            // FILE:fd=N
)

// KeySpec is one parsed --key argument. Its String method never shows the
// password.
type KeySpec struct {
	// File is the private key, certificate or OpenPGP secret key file.
	File string
	// Source says which of Password, PasswordFile, FD is set.
	Source       PasswordSource
	Password     []byte
	PasswordFile string
	FD           int
	// Provider and Params are set for provider:NAME[:PARAMS].
	Provider, Params string
}

// String describes the spec without its password.
func (k KeySpec) String() string {
	switch {
	case k.Provider != "":
		return "provider:" + k.Provider
	case k.Source == PasswordLiteral:
		return k.File + ":pass=…"
	case k.Source == PasswordFile:
		return k.File + ":file=" + k.PasswordFile
	case k.Source == PasswordFD:
		return k.File + ":fd=" + strconv.Itoa(k.FD)
	}
	return k.File
}

// ParseKeySpec parses a --key argument in the skopeo/ocicrypt forms:
// "FILE", "FILE:pass=PASSWORD", "FILE:file=PASSFILE", "FILE:fd=N" and
// "provider:NAME[:PARAMS]". The password part starts at the first ':'
// followed by pass=, file= or fd=, so a password may contain ':'. Errors
// never contain the password.
func ParseKeySpec(s string) (KeySpec, error) {
	if rest, ok := strings.CutPrefix(s, SchemeProvider+":"); ok {
		name, params, _ := strings.Cut(rest, ":")
		if err := validProviderName(name); err != nil {
			return KeySpec{}, fmt.Errorf("key provider:…: %w", err)
		}
		return KeySpec{Provider: name, Params: params}, nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		file, pw := s[:i], s[i+1:]
		switch {
		case strings.HasPrefix(pw, "pass="):
			if file == "" {
				return KeySpec{}, fmt.Errorf("key argument with a password but no file name")
			}
			return KeySpec{File: file, Source: PasswordLiteral, Password: []byte(pw[len("pass="):])}, nil
		case strings.HasPrefix(pw, "file="):
			if file == "" || len(pw) == len("file=") {
				return KeySpec{}, fmt.Errorf("key argument for %q: want FILE:file=PASSFILE", file)
			}
			return KeySpec{File: file, Source: PasswordFile, PasswordFile: pw[len("file="):]}, nil
		case strings.HasPrefix(pw, "fd="):
			n, err := strconv.Atoi(pw[len("fd="):])
			if file == "" || err != nil || n < 0 {
				return KeySpec{}, fmt.Errorf("key argument for %q: want FILE:fd=N with N a file descriptor number", file)
			}
			return KeySpec{File: file, Source: PasswordFD, FD: n}, nil
		}
	}
	if s == "" {
		return KeySpec{}, fmt.Errorf("empty key argument")
	}
	return KeySpec{File: s}, nil
}

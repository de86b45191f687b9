package recipients

import (
	"context"
	"crypto"
	"strings"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keys"
)

// A Scheme is one kind of recipient: its --recipient prefix, how its
// recipients become wrappers, which private keys it opens entries with, and
// how its entries are described. The schemes table lists them; adding a
// scheme is one file holding its Scheme value plus one line in the table.
type Scheme struct {
	// Name is the --recipient prefix (NAME:VALUE).
	Name string
	// Value names what follows "NAME:" in messages ("FILE").
	Value string
	// Annotation is the suffix of org.opencontainers.image.enc.keys.<…>
	// its entries go under; one ending in "." is a prefix
	// ("provider." for provider.NAME). Several schemes may share one: each
	// then tells its entries from the others'.
	Annotation string
	// Wrappers turns the scheme's --recipient values (after "NAME:"), in
	// the order given, into wrappers.
	Wrappers func(ctx context.Context, values []string, env *session) ([]keywrap.Wrapper, error)
	// ParseKey, if set, recognises a private key file of this scheme that
	// keys.ParseMaterial does not know. ok false: not such a file.
	ParseKey func(data []byte) (k crypto.PrivateKey, kid string, ok bool, err error)
	// Uses reports whether the scheme opens entries with private key k.
	Uses func(k crypto.PrivateKey) bool
	// Unwrapper returns the unwrapper for the keys Uses accepted (in order)
	// and every certificate given (pkcs7 needs them); nil when it needs
	// material that is absent. env is what the CLI read (pkcs11's module
	// config); the zero session when the caller gave none.
	Unwrapper func(privs []crypto.PrivateKey, ms []*keys.Material, env *session) (keywrap.Unwrapper, error)
	// Describe lists the recipients of one entry of annotation; an error
	// when the entry is not this scheme's or is malformed.
	Describe func(annotation string, entry []byte) ([]string, error)
}

// schemes, in the order their wrappers and unwrappers are returned.
var schemes = []*Scheme{
	&jweScheme,
	&pkcs7Scheme,
	&pgpScheme,
	&mlkemScheme,
	&pkcs11Scheme,
	&providerScheme,
}

// Schemes lists the recipient schemes, in order.
func Schemes() []*Scheme { return schemes }

func lookup(name string) *Scheme {
	for _, s := range schemes {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (s *Scheme) owns(annotation string) bool {
	if p, ok := strings.CutSuffix(s.Annotation, "."); ok {
		rest, ok := strings.CutPrefix(annotation, p+".")
		return ok && rest != ""
	}
	return annotation == s.Annotation
}

// accepted lists the recipient forms for messages.
func accepted() string {
	forms := make([]string, len(schemes))
	for i, s := range schemes {
		forms[i] = s.Name + ":" + s.Value
	}
	return strings.Join(forms[:len(forms)-1], ", ") + " or " + forms[len(forms)-1]
}

// session is what the schemes' Wrappers share during one ParseRecipients:
// the environment and the keyprovider config, loaded once.
type session struct {
	env  Env
	prov providerEnv
}

package cli

import (
	"os"

	"github.com/spf13/pflag"
)

// The broker client's flags and environment, one definition for every
// verb that talks to a broker: the image verbs (encrypt, decrypt, pull,
// verify, agent, keyprovider, secret), `coffer kbs ...` and `coffer wpm`.
// The broker URL is --kbs everywhere, with --url (the name `coffer kbs`
// verbs used) as its alias: both set the same value on every verb that
// had either. Environment variables are read here only.
const (
	envKBSURL        = "COFFER_KBS_URL"         // --kbs / --url
	envKBSAdminKey   = "COFFER_KBS_ADMIN_KEY"   // --admin-key
	envKBSAdminToken = "COFFER_KBS_ADMIN_TOKEN" // --admin-token
	envTEE           = "COFFER_TEE"             // --tee
)

// addBrokerURLFlag binds --kbs and its alias --url to url.
func addBrokerURLFlag(fs *pflag.FlagSet, url *string, usage string) {
	fs.StringVar(url, "kbs", "", usage)
	fs.StringVar(url, "url", "", "alias of --kbs")
}

// orEnv is v, or the environment variable env when v is empty.
func orEnv(v, env string) string {
	if v != "" {
		return v
	}
	return os.Getenv(env)
}

// brokerURL is the broker URL a verb was given, by either name (a verb
// that defines only one of them itself is read too), else $COFFER_KBS_URL.
func brokerURL(fs *pflag.FlagSet) string {
	for _, name := range []string{"kbs", "url"} {
		if f := fs.Lookup(name); f != nil && f.Value.String() != "" {
			return f.Value.String()
		}
	}
	return os.Getenv(envKBSURL)
}

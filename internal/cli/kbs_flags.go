package cli

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// kbsClientRole says which client flags a `coffer kbs` verb takes.
type kbsClientRole int

const (
	kbsAdminVerb  kbsClientRole = iota // --url, --admin-key, --admin-token (the default for a new verb)
	kbsGuestVerb                       // --url (attests; no admin credentials)
	kbsSignerVerb                      // --admin-key only (signs offline)
	kbsLocalVerb                       // none: serves, or works on local files and databases
)

// kbsRoles are the verbs that are not admin clients.
var kbsRoles = map[string]kbsClientRole{
	"attest": kbsGuestVerb, "get-resource": kbsGuestVerb,
	"admin-token": kbsSignerVerb, "admin-public-key": kbsSignerVerb,
	"serve": kbsLocalVerb, "migrate": kbsLocalVerb, "rotate-kek": kbsLocalVerb,
	"keygen-admin": kbsLocalVerb, "verify-evidence": kbsLocalVerb,
}

// addKBSClientFlags gives every `coffer kbs` verb exactly the client flags
// it uses (one definition, read back with kbsFlag). Call it once all verbs
// are added.
func addKBSClientFlags(kbs *cobra.Command) {
	for _, c := range kbs.Commands() {
		if c.Name() == "help" {
			continue
		}
		role := kbsRoles[c.Name()]
		fs := c.Flags()
		add := func(name, usage string) { // a verb's own definition wins
			if fs.Lookup(name) == nil {
				fs.String(name, "", usage)
			}
		}
		if role == kbsAdminVerb || role == kbsGuestVerb {
			addBrokerURLFlag(fs, new(string), "broker URL (env COFFER_KBS_URL)")
		}
		if role == kbsAdminVerb || role == kbsSignerVerb {
			add("admin-key", "admin private key: an Ed25519 PKCS#8 PEM `KEY` file, or a key in a PKCS#11 token: a pkcs11: URI or a pkcs11 key file (env COFFER_KBS_ADMIN_KEY)")
			addPKCS11DirFlag(fs)
		}
		if role == kbsAdminVerb {
			add("admin-token", "instead of --admin-key: `FILE` holding an admin token made by coffer kbs admin-token (e.g. scoped with --allow-path; env COFFER_KBS_ADMIN_TOKEN)")
		}
	}
}

// addTEEFlags are the attesting client's TEE choice, one rule for every
// verb that attests (pull, verify, agent, keyprovider, kbs attest and
// get-resource): --tee, else $COFFER_TEE, else the TEE detected on this
// machine; none found is an error (the sample TEE only when asked for).
func addTEEFlags(fs *pflag.FlagSet, tee, teeKey, tpmAddr *string) {
	fs.StringVar(tee, "tee", "", "TEE to attest as: tpm, snp, tdx, or sample for development (default: $COFFER_TEE, else detected; none found is an error)")
	fs.StringVar(teeKey, "tee-key", "ec", "tee key type: ec (P-256), rsa or mlkem768 (post-quantum: the broker seals with ML-KEM-768+A192KW)")
	addTPMFlag(fs, tpmAddr)
}

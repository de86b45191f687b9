package recipients_test

import (
	"fmt"

	"github.com/coffer-dev/coffer/keywrap/recipients"
)

func ExampleParseKeySpec() {
	for _, s := range []string{"priv.pem", "priv.pem:pass=s3cret", "priv.pem:file=/run/pw", "priv.pem:fd=3", "provider:attestation-agent"} {
		ks, err := recipients.ParseKeySpec(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(ks) // never shows a literal password
	}
	// Output:
	// priv.pem
	// priv.pem:pass=…
	// priv.pem:file=/run/pw
	// priv.pem:fd=3
	// provider:attestation-agent
}

func ExampleParseRecipient() {
	for _, s := range []string{"jwe:pub.pem", "provider:attestation-agent:keypath=/k::keyid=kbs:///default/key/1", "gpg:alice"} {
		r, err := recipients.ParseRecipient(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s file=%q provider=%q params=%q\n", r.Scheme, r.File, r.Provider, r.Params)
	}
	// Output:
	// jwe file="pub.pem" provider="" params=""
	// provider file="" provider="attestation-agent" params="keypath=/k::keyid=kbs:///default/key/1"
	// unknown recipient scheme "gpg" in "gpg:alice": want jwe:FILE, pkcs7:FILE, pgp:FILE, mlkem:FILE, pkcs11:FILE or provider:NAME[:PARAMS]: unsupported
}

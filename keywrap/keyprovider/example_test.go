package keyprovider_test

import (
	"fmt"

	"github.com/coffer-dev/coffer/keywrap/keyprovider"
)

func ExampleParseConfig() {
	c, err := keyprovider.ParseConfig([]byte(`{"key-providers":{
		"attestation-agent":{"grpc":"127.0.0.1:50000"},
		"vault":{"cmd":{"path":"/usr/local/bin/vault-keyprovider","args":["--mode","oci"]}}}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Names())
	w, err := c.Wrapper("attestation-agent", "keyid=kbs:///default/image_key/nginx::keypath=/kek.bin")
	if err != nil {
		panic(err)
	}
	fmt.Println(w.Scheme())
	// Output:
	// [attestation-agent vault]
	// provider.attestation-agent
}

package keygen_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap/keygen"
)

func ExampleGenerate() {
	p, err := keygen.Generate(context.Background(), keygen.MLKEM768, keygen.WithKeyID("node-1"))
	if err != nil {
		panic(err)
	}
	defer p.Clear()
	var pub map[string]string
	json.Unmarshal(p.Public, &pub)
	fmt.Println(pub["kty"], pub["alg"], pub["kid"], len(pub["pub"]))
	// Output:
	// AKP ML-KEM-768+A192KW node-1 1579
}

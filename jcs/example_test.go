package jcs_test

import (
	"crypto/sha512"
	"fmt"

	"github.com/coffer-dev/coffer/jcs"
)

func ExampleCanonicalize() {
	c, _ := jcs.Canonicalize([]byte(`{"b":1,"a":"test","c":{"d":"e"}}`))
	fmt.Printf("%s\n%x\n", c, sha512.Sum384(c))
	// Output:
	// {"a":"test","b":1,"c":{"d":"e"}}
	// e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3
}

package protocol_test

import (
	"fmt"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

func ExampleSerializeProtectedHeader() {
	h, _ := protocol.SerializeProtectedHeader("fakealg", "fakeenc", nil)
	fmt.Println(h)
	// Output: eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9
}

// A guest binds its tee key and the broker's nonce into its evidence, and
// later opens the resource the broker sealed to that key.
func Example() {
	priv, pub, _ := protocol.GenerateTeeKey()
	nonce := "bm9uY2Utb2YtdGhlLWJyb2tlcg=="
	digest, _ := protocol.ReportDataDigest(nonce, pub, "")
	reportData := protocol.ReportData(digest, 64) // what a TDX/SNP guest puts in its report
	fmt.Println(len(digest), len(reportData))

	resp, _ := protocol.Seal(pub, []byte("image key")) // broker side
	opener, _ := protocol.NewOpener(priv)
	key, err := opener.Open(resp)
	fmt.Printf("%s %v\n", key, err)
	// Output:
	// 48 64
	// image key <nil>
}

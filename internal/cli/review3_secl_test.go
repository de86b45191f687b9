package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// T1 (review 3): a key made for SecL's transfer is not served by the plain
// RCAR resource GET. A registered host with good PCRs gets an ordinary
// resource with `kbs get-resource --tee tpm` (so it is trusted), but the
// same command for secl/keys/<id> fails and writes nothing to stdout.
func TestT1TransferKeyNotAResource(t *testing.T) {
	t.Parallel()
	sw := tpmtest.StartSwtpm(t)
	host, err := tpm.Open(t.Context(), sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := host.AKPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := host.ReadPCRs(t.Context())
	host.Close() // swtpm serves one client: get-resource opens it again
	if err != nil {
		t.Fatal(err)
	}
	b := kbstest.New(t)
	b.SetReferenceValue(t, "tpm_ak_public", base64.StdEncoding.EncodeToString(ak))
	b.SetReferenceValue(t, "tpm_pcr11", hex.EncodeToString(pcrs[11]))
	key := make([]byte, 32)
	rand.Read(key)
	const id = "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"
	b.SetResource(t, "secl/keys/"+id, key)
	b.SetResource(t, "default/app/plain", []byte("an ordinary resource"))

	out, stderr, err := runCofferSplit(t, nil, "kbs", "get-resource", "--url", b.URL, "--tee", "tpm", "--tpm", sw.Addr, "--path", "default/app/plain")
	if err != nil || out != "an ordinary resource" {
		t.Fatalf("control: the registered host is not trusted: %q %v %s", out, err, stderr)
	}
	out, stderr, err = runCofferSplit(t, nil, "kbs", "get-resource", "--url", b.URL, "--tee", "tpm", "--tpm", sw.Addr, "--path", "secl/keys/"+id)
	t.Log("secl/keys:", err, stderr)
	if err == nil || out != "" || bytes.Contains([]byte(out+stderr), key) {
		t.Fatalf("get-resource secl/keys/%s: err = %v, stdout %d bytes; want a refusal and nothing written", id, err, len(out))
	}
}

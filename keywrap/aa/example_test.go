package aa_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/resource"
)

func Example() {
	ctx := context.Background()
	kek := bytes.Repeat([]byte{7}, aa.KEKSize) // in real use: a KBS resource

	p, err := aa.ParseParams("provider:attestation-agent:keypath=/etc/kek.bin::keyid=kbs:///default/image_key/nginx")
	if err != nil {
		panic(err)
	}
	w, err := aa.NewWrapper(kek, p.KeyID)
	if err != nil {
		panic(err)
	}
	entry, err := w.Wrap(ctx, []byte(`{"symkey":"..."}`))
	if err != nil {
		panic(err)
	}

	kid, _ := aa.Describe(entry)
	rp, _ := resource.ParseKID(kid)
	fmt.Println(w.Scheme(), kid, rp.Repo, rp.Type, rp.Tag)

	// In real use the Getter is the attested broker client (agent/client).
	u := aa.NewUnwrapper(resource.GetterFunc(func(ctx context.Context, p resource.Path) ([]byte, error) {
		return kek, nil
	}))
	privopts, err := u.Unwrap(ctx, entry)
	fmt.Println(string(privopts), err)
	// Output:
	// provider.attestation-agent kbs:///default/image_key/nginx default image_key nginx
	// {"symkey":"..."} <nil>
}

package sealed_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/coffer-dev/coffer/agent/sealed"
)

// A sealed secret names a broker resource and is signed by its owner; the
// guest checks the signature with the key the kid names before it asks
// the broker for the resource.
func ExampleSeal() {
	ctx := context.Background()
	priv, pub, _ := sealed.GenerateSigningKey()
	key, _ := sealed.ParseSigningKey(priv)
	s, _ := sealed.Seal(sealed.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/password"}, key, "kbs:///default/sealed-secret/key1")
	verify := func(context.Context, string) (*ecdsa.PublicKey, error) { return sealed.ParseVerificationKey(pub) }
	sec, err := sealed.ParseSealed(ctx, []byte(s), verify)
	fmt.Println(strings.Count(s, "."), sec.Type, sec.Name, err)
	tampered := strings.Replace(s, "sealed.e", "sealed.f", 1)
	_, err = sealed.ParseSealed(ctx, []byte(tampered), verify)
	fmt.Println(err != nil)
	// Output:
	// 3 vault kbs:///default/app/password <nil>
	// true
}

// An envelope secret carries the secret itself, encrypted under a DEK that
// a key in the broker wraps; unsealing fetches that key (after attesting)
// and decrypts.
func ExampleSealEnvelope() {
	ctx := context.Background()
	priv, pub, _ := sealed.GenerateSigningKey()
	key, _ := sealed.ParseSigningKey(priv)
	kek := make([]byte, 32)
	rand.Read(kek)
	broker := map[string][]byte{"kbs:///default/sealed-secret/key1": pub, "kbs:///default/kek/app": kek}
	env, _ := sealed.SealEnvelope([]byte("hunter2"), "kbs", "kbs:///default/kek/app", kek)
	s, _ := sealed.Seal(env, key, "kbs:///default/sealed-secret/key1")
	u := sealed.Unsealer{Resource: func(_ context.Context, uri string) ([]byte, error) { return broker[uri], nil }}
	pt, err := u.Unseal(ctx, []byte(s))
	fmt.Printf("%s %v\n", pt, err)
	// Output:
	// hunter2 <nil>
}

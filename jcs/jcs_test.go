package jcs

import (
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

func TestJCSVector(t *testing.T) {
	c, err := Canonicalize([]byte(`{"b":1,"a":"test","c":{"d":"e"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(c), `{"a":"test","b":1,"c":{"d":"e"}}`; got != want {
		t.Fatalf("canonical: got %s, want %s", got, want)
	}
	sum := sha512.Sum384(c)
	h := hex.EncodeToString(sum[:])
	if !strings.HasPrefix(h, "e71ce8e70d814ba6") || !strings.HasSuffix(h, "78870c3") {
		t.Fatalf("sha384: got %s, want e71ce8e70d814ba6…78870c3", h)
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{`  [ 1 , 2.50 , -0 , 1e21, 1E-7, 123456789012, 0.000001 ] `, `[1,2.5,0,1e+21,1e-7,123456789012,0.000001]`},
		{`{"\u20ac":1,"\r":2,"1":3,"\u00e9":4,"\ud83d\ude00":5,"\ufb33":6}`, "{\"\\r\":2,\"1\":3,\"\u00e9\":4,\"\u20ac\":1,\"\U0001F600\":5,\"\ufb33\":6}"},
		{`"a\u001fb\"c\\d\/<>"`, `"a\u001fb\"c\\d/<>"`},
		{`{"z":[true,false,null],"a":{}}`, `{"a":{},"z":[true,false,null]}`},
	}
	for _, tt := range tests {
		got, err := Canonicalize([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("Canonicalize(%s): got %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"a":1} x`, `{`, `1e999`} {
		if _, err := Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%s): got nil error, want one", bad)
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":"test","c":{"d":"e"}}`, `[1e21,-0.5,"\u0000"]`, `{"a":{"a":[{}]}}`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := Canonicalize(in)
		if err != nil {
			return
		}
		// Canonical form is a fixed point.
		c2, err := Canonicalize(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("not idempotent: %s -> %s (%v)", c, c2, err)
		}
	})
}

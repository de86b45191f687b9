package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/server"
)

// W20 (review 3): X-Forwarded-For counts only from a trusted proxy. From
// one, each named client has its own challenge quota; from anyone else
// the header is ignored (a caller cannot spread its own quota by lying).
func TestTrustedProxyAccounting(t *testing.T) {
	t.Parallel()
	auth := func(url, xff string) int {
		req, _ := http.NewRequest(http.MethodPost, url+"/kbs/v0/auth", strings.NewReader(`{"version":"0.4.0","tee":"sample","extra-params":""}`))
		req.Header.Set("Content-Type", "application/json")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name    string
		trusted string
		want    []int // /auth from 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.1 (quota 2 per client)
	}{
		{"trusted relay", "127.0.0.1/32", []int{200, 200, 200, 200}},
		{"untrusted caller", "10.9.9.9/32", []int{200, 200, 429, 429}},
	} {
		b := ready(t, server.WithMaxChallengesPerAddress(2), server.WithTrustedProxies(tc.trusted))
		var got []int
		for _, c := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"} {
			got = append(got, auth(b.URL, c))
		}
		if auth(b.URL, "10.0.0.1") != 429 && tc.trusted == "127.0.0.1/32" {
			t.Errorf("%s: a third challenge for 10.0.0.1 was granted (quota 2)", tc.name)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: /auth codes %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

package wls_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coffer-dev/coffer/secl/wls"
)

// W18: a broker a stored flavor names answers 307 to an internal
// service; the WLS does not follow it (the internal service is never
// called) and the host never sees a broker's reply body.
func TestW18NoRedirectNoEcho(t *testing.T) {
	t.Parallel()
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		io.WriteString(w, `{"type":"x","detail":"INTERNAL-SECRET"}`)
	}))
	t.Cleanup(internal.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/admin/secrets", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)
	echoing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"UPSTREAM-SECRET"}`)
	}))
	t.Cleanup(echoing.Close)
	for _, broker := range []string{redirecting.URL, echoing.URL} {
		f := newFixture(t, t.TempDir())
		id, doc := f.flavor(t, broker)
		url := f.start(t)
		c := wls.NewClient(url, f.admin, nil)
		if _, err := c.AddFlavor(t.Context(), doc); err != nil {
			t.Fatal(err)
		}
		if err := c.AddImage(t.Context(), imageID, id); err != nil {
			t.Fatal(err)
		}
		for _, req := range []func() (*http.Response, error){
			func() (*http.Response, error) { return http.Get(url + "/wls/images/" + imageID + "/flavor-key") },
			func() (*http.Response, error) {
				return http.Post(url+"/wls/images/"+imageID+"/flavor-key", "application/json", strings.NewReader(`{"session":"s"}`))
			},
		} {
			resp, err := req()
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("broker %s: HTTP %d %s", broker, resp.StatusCode, body)
			if strings.Contains(string(body), "SECRET") || resp.StatusCode/100 == 2 || !strings.Contains(string(body), broker) {
				t.Errorf("broker %s: HTTP %d %s; want a refusal naming the broker, without its reply", broker, resp.StatusCode, body)
			}
		}
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("the internal service was called %d times through the broker's redirect", n)
	}
}

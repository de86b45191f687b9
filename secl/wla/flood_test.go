package wla_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wlsclient"
)

// flood runs n unauthenticated callers, each from its own loopback
// address (127.0.0.2…), asking the WLS for challenges of image as fast as
// it lets them and answering each with garbage, until ctx ends. It
// returns how many challenges they got and how many requests they made.
func flood(ctx context.Context, n int, wlsURL, image string) (got, sent *atomic.Int64, wait func()) {
	got, sent = new(atomic.Int64), new(atomic.Int64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+(i+1)/250), byte(2+(i+1)%250))}}
			hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				sent.Add(1)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, wlsURL+"/wls/images/"+image+"/flavor-key", nil)
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				got.Add(1)
				var ch wlsclient.Challenge
				json.Unmarshal(b, &ch)
				if i%2 == 0 { // half of them answer with garbage (a broker /attest each), half never answer
					body, _ := json.Marshal(wlsclient.KeyRequest{Session: ch.Session})
					sent.Add(1)
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, wlsURL+"/wls/images/"+image+"/flavor-key", bytes.NewReader(body))
					if resp, err := hc.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}
		}()
	}
	return got, sent, wg.Wait
}

// W20: 60 unauthenticated callers (each its own loopback address) flood
// the WLS for challenges under its per-address rate limit (5/s, burst 20,
// as `wls serve` defaults), half of them answering each challenge with
// garbage, while a registered host decrypts its image: the host succeeds.
// The broker runs `kbs serve`'s limits (50 calls/s, burst 200, 1,024
// outstanding challenges per address). Two deployments: the broker trusts
// the WLS's X-Forwarded-For (--trusted-proxy: it limits each host), and
// the default, where it does not (the WLS's fair gate and its per-caller
// and per-broker challenge caps keep the shared budget).
func TestW20FloodDoesNotDenyHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		bopts   []server.Option
		wopts   []wls.Option
		decrypt int
	}{
		// the broker limits each host itself: the WLS's gate is off, as documented
		{"broker trusts the WLS", []server.Option{server.WithTrustedProxies("127.0.0.1/32")}, []wls.Option{wls.WithBrokerRate(0, 0)}, 3},
		// the WLS's defaults, with a per-broker cap the flood reaches (so its challenges are spent to make room)
		// and a broker quota it would exceed if those were not spent
		{"default: broker does not trust the WLS", []server.Option{server.WithMaxChallengesPerAddress(96)}, []wls.Option{wls.WithMaxPendingPerBroker(64)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := openTPM(t)
			w := setupWith(t, a,
				append([]server.Option{server.WithRateLimit(50, 200), server.WithMaxChallengesPerAddress(1024)}, tc.bopts...), // later options win
				append([]wls.Option{wls.WithRateLimit(5, 20)}, tc.wopts...), false)
			ctx, stop := context.WithCancel(t.Context())
			got, sent, wait := flood(ctx, 60, w.wlsURL, w.imageID)
			time.Sleep(1500 * time.Millisecond) // the flood's bursts are spent: the host comes in at its height
			var errs []error
			start := time.Now()
			for i := range tc.decrypt {
				out := filepath.Join(w.dir, fmt.Sprintf("flood-%d.img", i))
				err := w.decrypt(t, a, out)
				errs = append(errs, err)
				if err == nil {
					if b, _ := os.ReadFile(out); !bytes.Equal(b, w.plain) {
						t.Error("decrypted image differs")
					}
				}
			}
			took := time.Since(start)
			stop()
			wait()
			t.Logf("flood: %d requests, %d challenges obtained by the 60 callers; %d host decrypts in %v: %v", sent.Load(), got.Load(), tc.decrypt, took.Round(time.Millisecond), errs)
			for i, err := range errs {
				if err != nil {
					t.Errorf("host decrypt %d during the flood: %v", i, err)
				}
			}
			if got.Load() < 60 {
				t.Errorf("the flood obtained only %d challenges: it did not run", got.Load())
			}
		})
	}
}

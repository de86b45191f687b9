package api

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// guard refuses requests a web page could have made the browser send: DNS
// rebinding (a page whose name resolves to 127.0.0.1 sends its own name as
// Host) and plain cross-origin fetches. Over TCP the Host must be a loopback
// address, localhost or a name the operator allowed; over a unix socket Host
// means nothing and is not checked. On both, a request with an Origin that
// is not loopback or allowed, or with Sec-Fetch-Site: cross-site, is refused.
// The API never sends CORS headers, so a browser never lets a page read an
// answer even where these checks pass.
type guard struct {
	next    http.Handler
	allowed map[string]bool // normalized host names from WithAllowedHosts
	log     *slog.Logger
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !overUnixSocket(r) && !g.hostAllowed(r.Host) {
		name := hostName(r.Host)
		if name == "" {
			name = "NAME"
		}
		g.refuse(w, r, fmt.Sprintf("FORBIDDEN: Host %q is not a loopback address or an allowed name (allow it with coffer agent --allowed-host %s)", r.Host, name))
		return
	}
	for _, o := range r.Header.Values("Origin") {
		if !g.originAllowed(o) {
			g.refuse(w, r, fmt.Sprintf("FORBIDDEN: cross-origin request from Origin %q (web pages may not use this API; allow a host with coffer agent --allowed-host NAME)", o))
			return
		}
	}
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") {
		g.refuse(w, r, "FORBIDDEN: cross-site request (Sec-Fetch-Site: cross-site); web pages may not use this API")
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *guard) refuse(w http.ResponseWriter, r *http.Request, msg string) {
	g.log.Warn("cdh: request refused", "path", r.URL.Path, "host", r.Host, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, http.StatusForbidden)
}

func (g *guard) hostAllowed(hostport string) bool {
	h := hostName(hostport)
	return isLoopbackName(h) || g.allowed[h]
}

// originAllowed accepts an http(s) origin whose host is loopback or allowed.
// "null" (sandboxed frames, file: pages) and anything unparsable is refused.
func (g *guard) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	return g.hostAllowed(u.Host)
}

// overUnixSocket reports whether r arrived on a unix-socket listener.
func overUnixSocket(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && (a.Network() == "unix" || a.Network() == "unixpacket")
}

// hostName returns the lower-case host of a Host value ("name", "name:port",
// "[v6]:port", "[v6]") without brackets, port or trailing dot.
func hostName(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// isLoopbackName: localhost, 127.0.0.0/8 and ::1 (also IPv4-mapped).
func isLoopbackName(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.WithZone("").Unmap().IsLoopback()
}

// normalizeAllowedHost checks an operator-given name: a DNS name or an IP
// address, without scheme, port, path or wildcard.
func normalizeAllowedHost(name string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h, nil
	}
	ok := h != "" && len(h) <= 253
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			ok = false
		}
	}
	if !ok {
		return "", fmt.Errorf("allowed host %q: want a host name or IP address, without scheme, port or wildcard", name)
	}
	return h, nil
}

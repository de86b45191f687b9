package flavor

import (
	"fmt"
	"net/url"
	"strings"
)

// KeyRepo and KeyType are where the broker keeps SecL image keys: the key
// with id UUID is the resource KeyRepo/KeyType/UUID, transferred at
// <broker>/kbs/v1/keys/UUID/transfer (SecL's KBS path).
const (
	KeyRepo = "secl"
	KeyType = "keys"
)

// KeyURL is the transfer URL of key id on the broker at base.
func KeyURL(base, id string) string {
	return strings.TrimRight(base, "/") + "/kbs/v1/keys/" + id + "/transfer"
}

// KeyResource is the broker resource path ("repo/type/tag") of key id.
func KeyResource(id string) string { return KeyRepo + "/" + KeyType + "/" + id }

// ParseKeyURL returns the broker base URL and key id of a transfer URL
// KeyURL made (the one parser of key URLs: hosts, the WLS and the owner
// tool all call it).
func ParseKeyURL(keyURL string) (base, id string, err error) {
	u, err := url.Parse(keyURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("key_url %q: want http(s)://HOST/kbs/v1/keys/<uuid>/transfer", keyURL)
	}
	rest, ok := strings.CutPrefix(u.Path, "/kbs/v1/keys/")
	id, ok2 := strings.CutSuffix(rest, "/transfer")
	if !ok || !ok2 || !ValidID(id) || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Errorf("key_url %q: want http(s)://HOST/kbs/v1/keys/<uuid>/transfer", keyURL)
	}
	return u.Scheme + "://" + u.Host, id, nil
}

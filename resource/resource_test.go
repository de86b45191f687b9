package resource

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Path
		ok   bool
	}{
		{"default/image_key/nginx", Path{"default", "image_key", "nginx"}, true},
		{"image_key/nginx", Path{"default", "image_key", "nginx"}, true},
		{"a/b/c.d-e_f", Path{"a", "b", "c.d-e_f"}, true},
		{"../b/c", Path{}, false},
		{"a/../c", Path{}, false},
		{"a/b/..", Path{}, false},
		{"a/b/.", Path{}, false},
		{"a/b/.hidden", Path{}, false},
		{"a/b/%2e%2e", Path{}, false},
		{"a/b/c%2fd", Path{}, false},
		{"a/b/c/d", Path{}, false},
		{"a//c", Path{}, false},
		{"/a/b", Path{}, false},
		{"a/b/c\x00", Path{}, false},
		{"a/b/é", Path{}, false},
		{"a/b/c\n", Path{}, false},
		{"a/b/" + strings.Repeat("x", 256), Path{}, false},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Parse(%q): got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	p, err := ParseKID("kbs://example.com:8080/default/image_key/nginx")
	if err != nil || p != (Path{"default", "image_key", "nginx"}) {
		t.Fatalf("ParseKID: got %v, %v", p, err)
	}
	if _, err := ParseKID("https:///a/b/c"); err == nil {
		t.Fatal("ParseKID(https): got nil error")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"default/image_key/nginx", "../../etc/passwd", "a/b/%2e%2e", "a/./b", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := Parse(s)
		if err != nil {
			return
		}
		for _, seg := range []string{p.Repo, p.Type, p.Tag} {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "/\\%\x00") || strings.HasPrefix(seg, ".") {
				t.Fatalf("accepted dangerous segment %q in %q", seg, s)
			}
		}
	})
}

func TestParseKIDGrammar(t *testing.T) {
	tests := []struct {
		kid            string
		repo, typ, tag string
		wantErr        error // errAnyKID: some error
	}{
		{kid: "kbs:///default/image_key/nginx", repo: "default", typ: "image_key", tag: "nginx"},
		{kid: "kbs://127.0.0.1:8080/r/t/v1.2", repo: "r", typ: "t", tag: "v1.2"},
		{kid: "kbs:///a-b/c_d/e.f", repo: "a-b", typ: "c_d", tag: "e.f"},
		{kid: "kbs:///a/b", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c/d", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c/", wantErr: errAnyKID},
		{kid: "kbs:///a//c", wantErr: errAnyKID},
		{kid: "kbs:///a/../c", wantErr: errAnyKID},
		{kid: "kbs:///a/.b/c", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c?version=2", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c#x", wantErr: errAnyKID},
		{kid: "kbs:///a/b%2Fx/c", wantErr: errAnyKID},
		{kid: "kbs:///a/b c/d", wantErr: errAnyKID},
		{kid: "kbs:a/b/c", wantErr: errAnyKID},
		{kid: "https:///a/b/c", wantErr: errAnyKID},
		{kid: "/default/image_key/nginx", wantErr: errAnyKID},
		{kid: "kbs+pkcs11:///a/b/c", wantErr: spec.ErrUnsupported},
		{kid: "", wantErr: errAnyKID},
	}
	for _, tt := range tests {
		p, err := ParseKID(tt.kid)
		repo, typ, tag := p.Repo, p.Type, p.Tag
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("ParseKID(%q): %v", tt.kid, err)
		case tt.wantErr == nil && (repo != tt.repo || typ != tt.typ || tag != tt.tag):
			t.Errorf("ParseKID(%q) = %q, %q, %q; want %q, %q, %q", tt.kid, repo, typ, tag, tt.repo, tt.typ, tt.tag)
		case tt.wantErr != nil && err == nil:
			t.Errorf("ParseKID(%q) = %q, %q, %q; want an error", tt.kid, repo, typ, tag)
		case tt.wantErr != nil && tt.wantErr != errAnyKID && !errors.Is(err, tt.wantErr):
			t.Errorf("ParseKID(%q) err = %v, want %v", tt.kid, err, tt.wantErr)
		}
	}
}

var errAnyKID = errors.New("any error")

func TestParseKeyID(t *testing.T) {
	for _, in := range []string{"default/image_key/app", "/default/image_key/app", "kbs:///default/image_key/app"} {
		p, err := ParseKeyID(in)
		if err != nil || p.KID() != "kbs:///default/image_key/app" {
			t.Errorf("ParseKeyID(%q) = %v, %v; want kbs:///default/image_key/app", in, p.KID(), err)
		}
	}
	for _, in := range []string{"image_key/app", "kbs://host/default/image_key/app", "a/b/c/d", "a/../c", ""} {
		if p, err := ParseKeyID(in); err == nil {
			t.Errorf("ParseKeyID(%q) = %v, want an error", in, p)
		}
	}
}

// Once asks its Getter once per path, concurrent callers included.
func TestGetterOnce(t *testing.T) {
	var mu sync.Mutex
	calls := map[Path]int{}
	g := Once(GetterFunc(func(_ context.Context, p Path) ([]byte, error) {
		mu.Lock()
		calls[p]++
		mu.Unlock()
		return []byte(p.String()), nil
	}))
	a, b := Path{"r", "t", "a"}, Path{"r", "t", "b"}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(2)
		go func() { defer wg.Done(); g.Get(t.Context(), a) }()
		go func() { defer wg.Done(); g.Get(t.Context(), b) }()
	}
	wg.Wait()
	if got, err := g.Get(t.Context(), a); err != nil || string(got) != "r/t/a" || calls[a] != 1 || calls[b] != 1 {
		t.Fatalf("Get = %q, %v; calls %v, want one per path", got, err, calls)
	}
	// KIDFunc sees the kid form.
	var seen string
	KIDFunc(func(_ context.Context, kid string) ([]byte, error) { seen = kid; return nil, nil }).Get(t.Context(), a)
	if seen != "kbs:///r/t/a" {
		t.Fatalf("KIDFunc called with %q", seen)
	}
}

// Moved from internal/cli's TestOnceByKID (the cache is now resource.Once):
// errors are returned and remembered too, one call per path.
func TestGetterOnceRemembersErrors(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	bad := Path{"a", "b", "bad"}
	r := Once(GetterFunc(func(_ context.Context, p Path) ([]byte, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		if p == bad {
			return nil, errors.New("denied")
		}
		return []byte(p.KID()), nil
	}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k, err := r.Get(context.Background(), Path{"a", "b", "c"}); err != nil || string(k) != "kbs:///a/b/c" {
				t.Errorf("resolve = %q, %v", k, err)
			}
		}()
	}
	wg.Wait()
	if _, err := r.Get(context.Background(), bad); err == nil {
		t.Error("error not returned")
	}
	r.Get(context.Background(), bad)
	if calls != 2 {
		t.Errorf("getter called %d times, want 2 (once per path)", calls)
	}
}

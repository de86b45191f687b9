package attest

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

func TestSample(t *testing.T) {
	ctx := context.Background()
	d := sha512.Sum384([]byte("bound"))
	other := sha512.Sum384([]byte("other"))
	v := New(Config{AllowSample: true})
	tests := []struct {
		name    string
		ev      Evidence
		wantErr error
	}{
		{"48-byte", Evidence{Tee: "sample", Primary: SampleEvidence("1", d[:]), ReportData: d[:]}, nil},
		{"64-byte", Evidence{Tee: "sample", Primary: SampleEvidence("1", protocol.ReportData(d[:], 64)), ReportData: d[:]}, nil},
		{"other key", Evidence{Tee: "sample", Primary: SampleEvidence("1", other[:]), ReportData: d[:]}, spec.ErrIntegrity},
		{"truncated", Evidence{Tee: "sample", Primary: SampleEvidence("1", d[:32]), ReportData: d[:]}, spec.ErrIntegrity},
		{"not base64", Evidence{Tee: "sample", Primary: []byte(`{"svn":"1","report_data":"!!"}`), ReportData: d[:]}, spec.ErrIntegrity},
		{"malformed", Evidence{Tee: "sample", Primary: []byte(`[1]`), ReportData: d[:]}, spec.ErrUnsupported},
		{"unknown tee", Evidence{Tee: "tdx", Primary: SampleEvidence("1", d[:]), ReportData: d[:]}, spec.ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(ctx, tt.ev)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (c["launch_digest"] != "abcde" || c["svn"] != "1" || c["debug"] != false) {
				t.Fatalf("claims: got %v", c)
			}
		})
	}
}

func FuzzSampleVerify(f *testing.F) {
	d := sha512.Sum384([]byte("bound"))
	f.Add([]byte(SampleEvidence("1", d[:])))
	f.Add([]byte(`{"svn":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := Sample{}.Verify(context.Background(), Evidence{Tee: "sample", Primary: in, ReportData: d[:]})
		if err == nil && c["report_data"] == nil {
			t.Fatal("accepted evidence without report_data")
		}
	})
}

func TestSampleInitData(t *testing.T) {
	ctx := context.Background()
	d := sha512.Sum384([]byte("bound"))
	body := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"x\"\n"
	id := &protocol.InitData{Format: "toml", Body: body}
	digest, err := InitDataDigest(id)
	if err != nil || len(digest) != 32 {
		t.Fatalf("InitDataDigest: %x %v", digest, err)
	}
	ev := func(initData []byte) []byte {
		raw, _ := json.Marshal(sampleEvidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(d[:]), InitData: base64.StdEncoding.EncodeToString(initData)})
		return raw
	}
	c, err := Sample{}.Verify(ctx, Evidence{Tee: "sample", Primary: ev(digest), ReportData: d[:], InitData: id})
	if err != nil || c["init_data"] != base64.StdEncoding.EncodeToString(digest) {
		t.Fatalf("bound init-data: %v %v", c, err)
	}
	if _, err := (Sample{}).Verify(ctx, Evidence{Tee: "sample", Primary: ev(make([]byte, 32)), ReportData: d[:], InitData: id}); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("other init-data: got %v", err)
	}
	if _, err := (Sample{}).Verify(ctx, Evidence{Tee: "sample", Primary: ev(digest), ReportData: d[:]}); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("missing init-data: got %v", err)
	}
	// Like the reference, evidence without an init_data field still yields the claim.
	c, _ = Sample{}.Verify(ctx, Evidence{Tee: "sample", Primary: SampleEvidence("1", d[:]), ReportData: d[:], InitData: id})
	if c["init_data"] != base64.StdEncoding.EncodeToString(digest) {
		t.Fatalf("init_data claim: got %v", c["init_data"])
	}
	for _, bad := range []protocol.InitData{{Format: "json", Body: "{}"}, {Format: "toml", Body: "algorithm = \"md5\""}, {Format: "toml", Body: "= ="}} {
		if _, err := InitDataDigest(&bad); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%+v: got %v", bad, err)
		}
	}
}

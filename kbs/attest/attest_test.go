package attest

import (
	"context"
	"crypto/sha512"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

func TestSample(t *testing.T) {
	ctx := context.Background()
	d := sha512.Sum384([]byte("bound"))
	other := sha512.Sum384([]byte("other"))
	v := Default()
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
		c, err := Sample{}.Verify(context.Background(), Evidence{Tee: "sample", Primary: in, ReportData: d[:]})
		if err == nil && c["report_data"] == nil {
			t.Fatal("accepted evidence without report_data")
		}
	})
}

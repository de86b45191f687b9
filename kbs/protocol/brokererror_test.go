package protocol

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func TestBrokerErrorSentinels(t *testing.T) {
	body := func(v string) []byte { return []byte(`{"type":"` + ErrorTypePrefix + v + `","detail":"why"}`) }
	tests := []struct {
		status    int
		body      []byte
		want      error
		retryable bool
	}{
		{http.StatusUnauthorized, body(ErrPolicyDeny), spec.ErrPolicyDenied, false},
		{http.StatusUnauthorized, body(ErrAdminAuth), spec.ErrPolicyDenied, false},
		{http.StatusUnauthorized, body(ErrResourceNotFound), spec.ErrNotFound, false},
		{http.StatusPreconditionFailed, body(ErrResourceExists), spec.ErrExists, false},
		{http.StatusUnauthorized, body(ErrUnsupportedTee), spec.ErrUnsupported, false},
		{http.StatusBadRequest, body(ErrPolicyEngine), spec.ErrUnsupported, false},
		{http.StatusUnauthorized, body(ErrSessionNotFound), nil, true},
		{http.StatusUnauthorized, body(ErrTokenInvalid), nil, true},
		{http.StatusForbidden, []byte("forbidden"), spec.ErrPolicyDenied, false},
		{http.StatusNotFound, nil, spec.ErrNotFound, false},
		{http.StatusBadGateway, []byte("<html>bad gateway</html>"), nil, false},
	}
	all := []error{spec.ErrPolicyDenied, spec.ErrNotFound, spec.ErrExists, spec.ErrUnsupported, spec.ErrIntegrity, spec.ErrNoKey}
	for _, tt := range tests {
		e := NewBrokerError("kbs op", tt.status, tt.body)
		for _, s := range all {
			if got := errors.Is(e, s); got != (s == tt.want) {
				t.Errorf("%d %s: errors.Is(%v) = %v", tt.status, tt.body, s, got)
			}
		}
		if e.Retryable() != tt.retryable {
			t.Errorf("%d %s: Retryable() = %v", tt.status, tt.body, e.Retryable())
		}
		if !strings.HasPrefix(e.Error(), "kbs op: broker said ") {
			t.Errorf("message %q", e.Error())
		}
	}
	if got := NewBrokerError("", 401, body(ErrPolicyDeny)).Error(); got != "broker said PolicyDeny (HTTP 401): why" {
		t.Errorf("message %q", got)
	}
}

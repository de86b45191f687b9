package protocol

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// BrokerError is a broker's non-2xx answer: the HTTP status and its error
// body. Every coffer client (the RCAR client, the admin client) returns it,
// so one mapping turns broker answers into coffer's sentinels (errors.Is):
//
//	PolicyDeny, AdminAuthAccess, 403        → spec.ErrPolicyDenied
//	ResourceNotFound, 404                   → spec.ErrNotFound
//	ResourceExists, 412                     → spec.ErrExists
//	UnsupportedTee, PolicyEngineError, SerdeError, 400, 413 → spec.ErrUnsupported
//
// Other 401s (a token or session the client can cure by attesting again)
// map to no sentinel; Retryable tells them apart.
type BrokerError struct {
	Op     string // what was attempted, e.g. "kbs auth", "kbs admin POST /kbs/v0/resource-policy"
	Status int
	Info   ErrorInfo
}

// maxDetail bounds the detail kept from a body that is not an ErrorInfo.
const maxDetail = 200

// NewBrokerError reads a broker's error answer; a body that is not an
// ErrorInfo becomes the (trimmed, bounded) detail.
func NewBrokerError(op string, status int, body []byte) *BrokerError {
	e := &BrokerError{Op: op, Status: status}
	if json.Unmarshal(body, &e.Info) != nil {
		e.Info = ErrorInfo{Detail: strings.TrimSpace(string(body))}
	}
	if len(e.Info.Detail) > maxDetail*8 {
		e.Info.Detail = e.Info.Detail[:maxDetail*8]
	}
	return e
}

func (e *BrokerError) Error() string {
	d := e.Info.Detail
	if d == "" {
		d = http.StatusText(e.Status)
	}
	said := fmt.Sprintf("broker said HTTP %d", e.Status)
	if v := e.Info.Variant(); v != "" {
		said = fmt.Sprintf("broker said %s (HTTP %d)", v, e.Status)
	}
	if e.Op == "" {
		return said + ": " + d
	}
	return e.Op + ": " + said + ": " + d
}

// Is maps the answer onto coffer's sentinels (see the type's comment).
func (e *BrokerError) Is(target error) bool {
	return target != nil && target == e.sentinel()
}

func (e *BrokerError) sentinel() error {
	switch e.Info.Variant() {
	case ErrPolicyDeny, ErrAdminAuth:
		return spec.ErrPolicyDenied
	case ErrResourceNotFound:
		return spec.ErrNotFound
	case ErrResourceExists:
		return spec.ErrExists
	case ErrUnsupportedTee, ErrPolicyEngine, ErrInvalidRequest, ErrPayloadTooLarge:
		return spec.ErrUnsupported
	}
	switch e.Status {
	case http.StatusForbidden:
		return spec.ErrPolicyDenied
	case http.StatusNotFound:
		return spec.ErrNotFound
	case http.StatusPreconditionFailed:
		return spec.ErrExists
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return spec.ErrUnsupported
	}
	return nil
}

// Retryable reports whether attesting again may cure the answer: a 401
// about the token or session, not a policy denial or a missing resource.
func (e *BrokerError) Retryable() bool {
	if e.Status != http.StatusUnauthorized {
		return false
	}
	switch e.Info.Variant() {
	case ErrPolicyDeny, ErrResourceNotFound, ErrInvalidPath, ErrAdminAuth, ErrUnsupportedTee:
		return false
	}
	return true
}

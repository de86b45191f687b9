package wls

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// maxBrokerReply bounds what the WLS reads from a broker.
const maxBrokerReply = 64 << 10

// brokerCall posts in (JSON) to base+path with the session cookie and
// decodes the reply into out (when not nil). It returns the session cookie
// the broker set, if any.
func (s *Server) brokerCall(ctx context.Context, base, path, session, client string, in, out any) (string, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", protocol.ContentTypeJSON)
	if session != "" {
		req.AddCookie(&http.Cookie{Name: protocol.SessionCookie, Value: session})
	}
	if client != "" {
		// whom the broker should count this call against, if it trusts this
		// service as a proxy (kbs serve --trusted-proxy): one flooding host
		// then uses up its own share, not every host's (W20)
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := s.o.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxBrokerReply+1))
	if err != nil {
		return "", err
	}
	if len(reply) > maxBrokerReply {
		return "", fmt.Errorf("broker %s: reply over %d bytes", path, maxBrokerReply)
	}
	if resp.StatusCode/100 == 3 {
		return "", fmt.Errorf("broker %s answered a redirect (HTTP %d): not followed", path, resp.StatusCode)
	}
	if resp.StatusCode/100 != 2 {
		return "", protocol.NewBrokerError("broker "+path, resp.StatusCode, reply)
	}
	if out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			return "", fmt.Errorf("broker %s: malformed reply: %w", path, err)
		}
	}
	for _, c := range resp.Cookies() {
		if c.Name == protocol.SessionCookie {
			return c.Value, nil
		}
	}
	return "", nil
}

func (s *Server) brokerAuth(ctx context.Context, base, client, caller string) (*Challenge, error) {
	if err := s.gate(base).acquire(ctx, caller); err != nil {
		return nil, err
	}
	var ch protocol.Challenge
	sess, err := s.brokerCall(ctx, base, protocol.PathAuth, "", client, protocol.Request{Version: protocol.Version, Tee: protocol.TeeTPM, ExtraParams: json.RawMessage(`""`)}, &ch)
	if err != nil {
		return nil, err
	}
	if sess == "" || ch.Nonce == "" {
		return nil, fmt.Errorf("broker auth: no session cookie or nonce in the reply")
	}
	return &Challenge{Tee: protocol.TeeTPM, Nonce: ch.Nonce, Session: sess}, nil
}

// brokerTransfer attests the host in its session and asks for the key
// wrapped to its binding key; it returns the wrapped key and the broker's
// transfer proof (relayed untouched: the host checks it).
func (s *Server) brokerTransfer(ctx context.Context, base, keyID, client, caller string, kr KeyRequest) ([]byte, string, error) {
	if err := s.gate(base).acquire(ctx, caller); err != nil {
		return nil, "", err
	}
	var ar protocol.AttestResponse
	if _, err := s.brokerCall(ctx, base, protocol.PathAttest, kr.Session, client, kr.Attestation, &ar); err != nil {
		return nil, "", err
	}
	var tr protocol.KeyTransferResponse
	if _, err := s.brokerCall(ctx, base, protocol.PathKeyTransfer+keyID+protocol.PathTransferSuffix, kr.Session, client,
		protocol.KeyTransferRequest{BindingKey: kr.BindingKey}, &tr); err != nil {
		return nil, "", err
	}
	wrapped, err := base64.StdEncoding.DecodeString(tr.WrappedKey)
	if err != nil || len(wrapped) == 0 || len(wrapped) > 1024 {
		return nil, "", fmt.Errorf("broker key transfer: wrapped_key is not a base64 RSA ciphertext")
	}
	if len(tr.Proof) > 8<<10 {
		return nil, "", fmt.Errorf("broker key transfer: transfer_proof over 8 KiB")
	}
	return wrapped, tr.Proof, nil
}

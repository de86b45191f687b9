//go:build cgo

package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/coffer-dev/coffer/spec"
)

// tokenMu serializes token operations: a PKCS#11 module is initialized
// once per process, and a key file's module env (SOFTHSM2_CONF, …) is
// process environment while the module starts.
var tokenMu sync.Mutex

// token is one logged-in session on a key's token.
type token struct {
	c  *p11.Ctx
	sh p11.SessionHandle
	k  *Key
}

// withToken loads the key's module (only from an allowed path), finds its
// token, opens a session (logged in when the URI has a PIN; needPIN
// requires one) and runs fn, then closes everything again.
func withToken(cfg Config, k *Key, needPIN bool, fn func(t *token) error) (err error) {
	module, err := k.module(cfg)
	if err != nil {
		return err
	}
	pin, hasPIN, err := k.pin()
	if err != nil {
		return err
	}
	if needPIN && !hasPIN {
		return fmt.Errorf("pkcs11: key %s has no PIN (add pin-value= or pin-source= to its URI): %w", k, spec.ErrUnauthorized)
	}
	tokenMu.Lock()
	defer tokenMu.Unlock()
	restore := setEnv(k.env)
	defer restore()

	c := p11.New(module)
	if c == nil {
		return fmt.Errorf("pkcs11: cannot load module %s", module)
	}
	defer c.Destroy()
	switch err := c.Initialize(); {
	case err == nil:
		defer c.Finalize() //nolint:errcheck // nothing left to do with it
	case rv(err) == p11.CKR_CRYPTOKI_ALREADY_INITIALIZED:
		// Someone else in this process owns it; leave it initialized.
	default:
		return fmt.Errorf("pkcs11: module %s: C_Initialize: %s", module, rvName(err))
	}
	slot, err := findSlot(c, k)
	if err != nil {
		return err
	}
	sh, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11: token %s: C_OpenSession: %s", k.token(), rvName(err))
	}
	defer c.CloseSession(sh) //nolint:errcheck // closing ends the session either way
	if hasPIN {
		err := c.Login(sh, p11.CKU_USER, pin)
		switch rv(err) {
		case 0, p11.CKR_USER_ALREADY_LOGGED_IN:
		case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_INVALID, p11.CKR_PIN_LEN_RANGE, p11.CKR_PIN_LOCKED, p11.CKR_PIN_EXPIRED:
			return fmt.Errorf("pkcs11: token %s refused the PIN (%s): %w", k.token(), rvName(err), spec.ErrUnauthorized)
		default:
			return fmt.Errorf("pkcs11: token %s: C_Login: %s: %w", k.token(), rvName(err), spec.ErrUnauthorized)
		}
		defer c.Logout(sh) //nolint:errcheck // the session closes next
	}
	return fn(&token{c: c, sh: sh, k: k})
}

// findSlot is the URI's slot-id, or the slot whose token has the URI's
// label (and serial, manufacturer, model when given).
func findSlot(c *p11.Ctx, k *Key) (uint, error) {
	if v, ok := k.uri.GetPathAttribute("slot-id", false); ok {
		var id uint
		if _, err := fmt.Sscan(v, &id); err != nil || id > 0xffffffff {
			return 0, fmt.Errorf("pkcs11: key %s: slot-id is not a 32-bit number", k)
		}
		return id, nil
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_GetSlotList: %s", rvName(err))
	}
	label, _ := k.uri.GetPathAttribute("token", false)
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err != nil || strings.TrimRight(ti.Label, " ") != label {
			continue
		}
		if !attrMatches(k, "serial", ti.SerialNumber) || !attrMatches(k, "manufacturer", ti.ManufacturerID) || !attrMatches(k, "model", ti.Model) {
			continue
		}
		return s, nil
	}
	return 0, fmt.Errorf("pkcs11: no token %s among %d slots with a token: %w", k.token(), len(slots), spec.ErrNotFound)
}

func attrMatches(k *Key, attr, got string) bool {
	want, ok := k.uri.GetPathAttribute(attr, false)
	return !ok || strings.TrimRight(got, " ") == want
}

// find returns the one object of class with the URI's label and id.
func (t *token) find(class uint) (p11.ObjectHandle, error) {
	kind := map[uint]string{p11.CKO_PRIVATE_KEY: "private key", p11.CKO_PUBLIC_KEY: "public key"}[class]
	tmpl := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class)}
	if v, ok := t.k.uri.GetPathAttribute("object", false); ok {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_LABEL, v))
	}
	if v, ok := t.k.uri.GetPathAttribute("id", false); ok {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_ID, []byte(v)))
	}
	if err := t.c.FindObjectsInit(t.sh, tmpl); err != nil {
		return 0, fmt.Errorf("pkcs11: token %s: C_FindObjectsInit: %s", t.k.token(), rvName(err))
	}
	objs, _, err := t.c.FindObjects(t.sh, 2)
	_ = t.c.FindObjectsFinal(t.sh)
	switch {
	case err != nil:
		return 0, fmt.Errorf("pkcs11: token %s: C_FindObjects: %s", t.k.token(), rvName(err))
	case len(objs) == 0:
		return 0, fmt.Errorf("pkcs11: token %s has no %s %s: %w", t.k.token(), kind, t.k.object(), spec.ErrNotFound)
	case len(objs) > 1:
		return 0, fmt.Errorf("pkcs11: token %s has several %ss %s (add id= or object= to the URI)", t.k.token(), kind, t.k.object())
	}
	return objs[0], nil
}

func oaep(h Hash) []*p11.Mechanism {
	params := p11.NewOAEPParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, p11.CKZ_DATA_SPECIFIED, nil)
	if h == SHA1 {
		params = p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil)
	}
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, params)}
}

// mechanismRefused: the token does not do this OAEP variant.
func mechanismRefused(err error) bool {
	switch rv(err) {
	case p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_ARGUMENTS_BAD:
		return true
	}
	return false
}

// tokenEncrypt encrypts msg with the key file's public key object, on its
// token.
func tokenEncrypt(cfg Config, k *Key, h Hash, msg []byte) (ct []byte, err error) {
	err = withToken(cfg, k, false, func(t *token) error {
		obj, err := t.find(p11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		if err := t.c.EncryptInit(t.sh, oaep(h), obj); err != nil {
			if mechanismRefused(err) {
				return fmt.Errorf("pkcs11: token %s cannot RSA-OAEP-%s (%s); SoftHSM 2.6 needs OCICRYPT_OAEP_HASHALG=sha1: %w",
					k.token(), strings.ToUpper(string(h)), rvName(err), spec.ErrUnsupported)
			}
			return fmt.Errorf("pkcs11: token %s: C_EncryptInit: %s", k.token(), rvName(err))
		}
		ct, err = t.c.Encrypt(t.sh, msg)
		if err != nil {
			return fmt.Errorf("pkcs11: token %s: C_Encrypt: %s", k.token(), rvName(err))
		}
		return nil
	})
	return ct, err
}

// tokenDecrypt tries the key's private key object on every recipient, in
// one session.
func tokenDecrypt(cfg Config, k *Key, ws []wrapped) (pt []byte, err error) {
	err = withToken(cfg, k, true, func(t *token) error {
		obj, err := t.find(p11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		var refused []string
		for _, w := range ws {
			if err := t.c.DecryptInit(t.sh, oaep(w.hash), obj); err != nil {
				if mechanismRefused(err) {
					refused = append(refused, fmt.Sprintf("RSA-OAEP-%s (%s)", strings.ToUpper(string(w.hash)), rvName(err)))
					continue
				}
				return fmt.Errorf("pkcs11: token %s: C_DecryptInit: %s", k.token(), rvName(err))
			}
			// A failed C_Decrypt ends the operation: not this recipient.
			if b, err := t.c.Decrypt(t.sh, w.ct); err == nil {
				pt = b
				return nil
			}
		}
		if len(refused) == len(ws) {
			return fmt.Errorf("pkcs11: token %s cannot %s, which every recipient of this entry needs (SoftHSM 2.6 decrypts only what was wrapped with OCICRYPT_OAEP_HASHALG=sha1): %w",
				k.token(), refused[0], spec.ErrUnsupported)
		}
		return fmt.Errorf("pkcs11: key %s opens none of the entry's %d recipients: %w", k, len(ws), spec.ErrNoKey)
	})
	return pt, err
}

// setEnv sets the module env and returns what restores the previous one.
func setEnv(env map[string]string) func() {
	type old struct {
		v  string
		ok bool
	}
	prev := map[string]old{}
	for k, v := range env {
		pv, ok := os.LookupEnv(k)
		prev[k] = old{pv, ok}
		os.Setenv(k, v) //nolint:errcheck // validated when parsed
	}
	return func() {
		for k, o := range prev {
			if o.ok {
				os.Setenv(k, o.v) //nolint:errcheck
			} else {
				os.Unsetenv(k) //nolint:errcheck
			}
		}
	}
}

func rv(err error) uint {
	var e p11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	if err != nil {
		return ^uint(0)
	}
	return 0
}

// rvName is the CKR_ name of a PKCS#11 error.
func rvName(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return s
}

package protocol

import (
	"bytes"
	"crypto/sha512"

	"github.com/coffer-dev/coffer/jcs"
)

// Canonicalize returns the RFC 8785 canonical form of in (see package jcs,
// its home; kept here for existing callers).
func Canonicalize(in []byte) ([]byte, error) { return jcs.Canonicalize(in) }

// CanonicalizeValue marshals v and canonicalizes it (see package jcs).
func CanonicalizeValue(v any) ([]byte, error) { return jcs.CanonicalizeValue(v) }

// ReportDataDigest returns the SHA-384 digest a TEE must carry in its
// report data: SHA-384 of the JCS canonical JSON of
// {"tee-pubkey": pub, "nonce": nonce, "additional-evidence": additional}.
// (The canonical text is written directly; reportDataJSON documents it.)
func ReportDataDigest(nonce string, pub TeePubKey, additionalEvidence string) ([]byte, error) {
	sum := sha512.Sum384(reportDataJSON(nonce, pub, additionalEvidence))
	return sum[:], nil
}

// reportDataJSON writes the canonical form of the report-data object: its
// members and those of the tee-pubkey in sorted order, empty optional JWK
// members left out as encoding/json's omitempty does. A test checks it
// against Canonicalize.
func reportDataJSON(nonce string, pub TeePubKey, additional string) []byte {
	var b bytes.Buffer
	b.Grow(256 + len(additional))
	b.WriteString(`{"additional-evidence":`)
	jcs.WriteString(&b, additional)
	b.WriteString(`,"nonce":`)
	jcs.WriteString(&b, nonce)
	b.WriteString(`,"tee-pubkey":{`)
	first := true
	member := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteByte('"')
		b.WriteString(name)
		b.WriteString(`":`)
		jcs.WriteString(&b, v)
	}
	member("alg", pub.Alg, false)
	member("crv", pub.Crv, false)
	member("e", pub.E, false)
	member("kty", pub.Kty, true)
	member("n", pub.N, false)
	member("pub", pub.Pub, false)
	member("x", pub.X, false)
	member("y", pub.Y, false)
	b.WriteString("}}")
	return b.Bytes()
}

// ReportData fits a digest into a report-data field of size bytes
// (64 for TDX and SNP): zero-padded when shorter, truncated when longer.
func ReportData(digest []byte, size int) []byte {
	out := make([]byte, size)
	copy(out, digest)
	return out
}

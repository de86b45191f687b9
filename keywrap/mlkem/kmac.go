package mlkem

import (
	"crypto/sha3"
	"encoding/binary"
)

// kmac256 is KMAC256(K, X, L, S) of NIST SP 800-185 §4 on crypto/sha3's
// cSHAKE256: cSHAKE256(bytepad(encode_string(K), 136) || X ||
// right_encode(L), L, "KMAC", S), with L = outLen·8 bits.
func kmac256(key, x []byte, outLen int, s []byte) []byte {
	const rate = 136 // cSHAKE256's rate in bytes
	h := sha3.NewCSHAKE256([]byte("KMAC"), s)
	pad := leftEncode(rate)
	pad = append(pad, leftEncode(uint64(len(key))*8)...)
	pad = append(pad, key...)
	if r := len(pad) % rate; r != 0 {
		pad = append(pad, make([]byte, rate-r)...)
	}
	h.Write(pad)
	h.Write(x)
	h.Write(rightEncode(uint64(outLen) * 8))
	out := make([]byte, outLen)
	h.Read(out)
	clear(pad)
	return out
}

// leftEncode and rightEncode are SP 800-185 §2.3.1: the big-endian bytes
// of v (at least one), with their count before (left) or after (right).
func leftEncode(v uint64) []byte {
	b := minimalBE(v)
	return append([]byte{byte(len(b))}, b...)
}

func rightEncode(v uint64) []byte {
	b := minimalBE(v)
	return append(b, byte(len(b)))
}

func minimalBE(v uint64) []byte {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	i := 0
	for i < 7 && buf[i] == 0 {
		i++
	}
	return buf[i:]
}

// kdf derives the key-wrapping key of draft-ietf-jose-pqc-kem-05 §5.1 as
// trustee's prototype (kbs/src/jwe/akp.rs) computes it: KMAC256 keyed with
// the ML-KEM shared secret over X = be32(len(alg)) || alg ||
// be32(keydatalen in bits), S = "" (PartyUInfo/PartyVInfo omitted).
func kdf(shared []byte, alg string, outLen int) []byte {
	x := binary.BigEndian.AppendUint32(nil, uint32(len(alg)))
	x = append(x, alg...)
	x = binary.BigEndian.AppendUint32(x, uint32(outLen*8))
	return kmac256(shared, x, outLen, nil)
}

// Command filecrypt encrypts or decrypts one file with coffer's filecrypt
// package (the format coffer wpm writes for VM images), so its throughput
// and peak memory can be measured on its own with /usr/bin/time -v, away
// from the broker and the TPM:
//
//	head -c 2G /dev/urandom >disk.img
//	/usr/bin/time -v go run ./scripts/filecrypt -e -in disk.img -out disk.enc
//	/usr/bin/time -v go run ./scripts/filecrypt -d -in disk.enc -out disk.out -digest HEX
//
// It uses a fixed demo key: a measuring tool, not a way to protect files.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/coffer-dev/coffer/filecrypt"
)

func main() {
	enc := flag.Bool("e", false, "encrypt")
	dec := flag.Bool("d", false, "decrypt")
	in := flag.String("in", "", "input file")
	out := flag.String("out", "", "output file (committed atomically)")
	digest := flag.String("digest", "", "with -d: the hex digest the ciphertext must have (as a flavor names it)")
	secl := flag.Bool("secl", false, "with -e: SecL's whole-file format")
	flag.Parse()
	if *enc == *dec || *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: filecrypt -e|-d -in FILE -out FILE [-digest HEX] [-secl]")
		os.Exit(2)
	}
	key := make([]byte, filecrypt.KeySize) // demo key: all zero
	var opts []filecrypt.Option
	if *secl {
		opts = append(opts, filecrypt.WithSecLFormat())
	}
	if *digest != "" {
		d, err := hex.DecodeString(*digest)
		if err != nil {
			fmt.Fprintln(os.Stderr, "filecrypt: -digest:", err)
			os.Exit(2)
		}
		opts = append(opts, filecrypt.WithDigest(d))
	}
	start := time.Now()
	var res *filecrypt.Result
	var err error
	if *enc {
		res, err = filecrypt.EncryptFile(context.Background(), *in, *out, key, opts...)
	} else {
		res, err = filecrypt.DecryptFile(context.Background(), *in, *out, key, opts...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "filecrypt:", err)
		os.Exit(1)
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("%d plaintext bytes in %.2fs (%.0f MiB/s), digest %x\n", res.PlainSize, secs, float64(res.PlainSize)/secs/(1<<20), res.Digest)
}

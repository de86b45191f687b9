package postgres_test

import (
	"fmt"
	"strings"

	"github.com/coffer-dev/coffer/kbs/store/postgres"
)

// A replica's key-encryption key, as `openssl rand -hex 32` writes it.
// Opening the store (postgres.Open with postgres.WithKEK) needs a database:
// see docs/scale-out.md.
func ExampleParseKEK() {
	kek, err := postgres.ParseKEK([]byte(strings.Repeat("0f", 32) + "\n"))
	fmt.Println(len(kek), err)
	_, err = postgres.ParseKEK([]byte("too short"))
	fmt.Println(err != nil)
	fmt.Println(postgres.Redact("postgres://kbs:hunter2@db:5432/kbs?sslmode=verify-full"))
	// Output:
	// 32 <nil>
	// true
	// postgres://kbs:xxxxx@db:5432/kbs?sslmode=verify-full
}

package transport_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/coffer-dev/coffer/transport"
)

// References name where an image lives, in skopeo's transports; Write and
// Read move one there and back (here an OCI layout).
func Example() {
	for _, s := range []string{"docker://reg.example.com/team/app:v1", "oci:/srv/images/app:v1", "oci-archive:/tmp/app.tar", "docker-archive:/tmp/app.tar"} {
		ref, err := transport.Parse(s)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-14s %s\n", ref.Transport(), ref)
	}
	_, err := transport.Parse("alpine")
	fmt.Println("no transport:", err != nil)

	ctx := context.Background()
	dir, err := os.MkdirTemp("", "transport-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ref, err := transport.Parse("oci:" + filepath.Join(dir, "layout") + ":v1")
	if err != nil {
		panic(err)
	}
	img, err := random.Image(256, 2)
	if err != nil {
		panic(err)
	}
	if err := transport.Write(ctx, ref, transport.Artifact{Image: img}); err != nil {
		panic(err)
	}
	a, release, err := transport.Read(ctx, ref)
	if err != nil {
		panic(err)
	}
	defer release()
	want, _ := img.Digest()
	got, _ := a.Image.Digest()
	fmt.Println("read back the image written:", got == want)
	// Output:
	// docker         docker://reg.example.com/team/app:v1
	// oci            oci:/srv/images/app:v1
	// oci-archive    oci-archive:/tmp/app.tar
	// docker-archive docker-archive:/tmp/app.tar
	// no transport: true
	// read back the image written: true
}

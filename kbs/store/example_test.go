package store_test

import (
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/kbs/store"
)

// List describes what a store holds, never the values.
func ExampleMemory_List() {
	ctx := context.Background()
	s := store.NewMemory()
	_ = s.Set(ctx, store.ResourcePath{Repo: "tenant-b", Type: "image_key", Tag: "app"}, []byte("k2"))
	_ = s.Set(ctx, store.ResourcePath{Repo: "tenant-a", Type: "image_key", Tag: "app"}, []byte("key1"))
	infos, _ := s.List(ctx)
	for _, in := range infos {
		fmt.Println(in.Path, in.Size)
	}
	// Output:
	// tenant-a/image_key/app 4
	// tenant-b/image_key/app 2
}

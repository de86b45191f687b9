package cli

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestOnceByKID(t *testing.T) {
	var calls atomic.Int32
	r := onceByKID(func(_ context.Context, kid string) ([]byte, error) {
		calls.Add(1)
		if kid == "bad" {
			return nil, errors.New("denied")
		}
		return []byte(kid), nil
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k, err := r(context.Background(), "kbs:///a/b/c"); err != nil || string(k) != "kbs:///a/b/c" {
				t.Errorf("resolve = %q, %v", k, err)
			}
		}()
	}
	wg.Wait()
	if _, err := r(context.Background(), "bad"); err == nil {
		t.Error("error not returned")
	}
	r(context.Background(), "bad")
	if n := calls.Load(); n != 2 {
		t.Errorf("resolver called %d times, want 2 (once per kid)", n)
	}
}

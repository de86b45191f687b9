package securemount

import (
	"context"
	"fmt"
	"slices"
)

// drivers maps CDH volume types to their drivers: one line per type.
var drivers = map[string]Driver{
	"block-device":      blockDevice{},
	"alibaba-cloud-oss": unimplemented{"alibaba-cloud-oss", "Alibaba Cloud OSS"},
}

// VolumeTypes lists the registered volume types, sorted.
func VolumeTypes() []string {
	var n []string
	for k := range drivers {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// unimplemented is a volume type CDH has and coffer refuses.
type unimplemented struct{ name, what string }

func (u unimplemented) Mount(context.Context, *Mounter, *Request) error {
	return fmt.Errorf("volume type %q (%s) is not supported by coffer: %w", u.name, u.what, ErrUnimplemented)
}

// Package tenant finds which containerd namespace a stream processor is
// working for. containerd gives a stream processor no namespace: its
// environment is containerd's own plus the processor's configured env, and
// the fd-3 payload is whatever the client chose to send (plain ctr and CRI
// send none or no namespace). But every layer containerd unpacks goes into
// an active snapshot keyed "extract-<unique> <chainID>" (containerd's
// snapshots.UnpackKeyFormat, used by the 1.6 client unpacker, CRI and the
// 1.7+/2.x transfer service) in the namespace that asked. So the namespaces
// extracting a layer right now are those holding an active snapshot whose
// key ends with the layer's chain ID; Requesters asks containerd's
// snapshots service for them.
//
// The client speaks containerd's gRPC API with protowire-encoded messages
// (three messages; the containerd API module is not worth its weight here).
package tenant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ChainIDs returns the chain ID of every layer of an image with these
// diffIDs, as containerd names its snapshots (OCI image-spec chain IDs).
func ChainIDs(diffIDs []v1.Hash) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d.String()
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + d.String()))
		out[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out
}

// validNamespace is containerd's namespace grammar (identifiers.Validate):
// also what makes a namespace safe as a directory name.
var validNamespace = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// ValidNamespace reports whether ns is a containerd namespace name.
func ValidNamespace(ns string) bool { return len(ns) <= 76 && validNamespace.MatchString(ns) }

const (
	nsHeader       = "containerd-namespace"
	listNamespaces = "/containerd.services.namespaces.v1.Namespaces/List"
	listSnapshots  = "/containerd.services.snapshots.v1.Snapshots/List"
	kindActive     = 2
	maxMsg         = 16 << 20
)

// Extraction is a layer being unpacked right now: the namespace asking and
// the layer's chain ID.
type Extraction struct {
	Namespace, ChainID string
	// ImageRef is the image reference the CRI plugin is pulling the layer
	// for: the extraction snapshot's CRIImageRefLabel, which CRI sets when
	// its disable_snapshot_annotations is false. "" otherwise.
	ImageRef string
}

// CRIImageRefLabel is the snapshot label containerd's CRI plugin gives
// every snapshot it prepares for a pull (containerd's
// pkg/cri/.../image_pull.go appendInfoHandlerWrapper: the layer
// descriptors' "containerd.io/snapshot/cri.image-ref" annotation, which the
// unpacker passes on as a label), unless disable_snapshot_annotations.
const CRIImageRefLabel = "containerd.io/snapshot/cri.image-ref"

// maxRefLen bounds an image reference read from a label (a reference is at
// most 255 bytes of name plus a tag or digest).
const maxRefLen = 512

// Extractions lists the layers the containerd at address (its unix socket)
// is extracting now: its active "extract-<unique> <chainID>" snapshots, in
// every namespace and in each of the given snapshotters (those containerd
// does not run are skipped).
func Extractions(ctx context.Context, address string, snapshotters []string) ([]Extraction, error) {
	cc, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg)))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	defer cc.Close()
	nss, err := namespaces(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("listing containerd namespaces at %s: %w", address, err)
	}
	var (
		out      []Extraction
		anyWorks bool
		lastErr  error
	)
	for _, ns := range nss {
		for _, sn := range snapshotters {
			keys, err := activeKeys(metadata.AppendToOutgoingContext(ctx, nsHeader, ns), cc, sn)
			if err != nil {
				lastErr = err
				continue
			}
			anyWorks = true
			for _, k := range keys {
				if c, ok := extractionChain(k.name); ok {
					out = append(out, Extraction{Namespace: ns, ChainID: c, ImageRef: k.imageRef})
				}
			}
		}
	}
	if !anyWorks && len(nss) > 0 {
		return nil, fmt.Errorf("listing snapshots (%s): %w", strings.Join(snapshotters, ", "), lastErr)
	}
	return out, nil
}

// Requesters returns, sorted, the namespaces extracting a layer with any of
// chainIDs (see Extractions).
func Requesters(ctx context.Context, address string, snapshotters, chainIDs []string) ([]string, error) {
	ex, err := Extractions(ctx, address, snapshotters)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ex {
		if slices.Contains(chainIDs, e.ChainID) && !slices.Contains(out, e.Namespace) {
			out = append(out, e.Namespace)
		}
	}
	slices.Sort(out)
	return out, nil
}

// extractionChain returns the chain ID of an "extract-<unique> <chainID>"
// snapshot key.
func extractionChain(key string) (string, bool) {
	if !strings.HasPrefix(key, "extract-") {
		return "", false
	}
	_, c, ok := strings.Cut(key, " ")
	return c, ok && strings.HasPrefix(c, "sha256:")
}

// isExtractionOf: key is "extract-<unique> <chainID>" for one of chainIDs.
func isExtractionOf(key string, chainIDs []string) bool {
	c, ok := extractionChain(key)
	return ok && slices.Contains(chainIDs, c)
}

func namespaces(ctx context.Context, cc *grpc.ClientConn) ([]string, error) {
	out := new(emptypb.Empty)
	if err := cc.Invoke(ctx, listNamespaces, wrapperspb.String(""), out); err != nil {
		return nil, err
	}
	var nss []string
	err := fields(out.ProtoReflect().GetUnknown(), func(num protowire.Number, b []byte) error {
		if num != 1 {
			return nil
		}
		return fields(b, func(num protowire.Number, v []byte) error {
			if num == 1 {
				if !ValidNamespace(string(v)) {
					return fmt.Errorf("containerd returned an invalid namespace name")
				}
				nss = append(nss, string(v))
			}
			return nil
		})
	})
	return nss, err
}

// active is an active snapshot: its key and its CRI image-ref label.
type active struct{ name, imageRef string }

// activeKeys lists the active snapshots of one snapshotter.
// ListSnapshotsRequest is {1: snapshotter, 2: filters}: a StringValue has
// the same encoding. Info is {1: name, 2: parent, 3: kind, 4, 5: times,
// 6: labels (map entries {1: key, 2: value})}.
func activeKeys(ctx context.Context, cc *grpc.ClientConn, snapshotter string) ([]active, error) {
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, listSnapshots)
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(wrapperspb.String(snapshotter)); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var keys []active
	for {
		m := new(emptypb.Empty)
		err := st.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return keys, nil
		}
		if err != nil {
			return nil, err
		}
		err = fields(m.ProtoReflect().GetUnknown(), func(num protowire.Number, info []byte) error {
			if num != 1 {
				return nil
			}
			a, kind, err := parseInfo(info)
			if err == nil && kind == kindActive {
				keys = append(keys, a)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
}

// parseInfo decodes a snapshots.v1.Info: its name, kind and CRI image-ref
// label (other labels are skipped; an over-long reference is dropped).
func parseInfo(info []byte) (active, uint64, error) {
	var (
		a    active
		kind uint64
	)
	err := fields(info, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			a.name = string(v)
		case 6:
			var k, val []byte
			if err := fields(v, func(num protowire.Number, b []byte) error {
				switch num {
				case 1:
					k = b
				case 2:
					val = b
				}
				return nil
			}); err != nil {
				return err
			}
			if string(k) == CRIImageRefLabel && len(val) <= maxRefLen {
				a.imageRef = string(val)
			}
		}
		return nil
	}, func(num protowire.Number, v uint64) {
		if num == 3 {
			kind = v
		}
	})
	return a, kind, err
}

// fields walks a protobuf message: bytes fields go to onBytes, varints to
// the optional onVarint; other wire types are skipped.
func fields(b []byte, onBytes func(protowire.Number, []byte) error, onVarint ...func(protowire.Number, uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := onBytes(num, v); err != nil {
				return err
			}
			b = b[n:]
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			for _, f := range onVarint {
				f(num, v)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

package kubernetes

import (
	"bytes"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/runtime/nodecfg"
)

// TestRuntimeClass decodes runtimeclass/runtimeclass.yaml strictly into
// k8s.io/api types: the RuntimeClass names the CRI handler `coffer runtime
// install containerd --shim` writes, and the example pod uses it with an
// init-data annotation the shim decodes.
func TestRuntimeClass(t *testing.T) {
	raw, err := os.ReadFile("runtimeclass/runtimeclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rc *nodev1.RuntimeClass
	var pod *corev1.Pod
	for i, doc := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---\n")) {
		if onlyComments(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "node.k8s.io/v1 RuntimeClass":
			rc = &nodev1.RuntimeClass{}
			obj = rc
		case "v1 Pod":
			pod = &corev1.Pod{}
			obj = pod
		default:
			t.Fatalf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, tm.Kind, err)
		}
	}
	if rc == nil || pod == nil {
		t.Fatal("want a RuntimeClass and an example Pod")
	}
	if rc.Handler != nodecfg.ShimHandler {
		t.Errorf("RuntimeClass handler %q, want %q (the CRI runtime coffer runtime install --shim writes)", rc.Handler, nodecfg.ShimHandler)
	}
	if rc.Overhead == nil || rc.Overhead.PodFixed.Memory().Value() < 512<<20 {
		t.Errorf("RuntimeClass overhead %+v: want at least the guest's memory", rc.Overhead)
	}
	if pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != rc.Name {
		t.Errorf("example pod's runtimeClassName %v, want %q", pod.Spec.RuntimeClassName, rc.Name)
	}
	d, err := ttrpc.DecodeAnnotation(pod.Annotations[ttrpc.AnnotationInitData])
	if err != nil {
		t.Fatalf("example pod's init-data annotation: %v", err)
	}
	if _, err := d.Config(); err != nil {
		t.Fatalf("example pod's init-data does not configure the agent: %v", err)
	}
}

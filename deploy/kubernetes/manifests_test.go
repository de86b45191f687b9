// Package kubernetes holds the broker's Kubernetes manifests (kustomize);
// these tests keep them, and the Helm chart in ../helm/coffer-kbs, valid and
// in step with `coffer kbs serve`.
package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/coffer-dev/coffer/internal/cli"
)

// kustomization is the part of kustomize's Kustomization these manifests use.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Resources []string `json:"resources"`
}

type manifests struct {
	deploy         *appsv1.Deployment
	service        *corev1.Service
	pdb            *policyv1.PodDisruptionBudget
	netpol         *networkingv1.NetworkPolicy // the Helm chart's
	serviceMonitor *serviceMonitor             // the Helm chart's, when enabled
	secrets        map[string]*corev1.Secret   // from secrets.example.yaml (or the chart's, when it writes them)
	resource       []string
	wantReplicas   int32
}

// decode reads one file's documents strictly (unknown fields fail) into
// the typed API objects.
func decode(t *testing.T, m *manifests, file string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	decodeDocs(t, m, file, raw)
}

// decodeDocs decodes a YAML stream (documents split by "---" lines)
// strictly; a document holding only comments is skipped.
func decodeDocs(t *testing.T, m *manifests, file string, raw []byte) {
	t.Helper()
	for i, doc := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---\n")) {
		if onlyComments(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s document %d: %v", file, i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "networking.k8s.io/v1 NetworkPolicy":
			m.netpol = &networkingv1.NetworkPolicy{}
			obj = m.netpol
		case "monitoring.coreos.com/v1 ServiceMonitor":
			// A custom resource: as the API server sees it (unstructured,
			// a well-formed object of that group, version and kind), and
			// strictly as the CRD's fields the chart uses.
			js, err := yaml.YAMLToJSON(doc)
			u := &unstructured.Unstructured{}
			if err == nil {
				err = u.UnmarshalJSON(js)
			}
			if gvk := u.GroupVersionKind(); err != nil || gvk.Group != "monitoring.coreos.com" || gvk.Version != "v1" || gvk.Kind != "ServiceMonitor" || u.GetName() == "" {
				t.Fatalf("%s document %d: not a named monitoring.coreos.com/v1 ServiceMonitor (%v)", file, i, err)
			}
			m.serviceMonitor = &serviceMonitor{}
			obj = m.serviceMonitor
		case "apps/v1 Deployment":
			m.deploy = &appsv1.Deployment{}
			obj = m.deploy
		case "v1 Service":
			m.service = &corev1.Service{}
			obj = m.service
		case "policy/v1 PodDisruptionBudget":
			m.pdb = &policyv1.PodDisruptionBudget{}
			obj = m.pdb
		case "v1 Secret":
			s := &corev1.Secret{}
			obj = s
			defer func() { m.secrets[s.Name] = s }()
		default:
			t.Fatalf("%s document %d: unexpected %s %s", file, i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", file, i, tm.Kind, err)
		}
	}
}

func onlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{secrets: map[string]*corev1.Secret{}, wantReplicas: 3}
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	m.resource = k.Resources
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if f == "kustomization.yaml" {
			continue
		}
		if !slices.Contains(k.Resources, f) && f != "secrets.example.yaml" {
			t.Errorf("%s is neither a kustomization resource nor the secrets example", f)
		}
		decode(t, m, f)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(r); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
	if m.deploy == nil || m.service == nil || m.pdb == nil {
		t.Fatal("want a Deployment, a Service and a PodDisruptionBudget")
	}
	return m
}

func TestManifests(t *testing.T) {
	m := load(t)
	if errs := check(m); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
}

// TestManifestChecksCatchMistakes breaks the manifests in the ways check
// must notice, so a passing TestManifests means something.
func TestManifestChecksCatchMistakes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(m *manifests)
		want   string
	}{
		{"port", func(m *manifests) { m.deploy.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort = 9000 }, "containerPort"},
		{"flag", func(m *manifests) {
			c := &m.deploy.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--no-such-flag")
		}, "unknown flag"},
		{"probe", func(m *manifests) {
			m.deploy.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path = "/ready"
		}, "readiness"},
		{"mount", func(m *manifests) {
			c := &m.deploy.Spec.Template.Spec.Containers[0]
			c.VolumeMounts = c.VolumeMounts[1:]
		}, "not under a mount"},
		{"secret key", func(m *manifests) {
			m.deploy.Spec.Template.Spec.Volumes[0].Secret.Items[0].Key = "kek"
		}, "secret"},
		{"root", func(m *manifests) {
			f := false
			m.deploy.Spec.Template.Spec.SecurityContext.RunAsNonRoot = &f
		}, "non-root"},
		{"rofs", func(m *manifests) {
			f := false
			m.deploy.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
		}, "read-only"},
		{"replicas", func(m *manifests) { r := int32(1); m.deploy.Spec.Replicas = &r }, "replicas"},
		{"selector", func(m *manifests) { m.service.Spec.Selector = map[string]string{"app": "x"} }, "selector"},
		{"scrape", func(m *manifests) { m.deploy.Spec.Template.Annotations["prometheus.io/port"] = "80" }, "prometheus"},
		{"migrate", func(m *manifests) {
			m.deploy.Spec.Template.Spec.InitContainers[0].Args = []string{"kbs", "migrate", "--store", "postgres://x@y/z"}
		}, "migrate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := load(t)
			tc.break_(m)
			errs := check(m)
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", errs, tc.want)
			}
		})
	}
}

// parseCommand parses args with the real `coffer <args>` command (its cobra
// flag set: an unknown or malformed flag fails) and returns the path of the
// command and the file and address flags it was given.
func parseCommand(args []string) (map[string]string, error) {
	root := cli.NewRoot()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return nil, err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, err
	}
	if cmd.Flags().NArg() > 0 {
		return nil, fmt.Errorf("stray arguments %v", cmd.Flags().Args())
	}
	out := map[string]string{"command": cmd.CommandPath()}
	for _, name := range []string{"listen", "store", "store-url-file", "store-kek", "store-kek-previous", "token-key", "admin-public-key", "tls-cert", "tls-key"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			out[name] = strings.Trim(f.Value.String(), "[]")
		}
	}
	return out, nil
}

func check(m *manifests) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	d := m.deploy
	pod := d.Spec.Template
	if d.Spec.Replicas == nil || *d.Spec.Replicas != m.wantReplicas {
		fail("deployment replicas: want %d", m.wantReplicas)
	}
	labels := pod.Labels
	matches := func(sel map[string]string) bool {
		if len(sel) == 0 {
			return false
		}
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	if d.Spec.Selector == nil || !matches(d.Spec.Selector.MatchLabels) {
		fail("deployment selector does not match its pod labels")
	}
	if !matches(m.service.Spec.Selector) {
		fail("service selector does not match the pod labels")
	}
	if m.pdb.Spec.Selector == nil || !matches(m.pdb.Spec.Selector.MatchLabels) {
		fail("pdb selector does not match the pod labels")
	}
	if mi := m.pdb.Spec.MinAvailable; mi == nil || mi.IntValue() < 1 || d.Spec.Replicas == nil || mi.IntValue() >= int(*d.Spec.Replicas) {
		fail("pdb minAvailable must keep one replica up and let one be disrupted")
	}
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		fail("pod must run as non-root")
	}
	if len(pod.Spec.Containers) != 1 {
		fail("want one container")
		return errs
	}
	c := pod.Spec.Containers[0]
	for _, cc := range append([]corev1.Container{c}, pod.Spec.InitContainers...) {
		sc := cc.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("container %s: want a read-only root filesystem and no privilege escalation", cc.Name)
		}
	}
	flags, err := parseCommand(append(slices.Clone(c.Command), c.Args...))
	if err != nil {
		fail("container args do not parse as a coffer command: %v", err)
		return errs
	}
	if flags["command"] != "coffer kbs serve" {
		fail("container runs %q, want coffer kbs serve", flags["command"])
	}
	_, portStr, err := splitHostPort(flags["listen"])
	port, _ := strconv.Atoi(portStr)
	if err != nil || port == 0 {
		fail("--listen %q: want host:port", flags["listen"])
	}
	if len(c.Ports) != 1 || int(c.Ports[0].ContainerPort) != port {
		fail("containerPort does not equal the --listen port %d", port)
	}
	named := map[string]int{}
	for _, p := range c.Ports {
		named[p.Name] = int(p.ContainerPort)
	}
	portOf := func(p intstr.IntOrString) int {
		if p.Type == intstr.String {
			return named[p.StrVal]
		}
		return p.IntValue()
	}
	scheme := corev1.URISchemeHTTP
	if flags["tls-cert"] != "" {
		scheme = corev1.URISchemeHTTPS
	}
	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := "/healthz"
		if name == "liveness" {
			want = "/healthz?probe=live" // must not fail when only the database is down
		}
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != want || portOf(pr.HTTPGet.Port) != port || pr.HTTPGet.Scheme != scheme {
			fail("%s probe: want GET %s %s on port %d", name, scheme, want, port)
		}
	}
	if len(m.service.Spec.Ports) == 0 || portOf(m.service.Spec.Ports[0].TargetPort) != port {
		fail("service targetPort does not reach the container port %d", port)
	}
	ann := pod.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(port) || ann["prometheus.io/path"] != "/metrics" ||
		(scheme == corev1.URISchemeHTTPS) != (ann["prometheus.io/scheme"] == "https") {
		fail("prometheus scrape annotations do not match the listener (port %d, %s)", port, scheme)
	}
	// Every file flag names a key of a secret mounted read-only.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	fileIn := func(cc corev1.Container, flag, file string) {
		for _, vm := range cc.VolumeMounts {
			rel, ok := strings.CutPrefix(file, strings.TrimSuffix(vm.MountPath, "/")+"/")
			if !ok {
				continue
			}
			v, ok := volumes[vm.Name]
			if !vm.ReadOnly || !ok || v.Secret == nil {
				fail("--%s %s: mount %s is not a read-only secret volume", flag, file, vm.Name)
				return
			}
			key := rel
			if len(v.Secret.Items) > 0 {
				key = ""
				for _, it := range v.Secret.Items {
					if it.Path == rel {
						key = it.Key
					}
				}
			}
			s := m.secrets[v.Secret.SecretName]
			if s == nil {
				fail("--%s: secret %s is not described in secrets.example.yaml", flag, v.Secret.SecretName)
			} else if _, ok := s.StringData[key]; key == "" || (!ok && s.Data[key] == nil) {
				fail("--%s %s: secret %s has no key for %s", flag, file, v.Secret.SecretName, rel)
			}
			if mode := v.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 {
				fail("--%s: secret volume %s readable by others", flag, vm.Name)
			}
			return
		}
		fail("--%s %s: not under a mount of container %s", flag, file, cc.Name)
	}
	for _, f := range []string{"store-url-file", "store-kek", "token-key", "admin-public-key", "tls-cert", "tls-key"} {
		if flags[f] == "" {
			fail("coffer kbs serve without --%s", f)
			continue
		}
		fileIn(c, f, flags[f])
	}
	if f := "store-kek-previous"; flags[f] != "" {
		fileIn(c, f, flags[f])
	}
	// The init container migrates the same database.
	if len(pod.Spec.InitContainers) != 1 {
		fail("want one init container running coffer kbs migrate")
		return errs
	}
	ic := pod.Spec.InitContainers[0]
	mf, err := parseCommand(append(slices.Clone(ic.Command), ic.Args...))
	switch {
	case err != nil:
		fail("init container args: %v", err)
	case mf["command"] != "coffer kbs migrate" || mf["store-url-file"] != flags["store-url-file"]:
		fail("init container must run coffer kbs migrate with --store-url-file %s", flags["store-url-file"])
	default:
		fileIn(ic, "store-url-file", mf["store-url-file"])
	}
	if ic.Image != c.Image {
		fail("init container image %s differs from the broker's %s", ic.Image, c.Image)
	}
	return errs
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", s)
	}
	return s[:i], s[i+1:], nil
}

package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// chartDir is the broker's Helm chart.
const chartDir = "../helm/coffer-kbs"

// serviceMonitor is the part of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor the chart renders (its Go types are not a dependency of
// coffer). Decoded strictly: a field the chart writes that is not here, or
// not spelt as the CRD spells it, fails the test.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Scheme        string `json:"scheme"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			TLSConfig     *struct {
				ServerName string `json:"serverName"`
				CA         *struct {
					Secret *corev1.SecretKeySelector `json:"secret"`
				} `json:"ca"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// helmRun runs helm with its config, cache and data homes in a temporary
// directory (no user state read or written, no network: the chart is local).
func helmRun(t *testing.T, helm string, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v: %s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// helmValues writes a values file for the chart.
func helmValues(t *testing.T, yamlText string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// render runs `helm template` of release coffer-kbs (whose object names
// are the kustomize base's) in namespace coffer, and decodes every object.
func render(t *testing.T, helm string, values string, wantReplicas int32, extra ...string) (*manifests, error) {
	t.Helper()
	args := []string{"template", "coffer-kbs", chartDir, "--namespace", "coffer"}
	if values != "" {
		args = append(args, "--values", helmValues(t, values))
	}
	args = append(args, extra...)
	out, err := helmRun(t, helm, args...)
	if err != nil {
		return nil, err
	}
	m := &manifests{secrets: map[string]*corev1.Secret{}, wantReplicas: wantReplicas}
	decodeDocs(t, m, "helm template", out)
	if m.deploy == nil || m.service == nil {
		t.Fatalf("helm template rendered no Deployment or Service:\n%s", out)
	}
	if len(m.secrets) == 0 {
		// The chart mounts Secrets the operator made: their shapes are the
		// kustomize base's example.
		decode(t, m, "secrets.example.yaml")
	}
	return m, nil
}

// the values set of a production-like install: 3 replicas, the operator's
// ServiceMonitor, Secrets written by the chart, ingress from two peers.
const helmValues3 = `
replicaCount: 3
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
  caSecret: {name: coffer-kbs-ca, key: ca.crt}
secrets:
  keys:
    create: true
    tokenKey: |
      -----BEGIN EC PRIVATE KEY-----
      placeholder "token" key\x00
      -----END EC PRIVATE KEY-----
    adminPublicKey: "placeholder-admin-pub"
    withPreviousKek: true
    storeKekPrevious: "placeholder-previous-kek"
  db:
    create: true
    url: "postgres://kbs:pw@db:5432/kbs?sslmode=verify-full"
  tls:
    create: true
    cert: "placeholder-cert"
    key: "placeholder-key"
networkPolicy:
  ingressFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    - ipBlock: {cidr: 10.0.0.0/8}
  egress:
    - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
    - to: [{ipBlock: {cidr: 10.1.2.3/32}}]
      ports: [{protocol: TCP, port: 5432}]
extraArgs: ["--admin-acl=tenant-a=tenant-a/*/*"]
`

func TestHelmChart(t *testing.T) {
	helm := testutil.Helm(t)
	for _, tc := range []struct {
		name     string
		values   string
		replicas int32
		monitor  bool
	}{
		{"defaults", "", 2, false},
		{"3 replicas and ServiceMonitor", helmValues3, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			kek := make([]byte, 32) // raw bytes, as `head -c 32 /dev/urandom` writes: not UTF-8
			if tc.monitor {
				for i := range kek {
					kek[i] = byte(0x80 + i*3)
				}
				kekFile := filepath.Join(t.TempDir(), "store.kek")
				if err := os.WriteFile(kekFile, kek, 0o600); err != nil {
					t.Fatal(err)
				}
				extra = []string{"--set-file", "secrets.keys.storeKek=" + kekFile}
			}
			lint := []string{"lint", "--strict", chartDir}
			if tc.values != "" {
				lint = append(lint, "--values", helmValues(t, tc.values))
			}
			if _, err := helmRun(t, helm, append(lint, extra...)...); err != nil {
				t.Fatal(err)
			}
			m, err := render(t, helm, tc.values, tc.replicas, extra...)
			if err != nil {
				t.Fatal(err)
			}
			errs := append(check(m), checkChart(m)...)
			if (m.serviceMonitor != nil) != tc.monitor {
				errs = append(errs, fmt.Errorf("ServiceMonitor rendered: %v, want %v", m.serviceMonitor != nil, tc.monitor))
			}
			if len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			if tc.monitor {
				ks := m.secrets["coffer-kbs-keys"]
				if ks == nil || ks.Annotations["helm.sh/resource-policy"] != "keep" {
					t.Error("the chart-written keys Secret must carry helm.sh/resource-policy: keep (the KEK outlives an uninstall)")
				}
				if !slices.Contains(m.deploy.Spec.Template.Spec.Containers[0].Args, "--store-kek-previous=/etc/coffer/keys/store.kek.previous") {
					t.Error("withPreviousKek: no --store-kek-previous in the broker's args")
				}
				// What the pods read is byte for byte what the operator gave.
				if ks != nil && !bytes.Equal(ks.Data["store.kek"], kek) {
					t.Errorf("store.kek in the Secret is %x, want the file's %x", ks.Data["store.kek"], kek)
				}
				wantPEM := "-----BEGIN EC PRIVATE KEY-----\nplaceholder \"token\" key\\x00\n-----END EC PRIVATE KEY-----\n"
				if ks != nil && string(ks.Data["token.pem"]) != wantPEM {
					t.Errorf("token.pem in the Secret is %q, want %q", ks.Data["token.pem"], wantPEM)
				}
				// Nothing derived from a Secret in the pod template (readable by more
				// people than the Secret): e.g. no checksum to test password guesses on.
				tmpl := fmt.Sprint(m.deploy.Spec.Template.Annotations, m.deploy.Spec.Template.Labels)
				if strings.Contains(tmpl, "checksum") || strings.Contains(tmpl, "sslmode") {
					t.Errorf("pod template carries something derived from a Secret: %s", tmpl)
				}
			}
		})
	}
}

// checkChart checks what the chart adds to the kustomize base's shape.
func checkChart(m *manifests) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	pod := m.deploy.Spec.Template
	matches := func(sel map[string]string, labels map[string]string) bool {
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
	// Object names and secret names are the kustomize base's.
	for kind, name := range map[string]string{"Deployment": m.deploy.Name, "Service": m.service.Name} {
		if name != "coffer-kbs" {
			fail("%s named %q, want coffer-kbs (the kustomize base's name)", kind, name)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && m.secrets[v.Secret.SecretName] == nil {
			fail("volume %s mounts secret %s, which is neither the chart's nor the kustomize example's", v.Name, v.Secret.SecretName)
		}
	}
	if m.pdb == nil {
		fail("no PodDisruptionBudget")
	} else if mi := m.pdb.Spec.MinAvailable; mi == nil || mi.IntValue() != int(m.wantReplicas)-1 {
		fail("pdb minAvailable %v, want replicas - 1 = %d", mi, m.wantReplicas-1)
	}
	for _, cc := range append(slices.Clone(pod.Spec.Containers), pod.Spec.InitContainers...) {
		sc := cc.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			fail("container %s: want capabilities drop [ALL], none added", cc.Name)
		}
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			fail("container %s: want runAsNonRoot", cc.Name)
		}
		if cc.Resources.Requests.Cpu().IsZero() || cc.Resources.Requests.Memory().IsZero() || cc.Resources.Limits.Memory().IsZero() {
			fail("container %s: want cpu and memory requests and a memory limit", cc.Name)
		}
	}
	if psc := pod.Spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("pod: want the RuntimeDefault seccomp profile")
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		fail("pod: the broker needs no Kubernetes API token (automountServiceAccountToken: false)")
	}
	c := pod.Spec.Containers[0]
	port := 0
	for _, p := range c.Ports {
		if p.Name == "https" {
			port = int(p.ContainerPort)
		}
	}
	// NetworkPolicy: the broker's pods, ingress only to the HTTPS port.
	np := m.netpol
	if np == nil {
		fail("no NetworkPolicy")
	} else {
		if !matches(np.Spec.PodSelector.MatchLabels, pod.Labels) {
			fail("networkpolicy podSelector does not select the broker's pods")
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			fail("networkpolicy policyTypes lacks Ingress")
		}
		if (len(np.Spec.Egress) > 0) != slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			fail("networkpolicy: egress rules %d but policyTypes %v (rules without the type are ignored; the type without rules blocks all egress)", len(np.Spec.Egress), np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) == 0 {
			fail("networkpolicy ingress: no rule (the broker would be unreachable)")
		}
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				fail("networkpolicy ingress rule %d allows every port", i)
			}
			for _, p := range r.Ports {
				got := 0
				if p.Port != nil && p.Port.Type == intstr.String && p.Port.StrVal == "https" {
					got = port
				} else if p.Port != nil && p.Port.Type == intstr.Int {
					got = p.Port.IntValue()
				}
				if got != port || p.EndPort != nil || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
					fail("networkpolicy ingress rule %d: port %v, want only TCP %d (https)", i, p.Port, port)
				}
			}
		}
	}
	// ServiceMonitor (when rendered): scrapes /metrics over HTTPS on the Service's https port.
	if sm := m.serviceMonitor; sm != nil {
		if !matches(sm.Spec.Selector.MatchLabels, m.service.Labels) {
			fail("servicemonitor selector does not select the Service's labels")
		}
		if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, m.service.Namespace) {
			fail("servicemonitor namespaceSelector %v misses the Service's namespace %q", sm.Spec.NamespaceSelector.MatchNames, m.service.Namespace)
		}
		svcPorts := map[string]bool{}
		for _, p := range m.service.Spec.Ports {
			svcPorts[p.Name] = true
		}
		if len(sm.Spec.Endpoints) != 1 {
			fail("servicemonitor: want one endpoint")
		}
		for _, e := range sm.Spec.Endpoints {
			if !svcPorts[e.Port] || e.Scheme != "https" || e.Path != "/metrics" {
				fail("servicemonitor endpoint %s %s %s: want https /metrics on a Service port", e.Port, e.Scheme, e.Path)
			}
			if want := m.service.Name + "." + m.service.Namespace + ".svc"; e.TLSConfig == nil || e.TLSConfig.ServerName != want {
				fail("servicemonitor endpoint: want tlsConfig.serverName %s (the certificate is checked)", want)
			}
		}
	}
	return errs
}

// TestHelmChecksCatchMistakes breaks rendered objects in the ways
// checkChart must notice, so a passing TestHelmChart means something.
func TestHelmChecksCatchMistakes(t *testing.T) {
	helm := testutil.Helm(t)
	raw, err := helmRun(t, helm, "template", "coffer-kbs", chartDir, "--namespace", "coffer",
		"--values", helmValues(t, helmValues3), "--set", "secrets.keys.storeKek=placeholder")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(m *manifests)
		want   string
	}{
		{"netpol port", func(m *manifests) { p := intstr.FromInt32(80); m.netpol.Spec.Ingress[0].Ports[0].Port = &p }, "networkpolicy ingress rule 0"},
		{"netpol all ports", func(m *manifests) { m.netpol.Spec.Ingress[0].Ports = nil }, "allows every port"},
		{"netpol egress type", func(m *manifests) { m.netpol.Spec.PolicyTypes = m.netpol.Spec.PolicyTypes[:1] }, "egress rules 2"},
		{"netpol selector", func(m *manifests) { m.netpol.Spec.PodSelector.MatchLabels = map[string]string{"app": "x"} }, "podSelector"},
		{"caps", func(m *manifests) { m.deploy.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Drop = nil }, "drop [ALL]"},
		{"caps init", func(m *manifests) {
			m.deploy.Spec.Template.Spec.InitContainers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "container migrate"},
		{"pdb", func(m *manifests) { v := intstr.FromInt32(3); m.pdb.Spec.MinAvailable = &v }, "minAvailable"},
		{"monitor port", func(m *manifests) { m.serviceMonitor.Spec.Endpoints[0].Port = "metrics" }, "servicemonitor endpoint"},
		{"monitor tls", func(m *manifests) { m.serviceMonitor.Spec.Endpoints[0].TLSConfig = nil }, "serverName"},
		{"resources", func(m *manifests) {
			m.deploy.Spec.Template.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
		}, "requests"},
		{"previous kek not mounted", func(m *manifests) {
			v := m.deploy.Spec.Template.Spec.Volumes[0].Secret
			v.Items = slices.DeleteFunc(v.Items, func(it corev1.KeyToPath) bool { return it.Path == "store.kek.previous" })
		}, "--store-kek-previous /etc/coffer/keys/store.kek.previous: secret coffer-kbs-keys has no key"},
		{"secret name", func(m *manifests) { m.deploy.Spec.Template.Spec.Volumes[1].Secret.SecretName = "other" }, "secret other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifests{secrets: map[string]*corev1.Secret{}, wantReplicas: 3}
			decodeDocs(t, m, "helm template", raw)
			tc.break_(m)
			errs := append(check(m), checkChart(m)...)
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", errs, tc.want)
			}
		})
	}
}

// TestHelmChartRefusesBadValues: values that would deploy a broken or
// unsafe broker fail to render (or, for a flag coffer does not have, fail
// the flag check), with the reason.
func TestHelmChartRefusesBadValues(t *testing.T) {
	helm := testutil.Helm(t)
	for _, tc := range []struct {
		name, values, want string
	}{
		{"unknown flag", "extraArgs: [\"--no-such-flag=1\"]\n", "unknown flag: --no-such-flag"},
		{"misspelt key", "replicas: 3\n", "replicas"},
		{"one replica with a pdb", "replicaCount: 1\n", "podDisruptionBudget.enabled=false"},
		{"pdb percentage", "podDisruptionBudget: {minAvailable: \"50%\"}\n", "minAvailable"},
		{"pdb blocks every drain", "podDisruptionBudget: {minAvailable: 2}\n", "below replicaCount"},
		{"keys secret without keys", "secrets: {keys: {create: true}}\n", "secrets.keys.storeKek"},
		{"previous kek without its key", "secrets: {keys: {create: true, storeKek: a, tokenKey: b, adminPublicKey: c, withPreviousKek: true}}\n", "secrets.keys.storeKekPrevious"},
		{"previous kek absent from the operator's secret", "secrets: {keys: {withPreviousKek: true}}\n", "secret coffer-kbs-keys has no key for store.kek.previous"},
		{"root", "podSecurityContext: {runAsUser: 0}\n", "runAsUser"},
		{"image digest", "image: {digest: latest}\n", "digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := render(t, helm, tc.values, 2)
			var got string
			if err != nil {
				got = err.Error()
			} else {
				got = fmt.Sprint(append(check(m), checkChart(m)...))
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want it to mention %q", got, tc.want)
			}

		})
	}
}

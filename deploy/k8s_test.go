package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/troupe-dev/troupe/cluster/clustertest"
)

// The parts of the Kubernetes objects the manifests use; the decoder
// refuses any other key, so a misspelt field fails the test instead of
// being dropped by the API server.

type k8sMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

// intOrString is a port given by number or by name.
type intOrString string

func (s *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	*s = intOrString(n.Value)
	return nil
}

type k8sService struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type k8sContainerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports          []k8sContainerPort `yaml:"ports"`
	StartupProbe   *k8sProbe          `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe          `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe          `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sStatefulSet struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		ServiceName         string `yaml:"serviceName"`
		Replicas            int    `yaml:"replicas"`
		PodManagementPolicy string `yaml:"podManagementPolicy"`
		UpdateStrategy      struct {
			Type string `yaml:"type"`
		} `yaml:"updateStrategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds int  `yaml:"terminationGracePeriodSeconds"`
				AutomountServiceAccountToken  bool `yaml:"automountServiceAccountToken"`
				EnableServiceLinks            bool `yaml:"enableServiceLinks"`
				SecurityContext               struct {
					RunAsNonRoot   bool `yaml:"runAsNonRoot"`
					RunAsUser      int  `yaml:"runAsUser"`
					RunAsGroup     int  `yaml:"runAsGroup"`
					FSGroup        int  `yaml:"fsGroup"`
					SeccompProfile struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName  string `yaml:"secretName"`
						DefaultMode int    `yaml:"defaultMode"`
					} `yaml:"secret"`
					EmptyDir *struct{} `yaml:"emptyDir"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		MaxUnavailable intOrString `yaml:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type kustomization struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Labels     []struct {
		Pairs map[string]string `yaml:"pairs"`
	} `yaml:"labels"`
	Resources       []string `yaml:"resources"`
	SecretGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"secretGenerator"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
	} `yaml:"generatorOptions"`
}

// manifests are the objects of deploy/k8s.
type manifests struct {
	kust     kustomization
	files    []string // the *.yaml files but kustomization.yaml
	services map[string]k8sService
	sts      []k8sStatefulSet
	pdbs     []k8sPDB
}

// loadManifests parses every YAML document of deploy/k8s strictly.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	paths, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	m := manifests{services: map[string]k8sService{}}
	for _, path := range paths {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) == "kustomization.yaml" {
			if err := decodeStrict(src, &m.kust); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			continue
		}
		m.files = append(m.files, filepath.Base(path))
		dec := yaml.NewDecoder(bytes.NewReader(src))
		for i := 0; ; i++ {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", path, i, err)
			}
			raw, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			var head struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
			}
			if err := doc.Decode(&head); err != nil {
				t.Fatalf("%s: document %d: %v", path, i, err)
			}
			where := fmt.Sprintf("%s: document %d (%s)", path, i, head.Kind)
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "v1 Service":
				obj = &k8sService{}
			case "apps/v1 StatefulSet":
				m.sts = append(m.sts, k8sStatefulSet{})
				obj = &m.sts[len(m.sts)-1]
			case "policy/v1 PodDisruptionBudget":
				m.pdbs = append(m.pdbs, k8sPDB{})
				obj = &m.pdbs[len(m.pdbs)-1]
			default:
				t.Fatalf("%s: %s %s: this test does not know the kind; teach it", where, head.APIVersion, head.Kind)
			}
			if err := decodeStrict(raw, obj); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if svc, ok := obj.(*k8sService); ok {
				if _, dup := m.services[svc.Metadata.Name]; dup {
					t.Errorf("%s: a second Service named %s", where, svc.Metadata.Name)
				}
				m.services[svc.Metadata.Name] = *svc
			}
		}
	}
	return m
}

// selects reports whether a selector picks the labels.
func selects(sel, labels map[string]string) bool {
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

// TestKubernetesManifests checks deploy/k8s without a cluster: every YAML
// document parses strictly; the kustomization lists every manifest and
// makes the Secret the pods mount; the StatefulSet's flags exist in troupe
// dev and agree with its container ports, the Services and the probes; the
// seeds are the StatefulSet's own pods under the headless Service; the
// node id comes from the pod name; the data dir is a volume claim.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	flags := troupeDevFlags(t)
	entry := entrypoint(t)

	// The kustomization: every manifest, the Secret from files git ignores.
	k := m.kust
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	res := slices.Sorted(slices.Values(k.Resources))
	if files := slices.Sorted(slices.Values(m.files)); !slices.Equal(res, files) {
		t.Errorf("kustomization.yaml lists %v; the manifests are %v", res, files)
	}
	if len(k.SecretGenerator) != 1 {
		t.Fatalf("kustomization.yaml: want one secretGenerator, have %d", len(k.SecretGenerator))
	}
	secret := k.SecretGenerator[0]
	if !k.GeneratorOptions.DisableNameSuffixHash {
		t.Error("kustomization.yaml: a hashed Secret name rolls the pods one by one when the key changes; nodes with different keys refuse each other")
	}
	ignore, _ := os.ReadFile(".gitignore")
	for _, f := range secret.Files {
		if !slices.Contains(strings.Fields(string(ignore)), "k8s/"+f) {
			t.Errorf("deploy/.gitignore does not leave out k8s/%s (a secret)", f)
		}
	}

	if len(m.sts) != 1 {
		t.Fatalf("want one StatefulSet, have %d", len(m.sts))
	}
	ss := m.sts[0]
	spec := ss.Spec
	pod := spec.Template.Spec
	labels := spec.Template.Metadata.Labels
	if spec.Replicas != 3 {
		t.Errorf("StatefulSet replicas %d: want 3", spec.Replicas)
	}
	if spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: want Parallel (a first boot needs a majority up at once)", spec.PodManagementPolicy)
	}
	if !selects(spec.Selector.MatchLabels, labels) {
		t.Errorf("the StatefulSet's selector %v does not pick its pods %v", spec.Selector.MatchLabels, labels)
	}
	headless, ok := m.services[spec.ServiceName]
	if !ok {
		t.Fatalf("serviceName %q: no such Service", spec.ServiceName)
	}
	if headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: clusterIP %q publishNotReadyAddresses %v: want a headless Service publishing pods before they are ready (the seeds must resolve while the cluster forms)",
			spec.ServiceName, headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
	}
	if pod.TerminationGracePeriodSeconds <= 10 {
		t.Errorf("terminationGracePeriodSeconds %d: want more than the node's 10 s shutdown bound", pod.TerminationGracePeriodSeconds)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("the container requests no %s", r)
		}
	}

	// Environment: $(VAR) in args must be defined, the pod's name,
	// namespace and IP from the downward API.
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		} else {
			env[e.Name] = e.Value
		}
	}
	for name, want := range map[string]string{"POD_NAME": "fieldRef:metadata.name", "POD_NAMESPACE": "fieldRef:metadata.namespace", "POD_IP": "fieldRef:status.podIP"} {
		if env[name] != want {
			t.Errorf("env %s = %q: want %s", name, env[name], want)
		}
	}
	for _, a := range c.Args {
		for _, v := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(a, -1) {
			if _, ok := env[v[1]]; !ok {
				t.Errorf("args use $(%s), which env does not define", v[1])
			}
		}
	}

	args, err := parseArgs(flags, append(slices.Clone(entry[2:]), c.Args...))
	if err != nil {
		t.Fatalf("StatefulSet args: %v", err)
	}
	val := func(flag string) string {
		v, ok := flagValue(args, flag)
		if !ok {
			t.Errorf("the StatefulSet passes no --%s", flag)
		}
		return v
	}
	ports := map[string]k8sContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	portOf := func(what, name string, want int, proto string) {
		p, ok := ports[name]
		if !ok || p.ContainerPort != want || (p.Protocol != proto && !(p.Protocol == "" && proto == "TCP")) {
			t.Errorf("%s listens on %d/%s: want a container port %q with it (have %+v)", what, want, proto, name, p)
		}
	}
	if id := val("node-id"); id != "$(POD_NAME)" {
		t.Errorf("--node-id %q: want $(POD_NAME)", id)
	}
	ghost, gport, err := splitHostPort(val("gossip"))
	if err != nil || ghost != "$(POD_IP)" {
		t.Errorf("--gossip %q: want $(POD_IP):PORT: the node announces its NATS route and API on the --gossip host (%v)", val("gossip"), err)
	}
	portOf("gossip", "gossip", gport, "TCP")
	portOf("gossip", "gossip-udp", gport, "UDP")
	var seeds []string
	for s := range strings.SplitSeq(val("join"), ",") {
		seeds = append(seeds, s)
	}
	var want []string
	for i := range spec.Replicas {
		want = append(want, fmt.Sprintf("%s-%d.%s.$(POD_NAMESPACE).svc:%d", ss.Metadata.Name, i, spec.ServiceName, gport))
	}
	if !slices.Equal(seeds, want) {
		t.Errorf("--join %v: want every pod under the headless Service: %v", seeds, want)
	}
	route, _ := strconv.Atoi(val("cluster-port"))
	portOf("--cluster-port", "routes", route, "TCP")
	fwd, err := strconv.Atoi(val("forward-port"))
	if err != nil || fwd <= 0 {
		t.Errorf("--forward-port %q: want a fixed port, declared (the forward link, ADR 0020)", val("forward-port"))
	}
	portOf("--forward-port", "forward", fwd, "TCP")
	nats, _ := strconv.Atoi(val("nats-port"))
	portOf("--nats-port", "nats", nats, "TCP")
	if h := val("nats-host"); isUnspecified(h) {
		if _, ok := flagValue(args, "auth-tokens"); !ok {
			t.Errorf("--nats-host %s without --auth-tokens: NATS open to every pod", h)
		}
	}
	_, httpPort, err := splitHostPort(val("http"))
	if err != nil {
		t.Errorf("--http: %v", err)
	}
	portOf("--http", "http", httpPort, "TCP")

	// Probes: on the API port, /readyz for readiness, /healthz otherwise.
	for _, pr := range []struct {
		name, path string
		p          *k8sProbe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}, {"startupProbe", "/healthz", c.StartupProbe}} {
		if pr.p == nil {
			t.Errorf("the container has no %s", pr.name)
			continue
		}
		port := string(pr.p.HTTPGet.Port)
		if pr.p.HTTPGet.Path != pr.path || (port != "http" && port != strconv.Itoa(httpPort)) {
			t.Errorf("%s: GET %s on %s: want %s on the API port %d", pr.name, pr.p.HTTPGet.Path, port, pr.path, httpPort)
		}
	}
	if sp := c.StartupProbe; sp != nil && sp.PeriodSeconds*sp.FailureThreshold < 120 {
		t.Errorf("startupProbe allows %d s: a first boot may wait --join-timeout (120 s) for a majority", sp.PeriodSeconds*sp.FailureThreshold)
	}

	// Volumes: the data dir is a claim template; the secret files are
	// the generated Secret's keys.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	var claims []string
	for _, vc := range spec.VolumeClaimTemplates {
		claims = append(claims, vc.Metadata.Name)
	}
	dataDir := val("data-dir")
	if name := mountNamed(mounts, dataDir); !slices.Contains(claims, name) {
		t.Errorf("--data-dir %s is not on a volume claim template (mount %q, claims %v)", dataDir, name, claims)
	}
	secretMount := ""
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			if v.Secret.SecretName != secret.Name {
				t.Errorf("volume %s mounts Secret %q; kustomization.yaml makes %q", v.Name, v.Secret.SecretName, secret.Name)
			}
			secretMount = mounts[v.Name]
		}
	}
	for _, flag := range []string{"gossip-key-file", "auth-tokens"} {
		p := val(flag)
		if secretMount == "" || filepath.Dir(p) != secretMount || !slices.Contains(secret.Files, filepath.Base(p)) {
			t.Errorf("--%s %s: want a key of Secret %s (%v) mounted at %s", flag, p, secret.Name, secret.Files, secretMount)
		}
	}
	if _, ok := flagValue(args, "gossip-key"); ok {
		t.Error("the StatefulSet passes the gossip key on its command line: use the Secret")
	}

	// Services: select the pods, target the container's ports.
	for name, s := range m.services {
		if !selects(s.Spec.Selector, labels) {
			t.Errorf("Service %s selects %v, not the pods %v", name, s.Spec.Selector, labels)
		}
		for _, p := range s.Spec.Ports {
			cp, ok := ports[string(p.TargetPort)]
			if !ok {
				t.Errorf("Service %s port %s targets %q, which the container does not name", name, p.Name, p.TargetPort)
				continue
			}
			if cp.ContainerPort != p.Port || cp.Protocol != p.Protocol {
				t.Errorf("Service %s port %s: %d/%s, the container's %s is %d/%s", name, p.Name, p.Port, p.Protocol, cp.Name, cp.ContainerPort, cp.Protocol)
			}
		}
	}
	if len(m.services) != 2 {
		t.Errorf("want the headless Service and one for clients, have %d Services", len(m.services))
	}

	// The PodDisruptionBudget: one node down at a time keeps a quorum.
	if len(m.pdbs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, have %d", len(m.pdbs))
	}
	if pdb := m.pdbs[0]; pdb.Spec.MaxUnavailable != "1" || !selects(pdb.Spec.Selector.MatchLabels, labels) {
		t.Errorf("PodDisruptionBudget: maxUnavailable %q selector %v: want 1 over the pods %v", pdb.Spec.MaxUnavailable, pdb.Spec.Selector.MatchLabels, labels)
	}
}

// mountNamed is the volume mounted at path.
func mountNamed(mounts map[string]string, path string) string {
	for name, p := range mounts {
		if p == path {
			return name
		}
	}
	return ""
}

// TestKubernetesArgsRun runs the StatefulSet's command lines (with the
// downward API's values and the pod names mapped to the nodes' addresses,
// a generated gossip key and token file) as three processes. The
// manifests use the default 96 shards, whose first boot can take over a
// minute on a busy two-core machine: TROUPE_LONG=1 only.
func TestKubernetesArgsRun(t *testing.T) {
	if !clustertest.Long() {
		t.Skip("the first boot of 96 shards can take over a minute here: set " + clustertest.LongEnv + "=1")
	}
	m := loadManifests(t)
	ss := m.sts[0]
	entry := entrypoint(t)
	token := randomKey(t)
	p := plan{
		expand: func(i int, ip string) map[string]string {
			return map[string]string{"POD_NAME": fmt.Sprintf("%s-%d", ss.Metadata.Name, i), "POD_NAMESPACE": "test", "POD_IP": ip}
		},
		resolve: func(host string) (int, bool) {
			for i := range ss.Spec.Replicas {
				if host == fmt.Sprintf("%s-%d.%s.test.svc", ss.Metadata.Name, i, ss.Spec.ServiceName) {
					return i, true
				}
			}
			return 0, false
		},
		files: map[string]string{
			"/etc/troupe/gossip-key": randomKey(t) + "\n",
			"/etc/troupe/tokens":     "admin " + token + " test\n",
		},
		token: token,
	}
	for i := range ss.Spec.Replicas {
		p.ids = append(p.ids, fmt.Sprintf("%s-%d", ss.Metadata.Name, i))
		p.args = append(p.args, append(slices.Clone(entry[2:]), ss.Spec.Template.Spec.Containers[0].Args...))
	}
	runPlan(t, p)
}

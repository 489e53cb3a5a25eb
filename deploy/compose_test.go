package deploy

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// composeFile is the part of the compose format compose.yaml uses; the
// decoder refuses any other key, so a misspelt one fails the test.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]*struct{}      `yaml:"volumes"`
	Ext      map[string]any            `yaml:",inline"` // x-* extensions
}

type composeService struct {
	Image           string `yaml:"image"`
	Build           struct{ Context, Dockerfile string }
	EnvFile         string `yaml:"env_file"`
	Restart         string `yaml:"restart"`
	StopSignal      string `yaml:"stop_signal"`
	StopGracePeriod string `yaml:"stop_grace_period"`
	Healthcheck     struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	Hostname string   `yaml:"hostname"`
	Command  []string `yaml:"command"`
	Ports    []string `yaml:"ports"`
	Volumes  []string `yaml:"volumes"`
}

// decodeStrict decodes one YAML document, refusing unknown keys.
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	src, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := decodeStrict(src, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for k := range f.Ext {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("compose.yaml: unknown top-level key %q", k)
		}
	}
	if len(f.Services) != 3 {
		t.Fatalf("compose.yaml has %d services, want 3", len(f.Services))
	}
	return f
}

// composeServices are the service names in order (n1, n2, n3).
func composeServices(f composeFile) []string {
	var names []string
	for name := range f.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// TestComposeFile checks compose.yaml without a container engine: every
// flag a service passes (after the image's ENTRYPOINT) exists in troupe
// dev; node ids, gossip addresses and seeds name the services; the ports
// of the flags, the published ports and the healthcheck agree; each node
// has its own data volume; the gossip key comes from the env file, which
// git ignores.
func TestComposeFile(t *testing.T) {
	f := loadCompose(t)
	flags := troupeDevFlags(t)
	entry := entrypoint(t)
	names := composeServices(f)
	src, _ := os.ReadFile("compose.yaml")

	hostPorts := map[string]string{}
	volumes := map[string]string{}
	shards := map[string]bool{}
	for _, name := range names {
		s := f.Services[name]
		args, err := parseArgs(flags, append(slices.Clone(entry[2:]), s.Command...))
		if err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		val := func(flag string) string {
			v, ok := flagValue(args, flag)
			if !ok {
				t.Errorf("service %s passes no --%s", name, flag)
			}
			return v
		}
		if id := val("node-id"); id != name {
			t.Errorf("service %s: --node-id %q: want the service name", name, id)
		}
		if s.Hostname != name {
			t.Errorf("service %s: hostname %q: want the service name (its --gossip host must resolve inside the container)", name, s.Hostname)
		}
		// Gossip binds the service's own name: the node announces its
		// NATS route and API on the --gossip host, so 0.0.0.0 there would
		// tell the others to dial 0.0.0.0.
		ghost, gport, err := splitHostPort(val("gossip"))
		if err != nil || ghost != name {
			t.Errorf("service %s: --gossip %q: want %s:PORT (%v)", name, val("gossip"), name, err)
		}
		if adv, ok := flagValue(args, "gossip-advertise"); ok {
			t.Errorf("service %s: --gossip-advertise %q: not needed with --gossip on the service name", name, adv)
		}
		var seeds []string
		for seed := range strings.SplitSeq(val("join"), ",") {
			h, p, err := splitHostPort(seed)
			if err != nil || f.Services[h].Command == nil || p != gport {
				t.Errorf("service %s: seed %q: want a service's name and the gossip port %d (%v)", name, seed, gport, err)
			}
			seeds = append(seeds, h)
		}
		slices.Sort(seeds)
		if !slices.Equal(seeds, names) {
			t.Errorf("service %s: seeds %v: want every service %v (a first boot with every seed)", name, seeds, names)
		}
		if p, err := strconv.Atoi(val("cluster-port")); err != nil || p <= 0 {
			t.Errorf("service %s: --cluster-port %q", name, val("cluster-port"))
		}
		if p, err := strconv.Atoi(val("forward-port")); err != nil || p <= 0 {
			t.Errorf("service %s: --forward-port %q: want a fixed port", name, val("forward-port"))
		}
		if _, err := strconv.Atoi(val("nats-port")); err != nil {
			t.Errorf("service %s: --nats-port %q", name, val("nats-port"))
		}
		shards[val("shards")] = true
		// The API: published on the host's loopback, the healthcheck asks
		// /readyz on the same port.
		_, httpPort, err := splitHostPort(val("http"))
		if err != nil {
			t.Errorf("service %s: --http: %v", name, err)
		}
		if len(s.Ports) != 1 {
			t.Errorf("service %s publishes %q: want the API only", name, s.Ports)
		} else {
			parts := strings.Split(s.Ports[0], ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" || parts[2] != strconv.Itoa(httpPort) {
				t.Errorf("service %s publishes %q: want 127.0.0.1:HOSTPORT:%d (no authentication: the host's loopback only)", name, s.Ports[0], httpPort)
			}
			if prev, dup := hostPorts[parts[1]]; dup {
				t.Errorf("services %s and %s publish host port %s", prev, name, parts[1])
			}
			hostPorts[parts[1]] = name
		}
		hc := strings.Join(s.Healthcheck.Test, " ")
		if !strings.Contains(hc, "/readyz") || !strings.Contains(hc, "/127.0.0.1/"+strconv.Itoa(httpPort)) {
			t.Errorf("service %s: healthcheck %q: want /readyz on 127.0.0.1:%d", name, hc, httpPort)
		}
		if len(s.Healthcheck.Test) == 0 || s.Healthcheck.Test[0] != "CMD" {
			t.Errorf("service %s: healthcheck %q: want the CMD form", name, s.Healthcheck.Test)
		}
		for what, d := range map[string]string{"interval": s.Healthcheck.Interval, "timeout": s.Healthcheck.Timeout, "start_period": s.Healthcheck.StartPeriod} {
			if _, err := time.ParseDuration(d); err != nil {
				t.Errorf("service %s: healthcheck %s %q: %v", name, what, d, err)
			}
		}
		// The first boot waits for a majority up to --join-timeout.
		jt := 2 * time.Minute
		if v, ok := flagValue(args, "join-timeout"); ok {
			jt, _ = time.ParseDuration(v)
		}
		if sp, _ := time.ParseDuration(s.Healthcheck.StartPeriod); sp < jt {
			t.Errorf("service %s: healthcheck start_period %s is shorter than --join-timeout %s", name, sp, jt)
		}
		// Data: a named volume of its own at --data-dir.
		dataDir := val("data-dir")
		var mounted bool
		for _, v := range s.Volumes {
			vol, path, _ := strings.Cut(v, ":")
			if path != dataDir {
				continue
			}
			mounted = true
			if _, ok := f.Volumes[vol]; !ok {
				t.Errorf("service %s mounts volume %q, which volumes: does not declare", name, vol)
			}
			if prev, dup := volumes[vol]; dup {
				t.Errorf("services %s and %s share the data volume %s", prev, name, vol)
			}
			volumes[vol] = name
		}
		if !mounted {
			t.Errorf("service %s mounts no volume at --data-dir %s", name, dataDir)
		}
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("service %s has no restart policy", name)
		}
		if g, err := time.ParseDuration(s.StopGracePeriod); err != nil || g <= 10*time.Second {
			t.Errorf("service %s: stop_grace_period %q: want more than the node's 10 s shutdown bound", name, s.StopGracePeriod)
		}
		if s.Build.Dockerfile != "deploy/Containerfile" || s.Build.Context != ".." || s.Image == "" {
			t.Errorf("service %s: build %+v image %q: want the Containerfile's image", name, s.Build, s.Image)
		}
		// The gossip key comes from the env file.
		if _, ok := flagValue(args, "gossip-key"); ok {
			t.Errorf("service %s passes the gossip key on its command line: keep it in %s", name, s.EnvFile)
		}
		if s.EnvFile != "troupe.env" {
			t.Errorf("service %s: env_file %q: want troupe.env (the gossip key)", name, s.EnvFile)
		}
	}
	if len(shards) != 1 {
		t.Errorf("the services disagree on --shards: %v", shards)
	}
	for _, v := range regexp.MustCompile(`TROUPE_[A-Z0-9_]+`).FindAllString(string(src), -1) {
		if _, ok := flags[troupeEnvFlag(v)]; !ok {
			t.Errorf("compose.yaml mentions %s, but troupe dev has no --%s", v, troupeEnvFlag(v))
		}
	}
	if !strings.Contains(string(src), "TROUPE_GOSSIP_KEY=") {
		t.Error("compose.yaml does not say how to make troupe.env with TROUPE_GOSSIP_KEY")
	}
	ignore, err := os.ReadFile(".gitignore")
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), "troupe.env") {
		t.Errorf("deploy/.gitignore does not leave out troupe.env (the gossip key): %v", err)
	}
}

// TestComposeClusterRuns runs the command lines of compose.yaml as three
// processes, with the service names mapped to the nodes' addresses: they
// form a cluster, serve a command through each node, and pass the
// healthcheck.
func TestComposeClusterRuns(t *testing.T) {
	f := loadCompose(t)
	entry := entrypoint(t)
	names := composeServices(f)
	p := plan{
		expand: func(int, string) map[string]string { return nil },
		resolve: func(host string) (int, bool) {
			i := slices.Index(names, host)
			return i, i >= 0
		},
		env:    []string{"TROUPE_GOSSIP_KEY=" + randomKey(t)},
		health: f.Services[names[0]].Healthcheck.Test[1:],
	}
	p.ids = names
	for _, name := range names {
		p.args = append(p.args, append(slices.Clone(entry[2:]), f.Services[name].Command...))
	}
	if len(p.args) != 3 {
		t.Fatal(fmt.Sprint("want 3 services, have ", names))
	}
	runPlan(t, p)
}

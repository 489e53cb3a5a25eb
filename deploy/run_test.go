package deploy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/clustertest"
)

// plan is three command lines of a deploy file, run as local processes.
// In network namespaces (when this machine has them) every node has an
// address of its own and the manifests' ports; otherwise every node is on
// 127.0.0.1 with ports of its own. Host names (service or pod names) are
// mapped to the nodes' addresses, paths in the container to temp files.
type plan struct {
	ids     []string                                 // per node: its --node-id
	args    [][]string                               // per node: troupe dev flags, as in the file (no "troupe dev")
	expand  func(i int, ip string) map[string]string // per node: $(VAR) values
	resolve func(host string) (int, bool)            // which node a host name names
	files   map[string]string                        // container path -> contents (secrets)
	env     []string                                 // the nodes' environment (env_file)
	token   string                                   // the CLI's token, when the plan turns auth on
	health  []string                                 // a healthcheck command to run beside each node, or nil
}

// randomKey is a fresh base64 gossip key.
func randomKey(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// runPlan starts the plan's three nodes in namespaces, or on loopback when
// namespaces are unavailable, and checks the cluster they form.
func runPlan(t *testing.T, p plan) {
	if testing.Short() {
		t.Skip("multi-process test: runs in make test; under -short (the race pass) its child processes would not be race-checked")
	}
	ran := false
	t.Run("netns", func(t *testing.T) {
		c := newPlanCluster(t, p, true)
		ran = true
		checkPlanCluster(t, c, p)
	})
	if !ran && !t.Failed() {
		t.Run("loopback", func(t *testing.T) {
			checkPlanCluster(t, newPlanCluster(t, p, false), p)
		})
	}
}

func newPlanCluster(t *testing.T, p plan, namespaces bool) *clustertest.Cluster {
	dir := t.TempDir()
	paths := map[string]string{}
	for cpath, content := range p.files {
		local := filepath.Join(dir, strings.ReplaceAll(strings.Trim(cpath, "/"), "/", "_"))
		if err := os.WriteFile(local, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[cpath] = local
	}
	plugins := filepath.Join(dir, "plugins")
	if err := os.Mkdir(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	var c *clustertest.Cluster
	mapArgs := func(n *clustertest.Node) []string {
		nodes := c.Nodes()
		hostPort := func(hp string) string {
			host, _, err := splitHostPort(hp)
			if err != nil {
				t.Errorf("%s: %q: %v", n.ID, hp, err)
				return hp
			}
			if isUnspecified(host) {
				// Every interface of the node's namespace, or loopback.
				if namespaces {
					return fmt.Sprintf("%s:%d", host, n.GossipPort)
				}
				return n.GossipAddr()
			}
			i, ok := p.resolve(host)
			if !ok {
				for j, o := range nodes {
					if o.IP == host && namespaces {
						i, ok = j, true
					}
				}
				if host == "127.0.0.1" && !namespaces {
					i, ok = n.Index, true
				}
			}
			if !ok || i >= len(nodes) {
				t.Errorf("%s: %q names none of the nodes", n.ID, hp)
				return hp
			}
			return nodes[i].GossipAddr()
		}
		vars := p.expand(n.Index, n.IP)
		out := []string{"dev"}
		args, err := parseArgs(troupeDevFlags(t), expandVars(p.args[n.Index], vars))
		if err != nil {
			t.Errorf("%s: %v", n.ID, err)
		}
		for _, a := range args {
			v := a.value
			switch a.name {
			case "data-dir":
				v = n.DataDir
			case "plugins":
				v = plugins
			case "gossip", "gossip-advertise":
				v = hostPort(v)
			case "join":
				var seeds []string
				for s := range strings.SplitSeq(v, ",") {
					seeds = append(seeds, hostPort(s))
				}
				v = strings.Join(seeds, ",")
			case "http":
				host, _, err := splitHostPort(v)
				if err != nil {
					t.Errorf("%s: --http %q: %v", n.ID, v, err)
				}
				if !namespaces || !isUnspecified(host) {
					host = n.IP
				}
				v = fmt.Sprintf("%s:%d", host, n.HTTPPort)
			case "nats-host":
				if !namespaces || !isUnspecified(v) {
					v = n.IP
				}
			case "nats-port":
				v = strconv.Itoa(n.NATSPort)
			case "cluster-port":
				v = strconv.Itoa(n.RoutePort)
			case "forward-port":
				v = "0" // a free port: the nodes may share one address here
			default:
				if local, ok := paths[v]; ok {
					v = local
				} else if strings.HasPrefix(v, "/") {
					t.Errorf("%s: --%s %s: a path the test has no file for", n.ID, a.name, v)
				}
			}
			out = append(out, "--"+a.name)
			if troupeDevFlags(t)[a.name] {
				out = append(out, v)
			}
		}
		return out
	}
	c = clustertest.New(t, clustertest.Options{
		Nodes: len(p.args), Namespaces: namespaces, Args: mapArgs, Env: p.env,
		ReadyTimeout: 2 * time.Minute,
	})
	t0 := time.Now()
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d nodes ready after %s (namespaces: %v)", len(p.args), time.Since(t0).Round(time.Millisecond), namespaces)
	return c
}

// expandVars replaces $(NAME) as Kubernetes does in args.
func expandVars(args []string, vars map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out[i] = a
	}
	return out
}

// checkPlanCluster checks that the nodes see each other with addresses the
// others can dial, serve a command through each node, and pass the
// healthcheck.
func checkPlanCluster(t *testing.T, c *clustertest.Cluster, p plan) {
	ctx := context.Background()
	var auth []string
	if p.token != "" {
		auth = []string{"--token", p.token}
	}
	nodes := c.Nodes()
	want := map[string]*clustertest.Node{}
	for i, n := range nodes {
		want[p.ids[i]] = n
	}
	// Members: every node lists every node alive, with the route and API
	// addresses the node really listens on.
	clustertest.Eventually(t, 30*time.Second, "every node sees three members alive", func() error {
		for _, n := range nodes {
			out, stderr, err := c.CLI(ctx, append([]string{"cluster", "members", "--node", n.HTTPURL(), "--format", "json"}, auth...)...)
			if err != nil {
				return fmt.Errorf("cluster members on %s: %v: %s", n.ID, err, stderr)
			}
			var ms struct {
				Members []struct{ ID, State, Route, API string }
			}
			if err := json.Unmarshal([]byte(out), &ms); err != nil {
				return fmt.Errorf("members output of %s: %v\n%s", n.ID, err, out)
			}
			if len(ms.Members) != len(nodes) {
				return fmt.Errorf("%s lists %d members, want %d: %s", n.ID, len(ms.Members), len(nodes), out)
			}
			for _, m := range ms.Members {
				o := want[m.ID]
				if o == nil || m.State != "alive" {
					return fmt.Errorf("%s lists %s (%s)", n.ID, m.ID, m.State)
				}
				if m.Route != o.RouteAddr() {
					t.Errorf("%s announces its NATS route as %q; the others must dial %s", m.ID, m.Route, o.RouteAddr())
				}
				if m.API != o.HTTPURL() {
					t.Errorf("%s announces its API as %q; it listens on %s", m.ID, m.API, o.HTTPURL())
				}
			}
		}
		return nil
	})
	// A command through each node: opened through one, deposited through
	// the next (forwarded when another node serves the entity).
	for i, n := range nodes {
		id := fmt.Sprintf("account/deploy-%d", i)
		next := nodes[(i+1)%len(nodes)]
		out, stderr, err := c.CLI(ctx, append([]string{"send", id, "Open", `{"owner":"deploy"}`, "--node", n.HTTPURL()}, auth...)...)
		if err != nil {
			t.Fatalf("send Open to %s through %s: %v\n%s%s", id, n.ID, err, out, stderr)
		}
		out, stderr, err = c.CLI(ctx, append([]string{"send", id, "Deposit", `{"amount":7}`, "--node", next.HTTPURL()}, auth...)...)
		if err != nil || !strings.Contains(out, `"balance":7`) {
			t.Fatalf("send Deposit to %s through %s: %v\n%s%s", id, next.ID, err, out, stderr)
		}
		t.Logf("%s through %s and %s: %s", id, n.ID, next.ID, strings.TrimSpace(out))
	}
	if p.health == nil {
		return
	}
	for _, n := range nodes {
		cmd := healthCommand(t, c, n, p.health)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("the healthcheck of %s fails: %v\n%s", n.ID, err, out)
		}
	}
}

// healthCommand runs a healthcheck beside node n: in its namespace, or
// against its port on loopback.
func healthCommand(t *testing.T, c *clustertest.Cluster, n *clustertest.Node, test []string) *exec.Cmd {
	args := make([]string, len(test))
	for i, a := range test {
		args[i] = strings.ReplaceAll(a, "/127.0.0.1/8080", "/127.0.0.1/"+strconv.Itoa(n.HTTPPort))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if n.Netns != "" {
		ip, err := exec.LookPath("ip")
		if err != nil {
			t.Fatal(err)
		}
		return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", n.Netns}, args...)...)
	}
	return exec.CommandContext(ctx, args[0], args[1:]...)
}

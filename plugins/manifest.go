package plugins

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Kind is what a plugin does.
type Kind int

const (
	// KindSidecar plugins sit on deliveries (commands, events, topic
	// messages) and allow, reject, transform or annotate them.
	KindSidecar Kind = iota + 1
	// KindAmbassador plugins are called by actors by name and perform
	// outbound HTTP calls through the host.
	KindAmbassador
)

func (k Kind) String() string {
	switch k {
	case KindSidecar:
		return "sidecar"
	case KindAmbassador:
		return "ambassador"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// FailurePolicy says what happens to a message when a plugin fails (trap,
// timeout, ABI violation, undecodable verdict) instead of deciding.
type FailurePolicy int

const (
	// FailReject rejects the message with the failure as the reason
	// (fail closed). The default.
	FailReject FailurePolicy = iota
	// FailPass skips the plugin and delivers the message as if the plugin
	// had allowed it (fail open).
	FailPass
)

func (p FailurePolicy) String() string {
	switch p {
	case FailReject:
		return "reject"
	case FailPass:
		return "pass"
	}
	return "FailurePolicy(" + strconv.Itoa(int(p)) + ")"
}

// Manifest limits, applied when the manifest leaves them out.
const (
	// DefaultMemoryPages is the default memory limit of one instance, in
	// 64 KiB pages (32 MiB). A Go guest needs at least 38 pages to start.
	DefaultMemoryPages = 512
	// MaxMemoryPages is the largest memory limit a manifest may ask for
	// (4 GiB, the wasm32 maximum).
	MaxMemoryPages = 65536
	// DefaultTimeout bounds one call of an untrusted plugin, in wall-clock
	// time (waits in host functions included).
	DefaultTimeout = 100 * time.Millisecond
	// DefaultTrustedTimeout bounds one call of a trusted plugin: reviewed
	// code gets more room, never an unbounded call.
	DefaultTrustedTimeout = time.Second
	// DefaultFuel bounds the work of one call: about 10^9 wasm instructions,
	// 0.2–1 s of the tightest loops on a current core. It is the bound that
	// does not depend on the machine's load; Timeout usually ends a loop
	// first.
	DefaultFuel = 1_000_000_000
	// MaxFuel is the largest fuel limit a manifest may set.
	MaxFuel = 1_000_000_000_000
	// DefaultMaxOutput bounds the verdict a guest may return.
	DefaultMaxOutput = 1 << 20
	// DefaultMaxResponse bounds the HTTP response body an ambassador may
	// receive through http_call.
	DefaultMaxResponse = 1 << 20
	// DefaultMaxInstances bounds the instances of one plugin that run at
	// the same time; further calls wait for a free one.
	DefaultMaxInstances = 8
)

// Manifest describes one plugin. It is read from NAME.toml beside NAME.wasm;
// docs/plugins.md documents every key.
type Manifest struct {
	// Name identifies the plugin; it must equal the file's base name.
	Name string
	// Kind is sidecar or ambassador.
	Kind Kind
	// Order places the plugin in the sidecar chain: lower runs first; ties
	// run in name order.
	Order int
	// OnFailure is the failure policy.
	OnFailure FailurePolicy
	// Trusted plugins are your own reviewed code: their default Timeout is
	// DefaultTrustedTimeout instead of DefaultTimeout. Every call of every
	// plugin is bounded (Limits.Timeout and Limits.Fuel), trusted or not.
	Trusted bool
	// Hooks selects the deliveries a sidecar sees.
	Hooks Hooks
	// Limits bound the plugin's resources.
	Limits Limits
	// Capabilities grant access beyond pure computation.
	Capabilities Capabilities
}

// Hooks selects deliveries. Each list holds exact names, "*" (any), or a
// prefix ending in "*" ("orders.*"). An empty list selects nothing, except
// that empty Kinds and Projections do not restrict the other lists.
type Hooks struct {
	// Kinds restricts Commands and Events to these entity kinds (empty: all).
	Kinds []string
	// Commands are the command types to intercept.
	Commands []string
	// Events are the event types to intercept on their way to projections.
	Events []string
	// Projections restricts Events to these projections (empty: all).
	Projections []string
	// Topics are the topics whose messages to intercept.
	Topics []string
}

// Limits bound a plugin's resources.
type Limits struct {
	// MemoryPages is the memory limit of one instance in 64 KiB pages.
	MemoryPages uint32
	// Timeout bounds one call in wall-clock time, trusted or not (and every
	// ambassador call including its HTTP requests). Instantiation and the
	// load-time probe get ten times as long, at least 2 s, at most 10 s.
	Timeout time.Duration
	// Fuel bounds the work of one call in wasm instructions (loops and
	// calls are charged by the instructions they contain); instantiation
	// and the probe get ten times as much.
	Fuel int64
	// MaxOutput bounds the size of a verdict in bytes.
	MaxOutput uint32
	// MaxResponse bounds an HTTP response body received by http_call.
	MaxResponse uint32
	// MaxInstances bounds concurrent instances.
	MaxInstances int
}

// Capabilities grant a plugin access beyond pure computation. Everything is
// denied by default: no files, no sockets, no environment, fake clocks and a
// deterministic random source.
type Capabilities struct {
	// Egress lists the hosts http_call may reach: "host" (any port),
	// "host:port", or "*.domain" (any subdomain). Empty: no egress.
	Egress []string
	// Config are plain values the guest reads with config_get.
	Config map[string]string
	// Secrets are values the guest reads with secret_get. The manifest
	// holds only their source, "env:NAME" or "file:PATH"; values are read at
	// load time and never logged.
	Secrets map[string]string
	// Clock grants the real wall clock and monotonic clock.
	Clock bool
	// Random grants a cryptographic random source.
	Random bool
}

// manifestFile is the TOML shape of a manifest. Durations are strings
// ("50ms") so that the file stays readable.
type manifestFile struct {
	Name      string `toml:"name"`
	Kind      string `toml:"kind"`
	Order     int    `toml:"order"`
	OnFailure string `toml:"on_failure"`
	Trusted   bool   `toml:"trusted"`
	Hooks     struct {
		Kinds       []string `toml:"kinds"`
		Commands    []string `toml:"commands"`
		Events      []string `toml:"events"`
		Projections []string `toml:"projections"`
		Topics      []string `toml:"topics"`
	} `toml:"hooks"`
	Limits struct {
		MemoryPages  int64  `toml:"memory_pages"`
		Timeout      string `toml:"timeout"`
		MaxOutput    int64  `toml:"max_output"`
		MaxResponse  int64  `toml:"max_response"`
		MaxInstances int64  `toml:"max_instances"`
		Fuel         int64  `toml:"fuel"`
	} `toml:"limits"`
	Capabilities struct {
		Egress  []string          `toml:"egress"`
		Config  map[string]string `toml:"config"`
		Secrets map[string]string `toml:"secrets"`
		Clock   bool              `toml:"clock"`
		Random  bool              `toml:"random"`
	} `toml:"capabilities"`
}

// maxManifestSize bounds a manifest file; anything larger is not a manifest.
const maxManifestSize = 64 << 10

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ParseManifest decodes and validates a TOML manifest. Unknown keys are
// errors, so that a typo cannot silently drop a limit or a grant.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("plugins: manifest larger than %d bytes", maxManifestSize)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, errors.New("plugins: manifest contains a NUL byte")
	}
	var f manifestFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return nil, fmt.Errorf("plugins: manifest: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("plugins: manifest: unknown keys %s", strings.Join(keys, ", "))
	}
	m := &Manifest{
		Name:    f.Name,
		Order:   f.Order,
		Trusted: f.Trusted,
		Hooks: Hooks{
			Kinds:       f.Hooks.Kinds,
			Commands:    f.Hooks.Commands,
			Events:      f.Hooks.Events,
			Projections: f.Hooks.Projections,
			Topics:      f.Hooks.Topics,
		},
		Capabilities: Capabilities{
			Egress:  f.Capabilities.Egress,
			Config:  f.Capabilities.Config,
			Secrets: f.Capabilities.Secrets,
			Clock:   f.Capabilities.Clock,
			Random:  f.Capabilities.Random,
		},
	}
	switch f.Kind {
	case "sidecar", "":
		m.Kind = KindSidecar
	case "ambassador":
		m.Kind = KindAmbassador
	default:
		return nil, fmt.Errorf("plugins: manifest: kind %q: want sidecar or ambassador", f.Kind)
	}
	switch f.OnFailure {
	case "reject", "":
		m.OnFailure = FailReject
	case "pass":
		m.OnFailure = FailPass
	default:
		return nil, fmt.Errorf("plugins: manifest: on_failure %q: want reject or pass", f.OnFailure)
	}
	l := f.Limits
	// A limit written as 0 is refused rather than read as "default": no
	// memory, no instance, no output or no fuel would make the plugin
	// useless, and an operator who wrote 0 meant something else.
	for _, k := range []struct {
		key string
		v   int64
	}{{"memory_pages", l.MemoryPages}, {"max_instances", l.MaxInstances}, {"max_output", l.MaxOutput},
		{"max_response", l.MaxResponse}, {"fuel", l.Fuel}} {
		if k.v == 0 && md.IsDefined("limits", k.key) {
			return nil, fmt.Errorf("plugins: manifest: limits.%s = 0 makes no sense: leave it out for the default", k.key)
		}
	}
	if l.MemoryPages < 0 || l.MemoryPages > MaxMemoryPages {
		return nil, fmt.Errorf("plugins: manifest: limits.memory_pages %d out of range [1, %d]", l.MemoryPages, MaxMemoryPages)
	}
	if l.Fuel < 0 || l.Fuel > MaxFuel {
		return nil, fmt.Errorf("plugins: manifest: limits.fuel %d out of range [1, %d]", l.Fuel, int64(MaxFuel))
	}
	m.Limits.Fuel = l.Fuel
	m.Limits.MemoryPages = uint32(l.MemoryPages)
	if l.Timeout != "" {
		d, err := time.ParseDuration(l.Timeout)
		if err != nil || d <= 0 || d > time.Hour {
			return nil, fmt.Errorf("plugins: manifest: limits.timeout %q: want a duration in (0, 1h]", l.Timeout)
		}
		m.Limits.Timeout = d
	}
	if l.MaxOutput < 0 || l.MaxOutput > 64<<20 {
		return nil, fmt.Errorf("plugins: manifest: limits.max_output %d out of range [1, %d]", l.MaxOutput, 64<<20)
	}
	m.Limits.MaxOutput = uint32(l.MaxOutput)
	if l.MaxResponse < 0 || l.MaxResponse > 64<<20 {
		return nil, fmt.Errorf("plugins: manifest: limits.max_response %d out of range [1, %d]", l.MaxResponse, 64<<20)
	}
	m.Limits.MaxResponse = uint32(l.MaxResponse)
	if l.MaxInstances < 0 || l.MaxInstances > 1024 {
		return nil, fmt.Errorf("plugins: manifest: limits.max_instances %d out of range [1, 1024]", l.MaxInstances)
	}
	m.Limits.MaxInstances = int(l.MaxInstances)
	m.applyDefaults()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manifest) applyDefaults() {
	if m.Kind == 0 {
		m.Kind = KindSidecar
	}
	if m.Limits.MemoryPages == 0 {
		m.Limits.MemoryPages = DefaultMemoryPages
	}
	if m.Limits.Timeout == 0 {
		m.Limits.Timeout = DefaultTimeout
		if m.Trusted {
			m.Limits.Timeout = DefaultTrustedTimeout
		}
	}
	if m.Limits.Fuel == 0 {
		m.Limits.Fuel = DefaultFuel
	}
	if m.Limits.MaxOutput == 0 {
		m.Limits.MaxOutput = DefaultMaxOutput
	}
	if m.Limits.MaxResponse == 0 {
		m.Limits.MaxResponse = DefaultMaxResponse
	}
	if m.Limits.MaxInstances == 0 {
		m.Limits.MaxInstances = DefaultMaxInstances
	}
}

// Validate checks a manifest whose defaults are applied.
func (m *Manifest) Validate() error {
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("plugins: manifest: name %q: want 1-63 of [a-z0-9._-], starting with a letter or digit", m.Name)
	}
	if m.Kind != KindSidecar && m.Kind != KindAmbassador {
		return fmt.Errorf("plugins: manifest: bad kind %v", m.Kind)
	}
	l := m.Limits
	if l.MemoryPages < 1 || l.MemoryPages > MaxMemoryPages || l.MaxInstances < 1 || l.Timeout <= 0 ||
		l.Fuel < 1 || l.Fuel > MaxFuel || l.MaxOutput < 1 || l.MaxResponse < 1 {
		return fmt.Errorf("plugins: manifest: limits %+v out of range", l)
	}
	if m.Kind == KindAmbassador && m.Hooks.any() {
		return errors.New("plugins: manifest: an ambassador has no hooks")
	}
	for _, list := range [][]string{m.Hooks.Kinds, m.Hooks.Commands, m.Hooks.Events, m.Hooks.Projections, m.Hooks.Topics} {
		for _, p := range list {
			if err := checkPattern(p); err != nil {
				return err
			}
		}
	}
	for _, e := range m.Capabilities.Egress {
		if _, err := parseEgressRule(e); err != nil {
			return err
		}
	}
	for k := range m.Capabilities.Config {
		if k == "" || len(k) > 128 {
			return fmt.Errorf("plugins: manifest: config key %q: want 1-128 bytes", k)
		}
	}
	for k, src := range m.Capabilities.Secrets {
		if k == "" || len(k) > 128 {
			return fmt.Errorf("plugins: manifest: secret key %q: want 1-128 bytes", k)
		}
		if !strings.HasPrefix(src, "env:") && !strings.HasPrefix(src, "file:") || len(src) < 5 {
			// The source is not a secret itself, but keep it out of errors
			// anyway in case someone pasted the value.
			return fmt.Errorf("plugins: manifest: secret %q: source must be env:NAME or file:PATH", k)
		}
	}
	return nil
}

func (h Hooks) any() bool {
	return len(h.Kinds)+len(h.Commands)+len(h.Events)+len(h.Projections)+len(h.Topics) > 0
}

func checkPattern(p string) error {
	if p == "" || len(p) > 256 {
		return fmt.Errorf("plugins: manifest: hook pattern %q: want 1-256 bytes", p)
	}
	if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
		return fmt.Errorf("plugins: manifest: hook pattern %q: '*' only at the end", p)
	}
	return nil
}

// match reports whether name matches one of the patterns.
func match(patterns []string, name string) bool {
	for _, p := range patterns {
		if p == name || p == "*" {
			return true
		}
		if n := len(p) - 1; n >= 0 && p[n] == '*' && strings.HasPrefix(name, p[:n]) {
			return true
		}
	}
	return false
}

// matchCommand reports whether the sidecar intercepts commands of this kind
// and type.
func (h *Hooks) matchCommand(kind, typ string) bool {
	return len(h.Commands) > 0 && (len(h.Kinds) == 0 || match(h.Kinds, kind)) && match(h.Commands, typ)
}

// matchEvent reports whether the sidecar intercepts events of this kind and
// type on their way to projection.
func (h *Hooks) matchEvent(projection, kind, typ string) bool {
	return len(h.Events) > 0 && (len(h.Kinds) == 0 || match(h.Kinds, kind)) &&
		(len(h.Projections) == 0 || match(h.Projections, projection)) && match(h.Events, typ)
}

// matchTopic reports whether the sidecar intercepts messages on topic.
func (h *Hooks) matchTopic(topic string) bool {
	return match(h.Topics, topic)
}

// String renders the hooks for List and logs, e.g.
// "commands=account/Deposit,Withdraw events=* topics=orders.*".
func (h Hooks) String() string {
	var parts []string
	if len(h.Commands) > 0 {
		parts = append(parts, "commands="+kindPrefix(h.Kinds)+strings.Join(h.Commands, ","))
	}
	if len(h.Events) > 0 {
		s := "events=" + kindPrefix(h.Kinds) + strings.Join(h.Events, ",")
		if len(h.Projections) > 0 {
			s += " projections=" + strings.Join(h.Projections, ",")
		}
		parts = append(parts, s)
	}
	if len(h.Topics) > 0 {
		parts = append(parts, "topics="+strings.Join(h.Topics, ","))
	}
	return strings.Join(parts, " ")
}

func kindPrefix(kinds []string) string {
	if len(kinds) == 0 {
		return ""
	}
	return strings.Join(kinds, ",") + "/"
}

// egressRule is one entry of the egress allow-list.
type egressRule struct {
	host     string // lower case; "*.example.com" matches subdomains only
	port     string // "" = any
	wildcard bool
}

func parseEgressRule(s string) (egressRule, error) {
	bad := func(why string) (egressRule, error) {
		return egressRule{}, fmt.Errorf("plugins: manifest: egress %q: %s", s, why)
	}
	if s == "" || strings.ContainsAny(s, "/ @?#") {
		return bad("want host, host:port or *.domain")
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("bad port")
		}
	}
	host = strings.ToLower(host)
	r := egressRule{host: host, port: port}
	if strings.HasPrefix(host, "*.") {
		r.wildcard = true
		r.host = host[1:] // ".example.com"
		if len(r.host) < 2 || strings.Contains(r.host[1:], "*") {
			return bad("bad wildcard")
		}
	} else if host == "" || strings.Contains(host, "*") {
		return bad("want host, host:port or *.domain")
	}
	return r, nil
}

func (r egressRule) allows(host, port string) bool {
	if r.port != "" && r.port != port {
		return false
	}
	host = strings.ToLower(host)
	if r.wildcard {
		return strings.HasSuffix(host, r.host) && len(host) > len(r.host)
	}
	return host == r.host
}

// resolveSecrets reads the secret values named by the manifest. Errors name
// the key and source but never a value.
func (m *Manifest) resolveSecrets(readFile func(string) ([]byte, error), getenv func(string) (string, bool)) (map[string]string, error) {
	if len(m.Capabilities.Secrets) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m.Capabilities.Secrets))
	for k, src := range m.Capabilities.Secrets {
		switch {
		case strings.HasPrefix(src, "env:"):
			v, ok := getenv(src[4:])
			if !ok {
				return nil, fmt.Errorf("plugins: secret %q: environment variable %s is not set", k, src[4:])
			}
			out[k] = v
		case strings.HasPrefix(src, "file:"):
			b, err := readFile(src[5:])
			if err != nil {
				var pe *os.PathError
				if errors.As(err, &pe) {
					err = pe.Err // the path is in the message below already
				}
				return nil, fmt.Errorf("plugins: secret %q: read %s: %v", k, src[5:], err)
			}
			out[k] = strings.TrimRight(string(b), "\r\n")
		}
	}
	return out, nil
}

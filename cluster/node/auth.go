package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus"
)

// TokenRole is what an API token may do. Each role includes the ones
// below it: a writer may do what a reader may, an admin everything. The
// matrix is in docs/operations.md ("Authentication and TLS") and
// docs/adr (auth-and-tls).
type TokenRole int

const (
	// TokenNone is no role: an unknown token, or none.
	TokenNone TokenRole = iota
	// TokenReader reads: queries, events (read, tail, stats), projection
	// status, cluster information and the dashboard.
	TokenReader
	// TokenWriter also sends commands (HTTP, gRPC and NATS) and publishes
	// to topics.
	TokenWriter
	// TokenAdmin also runs plugins (list, reload, call), rebuilds
	// projections and does cluster operations.
	TokenAdmin
)

func (r TokenRole) String() string {
	switch r {
	case TokenReader:
		return "reader"
	case TokenWriter:
		return "writer"
	case TokenAdmin:
		return "admin"
	}
	return "none"
}

// ParseTokenRole parses "reader", "writer" or "admin".
func ParseTokenRole(s string) (TokenRole, error) {
	switch s {
	case "reader":
		return TokenReader, nil
	case "writer":
		return TokenWriter, nil
	case "admin":
		return TokenAdmin, nil
	}
	return TokenNone, fmt.Errorf("role %q: want reader, writer or admin", s)
}

// minTokenLen is the shortest token a token file may hold: 16 characters
// of a random token are 96 bits or more.
const minTokenLen = 16

// TokenFileError is a token file that cannot be used. Its message names
// the file and line, never a token.
type TokenFileError struct {
	Path string
	Line int // 0: the whole file
	Err  error
}

func (e *TokenFileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("auth tokens %s:%d: %v", e.Path, e.Line, e.Err)
	}
	return fmt.Sprintf("auth tokens %s: %v", e.Path, e.Err)
}

func (e *TokenFileError) Unwrap() error { return e.Err }

// tokenEntry is one token of the file, kept only as its SHA-256 so that
// every comparison has the same length and takes the same time.
type tokenEntry struct {
	sum  [sha256.Size]byte
	role TokenRole
	name string
}

// tokenSet is the parsed token file. It is immutable.
type tokenSet struct {
	entries []tokenEntry
	count   map[TokenRole]int
}

// lookup returns the role and name of token, comparing it with every
// token of the set in constant time (no early exit, equal-length sums).
func (s *tokenSet) lookup(token string) (TokenRole, string) {
	if s == nil || token == "" {
		return TokenNone, ""
	}
	sum := sha256.Sum256([]byte(token))
	role, name := TokenNone, ""
	for i := range s.entries {
		e := &s.entries[i]
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
			role, name = e.role, e.name
		}
	}
	return role, name
}

// parseTokens parses a token file: one token a line,
//
//	<role> <token> [name]
//
// with role reader, writer or admin; the token 16 to 4096 printable ASCII
// characters without spaces; the optional name shows in logs instead of
// the token. Blank lines and lines starting with # are ignored. A file
// without any token is an error: it would lock everyone out by mistake.
func parseTokens(path string, b []byte) (*tokenSet, error) {
	set := &tokenSet{count: map[TokenRole]int{}}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) < 2 || len(f) > 3 {
			return nil, &TokenFileError{path, line, errors.New("want <role> <token> [name]")}
		}
		role, err := ParseTokenRole(f[0])
		if err != nil {
			return nil, &TokenFileError{path, line, err}
		}
		tok := f[1]
		if len(tok) < minTokenLen || len(tok) > 4096 {
			return nil, &TokenFileError{path, line, fmt.Errorf("the token is %d characters: want %d to 4096 (make one with: head -c 32 /dev/urandom | base64)", len(tok), minTokenLen)}
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < '!' || tok[i] > '~' {
				return nil, &TokenFileError{path, line, errors.New("the token has a character outside printable ASCII")}
			}
		}
		name := fmt.Sprintf("%s@%d", role, line)
		if len(f) == 3 {
			name = f[2]
		}
		sum := sha256.Sum256([]byte(tok))
		if prev, ok := seen[sum]; ok {
			return nil, &TokenFileError{path, line, fmt.Errorf("the same token as line %d", prev)}
		}
		seen[sum] = line
		set.entries = append(set.entries, tokenEntry{sum: sum, role: role, name: name})
		set.count[role]++
	}
	if err := sc.Err(); err != nil {
		return nil, &TokenFileError{path, 0, err}
	}
	if len(set.entries) == 0 {
		return nil, &TokenFileError{path, 0, errors.New("no tokens: want lines of <role> <token> [name]")}
	}
	return set, nil
}

// auth is the node's authentication: the current token set, reloaded from
// its file when the file changes. A nil *auth means authentication is off.
type auth struct {
	path     string
	interval time.Duration
	log      interface {
		Info(string, ...any)
		Error(string, ...any)
	}
	tokens atomic.Pointer[tokenSet]
	// reauthorize, once the bus runs, applies a reloaded token set to the
	// NATS connections that are open (bus.Reauthorize): a removed token's
	// connection is closed, a changed role's permissions change.
	reauthorize atomic.Pointer[func() error]
	// fileSum is the SHA-256 of the file's bytes last loaded (or last
	// refused), so that a reload happens once per change.
	mu      sync.Mutex
	fileSum [sha256.Size]byte

	cancel context.CancelFunc
	done   chan struct{}
}

// loadAuth reads the token file once; it fails when the file is missing,
// unreadable or holds no valid token, so that a node never runs open by
// mistake.
func loadAuth(path string, interval time.Duration, log interface {
	Info(string, ...any)
	Error(string, ...any)
}) (*auth, error) {
	a := &auth{path: path, interval: interval, log: log}
	if err := a.reload(true); err != nil {
		return nil, fmt.Errorf("node: refusing to start without the tokens of --auth-tokens: %w", err)
	}
	return a, nil
}

// reload reads the file and swaps in its tokens when its bytes changed. A
// file that became unreadable or invalid keeps the tokens in force: a
// half-written file never opens the node nor locks everyone out.
func (a *auth) reload(first bool) error {
	b, err := os.ReadFile(a.path)
	if err != nil {
		return &TokenFileError{a.path, 0, err}
	}
	sum := sha256.Sum256(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !first && sum == a.fileSum {
		return nil
	}
	a.fileSum = sum
	set, err := parseTokens(a.path, b)
	if err != nil {
		return err
	}
	a.tokens.Store(set)
	a.log.Info("auth tokens loaded", "file", a.path, "readers", set.count[TokenReader],
		"writers", set.count[TokenWriter], "admins", set.count[TokenAdmin])
	if f := a.reauthorize.Load(); f != nil {
		// Under a.mu, so that two reloads apply in order. The HTTP
		// paths need nothing: they look every request's token up.
		if err := (*f)(); err != nil {
			a.log.Error("auth tokens: open NATS connections keep their permissions until they reconnect", "err", err)
		}
	}
	return nil
}

// reauthorizeWith makes every later reload apply its tokens to open NATS
// connections with f, and applies them now when the tokens changed since
// before (the set the bus started with): a reload between the bus's start
// and this call is not missed.
func (a *auth) reauthorizeWith(f func() error, before *tokenSet) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reauthorize.Store(&f)
	if a.tokens.Load() != before {
		if err := f(); err != nil {
			a.log.Error("auth tokens: open NATS connections keep their permissions until they reconnect", "err", err)
		}
	}
}

// start polls the file every interval until stop.
func (a *auth) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		t := time.NewTicker(a.interval)
		defer t.Stop()
		var lastErr string
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := a.reload(false); err != nil {
				if err.Error() != lastErr { // once per distinct failure
					a.log.Error("auth tokens not reloaded; the previous tokens stay in force", "err", err)
				}
				lastErr = err.Error()
				continue
			}
			lastErr = ""
		}
	}()
}

func (a *auth) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

// lookup is the role of a presented token (TokenNone when unknown).
func (a *auth) lookup(token string) (TokenRole, string) {
	return a.tokens.Load().lookup(token)
}

// natsPermissions are the NATS subject permissions of a role (see the
// docs): a reader may subscribe and consume but publish only replies and
// JetStream consumer requests; a writer may publish anything but the
// node's internal subjects (forwarding, leases and buckets, the journal's
// streams, the events the node publishes, stream administration); an
// admin is unrestricted, like the node itself. Nobody but the node may
// subscribe to the command and forwarding subjects (that would answer
// commands in the node's place).
func natsPermissions(cfg Config, role TokenRole) *bus.Permissions {
	if role == TokenAdmin {
		return nil
	}
	subDeny := []string{"_TROUPE.>"}
	if cfg.CommandSubjectPrefix != "-" {
		subDeny = append(subDeny, cfg.CommandSubjectPrefix+".>")
	}
	if role == TokenReader {
		return &bus.Permissions{
			PublishAllow: []string{"_INBOX.>", "$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES",
				"$JS.API.STREAM.LIST", "$JS.API.CONSUMER.>", "$JS.ACK.>", "$JS.FC.>"},
			SubscribeDeny: subDeny,
		}
	}
	deny := []string{"_TROUPE.>", "$SYS.>", "$KV.>", "$JS.API.META.>", "$JS.API.SERVER.>",
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
		"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>",
		// The replicated journal's streams (journal/jsstore: <prefix>.p<N>.{e,f,i}).
		"troupe.*.e.>", "troupe.*.f", "troupe.*.i.>"}
	wild := strings.NewReplacer("{kind}", "*", "{id}", "*", "{type}", "*")
	if cfg.EventSubject != "-" {
		deny = append(deny, wild.Replace(cfg.EventSubject))
	}
	for _, t := range cfg.EventSubjectByKind {
		if t != "-" {
			deny = append(deny, wild.Replace(t))
		}
	}
	return &bus.Permissions{PublishDeny: deny, SubscribeDeny: subDeny}
}

// natsAuthenticate is the bus's check of a NATS client's token.
func (n *Node) natsAuthenticate(token string) (*bus.Permissions, bool) {
	role, _ := n.auth.lookup(token)
	if role == TokenNone {
		return nil, false
	}
	return natsPermissions(n.cfg, role), true
}

// startSecurity loads the token file and the TLS files before anything
// listens, so that a node with bad files refuses to start, and warns when
// the API or NATS listen beyond loopback without authentication.
func (n *Node) startSecurity() error {
	cfg := n.cfg
	var err error
	if n.tls, err = loadTLS(cfg); err != nil {
		return err
	}
	if cfg.AuthTokensFile != "" {
		if n.auth, err = loadAuth(cfg.AuthTokensFile, cfg.AuthReloadInterval, n.log); err != nil {
			return err
		}
		n.auth.start()
		n.onStop("auth", func(context.Context) error { n.auth.stop(); return nil })
		return nil
	}
	host, _, _ := net.SplitHostPort(cfg.HTTPAddr)
	if !loopback(host) {
		n.log.Warn("!!! THE API LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who reaches it can send commands, reload plugins and rebuild projections; set --auth-tokens (and --tls-cert/--tls-key)",
			"http", cfg.HTTPAddr)
	}
	if !cfg.NATSNoListen && !loopback(cfg.NATSHost) && cfg.NATSToken == "" && len(cfg.NATSNkeys) == 0 {
		n.log.Warn("!!! NATS LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who reaches it can send commands; set --auth-tokens",
			"nats_host", cfg.NATSHost)
	}
	return nil
}

// loopback reports whether host only listens on loopback.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// secureBus adds the node's authentication and TLS to the bus's config.
// It returns what to call once the bus runs (nil without auth): from then
// on a reloaded token file applies to open NATS connections too.
func (n *Node) secureBus(bcfg *bus.Config) (started func(*bus.Bus)) {
	if n.auth != nil {
		bcfg.Authenticate = n.natsAuthenticate
		before := n.auth.tokens.Load()
		started = func(b *bus.Bus) {
			n.auth.reauthorizeWith(func() error {
				if err := b.Reauthorize(); !errors.Is(err, bus.ErrClosed) { // closed: the node stops
					return err
				}
				return nil
			}, before)
		}
	}
	if n.tls != nil {
		bcfg.TLS = n.tls.server()
		if bcfg.Cluster.Name != "" {
			bcfg.Cluster.TLS = n.tls.routes()
		}
	}
	return started
}

package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/structpb"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

const (
	readerTok = "reader-token-0123456789abcdef"
	writerTok = "writer-token-0123456789abcdef"
	adminTok  = "admin-token-0123456789abcdef0"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name, file, wantErr string
		want                map[string]TokenRole
	}{
		{name: "roles, comments, names", file: "# tokens\n\nreader " + readerTok + " dash\nwriter " + writerTok + "\nadmin " + adminTok + " ops\n",
			want: map[string]TokenRole{readerTok: TokenReader, writerTok: TokenWriter, adminTok: TokenAdmin, "nope-0123456789abcdef": TokenNone, "": TokenNone}},
		{name: "empty", file: "# nothing\n", wantErr: "no tokens"},
		{name: "unknown role", file: "root " + adminTok + "\n", wantErr: `:1: role "root"`},
		{name: "short token", file: "reader short\n", wantErr: ":1: the token is 5 characters"},
		{name: "missing token", file: "reader\n", wantErr: "want <role> <token> [name]"},
		{name: "too many fields", file: "reader " + readerTok + " a b\n", wantErr: "want <role> <token> [name]"},
		{name: "duplicate", file: "reader " + readerTok + "\nadmin " + readerTok + "\n", wantErr: ":2: the same token as line 1"},
		{name: "control character", file: "reader " + readerTok + "\x01\n", wantErr: "outside printable ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := parseTokens("tokens", []byte(tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), readerTok) || strings.Contains(err.Error(), adminTok) {
					t.Fatalf("the error shows a token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for tok, want := range tt.want {
				if got, _ := set.lookup(tok); got != want {
					t.Errorf("lookup(%q) = %v, want %v", tok, got, want)
				}
			}
		})
	}
}

// Every procedure of the API has a role in the table: a new procedure
// must be placed deliberately (it would need admin otherwise).
func TestEveryProcedureHasARole(t *testing.T) {
	svcs := troupev1.File_troupe_v1_api_proto.Services()
	n := 0
	for i := 0; i < svcs.Len(); i++ {
		s := svcs.Get(i)
		for j := 0; j < s.Methods().Len(); j++ {
			p := "/" + string(s.FullName()) + "/" + string(s.Methods().Get(j).Name())
			n++
			if _, ok := procedureRoles[p]; !ok {
				t.Errorf("%s has no role in procedureRoles", p)
			}
		}
	}
	if n != len(procedureRoles) {
		t.Errorf("procedureRoles has %d entries, the API %d procedures", len(procedureRoles), n)
	}
	if got := requiredRole("/troupe.v1.NewService/Do"); got != TokenAdmin {
		t.Errorf("an unlisted procedure needs %v, want admin", got)
	}
}

// securedNode starts a node with a token file and TLS from a CA made for
// the test.
func securedNode(t *testing.T) (*Node, string, DevCerts) {
	t.Helper()
	dir := t.TempDir()
	certs, err := WriteDevCerts(filepath.Join(dir, "certs"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, "reader "+readerTok+"\nwriter "+writerTok+"\nadmin "+adminTok+"\n")
	cfg := testConfig(t)
	cfg.AuthTokensFile, cfg.AuthReloadInterval = tokens, 20*time.Millisecond
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = certs.Cert, certs.Key, certs.CA
	return startNode(t, cfg), tokens, certs
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	// Write then rename, as an operator's tooling should: the node never
	// reads a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tlsClient(t *testing.T, caFile string, h2 bool) *http.Client {
	t.Helper()
	pool, err := LoadCertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
	if h2 {
		p := new(http.Protocols)
		p.SetHTTP2(true)
		tr.Protocols = p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// withToken adds "Authorization: Bearer" to every request of a client.
func withToken(tok string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if tok != "" {
				req.Header().Set("Authorization", "Bearer "+tok)
			}
			return next(ctx, req)
		}
	}))
}

func TestAuthAndTLSOnEveryPath(t *testing.T) {
	n, tokens, certs := securedNode(t)
	defer n.Shutdown(context.Background())
	base := "https://" + n.HTTPAddr()
	ctx := context.Background()
	h1, h2 := tlsClient(t, certs.CA, false), tlsClient(t, certs.CA, true)

	open := func(tok string) *troupev1.SendRequest {
		st, _ := structpb.NewStruct(map[string]any{"owner": "ada"})
		return &troupev1.SendRequest{Kind: "account", Id: "acc-" + tok[:6], Type: "Open", Payload: st}
	}
	t.Run("connect JSON over TLS", func(t *testing.T) {
		for _, tt := range []struct {
			tok  string
			want connect.Code // 0: ok
			msg  string
		}{
			{readerTok, connect.CodePermissionDenied, "/troupe.v1.CommandService/Send needs the writer role"},
			{writerTok, 0, ""},
			{adminTok, 0, ""},
		} {
			c := troupev1connect.NewCommandServiceClient(h1, base, withToken(tt.tok))
			_, err := c.Send(ctx, connect.NewRequest(open(tt.tok)))
			if connect.CodeOf(err) != tt.want && !(tt.want == 0 && err == nil) {
				t.Fatalf("send as %s: %v, want code %v", tt.tok[:6], err, tt.want)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("send as %s: %v, want %q", tt.tok[:6], err, tt.msg)
			}
		}
		q := troupev1connect.NewQueryServiceClient(h1, base, withToken(readerTok))
		qp, _ := structpb.NewStruct(map[string]any{"id": "acc-writer"})
		if _, err := q.Query(ctx, connect.NewRequest(&troupev1.QueryRequest{Name: "balance", Params: qp})); connect.CodeOf(err) == connect.CodePermissionDenied || connect.CodeOf(err) == connect.CodeUnauthenticated {
			t.Fatalf("a reader's query: %v", err)
		}
		for _, tt := range []struct {
			tok  string
			want connect.Code
		}{{writerTok, connect.CodePermissionDenied}, {readerTok, connect.CodePermissionDenied}, {"", connect.CodeUnauthenticated}} {
			p := troupev1connect.NewPluginServiceClient(h1, base, withToken(tt.tok))
			if _, err := p.Reload(ctx, connect.NewRequest(&troupev1.ReloadRequest{})); connect.CodeOf(err) != tt.want {
				t.Fatalf("reload plugins with %q: %v, want %v", tt.tok, err, tt.want)
			} else if tt.want == connect.CodePermissionDenied && !strings.Contains(err.Error(), "needs the admin role") {
				t.Fatalf("reload plugins: %v does not name the admin role", err)
			}
		}
		p := troupev1connect.NewPluginServiceClient(h1, base, withToken(adminTok))
		if _, err := p.Reload(ctx, connect.NewRequest(&troupev1.ReloadRequest{})); connect.CodeOf(err) == connect.CodePermissionDenied || connect.CodeOf(err) == connect.CodeUnauthenticated {
			t.Fatalf("an admin's reload: %v", err)
		}
	})

	t.Run("gRPC over TLS", func(t *testing.T) {
		for _, tt := range []struct {
			tok  string
			want connect.Code
		}{{readerTok, connect.CodePermissionDenied}, {"", connect.CodeUnauthenticated}, {"wrong-token-0123456789abcdef", connect.CodeUnauthenticated}, {writerTok, 0}} {
			c := troupev1connect.NewCommandServiceClient(h2, base, connect.WithGRPC(), withToken(tt.tok))
			req := open(writerTok)
			req.Id = "grpc-1"
			_, err := c.Send(ctx, connect.NewRequest(req))
			if connect.CodeOf(err) != tt.want && !(tt.want == 0 && err == nil) {
				t.Fatalf("gRPC send with %q: %v, want %v", tt.tok, err, tt.want)
			}
		}
	})

	t.Run("401 leaks nothing", func(t *testing.T) {
		for _, auth := range []string{"", "Bearer", "Bearer ", "Basic " + writerTok, "Bearer wrong-token-0123456789abcdef",
			"Bearer " + writerTok[:10], "Bearer " + writerTok + "x", "bearer\t" + writerTok} {
			req, _ := http.NewRequest("POST", base+troupev1connect.CommandServiceSendProcedure, strings.NewReader(`{"kind":"account","id":"x","type":"Open"}`))
			req.Header.Set("Content-Type", "application/json")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := h1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || string(body) != `{"code":"unauthenticated","message":"missing or invalid bearer token"}` {
				t.Fatalf("Authorization %q: %d %s", auth, resp.StatusCode, body)
			}
		}
		// Probes and scrapes stay open.
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := h1.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s without a token: %d", p, resp.StatusCode)
			}
		}
	})

	t.Run("dashboard login", func(t *testing.T) {
		get := func(c *http.Client, cookie *http.Cookie) (int, string) {
			req, _ := http.NewRequest("GET", base+"/ui/", nil)
			req.Header.Set("Accept", "text/html")
			if cookie != nil {
				req.AddCookie(cookie)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get(h1, nil); code != http.StatusUnauthorized || !strings.Contains(body, `<label for="token">`) {
			t.Fatalf("dashboard without a token: %d %.200s", code, body)
		}
		noRedirect := *h1
		noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := noRedirect.PostForm(base+"/ui/login", url.Values{"token": {readerTok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var cookie *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == dashboardCookie {
				cookie = c
			}
		}
		if resp.StatusCode != http.StatusSeeOther || cookie == nil || !cookie.HttpOnly || !cookie.Secure {
			t.Fatalf("login: %d, cookie %+v", resp.StatusCode, cookie)
		}
		if code, body := get(h1, cookie); code != 200 || strings.Contains(body, `<label for="token">`) {
			t.Fatalf("dashboard with the cookie: %d %.200s", code, body)
		}
		resp, err = noRedirect.PostForm(base+"/ui/login", url.Values{"token": {"wrong-token-0123456789abcdef"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Fatalf("login with a wrong token: %d %v", resp.StatusCode, resp.Cookies())
		}
	})

	t.Run("NATS over TLS with role permissions", func(t *testing.T) {
		connect := func(tok string) (*nats.Conn, chan error, error) {
			errs := make(chan error, 16)
			nc, err := nats.Connect(n.Bus().ClientURL(), nats.Token(tok), nats.RootCAs(certs.CA), nats.Timeout(5*time.Second),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					select {
					case errs <- err:
					default:
					}
				}))
			return nc, errs, err
		}
		if !strings.HasPrefix(n.Bus().ClientURL(), "tls://") {
			t.Fatalf("client URL %q", n.Bus().ClientURL())
		}
		for _, tok := range []string{"", "wrong-token-0123456789abcdef"} {
			if nc, _, err := connect(tok); err == nil {
				nc.Close()
				t.Fatalf("NATS connected with token %q", tok)
			} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("NATS with token %q: %v, want an authorization violation", tok, err)
			}
		}
		body := []byte(`{"type":"Open","payload":{"owner":"ada"}}`)
		rc, rerrs, err := connect(readerTok)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := rc.Request("troupe.cmd.account.nats-r", body, 500*time.Millisecond); err == nil {
			t.Fatal("a reader's NATS command was answered")
		}
		select {
		case err := <-rerrs:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "troupe.cmd.account.nats-r") {
				t.Fatalf("reader's command: %v, want a publish permission violation on the command subject", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no permission violation for a reader's command")
		}
		if _, err := rc.SubscribeSync("troupe.events.>"); err != nil {
			t.Fatalf("a reader cannot subscribe to events: %v", err)
		}
		wc, _, err := connect(writerTok)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		m, err := wc.Request("troupe.cmd.account.nats-w", body, 10*time.Second)
		if err != nil {
			t.Fatalf("a writer's NATS command: %v", err)
		}
		if e := m.Header.Get("Troupe-Error"); e != "" {
			t.Fatalf("a writer's NATS command: %s %s", e, m.Data)
		}
	})

	t.Run("token file reload", func(t *testing.T) {
		newTok := "fresh-admin-0123456789abcdef"
		writeFile(t, tokens, "reader "+readerTok+"\nadmin "+newTok+"\n") // the writer is revoked
		status := func(tok string) int {
			req, _ := http.NewRequest("POST", base+troupev1connect.ProjectionServiceStatusProcedure, strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := h1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		deadline := time.Now().Add(10 * time.Second)
		for status(newTok) != 200 || status(writerTok) != 401 {
			if time.Now().After(deadline) {
				t.Fatalf("after the reload: new admin %d, revoked writer %d", status(newTok), status(writerTok))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// A broken file keeps the tokens in force: never open, never
		// everyone locked out.
		writeFile(t, tokens, "superuser "+adminTok+"\n")
		time.Sleep(100 * time.Millisecond) // five poll periods: a reload would have happened
		if got := status(newTok); got != 200 {
			t.Fatalf("after a broken token file, the last good tokens: %d", got)
		}
	})
}

func TestStartRefusesBadSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	a, err := WriteDevCerts(filepath.Join(dir, "a"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteDevCerts(filepath.Join(dir, "b"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "tokens")
	writeFile(t, good, "admin "+adminTok+"\n")
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "# none yet\n")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, "not a certificate\n")
	tests := []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"missing token file", func(c *Config) { c.AuthTokensFile = filepath.Join(dir, "nope") }, "refusing to start without the tokens of --auth-tokens"},
		{"unreadable token file", func(c *Config) { c.AuthTokensFile = dir }, "is a directory"},
		{"token file without tokens", func(c *Config) { c.AuthTokensFile = empty }, "no tokens"},
		{"cert and key do not match", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = a.Cert, b.Key }, "private key does not match public key"},
		{"missing cert", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, "nope.pem"), a.Key }, "--tls-cert"},
		{"CA without certificates", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = a.Cert, a.Key, garbage }, "no PEM certificate"},
		{"missing CA", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = a.Cert, a.Key, filepath.Join(dir, "nope.pem")
		}, "--tls-ca"},
		{"cert without key", func(c *Config) { c.TLSCertFile = a.Cert }, "--tls-cert and --tls-key go together"},
		{"auth with a NATS token", func(c *Config) { c.AuthTokensFile, c.NATSToken = good, "x" }, "excludes --nats-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.set(&cfg)
			n, err := New(cfg)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = n.Start(ctx)
				cancel()
				n.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start = %v, want an error about %q", err, tt.want)
			}
			if strings.Contains(err.Error(), adminTok) {
				t.Fatalf("the error shows a token: %v", err)
			}
		})
	}
}

// Without auth, an API or NATS beyond loopback gets a loud warning; on
// loopback, none. (startSecurity only checks and logs: nothing listens.)
func TestWarningWithoutAuthBeyondLoopback(t *testing.T) {
	for _, tt := range []struct {
		http, nats string
		warn       bool
	}{
		{"127.0.0.1:8080", "127.0.0.1", false},
		{"localhost:8080", "::1", false},
		{"0.0.0.0:8080", "127.0.0.1", true},
		{"127.0.0.1:8080", "0.0.0.0", true},
		{":8080", "127.0.0.1", true},
	} {
		var logs strings.Builder
		cfg := Config{HTTPAddr: tt.http, NATSHost: tt.nats, Logger: slog.New(slog.NewTextHandler(&logs, nil))}.withDefaults()
		n := &Node{cfg: cfg, log: cfg.Logger}
		if err := n.startSecurity(); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), "WITHOUT AUTHENTICATION"); got != tt.warn {
			t.Errorf("http %s, nats %s: warned %v, want %v:\n%s", tt.http, tt.nats, got, tt.warn, logs.String())
		}
	}
}

// A reloaded token file applies to NATS connections that are already open,
// not only to the next ones: a removed token's connection is closed, a
// writer made a reader keeps its connection but may no longer send
// commands, and a token added to the file works at once.
func TestTokenFileReloadAppliesToOpenNATSConnections(t *testing.T) {
	n, tokens, certs := securedNode(t)
	defer n.Shutdown(context.Background())
	const (
		revokedTok    = writerTok
		downgradedTok = "downgraded-0123456789abcdef"
		addedTok      = "added-writer-0123456789abcdef"
		// The bound: the poll period (20 ms here) plus the reload itself,
		// generous for a shared, noisy machine.
		bound = 5 * time.Second
	)
	writeFile(t, tokens, "writer "+revokedTok+"\nwriter "+downgradedTok+"\nadmin "+adminTok+"\n")

	type client struct {
		nc     *nats.Conn
		errs   chan error
		closed chan struct{}
	}
	dial := func(tok string) (client, error) {
		c := client{errs: make(chan error, 16), closed: make(chan struct{})}
		var err error
		c.nc, err = nats.Connect(n.Bus().ClientURL(), nats.Token(tok), nats.RootCAs(certs.CA),
			nats.Timeout(5*time.Second), nats.NoReconnect(),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case c.errs <- err:
				default:
				}
			}),
			nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }))
		if err == nil {
			t.Cleanup(c.nc.Close)
		}
		return c, err
	}
	// dialWhenValid retries while the file's new tokens are being picked up.
	dialWhenValid := func(tok string) client {
		deadline := time.Now().Add(bound)
		for {
			c, err := dial(tok)
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("connect with %s: %v", tok[:6], err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	send := func(c client, id string, timeout time.Duration) error {
		m, err := c.nc.Request("troupe.cmd.account."+id, []byte(`{"type":"Open","payload":{"owner":"ada"}}`), timeout)
		if err != nil {
			return err
		}
		if e := m.Header.Get("Troupe-Error"); e != "" {
			t.Fatalf("command %s: %s %s", id, e, m.Data)
		}
		return nil
	}

	revoked := dialWhenValid(revokedTok)
	downgraded := dialWhenValid(downgradedTok)
	for i, c := range []client{revoked, downgraded} {
		if err := send(c, fmt.Sprintf("before-%d", i), 10*time.Second); err != nil {
			t.Fatalf("a writer's command before the change: %v", err)
		}
	}

	start := time.Now()
	writeFile(t, tokens, "reader "+downgradedTok+"\nwriter "+addedTok+"\nadmin "+adminTok+"\n")

	t.Run("removed token's connection is closed", func(t *testing.T) {
		select {
		case <-revoked.closed:
			t.Logf("closed %s after the file changed", time.Since(start).Round(time.Millisecond))
		case <-time.After(bound):
			t.Fatalf("the connection of a removed token is open %s after the change", bound)
		}
		if _, err := dial(revokedTok); err == nil {
			t.Fatal("a removed token connects")
		}
	})

	t.Run("writer made reader is refused commands", func(t *testing.T) {
		// Send until the server refuses: the reload may not have run
		// yet. A refused request is a permission violation reported
		// asynchronously (the request itself just times out).
		deadline := time.Now().Add(bound)
	refused:
		for i := 0; ; i++ {
			_ = send(downgraded, fmt.Sprintf("after-%d", i), 200*time.Millisecond)
			select {
			case err := <-downgraded.errs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "troupe.cmd.account.") {
					t.Fatalf("the downgraded writer's command: %v, want a publish permission violation", err)
				}
				break refused
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no permission violation for a writer made reader %s after the change", bound)
			}
		}
		if downgraded.nc.IsClosed() {
			t.Fatal("the downgraded token's connection was closed, want it kept as a reader's")
		}
		if _, err := downgraded.nc.SubscribeSync("troupe.events.>"); err != nil {
			t.Fatalf("the downgraded token cannot read as a reader: %v", err)
		}
	})

	t.Run("added token works without a restart", func(t *testing.T) {
		if err := send(dialWhenValid(addedTok), "added", 10*time.Second); err != nil {
			t.Fatalf("a new writer's command: %v", err)
		}
	})
}

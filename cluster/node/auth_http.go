package node

import (
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// procedureRoles is the role each API procedure needs. A procedure of
// the API that is missing here needs admin (fail closed); TestEvery
// ProcedureHasARole keeps the table complete.
var procedureRoles = map[string]TokenRole{
	troupev1connect.QueryServiceQueryProcedure:        TokenReader,
	troupev1connect.EventServiceReadProcedure:         TokenReader,
	troupev1connect.EventServiceTailProcedure:         TokenReader,
	troupev1connect.EventServiceStatsProcedure:        TokenReader,
	troupev1connect.ProjectionServiceStatusProcedure:  TokenReader,
	troupev1connect.ClusterServiceMembersProcedure:    TokenReader,
	troupev1connect.ClusterServiceStatusProcedure:     TokenReader,
	troupev1connect.ClusterServiceShardsProcedure:     TokenReader,
	troupev1connect.ClusterServiceLeadersProcedure:    TokenReader,
	troupev1connect.CommandServiceSendProcedure:       TokenWriter,
	troupev1connect.ProjectionServiceRebuildProcedure: TokenAdmin,
	troupev1connect.PluginServiceListProcedure:        TokenAdmin,
	troupev1connect.PluginServiceReloadProcedure:      TokenAdmin,
	troupev1connect.PluginServiceCallProcedure:        TokenAdmin,
}

// openPaths are served without a token: probes and scrapes.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requiredRole is the role a request to path needs.
func requiredRole(path string) TokenRole {
	if r, ok := procedureRoles[path]; ok {
		return r
	}
	if strings.HasPrefix(path, "/troupe.") {
		return TokenAdmin // a procedure not in the table: fail closed
	}
	return TokenReader // the dashboard, and paths that do not exist (404)
}

// unauthenticatedMessage is the one message of every 401: it does not
// say whether the token was missing, malformed, unknown or revoked.
const unauthenticatedMessage = "missing or invalid bearer token"

// dashboardCookie holds a dashboard user's token (HttpOnly, SameSite
// Strict, Secure under TLS, path /ui/).
const dashboardCookie = "troupe_token"

// guard checks every request's token before next sees it. With
// authentication off it is next.
func (n *Node) guard(next http.Handler) http.Handler {
	if n.auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		switch {
		case openPaths[path]:
			next.ServeHTTP(w, r)
			return
		case path == "/ui/login":
			n.serveLogin(w, r)
			return
		case path == "/ui/logout":
			http.SetCookie(w, &http.Cookie{Name: dashboardCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true})
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		dash := path == "/" || strings.HasPrefix(path, "/ui/")
		token, ok := bearer(r)
		if !ok && dash {
			if c, err := r.Cookie(dashboardCookie); err == nil {
				token = c.Value
			}
		}
		role, name := n.auth.lookup(token)
		if role == TokenNone {
			if dash && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				n.writeLoginPage(w, http.StatusUnauthorized, "")
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="troupe"`)
			denyRequest(w, r, http.StatusUnauthorized, "unauthenticated", 16, unauthenticatedMessage)
			return
		}
		if need := requiredRole(path); role < need {
			n.log.Info("request refused: role too low", "token", name, "role", role, "need", need, "path", path)
			denyRequest(w, r, http.StatusForbidden, "permission_denied", 7,
				fmt.Sprintf("permission denied: %s needs the %s role (this token is a %s)", path, need, role))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer is the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// denyRequest answers 401 or 403 in the caller's protocol: a gRPC or
// gRPC-Web status (grpcCode) for those, the contract's JSON body for the
// rest (Connect maps 401 and 403 to unauthenticated and
// permission_denied).
func denyRequest(w http.ResponseWriter, r *http.Request, status int, code string, grpcCode int, msg string) {
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc") {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Grpc-Status", strconv.Itoa(grpcCode))
		w.Header().Set("Grpc-Message", grpcPercentEncode(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSONError(w, status, code, msg)
}

// serveLogin shows the dashboard's login form (GET) and checks a token
// posted from it (POST): a valid one is set as the dashboard cookie.
func (n *Node) serveLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		n.writeLoginPage(w, http.StatusOK, "")
	case http.MethodPost:
		token := strings.TrimSpace(r.PostFormValue("token"))
		if role, _ := n.auth.lookup(token); role == TokenNone {
			n.writeLoginPage(w, http.StatusUnauthorized, "That token is not valid.")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: dashboardCookie, Value: token, Path: "/ui/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: n.tls != nil,
		})
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_argument",
			fmt.Sprintf("method %s is not allowed on /ui/login: use GET or POST", r.Method))
	}
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Troupe: sign in</title>
<style>body{font:16px system-ui,sans-serif;background:#fff;color:#111;max-width:28rem;margin:4rem auto;padding:0 1rem}
label{display:block;margin:1rem 0 .3rem;font-weight:600}input{width:100%;padding:.5rem;font:inherit;border:1px solid #555;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1rem;font:inherit;background:#1d4ed8;color:#fff;border:0}p.err{color:#a00000}</style></head>
<body><main><h1>Troupe dashboard</h1>
<p>This node requires a token (reader, writer or admin).</p>
{{if .}}<p class="err" role="alert">{{.}}</p>{{end}}
<form method="post" action="/ui/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></main></body></html>
`))

func (n *Node) writeLoginPage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, msg)
}

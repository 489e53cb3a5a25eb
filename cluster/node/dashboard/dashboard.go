package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

//go:embed assets
var assets embed.FS

// Config configures the dashboard. Source is required; every other field
// has a default.
type Config struct {
	// Source is the node the dashboard shows.
	Source Source
	// Prefix is the path the dashboard is mounted at; it starts and ends
	// with "/". Default: "/ui/".
	Prefix string
	// Refresh is how often an open page re-reads the node. Default: 2s.
	Refresh time.Duration
	// TailBacklog is how many of the latest positions a new live tail
	// starts with. Default: 50.
	TailBacklog int
	// TailMaxRate caps the events one live tail sends per second; beyond
	// it events are counted and reported as skipped, so that a busy node
	// does not flood browsers. Default: 200.
	TailMaxRate int
	// Heartbeat is how often an idle live tail sends a comment, so that
	// proxies keep it open and dead clients are noticed. Default: 15s.
	Heartbeat time.Duration
	// Logger receives the dashboard's errors. Default: discard.
	Logger *slog.Logger
}

func (cfg Config) withDefaults() Config {
	if cfg.Prefix == "" {
		cfg.Prefix = "/ui/"
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 2 * time.Second
	}
	if cfg.TailBacklog == 0 {
		cfg.TailBacklog = 50
	}
	if cfg.TailMaxRate == 0 {
		cfg.TailMaxRate = 200
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports the first invalid field of a defaulted config.
func (cfg Config) Validate() error {
	switch {
	case cfg.Source == nil:
		return errors.New("dashboard: Config.Source is required")
	case !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/"):
		return fmt.Errorf("dashboard: prefix %q must start and end with /", cfg.Prefix)
	case cfg.Refresh < 100*time.Millisecond:
		return fmt.Errorf("dashboard: refresh %s is under 100ms", cfg.Refresh)
	case cfg.TailBacklog < 0 || cfg.TailBacklog > maxBacklog:
		return fmt.Errorf("dashboard: tail backlog %d: want 0 to %d", cfg.TailBacklog, maxBacklog)
	case cfg.TailMaxRate < 0:
		return fmt.Errorf("dashboard: negative tail rate %d", cfg.TailMaxRate)
	case cfg.Heartbeat < time.Second:
		return fmt.Errorf("dashboard: heartbeat %s is under 1s", cfg.Heartbeat)
	}
	return nil
}

// Limits on what one request may ask for.
const (
	maxBacklog   = 1000
	defaultLimit = 100
	maxLimit     = 1000
	// activeShown bounds the live entity ids listed per kind.
	activeShown = 12
)

// Handler serves the dashboard. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static map[string]staticFile
	rates  *sampler
	now    func() time.Time
}

type staticFile struct {
	body  []byte
	ctype string
	etag  string
}

// New validates cfg and returns the dashboard's handler.
func New(cfg Config) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), rates: newSampler(), now: time.Now}
	if err := h.loadAssets(); err != nil {
		return nil, err
	}
	p := cfg.Prefix
	h.mux.HandleFunc("GET "+p+"{$}", h.serveOverview)
	h.mux.HandleFunc("GET "+p+"entity", h.serveLookup)
	h.mux.HandleFunc("GET "+p+"entity/{kind}/{id...}", h.serveEntity)
	h.mux.HandleFunc("GET "+p+"api/overview", h.serveOverviewJSON)
	h.mux.HandleFunc("GET "+p+"api/entity/{kind}/{id...}", h.serveEntityJSON)
	h.mux.HandleFunc("GET "+p+"api/tail", h.serveTail)
	h.mux.HandleFunc("GET "+p+"static/{name}", h.serveStatic)
	h.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "Page not found",
			fmt.Sprintf("There is no dashboard page at %s.", r.URL.Path))
	})
	return h, nil
}

// ServeHTTP serves the dashboard's pages, API and assets.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// Everything the pages load comes from this handler; nothing inline
	// runs, and no other site may frame them.
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "the dashboard only reads: use GET", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) loadAssets() error {
	h.static = map[string]staticFile{}
	err := fs.WalkDir(assets, "assets/static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(name))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		h.static[path.Base(name)] = staticFile{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dashboard: assets: %w", err)
	}
	funcs := template.FuncMap{
		"entityURL": h.entityURL,
		"asset":     h.assetURL,
		"rate":      formatRate,
		"latency":   formatLatency,
		"ago":       func(t time.Time) string { return formatAgo(h.now(), t) },
		"uptime":    func(t time.Time) string { return formatUptime(h.now().Sub(t)) },
		"stamp":     func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"short":     func(s string) string { return s[:min(len(s), 12)] },
		"payload":   func(b []byte) string { return string(PayloadJSON(b)) },
		"meta":      formatMeta,
		"maxu":      func(a, b uint64) uint64 { return max(a, b) },
		"mod8":      func(i int) int { return i % 8 },
		"hostport": func(u string) string {
			if _, rest, ok := strings.Cut(u, "://"); ok {
				return rest
			}
			return u
		},
	}
	h.pages = map[string]*template.Template{}
	for _, name := range []string{"overview", "entity", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("dashboard: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	return nil
}

func (h *Handler) assetURL(name string) string {
	f, ok := h.static[name]
	if !ok {
		return h.cfg.Prefix + "static/" + name
	}
	// The version in the URL lets browsers cache assets for good.
	return h.cfg.Prefix + "static/" + name + "?v=" + strings.Trim(f.etag, `"`)
}

func (h *Handler) entityURL(kind, id string) string {
	return h.cfg.Prefix + "entity/" + url.PathEscape(kind) + "/" + url.PathEscape(id)
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := h.static[r.PathValue("name")]
	if !ok {
		h.fail(w, r, http.StatusNotFound, "Page not found", fmt.Sprintf("There is no asset %q.", r.PathValue("name")))
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.URL.Query().Get("v") == "" {
		hd.Set("Cache-Control", "no-cache")
	}
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.Write(f.body)
}

// page is what every page template gets.
type page struct {
	Prefix  string
	Title   string
	Refresh int64 // milliseconds
	Node    NodeInfo
	Kinds   []string // for the entity lookup form
	// Kind and ID prefill the lookup form.
	Kind, ID string
	Status   int
	View     any
}

func (h *Handler) newPage(title string, ov Overview) page {
	p := page{Prefix: h.cfg.Prefix, Title: title, Refresh: h.cfg.Refresh.Milliseconds(), Node: ov.Node}
	for _, k := range ov.Kinds {
		p.Kinds = append(p.Kinds, k.Name)
	}
	return p
}

// render writes a page, or only its <main> content when the script asks
// for a refresh (?partial=1).
func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, status int, p page) {
	var buf bytes.Buffer
	tmpl := "layout"
	if r.URL.Query().Get("partial") == "1" {
		tmpl = "main"
	}
	p.Status = status
	if err := h.pages[name].ExecuteTemplate(&buf, tmpl, p); err != nil {
		h.log.Error("dashboard page failed", "page", name, "err", err)
		http.Error(w, "dashboard: page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorView struct {
	Heading, Message string
	// Kinds lists the registered kinds when the page is about an unknown
	// one.
	KnownKinds []string
}

// fail renders an error page. The overview is fetched only to fill the
// header; if it fails too, the page goes without.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, heading, msg string) {
	h.failWith(w, r, status, errorView{Heading: heading, Message: msg})
}

func (h *Handler) failWith(w http.ResponseWriter, r *http.Request, status int, v errorView) {
	if status >= 500 {
		h.log.Error("dashboard request failed", "path", r.URL.Path, "status", status, "err", v.Message)
	}
	ov, _ := h.cfg.Source.Overview(r.Context())
	p := h.newPage(v.Heading, ov)
	p.View = v
	h.render(w, r, "error", status, p)
}

// overviewView is the overview page's (and /api/overview's) content.
type overviewView struct {
	Overview
	Members []Member `json:"members"`
	Rates   Rates    `json:"rates"`
	// Clustered is set when the Source reports shards and leaders.
	Clustered bool         `json:"clustered"`
	Shards    []Shard      `json:"shards,omitempty"`
	Owners    []ownerCount `json:"-"`
	Cells     []shardCell  `json:"-"`
	Leaders   []Leader     `json:"leaders,omitempty"`
	Spark     spark        `json:"-"`
}

type ownerCount struct {
	Owner  string
	Shards int
}

// shardCell is one cell of the shard map, coloured by its owner.
type shardCell struct {
	Shard
	Color int
}

func (h *Handler) overview(ctx context.Context) (overviewView, error) {
	ov, err := h.cfg.Source.Overview(ctx)
	if err != nil {
		return overviewView{}, fmt.Errorf("overview: %w", err)
	}
	members, err := h.cfg.Source.Members(ctx)
	if err != nil {
		return overviewView{}, fmt.Errorf("members: %w", err)
	}
	v := overviewView{Overview: ov, Members: members, Rates: h.rates.observe(h.now(), ov.Totals)}
	for i := range v.Kinds {
		if len(v.Kinds[i].ActiveIDs) > activeShown {
			v.Kinds[i].ActiveIDs = v.Kinds[i].ActiveIDs[:activeShown]
		}
	}
	if cs, ok := h.cfg.Source.(ClusterSource); ok {
		v.Clustered = true
		if v.Shards, err = cs.Shards(ctx); err != nil {
			return overviewView{}, fmt.Errorf("shards: %w", err)
		}
		if v.Leaders, err = cs.Leaders(ctx); err != nil {
			return overviewView{}, fmt.Errorf("leaders: %w", err)
		}
		v.Owners = owners(v.Shards)
		color := map[string]int{}
		for i, o := range v.Owners {
			color[o.Owner] = i % 8
		}
		for _, s := range v.Shards {
			o := s.Owner
			if o == "" {
				o = unowned
			}
			v.Cells = append(v.Cells, shardCell{Shard: s, Color: color[o]})
		}
	}
	v.Spark = newSpark(v.Rates.EventSeries)
	return v, nil
}

const unowned = "(unowned)"

func owners(shards []Shard) []ownerCount {
	idx := map[string]int{}
	var out []ownerCount
	for _, s := range shards {
		o := s.Owner
		if o == "" {
			o = unowned
		}
		i, ok := idx[o]
		if !ok {
			i = len(out)
			idx[o] = i
			out = append(out, ownerCount{Owner: o})
		}
		out[i].Shards++
	}
	return out
}

func (h *Handler) serveOverview(w http.ResponseWriter, r *http.Request) {
	v, err := h.overview(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The node did not answer", err.Error())
		return
	}
	p := h.newPage("Overview", v.Overview)
	p.View = v
	h.render(w, r, "overview", http.StatusOK, p)
}

func (h *Handler) serveOverviewJSON(w http.ResponseWriter, r *http.Request) {
	v, err := h.overview(r.Context())
	if err != nil {
		h.jsonError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h.writeJSON(w, http.StatusOK, v)
}

// serveLookup sends the entity lookup form to the entity's page.
func (h *Handler) serveLookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, id := strings.TrimSpace(q.Get("kind")), strings.TrimSpace(q.Get("id"))
	if kind == "" || id == "" {
		h.fail(w, r, http.StatusBadRequest, "Which entity?", "Give both an entity kind and an id.")
		return
	}
	http.Redirect(w, r, h.entityURL(kind, id), http.StatusSeeOther)
}

// entityView is the entity page's content.
type entityView struct {
	Kind, ID, Stream string
	Info             journal.StreamInfo
	State            string // indented JSON
	StateSequence    uint64
	StateError       string
	Events           []journal.Event
	JSONLines        string
	// Paging links ("" when there is no such page).
	Oldest, Older, Newer, Latest string
	Limit                        int
	// From and To are the first and last sequences shown.
	From, To uint64
	// ReplayCmd is the CLI command that prints the same events.
	ReplayCmd string
	// LiveFrom is the global position the page follows new events from.
	LiveFrom uint64
}

// entityRequest parses and checks the kind and id of an entity URL.
func entityRequest(r *http.Request) (kind, id string, err error) {
	kind, id = r.PathValue("kind"), r.PathValue("id")
	if _, _, err := journal.ParseStream(journal.StreamID(kind, id)); err != nil {
		return "", "", err
	}
	return kind, id, nil
}

func pageArgs(r *http.Request) (from uint64, limit int, err error) {
	q := r.URL.Query()
	limit = defaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return 0, 0, fmt.Errorf("limit %q: want a number from 1 to %d", s, maxLimit)
		}
		limit = n
	}
	if s := q.Get("from"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n < 1 {
			return 0, 0, fmt.Errorf("from %q: want a sequence number from 1", s)
		}
		from = n
	}
	return from, limit, nil
}

// entity reads an entity's events and state; status is the HTTP status of
// a failure.
func (h *Handler) entity(ctx context.Context, kind, id string, from uint64, limit int) (v entityView, status int, err error) {
	events, info, err := h.cfg.Source.Stream(ctx, kind, id, from, limit)
	switch {
	case errors.Is(err, ErrUnknownKind), errors.Is(err, ErrUnknownEntity):
		return v, http.StatusNotFound, err
	case err != nil:
		return v, http.StatusInternalServerError, err
	}
	v = entityView{Kind: kind, ID: id, Stream: journal.StreamID(kind, id), Info: info, Events: events, Limit: limit, From: from}
	if len(events) > 0 {
		v.From, v.To = events[0].Sequence, events[len(events)-1].Sequence
		v.LiveFrom = events[len(events)-1].Position + 1
	}
	v.ReplayCmd = "troupe events replay --stream " + shellQuote(v.Stream)
	if v.From > 1 {
		v.ReplayCmd += " --from " + strconv.FormatUint(v.From, 10)
	}
	if v.To < info.LastSequence {
		v.ReplayCmd += " --limit " + strconv.Itoa(limit)
	}
	state, seq, err := h.cfg.Source.State(ctx, kind, id)
	if err != nil {
		// The events are worth showing even when the state does not
		// rebuild (an event without applier, say): that is the moment
		// an operator looks.
		v.StateError = err.Error()
	} else {
		var buf bytes.Buffer
		if json.Indent(&buf, state, "", "  ") == nil {
			state = buf.Bytes()
		}
		v.State, v.StateSequence = string(state), seq
	}
	var lines strings.Builder
	for _, ev := range events {
		b, _ := json.Marshal(NewEventJSON(ev))
		lines.Write(b)
		lines.WriteByte('\n')
	}
	v.JSONLines = lines.String()
	base := h.entityURL(kind, id)
	link := func(from uint64) string {
		u := base + "?from=" + strconv.FormatUint(from, 10)
		if limit != defaultLimit {
			u += "&limit=" + strconv.Itoa(limit)
		}
		return u
	}
	if v.From > 1 {
		v.Oldest = link(1)
		v.Older = link(uint64(max(int64(v.From)-int64(limit), 1)))
	}
	if last := v.From + uint64(len(events)); len(events) > 0 && last <= info.LastSequence {
		v.Newer = link(last)
		v.Latest = base
		if limit != defaultLimit {
			v.Latest += "?limit=" + strconv.Itoa(limit)
		}
	}
	return v, http.StatusOK, nil
}

func (h *Handler) serveEntity(w http.ResponseWriter, r *http.Request) {
	kind, id, err := entityRequest(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Not an entity", err.Error())
		return
	}
	from, limit, err := pageArgs(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Bad page", err.Error())
		return
	}
	v, status, err := h.entity(r.Context(), kind, id, from, limit)
	if err != nil {
		h.failEntity(w, r, status, kind, id, err)
		return
	}
	ov, _ := h.cfg.Source.Overview(r.Context())
	p := h.newPage(v.Stream, ov)
	p.Kind, p.ID, p.View = kind, id, v
	h.render(w, r, "entity", http.StatusOK, p)
}

func (h *Handler) failEntity(w http.ResponseWriter, r *http.Request, status int, kind, id string, err error) {
	switch {
	case errors.Is(err, ErrUnknownKind):
		ov, _ := h.cfg.Source.Overview(r.Context())
		v := errorView{Heading: "Unknown entity kind", Message: fmt.Sprintf("This node has no entity kind %q.", kind)}
		for _, k := range ov.Kinds {
			v.KnownKinds = append(v.KnownKinds, k.Name)
		}
		h.failWith(w, r, status, v)
	case errors.Is(err, ErrUnknownEntity):
		h.fail(w, r, status, "No such entity", fmt.Sprintf("%s has no events: no entity of kind %q has the id %q.", journal.StreamID(kind, id), kind, id))
	default:
		h.fail(w, r, status, "The node did not answer", err.Error())
	}
}

// entityJSON is /api/entity's answer.
type entityJSON struct {
	Stream   string          `json:"stream"`
	Sequence uint64          `json:"sequence"`
	Count    uint64          `json:"count"`
	State    json.RawMessage `json:"state,omitempty"`
	// StateSequence is the sequence the state reflects.
	StateSequence uint64      `json:"state_sequence,omitempty"`
	StateError    string      `json:"state_error,omitempty"`
	Events        []EventJSON `json:"events"`
}

func (h *Handler) serveEntityJSON(w http.ResponseWriter, r *http.Request) {
	kind, id, err := entityRequest(r)
	if err != nil {
		h.jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	from, limit, err := pageArgs(r)
	if err != nil {
		h.jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, status, err := h.entity(r.Context(), kind, id, from, limit)
	if err != nil {
		msg := err.Error()
		switch {
		case errors.Is(err, ErrUnknownKind):
			msg = fmt.Sprintf("unknown entity kind %q", kind)
		case errors.Is(err, ErrUnknownEntity):
			msg = fmt.Sprintf("no entity %s", journal.StreamID(kind, id))
		}
		h.jsonError(w, status, msg)
		return
	}
	out := entityJSON{Stream: v.Stream, Sequence: v.Info.LastSequence, Count: v.Info.Count,
		StateSequence: v.StateSequence, StateError: v.StateError, Events: []EventJSON{}}
	if v.State != "" {
		out.State = json.RawMessage(v.State)
	}
	for _, ev := range v.Events {
		out.Events = append(out.Events, NewEventJSON(ev))
	}
	h.writeJSON(w, http.StatusOK, out)
}

func (h *Handler) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.jsonError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

func (h *Handler) jsonError(w http.ResponseWriter, status int, msg string) {
	if status >= 500 {
		h.log.Error("dashboard request failed", "status", status, "err", msg)
	}
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

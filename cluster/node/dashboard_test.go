package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/troupe-dev/troupe/actors/examples/bank"
)

// The dashboard in a real browser (Debian's headless Chromium, driven over
// the DevTools protocol), against a real node with the bank demo and the
// example plugins. Without chromium the test skips, except under CI, where
// it fails: .ci/run installs chromium.

// chromiumPath finds the browser.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and CI is set: the browser tests must run in CI (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium): skipping the browser tests")
	return ""
}

// demoNode starts a node with the bank demo and the Go example plugins,
// built into a fresh directory.
func demoNode(t *testing.T) *Node {
	t.Helper()
	plugins := t.TempDir()
	build := exec.Command("../../wasm-examples/build.sh", plugins)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("wasm-examples/build.sh: %v\n%s", err, out)
	}
	t.Setenv("PARTNER_API_TOKEN", "demo-token") // the partner-api ambassador's secret
	cfg := Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1, PluginDir: plugins,
		Setup: bank.Register, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	// Compiling four Go plugins is most of a node's start (seconds each;
	// minutes under the race detector). wazero's compilation cache is
	// keyed by the module and wazero's version and written atomically, so
	// test nodes share one, across runs too.
	shared := filepath.Join(os.TempDir(), "troupe-test-wasm-cache")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shared, filepath.Join(cfg.DataDir, "cache", "wasm")); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A cold cache under the race detector takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// command sends a command over the JSON API and returns its global position.
func command(t *testing.T, url, kind, id, typ, payload string) uint64 {
	t.Helper()
	body := fmt.Sprintf(`{"kind":%q,"id":%q,"type":%q,"payload":%s}`, kind, id, typ, payload)
	resp, err := http.Post(url+"/troupe.v1.CommandService/Send", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s/%s: %d %s", typ, kind, id, resp.StatusCode, b)
	}
	var out struct {
		Position string `json:"position"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	var pos uint64
	fmt.Sscan(out.Position, &pos)
	return pos
}

// browser is a headless Chromium tab. It records what the page writes to
// the console and saves a screenshot and the page's HTML when the test
// fails (in t.ArtifactDir(); run with -artifacts to keep them).
type browser struct {
	t       *testing.T
	ctx     context.Context
	console chan string
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // root in a container
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	// The whole browser lives at most as long as this bound.
	life, endLife := context.WithTimeout(context.Background(), 5*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, console: make(chan string, 1000)}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		endLife()
	})
	b.bind(t)
	// Start the browser now (the first action must run on the tab's own
	// context: a shorter-lived one would end the browser with it), and
	// listen to the console from the first page on.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				select {
				case b.console <- fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line):
				default:
				}
			}
		}
	}()
	return b
}

// do runs actions, bounded.
func (b *browser) do(bound time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, bound)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// consoleErrors returns the errors the page logged so far.
func (b *browser) consoleErrors() []string {
	// Console events arrive asynchronously: give the last ones a moment.
	time.Sleep(100 * time.Millisecond)
	var out []string
	for {
		select {
		case m := <-b.console:
			out = append(out, m)
		default:
			return out
		}
	}
}

// bind makes t the test that the browser reports to, and saves the
// browser's artifacts if t fails.
func (b *browser) bind(t *testing.T) {
	b.t = t
	t.Cleanup(func() {
		if t.Failed() {
			b.saveArtifacts(t)
		}
	})
}

func (b *browser) saveArtifacts(t *testing.T) {
	dir := t.ArtifactDir()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(dir, "screenshot.png")
		if os.WriteFile(path, png, 0o644) == nil {
			t.Logf("screenshot: %s", path)
		}
	}
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err == nil {
		path := filepath.Join(dir, "page.html")
		if os.WriteFile(path, []byte(html), 0o644) == nil {
			t.Logf("page: %s", path)
		}
	}
}

func TestDashboardInBrowser(t *testing.T) {
	n := demoNode(t)
	api := "http://" + n.HTTPAddr()
	command(t, api, "account", "acc-1", "Open", `{"owner":"ada"}`)
	command(t, api, "account", "acc-1", "Deposit", `{"amount":100}`)
	command(t, api, "account", "acc-2", "Open", `{"owner":"bob"}`)
	b := newBrowser(t, 1440, 900)

	t.Run("overview shows the plugins and projections", func(t *testing.T) {
		b.bind(t)
		b.do(20*time.Second,
			chromedp.Navigate(api+"/ui/"),
			chromedp.WaitVisible(chromedp.CSS(`#plugins tr[data-plugin="validate-amount"]`)),
		)
		plugins := b.text("#plugins")
		for _, want := range []string{"audit-log", "validate-amount", "rate-limit", "partner-api", "ready", "ambassador"} {
			if !strings.Contains(plugins, want) {
				t.Errorf("plugins panel lacks %q:\n%s", want, plugins)
			}
		}
		projections := b.text("#projections")
		for _, want := range []string{"balances", "statement", "top-accounts", "transfers", "transfer-process", "reactor"} {
			if !strings.Contains(projections, want) {
				t.Errorf("projections panel lacks %q:\n%s", want, projections)
			}
		}
		if node := b.text("#node"); !strings.Contains(node, n.HTTPAddr()) || !strings.Contains(node, "ready") {
			t.Errorf("node panel:\n%s", node)
		}
		if entities := b.text("#entities"); !strings.Contains(entities, "acc-1") || !strings.Contains(entities, "transfer") {
			t.Errorf("entities panel:\n%s", entities)
		}
		// Every control has a label a screen reader announces.
		unlabelled, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input, select, button, progress")]
			.filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
			.map(el => el.outerHTML)`))
		if err != nil || len(unlabelled) > 0 {
			t.Errorf("controls without a label (%v): %v", err, unlabelled)
		}
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("live tail shows a command within a second", func(t *testing.T) {
		b.bind(t)
		b.do(10*time.Second, chromedp.WaitVisible(chromedp.CSS(`#tail-rows tr[data-stream="account/acc-1"]`)))
		waitStatus(b, "Following all kinds.")
		start := time.Now()
		pos := command(t, api, "account", "acc-1", "Deposit", `{"amount":7}`)
		row := fmt.Sprintf(`#tail-rows tr[data-position="%d"]`, pos)
		b.do(time.Second, chromedp.WaitVisible(chromedp.CSS(row)))
		t.Logf("the event showed %s after the command was sent", time.Since(start).Round(time.Millisecond))
		if got := b.text(row); !strings.Contains(got, "Deposited") || !strings.Contains(got, `{"amount":7}`) || !strings.Contains(got, "account/acc-1") {
			t.Fatalf("tail row: %q", got)
		}

		// Filter by id: only acc-2's events show.
		b.do(5*time.Second, chromedp.SendKeys(chromedp.CSS("#tail-id"), "acc-2"))
		waitStatus(b, "Following all kinds, id acc-2.")
		skipped := command(t, api, "account", "acc-1", "Deposit", `{"amount":1}`)
		shown := command(t, api, "account", "acc-2", "Deposit", `{"amount":2}`)
		b.do(time.Second, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#tail-rows tr[data-position="%d"]`, shown))))
		if got := b.text("#tail-rows"); strings.Contains(got, "account/acc-1") {
			t.Fatalf("the id filter let acc-1 through (position %d):\n%s", skipped, got)
		}
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("entity page shows its events and state", func(t *testing.T) {
		b.bind(t)
		b.do(10*time.Second,
			chromedp.Navigate(api+"/ui/entity/account/acc-1"),
			chromedp.WaitVisible(chromedp.CSS(`#event-table tr[data-seq="4"]`)),
		)
		events := b.text("#event-table")
		for _, want := range []string{"Opened", `{"owner":"ada"}`, "Deposited", `{"amount":100}`, `{"amount":7}`, `{"amount":1}`} {
			if !strings.Contains(events, want) {
				t.Errorf("events table lacks %q:\n%s", want, events)
			}
		}
		if state := b.text("#state"); !strings.Contains(state, `"balance": 108`) || !strings.Contains(state, "sequence 4") {
			t.Errorf("state panel:\n%s", state)
		}
		// A new event shows without a reload.
		b.do(5*time.Second, chromedp.WaitVisible(chromedp.CSS("#entity-live")))
		waitText(b, "#entity-live", "Following new events.")
		command(t, api, "account", "acc-1", "Withdraw", `{"amount":8}`)
		b.do(5*time.Second, chromedp.WaitVisible(chromedp.CSS(`#event-table tr[data-seq="5"]`)))
		waitText(b, "#state", `"balance": 100`)
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("the keyboard opens an entity", func(t *testing.T) {
		b.bind(t)
		// Type an id in the lookup form and press Enter.
		b.do(10*time.Second,
			chromedp.Navigate(api+"/ui/"),
			chromedp.SendKeys(chromedp.CSS("#lookup-id"), "acc-2\r"),
			chromedp.WaitVisible(chromedp.CSS(`#event-table tr[data-seq="1"]`)),
		)
		if h := b.text("h1"); h != "account/acc-2" {
			t.Fatalf("Enter in the lookup form opened %q", h)
		}
	})

	t.Run("unknown kinds and entities are a 404 page", func(t *testing.T) {
		b.bind(t)
		for _, tt := range []struct{ path, heading, says string }{
			{"/ui/entity/ghost/g-1", "Unknown entity kind", `This node has no entity kind "ghost".`},
			{"/ui/entity/account/nobody", "No such entity", "account/nobody has no events"},
		} {
			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(api+tt.path))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != 404 {
				t.Errorf("%s: status %d", tt.path, resp.Status)
			}
			if h := b.text("h1"); h != tt.heading {
				t.Errorf("%s: heading %q, want %q", tt.path, h, tt.heading)
			}
			if body := b.text("main"); !strings.Contains(body, tt.says) {
				t.Errorf("%s: page says\n%s", tt.path, body)
			}
		}
		b.consoleErrors() // the browser logs the 404 responses themselves
	})
}

// waitStatus waits until the live tail says it follows what was asked.
func waitStatus(b *browser, want string) {
	b.t.Helper()
	waitText(b, "#tail-status", want)
}

// waitText polls an element's text until it contains want.
func waitText(b *browser, sel, want string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	expr := fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").includes(%q)`, sel, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		b.t.Fatalf("%s never said %q (it says %q): %v", sel, want, b.text(sel), err)
	}
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(b *browser, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		b.t.Fatalf("never true: %s: %v", expr, err)
	}
}

// TestDashboardScreenshot writes the screenshot of the dashboard in
// docs/ (TROUPE_SCREENSHOT=docs/dashboard.png): the bank demo with some
// traffic, as `make run` shows it.
func TestDashboardScreenshot(t *testing.T) {
	out := os.Getenv("TROUPE_SCREENSHOT")
	if out == "" {
		t.Skip("set TROUPE_SCREENSHOT=path.png to write the dashboard's screenshot")
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join("../..", out) // relative to the repository
	}
	n := demoNode(t)
	api := "http://" + n.HTTPAddr()
	for i, owner := range []string{"ada", "bob", "cy", "dee"} {
		id := fmt.Sprintf("acc-%d", i+1)
		command(t, api, "account", id, "Open", fmt.Sprintf(`{"owner":%q}`, owner))
		command(t, api, "account", id, "Deposit", fmt.Sprintf(`{"amount":%d}`, 100*(i+1)))
	}
	b := newBrowser(t, 1440, 900)
	b.do(20*time.Second,
		chromedp.Navigate(api+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#plugins tr[data-plugin="validate-amount"]`)),
	)
	waitStatus(b, "Following all kinds.")
	// Traffic for the rates and the tail: deposits, transfers, and one
	// withdrawal the validate-amount plugin rejects.
	for i := range 12 {
		from, to := fmt.Sprintf("acc-%d", i%4+1), fmt.Sprintf("acc-%d", (i+1)%4+1)
		command(t, api, "transfer", fmt.Sprintf("t%d", i+1), "Start", fmt.Sprintf(`{"from":%q,"to":%q,"amount":%d}`, from, to, 5+i))
		command(t, api, "account", from, "Deposit", fmt.Sprintf(`{"amount":%d}`, 10+i))
		time.Sleep(300 * time.Millisecond) // spread over a few refreshes: this is a picture, not a check
	}
	resp, err := http.Post(api+"/troupe.v1.CommandService/Send", "application/json",
		strings.NewReader(`{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":-5}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Wait for a refresh that shows the rejection (validate-amount's
	// rejects cell) and the rates.
	waitJS(b, `document.querySelector('#plugins tr[data-plugin="validate-amount"] td:nth-of-type(6)')?.textContent.trim() === "1"`)
	waitText(b, "#rates", "events/s, peak")
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

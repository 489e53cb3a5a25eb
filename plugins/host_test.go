package plugins

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func bankCmd(typ, payload string) *troupev1.Command {
	return &troupev1.Command{
		CommandId:   "cmd-1",
		Kind:        "account",
		EntityId:    "acc-1",
		Type:        typ,
		Payload:     []byte(payload),
		ContentType: "application/json",
	}
}

func TestNoDirAllowsEverything(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d, err := h.Command(context.Background(), bankCmd("Deposit", `{"amount":1}`))
	if err != nil || d.Rejected {
		t.Fatalf("Command = %+v, %v; want allowed", d, err)
	}
	if len(h.List()) != 0 {
		t.Fatalf("List = %+v, want empty", h.List())
	}
	h.Close()
	if _, err := h.Command(context.Background(), bankCmd("Deposit", "")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMissingDirIsNotFatal(t *testing.T) {
	h := startHost(t, filepath.Join(t.TempDir(), "nope"), func(c *Config) { c.NoWatch = false })
	if d, err := h.Command(context.Background(), bankCmd("Deposit", "")); err != nil || d.Rejected {
		t.Fatalf("Command = %+v, %v", d, err)
	}
}

func TestAuditLogLogsEachCommand(t *testing.T) {
	wasm := buildGo(t, "wasm-examples/go/audit-log")
	dir := t.TempDir()
	man, err := os.ReadFile(filepath.Join(repoRoot(t), "wasm-examples/go/audit-log/audit-log.toml"))
	if err != nil {
		t.Fatal(err)
	}
	writePlugin(t, dir, "audit-log", wasm, string(man))
	h := startHost(t, dir, nil)

	in := h.info(t, "audit-log")
	if in.State != StateReady || in.Kind != KindSidecar || in.Version == "" || in.LastError != "" {
		t.Fatalf("info = %+v", in)
	}
	ctx := context.Background()
	for i, typ := range []string{"Open", "Deposit", "Withdraw"} {
		cmd := bankCmd(typ, `{"amount":5}`)
		cmd.CommandId = "c" + string(rune('0'+i))
		d, err := h.Command(ctx, cmd)
		if err != nil || d.Rejected {
			t.Fatalf("Command(%s) = %+v, %v; want allowed", typ, d, err)
		}
		if string(cmd.Payload) != `{"amount":5}` {
			t.Fatalf("payload changed to %q", cmd.Payload)
		}
	}
	logs := h.logs.String()
	for i, typ := range []string{"Open", "Deposit", "Withdraw"} {
		want := "audit: command kind=account id=acc-1 type=" + typ + " command_id=c" + string(rune('0'+i))
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if !strings.Contains(logs, "plugin=audit-log") {
		t.Errorf("guest logs lack the plugin attribute:\n%s", logs)
	}
	if got := h.metric(t, "troupe_plugin_calls_total", map[string]string{"plugin": "audit-log", "hook": "command"}); got != 3 {
		t.Errorf("calls_total = %v, want 3", got)
	}
	if got := h.metric(t, "troupe_plugin_guest_total", map[string]string{"plugin": "audit-log", "name": "commands_seen"}); got != 3 {
		t.Errorf("guest counter commands_seen = %v, want 3", got)
	}
	if got := h.metric(t, "troupe_plugin_up", map[string]string{"plugin": "audit-log"}); got != 1 {
		t.Errorf("up = %v, want 1", got)
	}
}

func TestValidateAmountRejects(t *testing.T) {
	wasm := buildGo(t, "wasm-examples/go/validate-amount")
	dir := t.TempDir()
	man, err := os.ReadFile(filepath.Join(repoRoot(t), "wasm-examples/go/validate-amount/validate-amount.toml"))
	if err != nil {
		t.Fatal(err)
	}
	writePlugin(t, dir, "validate-amount", wasm, string(man))
	h := startHost(t, dir, nil)
	ctx := context.Background()

	tests := []struct {
		name, typ, payload string
		reject             bool
		reason             string
	}{
		{"deposit ok", "Deposit", `{"amount":100}`, false, ""},
		{"withdraw ok", "Withdraw", `{"amount": 5}`, false, ""},
		{"negative withdraw", "Withdraw", `{"amount":-5}`, true, "amount must be positive, got -5"},
		{"zero deposit", "Deposit", `{"amount":0}`, true, "amount must be positive, got 0"},
		{"too large", "Deposit", `{"amount":1000000000}`, true, "amount 1000000000 exceeds the limit of 1000000"},
		{"missing", "Deposit", `{}`, true, "amount is required"},
		{"not json", "Deposit", `amount=5`, true, "payload is not a JSON object"},
		{"fraction", "Withdraw", `{"amount":1.5}`, true, "amount must be a whole number, got 1.5"},
		{"huge exponent", "Deposit", `{"amount":1e300}`, true, "amount 1e300 exceeds the limit of 1000000"},
		{"whole exponent", "Deposit", `{"amount":1e3}`, false, ""},
		{"tiny fraction", "Deposit", `{"amount":1e-3}`, true, "amount must be a whole number, got 1e-3"},
		{"open not hooked", "Open", `{"amount":-5}`, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := h.Command(ctx, bankCmd(tt.typ, tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if d.Rejected != tt.reject || d.Reason != tt.reason {
				t.Fatalf("Decision = %+v, want rejected=%v reason=%q", d, tt.reject, tt.reason)
			}
			if d.Rejected && (d.Plugin != "validate-amount" || d.Err != nil) {
				t.Fatalf("Decision = %+v, want a verdict of validate-amount", d)
			}
		})
	}
	if got := h.metric(t, "troupe_plugin_rejects_total", map[string]string{"plugin": "validate-amount", "hook": "command"}); got != 8 {
		t.Errorf("rejects_total = %v, want 8", got)
	}
	// A sidecar is not an ambassador: calling it says what it is.
	if _, err := h.Call(ctx, "validate-amount", &troupev1.AmbassadorCall{Operation: "x"}); !errors.Is(err, ErrNotFound) ||
		!strings.Contains(err.Error(), `"validate-amount" is a sidecar`) {
		t.Errorf("Call of a sidecar: %v; want ErrNotFound saying it is a sidecar", err)
	}
}

// TestChainOrder checks that sidecars run in manifest order, see each
// other's changes, and that a reject stops the chain.
func TestChainOrder(t *testing.T) {
	audit := buildGo(t, "wasm-examples/go/audit-log")
	validate := buildGo(t, "wasm-examples/go/validate-amount")
	dir := t.TempDir()
	writePlugin(t, dir, "audit-log", audit, "name = \"audit-log\"\norder = 20\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n")
	writePlugin(t, dir, "validate-amount", validate, "name = \"validate-amount\"\norder = 10\n[hooks]\nkinds = [\"account\"]\ncommands = [\"Deposit\"]\n")
	h := startHost(t, dir, nil)
	list := h.List()
	if len(list) != 2 || list[0].Name != "validate-amount" || list[1].Name != "audit-log" {
		t.Fatalf("List order = %+v", list)
	}
	d, err := h.Command(context.Background(), bankCmd("Deposit", `{"amount":-1}`))
	if err != nil || !d.Rejected || d.Plugin != "validate-amount" {
		t.Fatalf("Decision = %+v, %v", d, err)
	}
	if strings.Contains(h.logs.String(), "audit: command") {
		t.Fatal("audit-log ran after validate-amount rejected")
	}
	if _, err := h.Command(context.Background(), bankCmd("Deposit", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.logs.String(), "audit: command") {
		t.Fatal("audit-log did not run after validate-amount allowed")
	}
	// validate-amount annotates what it checked; audit-log ran after it.
	cmd := bankCmd("Deposit", `{"amount":7}`)
	if _, err := h.Command(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.Metadata["validated-by"] != "validate-amount" {
		t.Fatalf("metadata = %v, want validated-by annotation", cmd.Metadata)
	}
}

func TestCloseWaitsNoLeak(t *testing.T) {
	wasm := buildWAT(t, "allow")
	dir := t.TempDir()
	writePlugin(t, dir, "allow", wasm, "")
	h := startHost(t, dir, func(c *Config) { c.NoWatch = false })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.Command(ctx, bankCmd("Deposit", "{}")); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Command(ctx, bankCmd("Deposit", "{}")); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestRateLimit(t *testing.T) {
	wasm := buildGo(t, "wasm-examples/go/rate-limit")
	dir := t.TempDir()
	writePlugin(t, dir, "rate-limit", wasm, `name = "rate-limit"
trusted = true
[hooks]
commands = ["*"]
[limits]
max_instances = 1
[capabilities]
clock = true
[capabilities.config]
rate = "1"
burst = "5"
`)
	h := startHost(t, dir, nil)
	ctx := context.Background()
	allowed := 0
	var last Decision
	for i := 0; i < 10; i++ {
		d, err := h.Command(ctx, bankCmd("Deposit", `{"amount":1}`))
		if err != nil {
			t.Fatal(err)
		}
		if !d.Rejected {
			allowed++
		}
		last = d
	}
	if allowed != 5 {
		t.Fatalf("allowed %d of 10, want the burst of 5", allowed)
	}
	if want := "rate limit exceeded for account/acc-1: at most 1 commands/s (burst 5)"; last.Reason != want {
		t.Fatalf("reason = %q, want %q", last.Reason, want)
	}
	// The rejection asks for resource_exhausted with a retry hint: one
	// token comes back within a second at 1/s.
	if last.Code != "resource_exhausted" || last.RetryAfter <= 0 || last.RetryAfter > time.Second {
		t.Fatalf("code %q retry after %v, want resource_exhausted within 1s", last.Code, last.RetryAfter)
	}
	other := bankCmd("Deposit", `{"amount":1}`)
	other.EntityId = "acc-2"
	if d, _ := h.Command(ctx, other); d.Rejected {
		t.Fatalf("another entity was limited: %+v", d)
	}
	// Refill at 1/s: after 1.1 s one more command passes.
	time.Sleep(1100 * time.Millisecond)
	if d, _ := h.Command(ctx, bankCmd("Deposit", `{"amount":1}`)); d.Rejected {
		t.Fatalf("no refill after 1.1s: %+v", d)
	}
}

func TestEventHook(t *testing.T) {
	wasm := buildGo(t, "wasm-examples/go/audit-log")
	dir := t.TempDir()
	writePlugin(t, dir, "audit-log", wasm, "name = \"audit-log\"\ntrusted = true\n[hooks]\nkinds = [\"account\"]\nevents = [\"Dep*\"]\nprojections = [\"balances\"]\n")
	h := startHost(t, dir, nil)
	ctx := context.Background()
	ev := &troupev1.Event{StreamId: "account/acc-1", Sequence: 1, Type: "Deposited", Payload: []byte(`{"amount":1}`)}
	for _, tc := range []struct {
		projection string
		ev         *troupev1.Event
		seen       bool
	}{
		{"balances", ev, true},
		{"other", ev, false},
		{"balances", &troupev1.Event{StreamId: "order/o-1", Type: "Deposited"}, false},
		{"balances", &troupev1.Event{StreamId: "account/acc-2", Type: "Withdrawn"}, false},
	} {
		before := h.metric(t, "troupe_plugin_calls_total", map[string]string{"plugin": "audit-log", "hook": "event"})
		if d, err := h.Event(ctx, tc.projection, tc.ev); err != nil || d.Rejected {
			t.Fatalf("Event = %+v, %v", d, err)
		}
		after := h.metric(t, "troupe_plugin_calls_total", map[string]string{"plugin": "audit-log", "hook": "event"})
		if (after > before) != tc.seen {
			t.Fatalf("%s %s/%s: seen = %v, want %v", tc.projection, tc.ev.StreamId, tc.ev.Type, after > before, tc.seen)
		}
	}
	if !strings.Contains(h.logs.String(), "audit: event stream=account/acc-1 type=Deposited projection=balances") {
		t.Fatalf("log:\n%s", h.logs.String())
	}
	// Commands are not hooked by this manifest.
	if _, err := h.Command(ctx, bankCmd("Deposit", "{}")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.logs.String(), "audit: command") {
		t.Fatal("command hook ran without commands in the manifest")
	}
}

func TestListTable(t *testing.T) {
	dir := t.TempDir()
	writePlugin(t, dir, "allow", buildWAT(t, "allow"), "")
	writePlugin(t, dir, "broken", []byte("nope"), "")
	h := startHost(t, dir, nil)
	var infos []*troupev1.PluginInfo
	for _, in := range h.List() {
		infos = append(infos, in.Proto())
	}
	var b strings.Builder
	if err := WriteTable(&b, infos); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"NAME", "allow", "sidecar", "commands=*", "ready", "broken", "failed", "invalid magic number"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}
